"""FastaFile: plain/gzip/BGZF detection, pyfaidx random access, streaming, and bad input."""

from __future__ import annotations

import gzip
import os
import random
import shutil
import warnings
from pathlib import Path

import pyfaidx
import pytest
from Bio import bgzf
from Bio.SeqIO.FastaIO import SimpleFastaParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnastream.genomics import fasta as fasta_mod
from dnastream.genomics.errors import FastaFormatError, IntervalError
from dnastream.genomics.fasta import (
    FastaFile,
    FastaNotFoundError,
    RecordInfo,
    StreamingAccessWarning,
    detect_compression,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TEST_DATA = REPO_ROOT / "tests" / "data"
HG38 = "hg38_chr2_1-2333275.fa.gz"
ECOLI = "ecoli_K12_W3110_NC_007779.1.fasta.gz"
YEAST = "sacCer_S288C_R64_chrI-XVI.fa.gz"
SLICE = TEST_DATA / "ecoli_K12_W3110_first200kb.fa.gz"


def shared_genome(name: str) -> Path:
    """A genome under ``../shared/data/genomes``; skip if the shared folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (real genomes needed)")
    return SHARED_DATA / "genomes" / name


def write_fasta(
    path: Path,
    records: list[tuple[str, bytes]],
    *,
    width: int = 60,
    compression: str = "plain",
    newline: bytes = b"\n",
) -> Path:
    """Write ``records`` as FASTA with ``width``-base lines, plain / gzip / BGZF."""
    parts = []
    for name, seq in records:
        parts.append(b">" + name.encode() + newline)
        parts += [seq[i : i + width] + newline for i in range(0, len(seq), width)]
    write_bytes(path, b"".join(parts), compression)
    return path


def write_bytes(path: Path, text: bytes, compression: str = "plain") -> Path:
    if compression == "gzip":
        path.write_bytes(gzip.compress(text))
    elif compression == "bgzf":
        with bgzf.BgzfWriter(str(path), "wb") as fh:
            fh.write(text)
    else:
        path.write_bytes(text)
    return path


@pytest.fixture(scope="module", autouse=True)
def shared_untouched():
    """Nothing may be written into ../shared (we may run as root, so permissions won't stop it)."""
    folder = SHARED_DATA / "genomes"
    before = sorted(os.listdir(folder)) if folder.is_dir() else None
    yield
    if before is not None:
        assert sorted(os.listdir(folder)) == before


@pytest.fixture(scope="module")
def hg38() -> FastaFile:
    # build_index=False: the shipped .fai/.gzi must be reused, never rebuilt in ../shared.
    with FastaFile(shared_genome(HG38), build_index=False) as fa:
        yield fa


@pytest.fixture(scope="module")
def ecoli_seq() -> bytes:
    """E. coli genome decompressed directly with gzip (independent of dnastream)."""
    lines = gzip.decompress(shared_genome(ECOLI).read_bytes()).split(b"\n")
    assert lines[0].startswith(b">NC_007779.1 ")
    return b"".join(lines[1:])


# --------------------------------------------------------------------------- formats


def test_detect_compression(tmp_path: Path) -> None:
    assert detect_compression(shared_genome(HG38)) == "bgzf"
    assert detect_compression(shared_genome(ECOLI)) == "gzip"
    assert detect_compression(SLICE) == "bgzf"
    recs = [("a", b"ACGT")]
    assert detect_compression(write_fasta(tmp_path / "p.fa", recs)) == "plain"
    assert detect_compression(write_fasta(tmp_path / "g.fa", recs, compression="gzip")) == "gzip"
    # the name does not matter, the BGZF header does
    assert detect_compression(write_fasta(tmp_path / "b.gz", recs, compression="bgzf")) == "bgzf"


def test_hg38_random_regions_match_pyfaidx(hg38: FastaFile) -> None:
    assert hg38.compression == "bgzf" and hg38.random_access
    assert hg38.index_source == "existing"
    assert hg38.records() == [RecordInfo("chr2", 2_333_275)]
    ref = pyfaidx.Fasta(str(hg38.path), build_index=False, rebuild=False, as_raw=True)["chr2"]
    rng = random.Random(1)
    length = 2_333_275
    regions = [(0, 10_010), (9_990, 10_010), (length - 5_000, length), (0, length)]
    for _ in range(40):
        start = rng.randrange(length - 1)
        regions.append((start, min(length, start + rng.randrange(1, 300_000))))
    for start, end in regions:
        got = hg38.fetch("chr2", start, end)
        assert isinstance(got, bytes) and len(got) == end - start
        assert got == ref[start:end].encode(), (start, end)
    head = hg38.fetch("chr2", 9_995, 10_010)
    assert head == b"NNNNNCGTATcccac"  # telomere gap, then soft-masked (lowercase) repeat kept
    assert sum(c.islower() for c in hg38.fetch("chr2", 0, length).decode()) == 831_507


def test_hg38_iter_chunks_tile_region(hg38: FastaFile) -> None:
    start, end = 123_457, 654_321
    chunks = list(hg38.iter_chunks("chr2", 100_000, start, end))
    assert [lo for lo, _ in chunks] == list(range(start, end, 100_000))
    assert all(len(c) == 100_000 for _, c in chunks[:-1])
    assert b"".join(c for _, c in chunks) == hg38.fetch("chr2", start, end)


def test_ecoli_plain_gzip_streams(ecoli_seq: bytes) -> None:
    with FastaFile(shared_genome(ECOLI)) as fa:
        assert fa.compression == "gzip" and not fa.random_access and fa.index_source is None
        assert fa.records() == [RecordInfo("NC_007779.1", 4_646_332)]
        assert len(ecoli_seq) == 4_646_332
        chunks = list(fa.iter_chunks("NC_007779.1", 1_000_003, start=17, end=4_000_000))
        assert [lo for lo, _ in chunks] == list(range(17, 4_000_000, 1_000_003))
        assert b"".join(c for _, c in chunks) == ecoli_seq[17:4_000_000]
        whole = [(n, lo, len(c)) for n, lo, c in fa.iter_record_chunks(1 << 20)]
        assert sum(n_ for *_, n_ in whole) == 4_646_332


def test_fetch_on_plain_gzip_warns_with_bgzip_hint(ecoli_seq: bytes) -> None:
    fa = FastaFile(shared_genome(ECOLI))
    with pytest.warns(StreamingAccessWarning, match=r"bgzip") as record:
        got = fa.fetch("NC_007779.1", 4_646_000, 4_646_332)
    assert got == ecoli_seq[4_646_000:]
    message = str(record[0].message)
    assert str(fa.path) in message and "gunzip -c" in message and "faidx" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file, not on every call
        assert fa.fetch("NC_007779.1", 0, 10) == ecoli_seq[:10]


def test_yeast_multi_record_streaming_matches_biopython() -> None:
    path = shared_genome(YEAST)
    with gzip.open(path, "rt") as fh:
        expected = {title.split()[0]: seq.encode() for title, seq in SimpleFastaParser(fh)}
    with FastaFile(path) as fa:
        lengths = fa.lengths()
        assert list(lengths) == list(expected) and len(lengths) == 16
        assert lengths["chrIV"] == 1_531_933 and sum(lengths.values()) == 12_071_326
        got: dict[str, list[bytes]] = {}
        for name, lo, chunk in fa.iter_record_chunks(500_000):
            assert lo == sum(len(c) for c in got.get(name, []))
            got.setdefault(name, []).append(chunk)
        assert {n: b"".join(c) for n, c in got.items()} == expected
        only = [n for n, _, _ in fa.iter_record_chunks(1 << 20, names=["chrXVI", "chrII"])]
        assert sorted(set(only)) == ["chrII", "chrXVI"] and only[0] == "chrII"  # file order
        assert (
            b"".join(c for _, c in fa.iter_chunks("chrIII", 4096, 1000, 9000))
            == (expected["chrIII"][1000:9000])
        )


def test_shipped_ecoli_slice_equals_shared_genome(ecoli_seq: bytes, tmp_path: Path) -> None:
    text = gzip.decompress(SLICE.read_bytes())
    assert text.split(b"\n", 1)[0] == (
        b">NC_007779.1 Escherichia coli str. K-12 substr. W3110, complete sequence"
    )
    with FastaFile(SLICE) as fa:
        assert fa.compression == "bgzf" and fa.random_access
        assert fa.lengths() == {"NC_007779.1": 200_000}
        assert fa.fetch("NC_007779.1", 0, 200_000) == ecoli_seq[:200_000]
        assert fa.fetch("NC_007779.1", 123_456, 123_999) == ecoli_seq[123_456:123_999]
    # the shipped .fai/.gzi are what pyfaidx builds from the shipped file
    copy = tmp_path / SLICE.name
    shutil.copy(SLICE, copy)
    with FastaFile(copy) as fa:
        assert fa.index_source == "built"
    for ext in (".fai", ".gzi"):
        assert Path(f"{copy}{ext}").read_bytes() == Path(f"{SLICE}{ext}").read_bytes()


# --------------------------------------------------------------------------- indexing modes


@pytest.mark.parametrize(("name", "compression"), [("x.fa", "bgzf"), ("x.fa.gz", "plain")])
def test_misnamed_files_are_indexed_by_content(tmp_path: Path, name: str, compression: str):
    seq = bytes(random.Random(3).choices(b"ACGT", k=5_000))
    path = write_fasta(tmp_path / name, [("s", seq)], width=61, compression=compression)
    with FastaFile(path) as fa:
        assert fa.compression == compression and fa.index_source == "built"
        assert fa.fetch("s", 1_234, 4_321) == seq[1_234:4_321]
    with FastaFile(path) as fa:
        assert fa.index_source == "existing" and fa.fetch("s", 0, 5_000) == seq


def test_plain_fasta_index_built_then_reused(tmp_path: Path) -> None:
    path = write_fasta(tmp_path / "x.fa", [("r1", b"ACGTacgtNN" * 7), ("r2", b"GGCC" * 3)], width=9)
    with FastaFile(path) as fa:
        assert fa.index_source == "built" and fa.random_access
        assert Path(f"{path}.fai").exists()
        assert fa.fetch("r1", 5, 25) == (b"ACGTacgtNN" * 7)[5:25]
    with FastaFile(path) as fa:
        assert fa.index_source == "existing"
        assert fa.lengths() == {"r1": 70, "r2": 12}


def test_bgzf_without_index_gets_fai_and_gzi(tmp_path: Path) -> None:
    seq = bytes(random.Random(2).choices(b"ACGTacgtN", k=150_000))
    path = write_fasta(tmp_path / "x.fa.gz", [("s", seq)], width=70, compression="bgzf")
    with FastaFile(path) as fa:
        assert fa.compression == "bgzf" and fa.index_source == "built"
        assert Path(f"{path}.fai").exists() and Path(f"{path}.gzi").exists()
        assert fa.fetch("s", 65_530, 131_080) == seq[65_530:131_080]  # crosses BGZF blocks


def test_read_only_folder_builds_index_in_memory(tmp_path: Path, monkeypatch) -> None:
    path = write_fasta(tmp_path / "x.fa.gz", [("s", b"ACGT" * 500)], compression="bgzf")
    monkeypatch.setattr(fasta_mod, "_dir_is_writable", lambda folder: False)
    with FastaFile(path) as fa:
        assert fa.index_source == "memory" and fa.random_access
        assert fa.fetch("s", 10, 20) == (b"ACGT" * 500)[10:20]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fa.gz"]  # nothing written


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions"
)
def test_really_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = write_fasta(folder / "x.fa", [("s", b"ACGT" * 50)])
    folder.chmod(0o555)
    try:
        with FastaFile(path) as fa:
            assert fa.index_source == "memory" and fa.fetch("s", 0, 8) == b"ACGTACGT"
    finally:
        folder.chmod(0o755)


def test_build_index_false_streams_unindexed_file(tmp_path: Path) -> None:
    path = write_fasta(tmp_path / "x.fa", [("s", b"ACGT" * 50)])
    with FastaFile(path, build_index=False) as fa:
        assert not fa.random_access and not Path(f"{path}.fai").exists()
        with pytest.warns(StreamingAccessWarning, match="samtools faidx"):
            assert fa.fetch("s", 2, 6) == b"GTAC"


def test_stale_index_is_rebuilt(tmp_path: Path) -> None:
    path = write_fasta(tmp_path / "x.fa", [("s", b"ACGT" * 50)])
    FastaFile(path).close()
    write_fasta(path, [("t", b"GG" * 30)])
    fai = Path(f"{path}.fai")
    os.utime(fai, (path.stat().st_mtime - 10, path.stat().st_mtime - 10))
    with FastaFile(path) as fa:
        assert fa.index_source == "built" and fa.lengths() == {"t": 60}


# --------------------------------------------------------------------------- streaming parser

_names = st.text(alphabet="abcXYZ019_.|", min_size=1, max_size=8)
_seqs = st.binary(min_size=1, max_size=300).map(lambda b: bytes(b"ACGTNacgtn"[x % 10] for x in b))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(st.tuples(_names, _seqs), min_size=1, max_size=5, unique_by=lambda r: r[0]),
    width=st.integers(1, 80),
    block_size=st.integers(1, 64),
    compression=st.sampled_from(["plain", "gzip"]),
    crlf=st.booleans(),
    description=st.booleans(),
)
def test_streaming_parser_property(
    tmp_path_factory, records, width, block_size, compression, crlf, description
) -> None:
    """Any block size (headers split across blocks), line width, CRLF: exact records back."""
    folder = tmp_path_factory.mktemp("prop")
    newline = b"\r\n" if crlf else b"\n"
    named = [(n + (" some text >x" if description else ""), s) for n, s in records]
    path = write_fasta(
        folder / "x.fa", named, width=width, compression=compression, newline=newline
    )
    with FastaFile(path, build_index=False, block_size=block_size) as fa:
        assert fa.records() == [RecordInfo(n, len(s)) for n, s in records]
        for name, seq in records:
            chunks = list(fa.iter_chunks(name, 7))
            assert b"".join(c for _, c in chunks) == seq
            assert [lo for lo, _ in chunks] == list(range(0, len(seq), 7))


