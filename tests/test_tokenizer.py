"""HyenaDNA tokenizer: reference fixture, policies, errors, decode, reverse complement of ids."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dnastream.genomics.errors import GenomicsInputError, InvalidBaseError
from dnastream.genomics.sequence import reverse_complement
from dnastream.genomics.tokenizer import (
    CLS_ID,
    ID_TO_TOKEN,
    MASK_ID,
    N_ID,
    PAD_ID,
    SEP_ID,
    UNK_ID,
    VOCAB,
    VOCAB_SIZE,
    Convention,
    DNATokenizer,
    decode,
    encode,
    encode_batch,
    pad_ids,
    reverse_complement_ids,
)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "hyenadna"
TOKENIZER_JSON = FIXTURES / "tokenizer.json"
EXPECTED_JSON = FIXTURES / "expected.json"
EXPECTED_ST = FIXTURES / "expected.safetensors"

FLAVOURS = {  # fixture column -> DNATokenizer.reference flavour
    "standalone": "standalone",
    "hf": "hf",
    "training_hg38_char_tokenizer": "hg38_char_tokenizer",
}
CALLS = {"call_default": True, "add_special_tokens_false": False}
CONVENTIONS = ["standalone", "hf", "none"]
IUPAC = "RYKMSWBDHV"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


TOKENIZER_FIXTURE = _load(TOKENIZER_JSON)
EXPECTED = _load(EXPECTED_JSON)
needs_tokenizer_json = pytest.mark.skipif(
    TOKENIZER_FIXTURE is None, reason=f"reference fixture {TOKENIZER_JSON} is absent"
)
needs_expected_json = pytest.mark.skipif(
    EXPECTED is None, reason=f"reference fixture {EXPECTED_JSON} is absent"
)


def _fixture_cases() -> list:
    if TOKENIZER_FIXTURE is None:
        skip = pytest.mark.skip(reason=f"reference fixture {TOKENIZER_JSON} is absent")
        return [pytest.param("", "standalone", "call_default", [], marks=skip)]
    cases = []
    examples = TOKENIZER_FIXTURE["examples"] + TOKENIZER_FIXTURE["extra_examples"]
    for n, ex in enumerate(examples):
        for column in FLAVOURS:
            for call in CALLS:
                cases.append(
                    pytest.param(
                        ex["text"], column, call, ex[column][call], id=f"{n}-{column}-{call}"
                    )
                )
    return cases


# --------------------------------------------------------------------------- reference fixture


@pytest.mark.parametrize(("text", "column", "call", "expected"), _fixture_cases())
def test_reference_tokenizers_reproduced(text: str, column: str, call: str, expected: list) -> None:
    tok = DNATokenizer.reference(FLAVOURS[column], add_special_tokens=CALLS[call])
    ids = tok(text)
    assert ids.dtype == np.int64
    assert ids.tolist() == expected
    # the same ids from bytes and from a uint8 array (the fixture texts are ASCII)
    assert tok(text.encode()).tolist() == expected
    assert tok(np.frombuffer(text.encode(), dtype=np.uint8)).tolist() == expected


@needs_tokenizer_json
def test_reference_vocab_and_specials() -> None:
    fx = TOKENIZER_FIXTURE
    assert fx["vocab"] == VOCAB and fx["vocab_hf"] == VOCAB
    assert fx["vocab_size_tokenizer"] == VOCAB_SIZE
    for flavour in ("standalone", "hf"):
        specials = fx[f"special_token_ids_{flavour}"]
        assert specials["cls"] == CLS_ID and specials["sep"] == SEP_ID
        assert specials["pad"] == PAD_ID and specials["unk"] == UNK_ID
        assert specials["mask"] == MASK_ID
        assert fx["padding_side"][flavour] == "left"


@needs_tokenizer_json
def test_reference_conventions_match_named_conventions() -> None:
    """The default calls add exactly the specials of the named conventions."""
    for ex in TOKENIZER_FIXTURE["examples"]:
        bare = ex["standalone"]["add_special_tokens_false"]
        assert ex["standalone"]["call_default"] == [CLS_ID, *bare, SEP_ID]
        assert ex["hf"]["call_default"] == [*bare, SEP_ID]
        assert ex["training_hg38_char_tokenizer"]["call_default"] == [*bare, SEP_ID]
        if all(c in "ACGTN" for c in ex["text"]):  # nothing to disagree about: default policy
            for conv, column in (("standalone", "standalone"), ("hf", "hf"), ("none", "hf")):
                key = "add_special_tokens_false" if conv == "none" else "call_default"
                assert encode(ex["text"], convention=conv).tolist() == ex[column][key]


@needs_expected_json
def test_expected_input_a_standalone_convention() -> None:
    a = EXPECTED["inputs"]["a"]
    ids = encode(a["text"], convention="standalone")
    assert ids.tolist() == a["ids"]
    assert encode(a["text"], convention="hf").tolist() == a["ids"][1:]
    assert decode(ids, convention="standalone") == a["text"]


@needs_expected_json
def test_expected_input_b_left_padding() -> None:
    b = EXPECTED["inputs"]["b"]
    batch = encode_batch(b["texts"])
    assert batch.shape == (2, 257)
    assert batch.tolist() == b["ids"]
    assert (batch[1, :17] == PAD_ID).all() and (batch[1, 17:] != PAD_ID).all()


@needs_expected_json
def test_expected_input_c_all_rows() -> None:
    c = np.array(EXPECTED["inputs"]["c"]["ids"])
    assert decode(c[:VOCAB_SIZE]) == "[CLS][SEP][BOS][MASK][PAD][RESERVED][UNK]ACGTN"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        decode(c)  # rows 12-15 are never produced by the tokenizer
    rc = reverse_complement_ids(c)
    assert rc[::-1][:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 10, 9, 8, 7, 11]
    assert rc[::-1][12:16].tolist() == [12, 13, 14, 15]


def test_expected_safetensors_input_ids() -> None:
    if EXPECTED is None or not EXPECTED_ST.is_file():
        pytest.skip(f"reference fixtures {EXPECTED_ST} / {EXPECTED_JSON} are absent")
    st_numpy = pytest.importorskip("safetensors.numpy")
    tensors = st_numpy.load_file(str(EXPECTED_ST))
    a, b = EXPECTED["inputs"]["a"], EXPECTED["inputs"]["b"]
    np.testing.assert_array_equal(
        tensors["input_ids.a"], encode(a["text"], convention="standalone")[None]
    )
    np.testing.assert_array_equal(tensors["input_ids.b"], encode_batch(b["texts"]))
    np.testing.assert_array_equal(tensors["input_ids.c"][0], EXPECTED["inputs"]["c"]["ids"])


# --------------------------------------------------------------------------- reference oracle

_REF_SPECIALS = ["[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[UNK]"]
_REF_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in _REF_SPECIALS) + ")")


def _reference_oracle(text: str, flavour: str, add_special_tokens: bool) -> list[int]:
    """Plain-Python model of the reference slow tokenizers (transformers' added-token split)."""
    pieces = _REF_SPLIT.split(text)  # odd indices are special-token texts
    if flavour != "hf":  # AddedToken("[MASK]", lstrip=True)
        for i in range(1, len(pieces), 2):
            if pieces[i] == "[MASK]":
                pieces[i - 1] = pieces[i - 1].rstrip()
    ids = []
    for i, piece in enumerate(pieces):
        if i % 2:
            ids.append(VOCAB[piece])
        else:
            ids.extend(VOCAB[c] if c in "ACGTN" else UNK_ID for c in piece)
    if add_special_tokens:
        ids = ([CLS_ID] if flavour == "standalone" else []) + ids + [SEP_ID]
    return ids


reference_text = st.lists(
    st.sampled_from(
        list("ACGTNacgtnRYuU []\t\nXé")
        + _REF_SPECIALS
        + ["[RESERVED]", "MASK", "[MAS", "  [MASK]", "\u3000"]
    ),
    max_size=40,
).map("".join)


@given(reference_text, st.sampled_from(["standalone", "hf", "hg38_char_tokenizer"]), st.booleans())
def test_reference_policy_matches_oracle(text: str, flavour: str, add: bool) -> None:
    tok = DNATokenizer.reference(flavour, add_special_tokens=add)
    assert tok(text).tolist() == _reference_oracle(text, flavour, add)


def test_mask_lstrip_only_in_standalone_and_training() -> None:
    text = "AC \t[MASK]G"
    assert DNATokenizer.reference("standalone")(text).tolist() == [0, 7, 8, 3, 9, 1]
    assert DNATokenizer.reference("hg38_char_tokenizer")(text).tolist() == [7, 8, 3, 9, 1]
    assert DNATokenizer.reference("hf")(text).tolist() == [7, 8, 6, 6, 3, 9, 1]


def test_reference_unknown_flavour() -> None:
    with pytest.raises(ValueError, match="unknown reference tokenizer"):
        DNATokenizer.reference("caduceus")


# --------------------------------------------------------------------------- default policy


def _default_oracle(ch: str, softmask: str, iupac: str, unknown: str) -> int | None:
    """Id of one character under a policy, ``None`` when it must raise."""
    up = ch.upper()
    if ch in "ACGTN":
        return VOCAB[ch]
    if up in IUPAC:
        if iupac == "error":
            return None
        if ch.islower() and softmask != "upper":
            return UNK_ID if softmask == "unk" else N_ID
        return N_ID if iupac == "n" else UNK_ID
    if ch in "acgtn":
        return {"upper": VOCAB[up], "unk": UNK_ID, "n": N_ID}[softmask]
    return UNK_ID if unknown == "unk" else None


policy_text = st.text(alphabet="ACGTNacgtn" + IUPAC + IUPAC.lower() + "uU-X *é", max_size=60)


@given(
    policy_text,
    st.sampled_from(["upper", "unk", "n"]),
    st.sampled_from(["n", "unk", "error"]),
    st.sampled_from(["error", "unk"]),
    st.sampled_from(CONVENTIONS),
    st.integers(0, 10**9),
)
def test_policies_match_oracle(
    text: str, softmask: str, iupac: str, unknown: str, conv: str, offset: int
) -> None:
    expected = [_default_oracle(c, softmask, iupac, unknown) for c in text]
    kwargs = dict(convention=conv, softmask=softmask, iupac=iupac, unknown=unknown)
    if None in expected:
        bad = expected.index(None)
        with pytest.raises(InvalidBaseError) as info:
            encode(text, record="chrZ", offset=offset, **kwargs)
        assert info.value.position == offset + bad
        assert info.value.record == "chrZ"
        assert repr(text[bad]) in str(info.value)
    else:
        conv_t = Convention(conv)
        ids = encode(text, **kwargs)
        assert ids.tolist() == [*conv_t.prefix, *expected, *conv_t.suffix]


def test_default_policy_examples() -> None:
    assert encode("ACGTN").tolist() == [7, 8, 9, 10, 11]
    assert encode("acgtn").tolist() == [7, 8, 9, 10, 11]  # soft-mask upper-cased
    assert encode("RYKMSWBDHV").tolist() == [N_ID] * 10
    assert encode("rykmswbdhv").tolist() == [N_ID] * 10
    assert encode("ACGT", convention="standalone").tolist() == [0, 7, 8, 9, 10, 1]
    assert encode("ACGT", convention="hf").tolist() == [7, 8, 9, 10, 1]
    assert encode("", convention="standalone").tolist() == [0, 1]
    assert encode(b"", convention="hf").tolist() == [1]
    assert encode("").shape == (0,)


def test_softmask_policies() -> None:
    assert encode("aCgT", softmask="unk").tolist() == [6, 8, 6, 10]
    assert encode("aCgT", softmask="n").tolist() == [11, 8, 11, 10]
    assert encode("aCgT", softmask="upper").tolist() == [7, 8, 9, 10]
    with pytest.raises(ValueError, match="softmask"):
        encode("ACGT", softmask="lower")  # type: ignore[arg-type]


def test_return_softmask() -> None:
    ids, mask = encode("acGTnA", convention="standalone", return_softmask=True)
    assert ids.tolist() == [0, 7, 8, 9, 10, 11, 7, 1]
    assert mask.dtype == bool and mask.tolist() == [True, True, False, False, True, False]
    _, mask_b = encode(b"acGT", return_softmask=True)
    assert mask_b.tolist() == [True, True, False, False]
    _, mask_u = encode(b"zA{`\xff~", unknown="unk", return_softmask=True)
    assert mask_u.tolist() == [True, False, False, False, False, False]  # a-z only
    tok = DNATokenizer.reference("standalone")
    ids_r, mask_r = tok.encode("a[MASK]C", return_softmask=True)
    assert ids_r.tolist() == [0, 6, 3, 8, 1]
    assert mask_r.tolist() == [True, False, False]  # one entry per non-convention token


def test_strict_mode_raises_on_iupac() -> None:
    assert encode("ACGTNacgtn", strict=True).tolist() == [7, 8, 9, 10, 11] * 2
    for code in IUPAC + IUPAC.lower():
        with pytest.raises(InvalidBaseError, match="strict mode") as info:
            encode("AC" + code, strict=True, record="chr2")
        assert info.value.position == 2
    with pytest.raises(ValueError, match="conflicts"):
        encode("A", strict=True, iupac="n")


def test_invalid_character_message() -> None:
    with pytest.raises(InvalidBaseError) as info:
        encode("ACGXT", record="chr1", offset=1230, path="genome.fa")
    err = info.value
    assert isinstance(err, GenomicsInputError)
    assert str(err).startswith(
        "genome.fa: record 'chr1', position 1233: invalid character 'X' (0x58)"
    )
    assert (err.path, err.record, err.position) == ("genome.fa", "chr1", 1233)
    assert "0-based" in str(err)


@pytest.mark.parametrize(
    ("seq", "shown"),
    [("ACUG", "'U' (0x55)"), ("AC-G", "'-' (0x2D)"), ("AC G", "' ' (0x20)"), ("ACéG", "U+00E9")],
)
def test_invalid_characters_named(seq: str, shown: str) -> None:
    with pytest.raises(InvalidBaseError, match=re.escape(shown)) as info:
        encode(seq, record="r")
    assert info.value.position == 2
    assert encode(seq, unknown="unk").tolist()[2] == UNK_ID


def test_invalid_non_ascii_byte() -> None:
    with pytest.raises(InvalidBaseError, match="byte 0xFF"):
        encode(b"AC\xffG")


def test_first_invalid_position_in_long_input() -> None:
    seq = bytearray(b"ACGT" * 250_000)
    seq[-3] = ord("J")
    seq[-1] = ord("Z")
    with pytest.raises(InvalidBaseError) as info:
        encode(bytes(seq), offset=5)
    assert info.value.position == 5 + len(seq) - 3


def test_input_types() -> None:
    expected = [7, 8, 9, 10]
    assert encode("ACGT").tolist() == expected
    assert encode(b"ACGT").tolist() == expected
    assert encode(bytearray(b"ACGT")).tolist() == expected
    assert encode(np.frombuffer(b"ACGT", dtype=np.uint8)).tolist() == expected
    assert encode(np.array(list(b"ACGT"), dtype=np.int8)).tolist() == expected
    assert encode(np.array(list("ACGT"), dtype="S1")).tolist() == expected
    with pytest.raises(TypeError):
        encode(np.array([65.0, 67.0]))
    with pytest.raises(ValueError, match="1-D"):
        encode(np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(TypeError):
        encode(["A", "C"])  # type: ignore[arg-type]


def test_convention_names_and_aliases() -> None:
    assert encode("A", convention=Convention.STANDALONE).tolist() == [0, 7, 1]
    assert encode("A", convention="cls_sep").tolist() == [0, 7, 1]
    assert encode("A", convention="HF").tolist() == [7, 1]
    assert encode("A", convention=None).tolist() == [7]
    assert [c.n_specials for c in Convention] == [2, 1, 0]
    with pytest.raises(ValueError, match="convention"):
        encode("A", convention="bert")


# --------------------------------------------------------------------------- DNATokenizer


def test_tokenizer_class() -> None:
    tok = DNATokenizer(convention="standalone", strict=True)
    assert tok.convention is Convention.STANDALONE and tok.iupac == "error" and tok.strict
    assert tok("acgt").tolist() == [0, 7, 8, 9, 10, 1]
    assert tok.encode("acgt").tolist() == tok("acgt").tolist()
    assert tok.decode(tok("ACGTN")) == "ACGTN"
    assert tok.n_specials == 2
    with pytest.raises(InvalidBaseError):
        tok("ACR")
    with pytest.raises(dataclasses.FrozenInstanceError):
        tok.softmask = "unk"  # type: ignore[misc]
    assert DNATokenizer(iupac="error").strict
    assert DNATokenizer() == DNATokenizer(convention="none", iupac="n")
    with pytest.raises(ValueError):
        DNATokenizer(unknown="ignore")  # type: ignore[arg-type]


def test_tokenizer_encode_batch_names_records() -> None:
    tok = DNATokenizer(convention="hf")
    batch = tok.encode_batch(["AC", "GGT"], padding_side="right", length=5)
    assert batch.tolist() == [[7, 8, 1, 4, 4], [9, 9, 10, 1, 4]]
    with pytest.raises(InvalidBaseError, match="record 'r2', position 1"):
        tok.encode_batch(["AC", "GX"], records=["r1", "r2"])


# --------------------------------------------------------------------------- padding


def test_pad_ids() -> None:
    rows = [np.array([7, 8, 9]), [10]]
    assert pad_ids(rows).tolist() == [[7, 8, 9], [4, 4, 10]]
    assert pad_ids(rows, side="right").tolist() == [[7, 8, 9], [10, 4, 4]]
    assert pad_ids(rows, length=4, pad_id=0).tolist() == [[0, 7, 8, 9], [0, 0, 0, 10]]
    assert pad_ids([]).shape == (0, 0)
    with pytest.raises(ValueError, match="more than length"):
        pad_ids(rows, length=2)
    with pytest.raises(ValueError):
        pad_ids(rows, side="middle")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- decode


def test_decode_specials_and_errors() -> None:
    assert decode([0, 7, 3, 6, 4, 11, 1]) == "[CLS]A[MASK][UNK][PAD]N[SEP]"
    assert decode(np.array([], dtype=np.int64)) == ""
    assert decode([0, 1], convention="standalone") == ""
    mask = np.array([True, False, True])
    assert decode([7, 6, 11], softmask=mask) == "a[UNK]n"
    with pytest.raises(ValueError, match="special tokens"):
        decode([7, 8, 1], convention="standalone")
    with pytest.raises(ValueError, match="special tokens"):
        decode([7, 8], convention="hf")
    with pytest.raises(ValueError, match="outside"):
        decode([7, 12])
    with pytest.raises(ValueError, match="outside"):
        decode([-1])
    with pytest.raises(ValueError, match="shape"):
        decode([7, 8], softmask=np.array([True]))
    assert all(decode([i]) == ID_TO_TOKEN[i] for i in range(VOCAB_SIZE))


acgtn = st.text(alphabet="ACGTN", max_size=300)
acgtn_cased = st.text(alphabet="ACGTNacgtn", max_size=300)


@given(acgtn, st.sampled_from(CONVENTIONS))
def test_roundtrip_acgtn(seq: str, conv: str) -> None:
    ids = encode(seq, convention=conv)
    assert len(ids) == len(seq) + Convention(conv).n_specials
    assert decode(ids, convention=conv) == seq


@given(acgtn_cased, st.sampled_from(CONVENTIONS))
def test_roundtrip_with_case(seq: str, conv: str) -> None:
    ids, mask = encode(seq, convention=conv, return_softmask=True)
    assert mask.shape == (len(seq),)
    assert decode(ids, convention=conv, softmask=mask) == seq
    assert decode(ids, convention=conv) == seq.upper()
    assert ids.tolist() == encode(seq.upper(), convention=conv).tolist()


# --------------------------------------------------------------------------- reverse complement


iupac_no_u = st.text(alphabet="ACGTN" + IUPAC + "acgtn" + IUPAC.lower(), max_size=200)


@given(iupac_no_u, st.sampled_from(CONVENTIONS), st.sampled_from(["upper", "unk", "n"]))
def test_rc_commutes_with_tokenization(seq: str, conv: str, softmask: str) -> None:
    ids = encode(seq, convention=conv, softmask=softmask)
    rc_ids = reverse_complement_ids(ids, convention=conv)
    assert (
        rc_ids.tolist()
        == encode(reverse_complement(seq), convention=conv, softmask=softmask).tolist()
    )
    assert reverse_complement_ids(rc_ids, convention=conv).tolist() == ids.tolist()


def test_rc_ids_examples_and_batches() -> None:
    ids = encode("AACGTN", convention="standalone")
    assert reverse_complement_ids(ids, convention="standalone").tolist() == [
        0,
        11,
        7,
        8,
        9,
        10,
        10,
        1,
    ]
    batch = np.array([[7, 7, 8, 1], [9, 10, 6, 1]])
    assert reverse_complement_ids(batch, convention="hf").tolist() == [[9, 10, 10, 1], [6, 7, 8, 1]]
    assert reverse_complement_ids(batch).tolist() == [[1, 9, 10, 10], [1, 6, 7, 8]]
    with pytest.raises(ValueError, match="outside"):
        reverse_complement_ids([7, 16])
    with pytest.raises(ValueError, match="cannot carry"):
        reverse_complement_ids([1], convention="standalone")
