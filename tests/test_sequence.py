"""Reverse complement over the IUPAC alphabet, for str, bytes and uint8 arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dnastream.genomics.sequence import complement_array, reverse_complement

# Every IUPAC nucleotide code and its complement (U pairs with A but A pairs with T).
PAIRS = {
    "A": "T", "T": "A", "C": "G", "G": "C", "U": "A",
    "R": "Y", "Y": "R", "K": "M", "M": "K", "B": "V", "V": "B",
    "D": "H", "H": "D", "S": "S", "W": "W", "N": "N",
}  # fmt: skip
IUPAC_NO_U = "ACGTRYKMSWBDHVN"

iupac_text = st.text(alphabet=IUPAC_NO_U + IUPAC_NO_U.lower() + "-.*", max_size=200)


@pytest.mark.parametrize(("base", "comp"), sorted(PAIRS.items()))
def test_pairs_upper_and_lower(base: str, comp: str) -> None:
    assert reverse_complement(base) == comp
    assert reverse_complement(base.lower()) == comp.lower()
    assert reverse_complement(base.encode()) == comp.encode()


def test_reverses_and_complements_str() -> None:
    assert reverse_complement("AACGTN") == "NACGTT"
    assert reverse_complement("GATTACA") == "TGTAATC"


def test_case_is_kept() -> None:
    assert reverse_complement("ACGTacgt") == "acgtACGT"
    assert reverse_complement("aaaCCC") == "GGGttt"
    assert reverse_complement("ryKM") == "KMry"


def test_types_are_kept() -> None:
    out_b = reverse_complement(b"AACG")
    assert isinstance(out_b, bytes) and out_b == b"CGTT"
    out_ba = reverse_complement(bytearray(b"AACG"))
    assert isinstance(out_ba, bytes) and out_ba == b"CGTT"
    arr = np.frombuffer(b"AACGn", dtype=np.uint8)
    out_a = reverse_complement(arr)
    assert isinstance(out_a, np.ndarray) and out_a.dtype == np.uint8
    assert out_a.tobytes() == b"nCGTT"
    assert arr.tobytes() == b"AACGn"  # input untouched


def test_empty() -> None:
    assert reverse_complement("") == ""
    assert reverse_complement(b"") == b""
    assert reverse_complement(np.zeros(0, dtype=np.uint8)).shape == (0,)


def test_gaps_and_unknown_pass_through() -> None:
    assert reverse_complement("A-C.G*") == "*C.G-T"
    assert reverse_complement("AXZ") == "ZXT"  # validation is the tokenizer's job


def test_u_pairs_with_a_but_is_not_an_involution() -> None:
    assert reverse_complement("U") == "A"
    assert reverse_complement(reverse_complement("U")) == "T"


def test_complement_array_does_not_reverse() -> None:
    arr = np.frombuffer(b"AACGrn", dtype=np.uint8)
    assert complement_array(arr).tobytes() == b"TTGCyn"


@given(iupac_text)
def test_involution_on_iupac_without_u(seq: str) -> None:
    assert reverse_complement(reverse_complement(seq)) == seq


@given(iupac_text)
def test_str_bytes_array_agree(seq: str) -> None:
    rc = reverse_complement(seq)
    assert len(rc) == len(seq)
    assert reverse_complement(seq.encode()) == rc.encode()
    arr = np.frombuffer(seq.encode(), dtype=np.uint8)
    assert reverse_complement(arr).tobytes() == rc.encode()
    # position i of the result is the complement of position L-1-i of the input
    for i, ch in enumerate(rc):
        src = seq[len(seq) - 1 - i]
        expected = PAIRS.get(src.upper(), src.upper())
        assert ch == (expected.lower() if src.islower() else expected)
