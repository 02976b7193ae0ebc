"""HyenaDNA-compatible character tokenizer, vectorised with 256-entry numpy lookup tables.

Vocabulary (identical in the standalone ``CharacterTokenizer``, the ``-hf``
``HyenaDNATokenizer`` and the pretraining ``hg38_char_tokenizer``)::

    [CLS]=0 [SEP]=1 [BOS]=2 [MASK]=3 [PAD]=4 [RESERVED]=5 [UNK]=6 A=7 C=8 G=9 T=10 N=11

The model's embedding has 16 rows; ids 12-15 are padding rows that no tokenizer produces.

Special-token conventions (:class:`Convention`):

* ``"standalone"``: ``[CLS] + seq + [SEP]`` (``standalone_hyenadna.py`` ``CharacterTokenizer``
  default call, as used by ``huggingface.py``);
* ``"hf"``: ``seq + [SEP]`` (the ``-hf`` ``HyenaDNATokenizer`` and the pretraining
  ``hg38_char_tokenizer`` default call);
* ``"none"``: no special tokens (any reference tokenizer with ``add_special_tokens=False``).

Character policies (each one explicit; see :func:`encode`):

* ``softmask`` -- lowercase (soft-masked) nucleotide letters: ``"upper"`` (default: read as
  the uppercase base), ``"unk"`` (-> ``[UNK]``, what every reference tokenizer does) or
  ``"n"`` (-> ``N``, i.e. hard-masking).
* ``iupac`` -- ambiguity codes ``R Y K M S W B D H V`` (either case): ``"n"`` (default),
  ``"unk"`` (reference) or ``"error"`` (``strict=True``: only A/C/G/T/N are accepted).
* ``unknown`` -- any other character (``U``, gaps, digits, spaces, non-ASCII...): ``"error"``
  (default: :class:`~dnastream.genomics.errors.InvalidBaseError` naming file, record and
  0-based position in the record, like the rest of :mod:`dnastream.genomics`) or ``"unk"``
  (reference).
* ``special_literals`` -- when true, the texts ``[CLS] [SEP] [BOS] [MASK] [PAD] [UNK]`` inside
  the input are read as one special token each (what ``transformers`` does for the reference
  tokenizers; ``[RESERVED]`` is not an added token there and is read character by character).
  ``mask_lstrip`` additionally drops whitespace left of ``[MASK]``, as the standalone and
  pretraining tokenizers' ``AddedToken("[MASK]", lstrip=True)`` does (the ``-hf`` one passes
  plain strings, so no stripping with current transformers; not covered by the fixture).

The three reference tokenizers are reproduced exactly by :meth:`DNATokenizer.reference`
(``softmask="unk", iupac="unk", unknown="unk", special_literals=True``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import re
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

from dnastream.genomics.errors import InvalidBaseError

__all__ = [
    "A_ID",
    "BOS_ID",
    "C_ID",
    "CLS_ID",
    "Convention",
    "DNATokenizer",
    "G_ID",
    "ID_TO_TOKEN",
    "IUPAC_CODES",
    "MASK_ID",
    "MODEL_VOCAB_ROWS",
    "N_ID",
    "PAD_ID",
    "REFERENCE_FLAVOURS",
    "RESERVED_ID",
    "SEP_ID",
    "SPECIAL_IDS",
    "T_ID",
    "UNK_ID",
    "VOCAB",
    "VOCAB_SIZE",
    "decode",
    "encode",
    "encode_batch",
    "pad_ids",
    "reverse_complement_ids",
]

# --------------------------------------------------------------------------- vocabulary

CLS_ID, SEP_ID, BOS_ID, MASK_ID, PAD_ID, RESERVED_ID, UNK_ID = 0, 1, 2, 3, 4, 5, 6
A_ID, C_ID, G_ID, T_ID, N_ID = 7, 8, 9, 10, 11

VOCAB: dict[str, int] = {
    "[CLS]": CLS_ID,
    "[SEP]": SEP_ID,
    "[BOS]": BOS_ID,
    "[MASK]": MASK_ID,
    "[PAD]": PAD_ID,
    "[RESERVED]": RESERVED_ID,
    "[UNK]": UNK_ID,
    "A": A_ID,
    "C": C_ID,
    "G": G_ID,
    "T": T_ID,
    "N": N_ID,
}
ID_TO_TOKEN: dict[int, str] = {i: t for t, i in VOCAB.items()}
VOCAB_SIZE = len(VOCAB)  # 12 tokens
MODEL_VOCAB_ROWS = 16  # embedding rows of the model (vocab padded to a multiple of 8)
SPECIAL_IDS: frozenset[int] = frozenset(range(A_ID))  # ids 0..6
IUPAC_CODES = "RYKMSWBDHV"  # two- and three-base ambiguity codes (N is its own token)

# Texts that transformers matches as one token in the reference tokenizers (their special
# tokens; [RESERVED] is in the vocabulary but not an added token).
_LITERAL_TOKENS = ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[UNK]")
_LITERAL_RE_STR = re.compile("|".join(re.escape(t) for t in _LITERAL_TOKENS))
_LITERAL_RE_BYTES = re.compile(_LITERAL_RE_STR.pattern.encode("ascii"))
_LSTRIP_TOKENS = frozenset({"[MASK]"})  # AddedToken(lstrip=True): eats whitespace on its left


class Convention(str, enum.Enum):
    """Special tokens around a sequence: ``STANDALONE`` ``[CLS] s [SEP]``, ``HF`` ``s [SEP]``."""

    STANDALONE = "standalone"
    HF = "hf"
    NONE = "none"

    @property
    def prefix(self) -> tuple[int, ...]:
        """Ids put before the bases."""
        return (CLS_ID,) if self is Convention.STANDALONE else ()

    @property
    def suffix(self) -> tuple[int, ...]:
        """Ids put after the bases."""
        return () if self is Convention.NONE else (SEP_ID,)

    @property
    def n_specials(self) -> int:
        """Number of special tokens the convention adds (0, 1 or 2)."""
        return len(self.prefix) + len(self.suffix)


_CONVENTION_ALIASES: dict[str, Convention] = {
    "standalone": Convention.STANDALONE,
    "cls_sep": Convention.STANDALONE,
    "hf": Convention.HF,
    "-hf": Convention.HF,
    "huggingface": Convention.HF,
    "sep": Convention.HF,
    "hg38": Convention.HF,
    "training": Convention.HF,
    "none": Convention.NONE,
    "raw": Convention.NONE,
}

ConventionLike = Convention | Literal["standalone", "hf", "none"] | str | None
SoftmaskPolicy = Literal["upper", "unk", "n"]
IupacPolicy = Literal["n", "unk", "error"]
UnknownPolicy = Literal["error", "unk"]


def _convention(value: ConventionLike) -> Convention:
    """Resolve a convention name or alias (``None`` means ``"none"``)."""
    if value is None:
        return Convention.NONE
    if isinstance(value, Convention):
        return value
    try:
        return _CONVENTION_ALIASES[str(value).lower()]
    except KeyError:
        names = ", ".join(repr(k) for k in _CONVENTION_ALIASES)
        raise ValueError(
            f"unknown special-token convention {value!r}; use one of {names}"
        ) from None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")
    return value


# --------------------------------------------------------------------------- lookup tables

_ERR_UNKNOWN = 255  # table marker: character not allowed
_ERR_IUPAC = 254  # table marker: IUPAC code in strict mode
_ERR_MIN = 254


@functools.cache
def _table(softmask: str, iupac: str, unknown: str) -> np.ndarray:
    """256-entry ``uint8`` table byte -> id, with markers >= 254 for bytes that must raise."""
    t = np.full(256, UNK_ID if unknown == "unk" else _ERR_UNKNOWN, dtype=np.uint8)
    iupac_id = {"n": N_ID, "unk": UNK_ID, "error": _ERR_IUPAC}[iupac]
    for ch in "ACGTN":
        t[ord(ch)] = VOCAB[ch]
    for ch in IUPAC_CODES:
        t[ord(ch)] = iupac_id
    lower_id = {"unk": UNK_ID, "n": N_ID}.get(softmask)
    for ch in "ACGTN" + IUPAC_CODES:
        up = int(t[ord(ch)])
        if iupac == "error" and ch in IUPAC_CODES:
            low = _ERR_IUPAC  # strict mode rejects ambiguity codes in either case
        elif lower_id is not None:
            low = lower_id
        else:
            low = up
        t[ord(ch.lower())] = low
    t.setflags(write=False)
    return t


_BASE_CHARS = np.zeros(16, dtype=np.uint8)  # id -> ASCII for the single-letter tokens
for _tok, _i in VOCAB.items():
    if len(_tok) == 1:
        _BASE_CHARS[_i] = ord(_tok)
_TOKEN_TEXT = np.array([ID_TO_TOKEN[i] for i in range(VOCAB_SIZE)], dtype=object)
_TOKEN_TEXT_LOWER = np.array(
    [t.lower() if i >= A_ID else t for i, t in enumerate(_TOKEN_TEXT)], dtype=object
)

_RC_IDS = np.arange(MODEL_VOCAB_ROWS, dtype=np.int64)
_RC_IDS[[A_ID, C_ID, G_ID, T_ID]] = [T_ID, G_ID, C_ID, A_ID]
_RC_IDS.setflags(write=False)


# --------------------------------------------------------------------------- input handling


def _as_array(seq: str | bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """View ``seq`` as an ASCII ``uint8`` array ``(L,)``; non-ASCII characters become ``?``.

    A ``str`` maps one character to one byte (so positions are character positions).
    """
    if isinstance(seq, str):
        try:
            data = seq.encode("ascii")
        except UnicodeEncodeError:
            data = seq.encode("ascii", errors="replace")
        return np.frombuffer(data, dtype=np.uint8)
    if isinstance(seq, (bytes, bytearray, memoryview)):
        return np.frombuffer(seq, dtype=np.uint8)
    if isinstance(seq, np.ndarray):
        if seq.ndim != 1:
            raise ValueError(f"expected a 1-D array of ASCII codes, got shape {seq.shape}")
        if seq.dtype == np.uint8:
            return seq
        if seq.dtype.itemsize == 1 and seq.dtype.kind in "iSV":
            return seq.view(np.uint8)
        raise TypeError(f"expected a uint8 array of ASCII codes, got dtype {seq.dtype}")
    raise TypeError(f"expected str, bytes or a uint8 numpy array, got {type(seq).__name__}")


def _char_repr(seq: object, arr: np.ndarray, pos: int) -> str:
    if isinstance(seq, str):
        ch = seq[pos]
        if ord(ch) > 0x7F:
            return f"character {ch!r} (U+{ord(ch):04X})"
    else:
        ch = chr(int(arr[pos]))
        if int(arr[pos]) > 0x7F:
            return f"byte 0x{int(arr[pos]):02X}"
    return f"character {ch!r} (0x{ord(ch):02X})"


def _raise_invalid(
    seq: object,
    arr: np.ndarray,
    ids8: np.ndarray,
    *,
    index: int,
    record: str | None,
    offset: int,
    path: str | os.PathLike[str] | None,
) -> None:
    """Raise :class:`InvalidBaseError` for the first marked byte of ``ids8`` (0-based position)."""
    pos = int(np.argmax(ids8 >= _ERR_MIN))
    where = _char_repr(seq, arr, index + pos)
    if int(ids8[pos]) == _ERR_IUPAC:
        reason = (
            f"IUPAC ambiguity code {where.removeprefix('character ')} not allowed (strict mode)"
        )
        hint = (
            "Use strict=False to map ambiguity codes (R Y K M S W B D H V) to N (0-based position)"
        )
    else:
        reason = f"invalid {where}"
        hint = (
            "Expected A, C, G, T, N or an IUPAC ambiguity code (R Y K M S W B D H V), "
            "upper or lower case (0-based position)"
        )
    raise InvalidBaseError(
        reason, path=path, record=record, position=offset + index + pos, hint=hint
    )


# --------------------------------------------------------------------------- policy


@dataclasses.dataclass(frozen=True)
class DNATokenizer:
    """A HyenaDNA tokenizer with a fixed policy; ``tok(seq)`` == ``tok.encode(seq)``.

    Fields: ``convention`` (``"standalone"`` / ``"hf"`` / ``"none"`` or an alias),
    ``softmask`` (``"upper"`` / ``"unk"`` / ``"n"``), ``strict`` (IUPAC codes raise),
    ``iupac`` (``"n"`` / ``"unk"`` / ``"error"``; ``None`` -> ``"error"`` if strict else ``"n"``),
    ``unknown`` (``"error"`` / ``"unk"``), ``special_literals`` (read ``"[MASK]"`` etc. as tokens),
    ``mask_lstrip`` (with ``special_literals``: ``[MASK]`` eats whitespace on its left).
    """

    convention: Convention = Convention.NONE
    softmask: SoftmaskPolicy = "upper"
    strict: bool = False
    iupac: IupacPolicy | None = None
    unknown: UnknownPolicy = "error"
    special_literals: bool = False
    mask_lstrip: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "convention", _convention(self.convention))
        _check_choice("softmask", self.softmask, ("upper", "unk", "n"))
        _check_choice("unknown", self.unknown, ("error", "unk"))
        iupac = self.iupac
        if iupac is None:
            iupac = "error" if self.strict else "n"
        _check_choice("iupac", iupac, ("n", "unk", "error"))
        if self.strict and iupac != "error":
            raise ValueError(f"strict=True conflicts with iupac={iupac!r}")
        object.__setattr__(self, "iupac", iupac)
        object.__setattr__(self, "strict", iupac == "error")

    @classmethod
    def reference(
        cls, flavour: str = "standalone", *, add_special_tokens: bool = True
    ) -> DNATokenizer:
        """Exact replica of a reference tokenizer's ``input_ids``.

        ``flavour``: ``"standalone"`` (``CharacterTokenizer`` of ``standalone_hyenadna.py``,
        ``[CLS] s [SEP]``), ``"hf"`` (``-hf`` ``HyenaDNATokenizer``, ``s [SEP]``) or
        ``"hg38_char_tokenizer"`` (pretraining tokenizer, ``s [SEP]``). Every character other
        than ``A C G T N`` becomes ``[UNK]`` and special-token texts are matched.
        ``add_special_tokens=False`` gives the bare ids (convention ``"none"``).
        """
        try:
            convention, mask_lstrip = REFERENCE_FLAVOURS[flavour]
        except KeyError:
            raise ValueError(
                f"unknown reference tokenizer {flavour!r}; use one of {sorted(REFERENCE_FLAVOURS)}"
            ) from None
        return cls(
            convention=convention if add_special_tokens else Convention.NONE,
            softmask="unk",
            iupac="unk",
            unknown="unk",
            special_literals=True,
            mask_lstrip=mask_lstrip,
        )

    @property
    def n_specials(self) -> int:
        """Special tokens added per sequence by the convention."""
        return self.convention.n_specials

    def encode(
        self,
        seq: str | bytes | np.ndarray,
        *,
        return_softmask: bool = False,
        record: str | None = None,
        offset: int = 0,
        path: str | os.PathLike[str] | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Ids ``(L + n_specials,)`` int64 (and the soft-mask ``(L,)`` bool); see :func:`encode`."""
        return _encode(self, seq, return_softmask, record, offset, path)

    __call__ = encode

    def encode_batch(
        self,
        seqs: Iterable[str | bytes | np.ndarray],
        *,
        length: int | None = None,
        padding_side: Literal["left", "right"] = "left",
        records: Sequence[str | None] | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> np.ndarray:
        """Encode several sequences and pad them with ``[PAD]`` into ``(B, length)`` int64."""
        rows = []
        for i, seq in enumerate(seqs):
            rec = records[i] if records is not None else None
            rows.append(_encode(self, seq, False, rec, 0, path))
        return pad_ids(rows, length=length, side=padding_side)

    def decode(self, ids: Sequence[int] | np.ndarray, *, softmask: np.ndarray | None = None) -> str:
        """Text of ``ids`` with this tokenizer's convention specials checked and removed."""
        return decode(ids, convention=self.convention, softmask=softmask)


# flavour -> (convention of the default call, whether "[MASK]" strips whitespace on its left)
REFERENCE_FLAVOURS: dict[str, tuple[Convention, bool]] = {
    "standalone": (Convention.STANDALONE, True),
    "hf": (Convention.HF, False),
    "hg38_char_tokenizer": (Convention.HF, True),
    "training": (Convention.HF, True),
}


# --------------------------------------------------------------------------- encoding


def _encode_into(
    tok: DNATokenizer,
    seq: object,
    arr: np.ndarray,
    start: int,
    stop: int,
    out: np.ndarray,
    record: str | None,
    offset: int,
    path: str | os.PathLike[str] | None,
) -> None:
    """Write the ids of ``arr[start:stop]`` into ``out`` (same length), raising on bad bytes."""
    if stop <= start:
        return
    table = _table(tok.softmask, tok.iupac, tok.unknown)
    ids8 = table[arr[start:stop]]
    if int(ids8.max()) >= _ERR_MIN:
        _raise_invalid(seq, arr, ids8, index=start, record=record, offset=offset, path=path)
    out[...] = ids8


def _literal_segments(
    seq: object, arr: np.ndarray, mask_lstrip: bool
) -> list[tuple[int, int, int | None]]:
    """Split into ``(start, stop, None)`` text runs and ``(start, stop, id)`` special tokens."""
    text = seq if isinstance(seq, str) else arr.tobytes()
    regex = _LITERAL_RE_STR if isinstance(text, str) else _LITERAL_RE_BYTES
    segments: list[tuple[int, int, int | None]] = []
    pos = 0
    for m in regex.finditer(text):
        start, stop = pos, m.start()
        token = m.group(0)
        token = token if isinstance(token, str) else token.decode("ascii")
        if mask_lstrip and token in _LSTRIP_TOKENS:
            stop = start + len(text[start:stop].rstrip())
        if stop > start:
            segments.append((start, stop, None))
        segments.append((m.start(), m.end(), VOCAB[token]))
        pos = m.end()
    if pos < len(arr):
        segments.append((pos, len(arr), None))
    return segments


def _encode(
    tok: DNATokenizer,
    seq: str | bytes | np.ndarray,
    return_softmask: bool,
    record: str | None,
    offset: int,
    path: str | os.PathLike[str] | None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    arr = _as_array(seq)
    prefix, suffix = tok.convention.prefix, tok.convention.suffix
    np_, ns = len(prefix), len(suffix)
    if tok.special_literals and bool((arr == ord("[")).any()):
        segments = _literal_segments(seq, arr, tok.mask_lstrip)
        n = sum(stop - start if tid is None else 1 for start, stop, tid in segments)
        out = np.empty(np_ + n + ns, dtype=np.int64)
        mask = np.zeros(n, dtype=bool) if return_softmask else None
        j = np_
        for start, stop, tid in segments:
            if tid is not None:
                out[j] = tid
                j += 1
                continue
            _encode_into(
                tok, seq, arr, start, stop, out[j : j + stop - start], record, offset, path
            )
            if mask is not None:
                piece = arr[start:stop]
                mask[j - np_ : j - np_ + stop - start] = (piece >= 97) & (piece <= 122)
            j += stop - start
    else:
        n = len(arr)
        out = np.empty(np_ + n + ns, dtype=np.int64)
        _encode_into(tok, seq, arr, 0, n, out[np_ : np_ + n], record, offset, path)
        mask = ((arr >= 97) & (arr <= 122)) if return_softmask else None
    out[:np_] = prefix
    out[np_ + n :] = suffix
    if mask is not None:
        return out, mask
    return out


def encode(
    seq: str | bytes | np.ndarray,
    *,
    convention: ConventionLike = "none",
    softmask: SoftmaskPolicy = "upper",
    strict: bool = False,
    return_softmask: bool = False,
    record: str | None = None,
    offset: int = 0,
    path: str | os.PathLike[str] | None = None,
    iupac: IupacPolicy | None = None,
    unknown: UnknownPolicy = "error",
    special_literals: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Tokenize one sequence into HyenaDNA ids.

    Args:
        seq: ``str``, ``bytes`` or a ``uint8`` array ``(L,)`` of ASCII codes.
        convention: ``"standalone"`` (``[CLS] s [SEP]``), ``"hf"`` (``s [SEP]``) or ``"none"``.
        softmask: lowercase nucleotide letters -> ``"upper"`` (their base), ``"unk"``
            (``[UNK]``, the reference behaviour) or ``"n"`` (``N``).
        strict: reject IUPAC ambiguity codes (same as ``iupac="error"``).
        return_softmask: also return a bool array ``(L,)`` -- one entry per input character,
            the special tokens of ``convention`` excluded -- True where the character is a
            lowercase ASCII letter. With ``special_literals`` each matched ``"[MASK]"``-like
            text counts as one (False) entry.
        record, offset, path: where ``seq`` comes from, for error messages; ``offset`` is the
            0-based position of ``seq[0]`` in the record; errors report the 0-based record
            position ``offset + i`` of the first bad character ``seq[i]``.
        iupac: ambiguity codes ``R Y K M S W B D H V`` -> ``"n"`` (default), ``"unk"``, or
            ``"error"`` (default when ``strict``).
        unknown: any other character -> ``"error"`` (default) or ``"unk"`` (reference).
        special_literals: read ``"[CLS]" "[SEP]" "[BOS]" "[MASK]" "[PAD]" "[UNK]"`` in the text
            as single special tokens, as the reference (transformers) tokenizers do.

    Returns:
        int64 ids ``(L + n_specials,)``, or ``(ids, softmask)`` when ``return_softmask``.

    Raises:
        InvalidBaseError: a character not allowed by the policy (file, record and position named).
    """
    tok = _policy(convention, softmask, strict, iupac, unknown, special_literals)
    return _encode(tok, seq, return_softmask, record, offset, path)


@functools.lru_cache(maxsize=64)
def _policy(
    convention: ConventionLike,
    softmask: str,
    strict: bool,
    iupac: str | None,
    unknown: str,
    special_literals: bool,
) -> DNATokenizer:
    return DNATokenizer(
        convention=convention,  # type: ignore[arg-type]
        softmask=softmask,  # type: ignore[arg-type]
        strict=strict,
        iupac=iupac,  # type: ignore[arg-type]
        unknown=unknown,  # type: ignore[arg-type]
        special_literals=special_literals,
    )


def pad_ids(
    rows: Sequence[np.ndarray | Sequence[int]],
    *,
    length: int | None = None,
    side: Literal["left", "right"] = "left",
    pad_id: int = PAD_ID,
) -> np.ndarray:
    """Stack id rows into ``(B, length)`` int64, filling with ``pad_id`` on ``side``.

    ``length`` defaults to the longest row; a longer row raises ``ValueError``. Left padding
    is the reference tokenizers' ``padding_side`` (HyenaDNA has no attention mask: pads are
    ordinary inputs).
    """
    _check_choice("side", side, ("left", "right"))
    arrays = [np.asarray(r, dtype=np.int64) for r in rows]
    if any(a.ndim != 1 for a in arrays):
        raise ValueError("every row must be 1-D")
    longest = max((len(a) for a in arrays), default=0)
    if length is None:
        length = longest
    elif longest > length:
        raise ValueError(f"a row has {longest} ids, more than length={length}")
    out = np.full((len(arrays), length), pad_id, dtype=np.int64)
    for i, a in enumerate(arrays):
        if len(a):
            if side == "left":
                out[i, length - len(a) :] = a
            else:
                out[i, : len(a)] = a
    return out


def encode_batch(
    seqs: Iterable[str | bytes | np.ndarray],
    *,
    length: int | None = None,
    padding_side: Literal["left", "right"] = "left",
    convention: ConventionLike = "none",
    softmask: SoftmaskPolicy = "upper",
    strict: bool = False,
    iupac: IupacPolicy | None = None,
    unknown: UnknownPolicy = "error",
    special_literals: bool = False,
) -> np.ndarray:
    """Encode several sequences (see :func:`encode`) and ``[PAD]``-pad them to ``(B, length)``."""
    tok = _policy(convention, softmask, strict, iupac, unknown, special_literals)
    return tok.encode_batch(seqs, length=length, padding_side=padding_side)


# --------------------------------------------------------------------------- decoding


def _check_ids(ids: Sequence[int] | np.ndarray, limit: int) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= limit):
        bad = arr[(arr < 0) | (arr >= limit)].ravel()[0]
        raise ValueError(f"id {int(bad)} is outside the vocabulary 0..{limit - 1}")
    return arr


def decode(
    ids: Sequence[int] | np.ndarray,
    *,
    convention: ConventionLike = "none",
    softmask: np.ndarray | None = None,
) -> str:
    """Text of ids ``(L,)``: bases as letters, specials as ``"[CLS]"``, ``"[PAD]"``...

    With a ``convention`` its special tokens must be at the ends and are removed (so
    ``decode(encode(s, convention=c), convention=c) == s`` for A/C/G/T/N text). ``softmask``
    (bool, shape of the ids without those specials) lower-cases the base letters it marks.
    Ids 12-15 (embedding padding rows) raise ``ValueError``.
    """
    arr = _check_ids(ids, VOCAB_SIZE)
    if arr.ndim != 1:
        raise ValueError(f"decode takes one row of ids, got shape {arr.shape}")
    conv = _convention(convention)
    prefix, suffix = conv.prefix, conv.suffix
    if len(arr) < conv.n_specials or (
        tuple(arr[: len(prefix)]) != prefix or tuple(arr[len(arr) - len(suffix) :]) != suffix
    ):
        raise ValueError(f"ids do not carry the {conv.value!r} special tokens at their ends")
    arr = arr[len(prefix) : len(arr) - len(suffix)]
    mask = None
    if softmask is not None:
        mask = np.asarray(softmask, dtype=bool)
        if mask.shape != arr.shape:
            raise ValueError(f"softmask shape {mask.shape} != bases shape {arr.shape}")
    if not arr.size or int(arr.min()) >= A_ID:  # fast path: single letters only
        chars = _BASE_CHARS[arr]
        if mask is not None:
            chars = chars | (mask.astype(np.uint8) << 5)  # ASCII lower case = | 0x20
        return chars.tobytes().decode("ascii")
    texts = _TOKEN_TEXT[arr]
    if mask is not None:
        texts = np.where(mask, _TOKEN_TEXT_LOWER[arr], texts)
    return "".join(texts.tolist())


def reverse_complement_ids(
    ids: Sequence[int] | np.ndarray, *, convention: ConventionLike = "none"
) -> np.ndarray:
    """Reverse complement in token space along the last axis: ``(..., L)`` -> ``(..., L)``.

    A<->T and C<->G; N, [UNK], the other specials and ids 12-15 are kept. The ``convention``'s
    leading/trailing specials stay in place (only the bases between them are reversed), so
    ``reverse_complement_ids(encode(s, convention=c), convention=c)`` equals
    ``encode(reverse_complement(s), convention=c)``. Padding is reversed with the row (a
    left-padded row comes out right-padded): reverse-complement before padding.
    """
    arr = _check_ids(ids, MODEL_VOCAB_ROWS)
    if arr.ndim == 0:
        raise ValueError("ids must have at least one axis")
    conv = _convention(convention)
    np_, ns = len(conv.prefix), len(conv.suffix)
    length = arr.shape[-1]
    if length < np_ + ns:
        raise ValueError(f"rows of {length} ids cannot carry the {conv.value!r} specials")
    out = arr.copy()
    body = arr[..., np_ : length - ns]
    out[..., np_ : length - ns] = _RC_IDS[body[..., ::-1]]
    return out
