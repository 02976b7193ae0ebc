"""Nucleotide sequence helpers: reverse complement with the full IUPAC alphabet, case kept."""

from __future__ import annotations

import numpy as np

# IUPAC complement: A<->T, C<->G, R(AG)<->Y(CT), K(GT)<->M(AC), B(CGT)<->V(ACG),
# D(AGT)<->H(ACT); S(CG), W(AT), N and gaps map to themselves. U complements to A.
_PAIRS = {
    "A": "T", "T": "A", "U": "A", "C": "G", "G": "C",
    "R": "Y", "Y": "R", "K": "M", "M": "K", "B": "V", "V": "B",
    "D": "H", "H": "D", "S": "S", "W": "W", "N": "N",
    "-": "-", ".": ".", "*": "*",
}  # fmt: skip

_COMPLEMENT = np.arange(256, dtype=np.uint8)
for _a, _b in _PAIRS.items():
    _COMPLEMENT[ord(_a)] = ord(_b)
    _COMPLEMENT[ord(_a.lower())] = ord(_b.lower())
_STR_TABLE = {i: chr(c) for i, c in enumerate(_COMPLEMENT.tolist()) if i != c}


def complement_array(seq: np.ndarray) -> np.ndarray:
    """Complement an ASCII ``uint8`` array ``(L,)`` base by base (no reversal)."""
    return _COMPLEMENT[seq]


def reverse_complement(seq: str | bytes | np.ndarray) -> str | bytes | np.ndarray:
    """Reverse complement of a sequence, keeping its type (str, bytes or uint8 array ``(L,)``).

    IUPAC ambiguity codes are complemented (R<->Y, K<->M, B<->V, D<->H; S, W, N unchanged)
    and case is kept, so soft-masked (lowercase) bases stay soft-masked. U pairs with A.
    Characters outside the IUPAC alphabet are passed through unchanged; validation is the
    tokenizer's job.
    """
    if isinstance(seq, np.ndarray):
        return _COMPLEMENT[seq[::-1]]
    if isinstance(seq, (bytes, bytearray)):
        return bytes(_COMPLEMENT[np.frombuffer(bytes(seq), dtype=np.uint8)[::-1]])
    return seq.translate(_STR_TABLE)[::-1]