def test_blank_lines_are_tolerated_when_streaming(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "x.fa.gz", b"\n\n>a\nAC\n\nGT\n>b\nT\n\n", "gzip")
    with FastaFile(path) as fa:
        assert fa.lengths() == {"a": 4, "b": 1}
        assert b"".join(c for _, c in fa.iter_chunks("a", 10)) == b"ACGT"


def test_gt_inside_a_line_is_sequence_for_any_block_size(tmp_path: Path) -> None:
    """Only a '>' at the start of a line opens a record, even right after a block boundary."""
    path = write_bytes(tmp_path / "x.fa.gz", b">a\nAC>GT\n>b\nT\n", "gzip")
    for block_size in range(1, 20):
        with FastaFile(path, block_size=block_size) as fa:
            assert fa.lengths() == {"a": 5, "b": 1}, block_size
            assert b"".join(c for _, c in fa.iter_chunks("a", 3)) == b"AC>GT"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("compression", ["plain", "gzip", "bgzf"])
def test_no_header(tmp_path: Path, compression: str) -> None:
    path = write_bytes(tmp_path / "x.fa", b"\n\nACGT\n>a\nACGT\n", compression)
    with pytest.raises(FastaFormatError, match=r"line 3: sequence text before the first header"):
        FastaFile(path).records()
    with pytest.raises(FastaFormatError) as err:
        FastaFile(path).records()
    assert str(path) in str(err.value) and err.value.line == 3
    assert not Path(f"{path}.fai").exists()


@pytest.mark.parametrize("compression", ["plain", "gzip", "bgzf"])
@pytest.mark.parametrize(
    ("text", "record", "line"),
    [(b">a\nACGT\n>b\n>c\nAC\n", "b", 3), (b">a\nAC\n>b x y\n", "b", 3), (b">a", "a", 1)],
)
def test_empty_record(tmp_path: Path, compression: str, text: bytes, record: str, line: int):
    path = write_bytes(tmp_path / "x.fa", text, compression)
    with pytest.raises(FastaFormatError, match="empty record") as err:
        FastaFile(path).records()
    assert (err.value.record, err.value.line) == (record, line)
    assert str(path) in str(err.value) and f"record '{record}', line {line}" in str(err.value)
    assert not Path(f"{path}.fai").exists()  # no index left behind for a rejected file


@pytest.mark.parametrize("compression", ["plain", "gzip", "bgzf"])
def test_duplicate_ids(tmp_path: Path, compression: str) -> None:
    path = write_bytes(tmp_path / "x.fa", b">a x\nAC\n>b\nAC\n>a y\nGG\n", compression)
    with pytest.raises(FastaFormatError, match="duplicate record id") as err:
        FastaFile(path).records()
    assert (err.value.record, err.value.line) == ("a", 5)
    assert "first defined at line 1" in str(err.value) and str(path) in str(err.value)
    assert not Path(f"{path}.fai").exists()


def test_header_without_id_and_empty_file(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "x.fa.gz", b">a\nAC\n>  \nACGT\n", "gzip")
    with pytest.raises(FastaFormatError, match="line 3: header line with no record id"):
        FastaFile(path).records()
    empty = write_bytes(tmp_path / "e.fa", b"")
    with pytest.raises(FastaFormatError, match="empty file"):
        FastaFile(empty)
    blank = write_bytes(tmp_path / "b.fa.gz", b"\n\n", "gzip")
    with pytest.raises(FastaFormatError, match="no FASTA record"):
        FastaFile(blank).records()


def test_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.fa.gz"
    with pytest.raises(FastaNotFoundError, match="file not found") as err:
        FastaFile(missing)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, FastaFormatError)
    assert str(missing) in str(err.value)


def test_truncated_plain_gzip(tmp_path: Path) -> None:
    data = shared_genome(ECOLI).read_bytes()
    cut = write_bytes(tmp_path / "cut.fasta.gz", data[: len(data) // 2])
    fa = FastaFile(cut)  # opening is cheap; the first pass finds the damage
    with pytest.raises(FastaFormatError, match="truncated or corrupt") as err:
        fa.records()
    assert str(cut) in str(err.value) and err.value.record == "NC_007779.1"
    assert err.value.line is not None and err.value.line > 1000
    with pytest.raises(FastaFormatError, match="truncated"):
        next(fa.iter_chunks("NC_007779.1", 1000))  # no data before the file is validated


def test_corrupt_gzip(tmp_path: Path) -> None:
    data = bytearray(shared_genome(ECOLI).read_bytes())
    data[700_000:700_064] = bytes(64)
    bad = write_bytes(tmp_path / "bad.fasta.gz", bytes(data))
    with pytest.raises(FastaFormatError, match="truncated or corrupt") as err:
        FastaFile(bad).records()
    assert str(bad) in str(err.value)


def test_truncated_bgzf(tmp_path: Path) -> None:
    src = shared_genome(HG38)
    data = src.read_bytes()
    cut = write_bytes(tmp_path / "cut.fa.gz", data[: len(data) // 2])
    for ext in (".fai", ".gzi"):  # even with the original's index next to it
        shutil.copy(f"{src}{ext}", f"{cut}{ext}")
    with pytest.raises(FastaFormatError, match="no end-of-file marker") as err:
        FastaFile(cut)
    assert str(cut) in str(err.value)


def test_corrupt_bgzf_block_with_valid_index(tmp_path: Path) -> None:
    src = shared_genome(HG38)
    data = bytearray(src.read_bytes())
    data[400_000:400_100] = bytes(100)
    bad = write_bytes(tmp_path / "bad.fa.gz", bytes(data))
    for ext in (".fai", ".gzi"):
        shutil.copy(f"{src}{ext}", f"{bad}{ext}")
        later = bad.stat().st_mtime + 10
        os.utime(f"{bad}{ext}", (later, later))
    with FastaFile(bad) as fa:
        assert fa.index_source == "existing"
        assert fa.fetch("chr2", 0, 20_000)[:10] == b"N" * 10  # blocks before the damage
        with pytest.raises(FastaFormatError, match="cannot read bases") as err:
            for _ in fa.iter_chunks("chr2", 100_000):
                pass
        assert str(bad) in str(err.value) and err.value.record == "chr2"


def test_file_shorter_than_its_index(tmp_path: Path) -> None:
    path = write_fasta(tmp_path / "x.fa", [("s", b"ACGT" * 100)], width=50)
    FastaFile(path).close()
    path.write_bytes(path.read_bytes()[:200])
    later = path.stat().st_mtime + 10
    os.utime(f"{path}.fai", (later, later))
    with FastaFile(path) as fa:
        assert fa.index_source == "existing"
        assert fa.fetch("s", 0, 100) == (b"ACGT" * 100)[:100]
        with pytest.raises(FastaFormatError, match="truncated or does not match its index"):
            fa.fetch("s", 100, 400)


def test_irregular_lines_cannot_be_indexed_but_stream(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "x.fa", b">a\nACGT\nAC\nACGT\n")
    with pytest.raises(FastaFormatError, match="pyfaidx cannot index") as err:
        FastaFile(path)
    assert "build_index=False" in str(err.value) and str(path) in str(err.value)
    assert not Path(f"{path}.fai").exists()
    with FastaFile(path, build_index=False) as fa:
        assert b"".join(c for _, c in fa.iter_chunks("a", 100)) == b"ACGTACACGT"


@pytest.mark.filterwarnings("ignore::dnastream.genomics.fasta.StreamingAccessWarning")
@pytest.mark.parametrize("indexed", [True, False])
def test_region_errors_name_file_and_record(tmp_path: Path, indexed: bool) -> None:
    path = write_fasta(tmp_path / "x.fa.gz", [("a", b"ACGT" * 10)], compression="gzip")
    if indexed:
        path = write_fasta(tmp_path / "x.fa", [("a", b"ACGT" * 10)])
    with FastaFile(path) as fa:
        assert fa.random_access is indexed
        cases = [
            (("zz", 0, 4), "record 'zz'.*no such record.*Records are: a"),
            (("a", 0, 41), "record 'a', position 41: region end 41 is past the record length 40"),
            (("a", 5, 5), "empty or negative region"),
            (("a", -1, 5), "empty or negative region"),
        ]
        for args, pattern in cases:
            with pytest.raises(IntervalError, match=pattern) as err:
                fa.fetch(*args)
            assert str(path) in str(err.value)
            with pytest.raises(IntervalError, match=pattern):
                next(fa.iter_chunks(args[0], 10, args[1], args[2]))
        assert fa.fetch("a", 36, 40) == b"ACGT"
