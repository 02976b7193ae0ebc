"""Windows: exact tiling, last-window policies, both strands, indexed and streamed files."""

from __future__ import annotations

import dataclasses
import gzip
import random
import tracemalloc
from pathlib import Path

import pyfaidx
import pytest
from Bio import bgzf
from Bio.Seq import Seq
from Bio.SeqIO.FastaIO import SimpleFastaParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnastream.genomics.errors import FastaFormatError, IntervalError
from dnastream.genomics.fasta import FastaFile
from dnastream.genomics.windows import (
    Window,
    count_windows,
    iter_genome_windows,
    iter_windows,
    plan_windows,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SLICE = REPO_ROOT / "tests" / "data" / "ecoli_K12_W3110_first200kb.fa.gz"


def shared_genome(name: str) -> Path:
    """A genome under ``../shared/data/genomes``; skip if the shared folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (real genomes needed)")
    return SHARED_DATA / "genomes" / name


def revcomp(seq: bytes) -> bytes:
    """Reverse complement through Biopython (independent of dnastream.sequence)."""
    return str(Seq(seq.decode()).reverse_complement()).encode()


def write_fasta(path: Path, records: list[tuple[str, bytes]], width: int, compression: str):
    text = b"".join(
        b">"
        + n.encode()
        + b"\n"
        + b"".join(s[i : i + width] + b"\n" for i in range(0, len(s), width))
        for n, s in records
    )
    if compression == "gzip":
        path.write_bytes(gzip.compress(text))
    elif compression == "bgzf":
        with bgzf.BgzfWriter(str(path), "wb") as fh:
            fh.write(text)
    else:
        path.write_bytes(text)
    return path


def expected_windows(seq: bytes, size: int, stride: int, last: str) -> list[tuple[int, int, int]]:
    """Reference (start, end, pad) on the + strand, by a plain loop over the region."""
    out, s = [], 0
    while s + size <= len(seq):
        out.append((s, s + size, 0))
        s += stride
    reached = out[-1][1] if out else 0
    if reached < len(seq) and s < len(seq):
        out.append((s, len(seq), size - (len(seq) - s) if last == "pad" else 0))
    return out


def check_windows(windows: list[Window], seq: bytes, offset: int, size, stride, strand, last):
    """Compare windows of the region ``seq`` (starting at ``offset``) with the reference."""
    ref = expected_windows(seq if strand == "+" else revcomp(seq), size, stride, last)
    assert len(windows) == len(ref)
    n = len(seq)
    for i, (w, (s, e, pad)) in enumerate(zip(windows, ref, strict=True)):
        assert w.index == i and w.strand == strand and w.pad == pad
        if strand == "+":
            assert (w.start, w.end) == (offset + s, offset + e)
            assert w.seq == seq[s:e]
        else:  # 5'->3' on the - strand: from the region's end, + strand coordinates
            assert (w.start, w.end) == (offset + n - e, offset + n - s)
            assert w.seq == revcomp(seq[n - e : n - s])
        assert len(w.seq) == w.end - w.start and w.size == len(w.seq) + w.pad


# --------------------------------------------------------------------------- planning


def test_plan_windows_examples() -> None:
    assert plan_windows(10, 4).n_full == 2 and plan_windows(10, 4).tail == 2
    assert plan_windows(12, 4).tail == 0 and plan_windows(12, 4).n_windows == 3
    assert plan_windows(3, 4).n_windows == 1 and plan_windows(3, 4).tail == 3
    p = plan_windows(10, 8, 2)  # (0,8), (2,10): covered, no tail
    assert (p.n_full, p.tail) == (2, 0) and p.starts().tolist() == [0, 2]
    p = plan_windows(11, 8, 2)  # (0,8), (2,10), then (4,11) short
    assert (p.n_full, p.tail) == (2, 7) and p.starts().tolist() == [0, 2, 4]
    p = plan_windows(20, 3, 5)  # gaps by design: 0,5,10,15 full, nothing after 18
    assert (p.n_full, p.tail) == (4, 0)
    assert count_windows(10, size=4, last="short") == 3
    with pytest.raises(ValueError, match="do not tile"):
        count_windows(10, size=4, last="error")
    with pytest.raises(ValueError, match="size and stride"):
        plan_windows(10, 0)


# --------------------------------------------------------------------------- properties

_bases = st.binary(min_size=1, max_size=400).map(
    lambda b: bytes(b"ACGTNacgtnRY"[x % 12] for x in b)
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seq=_bases,
    size=st.integers(1, 70),
    stride_frac=st.floats(0.05, 1.5),
    last=st.sampled_from(["pad", "short"]),
    strand=st.sampled_from(["+", "-"]),
    compression=st.sampled_from(["plain", "gzip", "bgzf"]),
    width=st.integers(1, 90),
    chunk_size=st.integers(1, 50),
    region=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_windows_match_reference(
    tmp_path_factory, seq, size, stride_frac, last, strand, compression, width, chunk_size, region
):
    stride = max(1, round(size * stride_frac))
    a, b = sorted(round(x * len(seq)) for x in region)
    start, end = (a, b) if b > a else (0, len(seq))
    folder = tmp_path_factory.mktemp("win")
    path = write_fasta(folder / "x.fa", [("other", b"AC"), ("r", seq)], width, compression)
    with FastaFile(path) as fa:
        windows = list(
            iter_windows(
                fa, "r", size=size, stride=stride, start=start, end=end,
                strand=strand, last=last, chunk_size=chunk_size,
            )
        )  # fmt: skip
    check_windows(windows, seq[start:end], start, size, stride, strand, last)
    assert len(windows) == count_windows(end - start, size=size, stride=stride, last=last)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=_bases, size=st.integers(1, 50), strand=st.sampled_from(["+", "-"]))
def test_non_overlapping_windows_concatenate_to_record(tmp_path_factory, seq, size, strand):
    path = write_fasta(tmp_path_factory.mktemp("cat") / "x.fa.gz", [("r", seq)], 60, "gzip")
    windows = list(iter_windows(path, "r", size=size, strand=strand, last="short"))
    joined = b"".join(w.seq for w in windows)
    assert joined == (seq if strand == "+" else revcomp(seq))
    assert all(w.size == size for w in windows[:-1]) and 1 <= windows[-1].size <= size
    assert [w.start for w in windows] == sorted((w.start for w in windows), reverse=strand == "-")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seq=_bases, size=st.integers(1, 40), stride=st.integers(1, 40))
def test_overlapping_starts_are_multiples_of_stride(tmp_path_factory, seq, size, stride):
    stride = min(stride, size)
    path = write_fasta(tmp_path_factory.mktemp("ov") / "x.fa", [("r", seq)], 50, "plain")
    windows = list(iter_windows(path, "r", size=size, stride=stride, last="pad"))
    assert [w.start for w in windows] == [i * stride for i in range(len(windows))]
    covered = set()
    for w in windows:
        covered.update(range(w.start, w.end))
        assert w.pad == size - len(w.seq)
    assert covered == set(range(len(seq)))  # every base in some window: nothing dropped


# --------------------------------------------------------------------------- last policies


def test_last_window_policies(tmp_path: Path) -> None:
    seq = b"ACGTACGTAC"  # 10 bases, windows of 4
    path = write_fasta(tmp_path / "x.fa", [("r", seq)], 60, "plain")
    pad = list(iter_windows(path, "r", size=4, last="pad"))
    assert [(w.start, w.end, w.seq, w.pad) for w in pad] == [
        (0, 4, b"ACGT", 0),
        (4, 8, b"ACGT", 0),
        (8, 10, b"AC", 2),
    ]
    short = list(iter_windows(path, "r", size=4, last="short"))
    assert [(w.seq, w.pad) for w in short] == [(b"ACGT", 0), (b"ACGT", 0), (b"AC", 0)]
    minus = list(iter_windows(path, "r", size=4, strand="-"))
    assert [(w.start, w.end, w.seq, w.pad) for w in minus] == [
        (6, 10, b"GTAC", 0),
        (2, 6, b"GTAC", 0),
        (0, 2, b"GT", 2),
    ]
    assert len(list(iter_windows(path, "r", size=5, last="error"))) == 2
    gaps = list(iter_windows(path, "r", size=2, stride=5))  # stride > size: gaps by design
    assert [(w.start, w.end, w.pad) for w in gaps] == [(0, 2, 0), (5, 7, 0)]  # no empty tail
    gaps = list(iter_windows(path, "r", size=3, stride=4, strand="-"))
    assert [(w.start, w.end, w.pad) for w in gaps] == [(7, 10, 0), (3, 6, 0), (0, 2, 1)]
    with pytest.raises(IntervalError, match="does not tile") as err:
        next(iter_windows(path, "r", size=4, last="error"))
    assert str(path) in str(err.value) and "record 'r'" in str(err.value)


def test_genome_windows_error_policy_fails_before_yielding(tmp_path: Path) -> None:
    path = write_fasta(tmp_path / "x.fa.gz", [("a", b"ACGT" * 4), ("b", b"ACG")], 60, "gzip")
    with pytest.raises(IntervalError, match="record 'b'.*last window would hold 3 bases"):
        next(iter_genome_windows(path, size=4, last="error"))


def test_window_is_frozen_and_arguments_checked(tmp_path: Path) -> None:
    path = write_fasta(tmp_path / "x.fa", [("r", b"ACGT")], 60, "plain")
    w = next(iter_windows(path, "r", size=2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.start = 1  # type: ignore[misc]
    for kwargs, pattern in [
        ({"size": 0}, "size and stride"),
        ({"size": 2, "stride": 0}, "size and stride"),
        ({"size": 2, "strand": "x"}, "strand"),
        ({"size": 2, "last": "drop"}, "last must be"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            next(iter_windows(path, "r", **kwargs))
    with pytest.raises(IntervalError, match="past the record length"):
        next(iter_windows(path, "r", size=2, end=5))
    with pytest.raises(IntervalError, match="no such record"):
        next(iter_windows(path, "q", size=2))


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def hg38() -> FastaFile:
    with FastaFile(shared_genome("hg38_chr2_1-2333275.fa.gz"), build_index=False) as fa:
        yield fa


@pytest.mark.parametrize("strand", ["+", "-"])
def test_hg38_windows_match_pyfaidx(hg38: FastaFile, strand: str) -> None:
    ref = pyfaidx.Fasta(str(hg38.path), build_index=False, rebuild=False, as_raw=True)["chr2"]
    rng = random.Random(7 if strand == "+" else 8)
    for _ in range(6):
        start = rng.randrange(2_333_275 - 200_000)
        end = start + rng.randrange(1, 200_000)
        size = rng.choice([1_000, 4_096, 32_768])
        stride = rng.choice([size, size // 2, size - 1])
        last = rng.choice(["pad", "short"])
        windows = list(
            iter_windows(
                hg38, "chr2", size=size, stride=stride, start=start, end=end,
                strand=strand, last=last, chunk_size=50_000,
            )
        )  # fmt: skip
        for w in windows:  # each window against an independent pyfaidx slice (+ Bio revcomp)
            plus = ref[w.start : w.end].encode()
            assert w.seq == (plus if strand == "+" else revcomp(plus))
        check_windows(windows, ref[start:end].encode(), start, size, stride, strand, last)
    minus = list(iter_windows(hg38, "chr2", size=5, start=9_995, end=10_010, strand="-"))
    # + strand NNNNN CGTAT cccac: the - strand reads from the end, case kept, complemented
    assert [w.seq for w in minus] == [b"gtggg", b"ATACG", b"NNNNN"]


@pytest.fixture(scope="module")
def ecoli() -> tuple[Path, bytes]:
    path = shared_genome("ecoli_K12_W3110_NC_007779.1.fasta.gz")
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    return path, b"".join(lines[1:])


@pytest.mark.parametrize("strand", ["+", "-"])
def test_ecoli_streamed_windows_match_decompression(ecoli, strand: str) -> None:
    path, seq = ecoli
    with FastaFile(path) as fa:
        assert not fa.random_access
        windows = list(
            iter_windows(
                fa, "NC_007779.1", size=65_536, stride=50_000, strand=strand,
                chunk_size=300_001,
            )
        )  # fmt: skip
        check_windows(windows, seq, 0, 65_536, 50_000, strand, "pad")
        region = list(
            iter_windows(fa, "NC_007779.1", size=1000, start=4_000_123, end=4_010_000,
                         strand=strand, last="short")
        )  # fmt: skip
        check_windows(region, seq[4_000_123:4_010_000], 4_000_123, 1000, 1000, strand, "short")


def test_shipped_slice_indexed_equals_streamed(ecoli) -> None:
    path, seq = ecoli
    with FastaFile(SLICE) as indexed, FastaFile(SLICE, build_index=False) as streamed:
        assert indexed.random_access
        for strand in ("+", "-"):
            a = list(iter_windows(indexed, "NC_007779.1", size=3000, stride=2500, strand=strand))
            b = list(iter_windows(path, "NC_007779.1", size=3000, stride=2500, strand=strand,
                                  end=200_000))  # fmt: skip
            assert a == b
            check_windows(a, seq[:200_000], 0, 3000, 2500, strand, "pad")
        if not streamed.random_access:  # unless a fresh shipped index exists
            c = list(iter_windows(streamed, "NC_007779.1", size=3000, stride=2500, strand="-"))
            assert c == a


@pytest.mark.parametrize("strand", ["+", "-"])
def test_yeast_genome_windows(strand: str) -> None:
    path = shared_genome("sacCer_S288C_R64_chrI-XVI.fa.gz")
    with gzip.open(path, "rt") as fh:
        expected = {t.split()[0]: s.encode() for t, s in SimpleFastaParser(fh)}
    size = 100_000
    with FastaFile(path) as fa:
        records = None if strand == "+" else ["chrIII", "chrI"]
        windows = list(iter_genome_windows(fa, size=size, strand=strand, records=records))
    names = list(expected) if records is None else ["chrI", "chrIII"]  # file order
    assert list(dict.fromkeys(w.record for w in windows)) == names
    for name in names:
        mine = [w for w in windows if w.record == name]
        assert len(mine) == count_windows(len(expected[name]), size=size)
        assert mine[-1].pad == (-len(expected[name])) % size
        check_windows(mine, expected[name], 0, size, size, strand, "pad")


@pytest.mark.parametrize("strand", ["+", "-"])
def test_streaming_memory_is_bounded_by_window_not_record(ecoli, strand: str) -> None:
    path, seq = ecoli
    with FastaFile(path, block_size=1 << 16) as fa:
        fa.records()  # the validating pass, outside the measurement
        tracemalloc.start()
        try:
            n = 0
            for w in iter_windows(fa, "NC_007779.1", size=10_000, stride=5_000, strand=strand,
                                  chunk_size=1 << 16):  # fmt: skip
                n += len(w.seq)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert n == sum(e - s for s, e, _ in expected_windows(seq, 10_000, 5_000, "pad"))
    assert peak < 1_500_000, peak  # the record is 4.6 MB


def test_single_pass_genome_windows_raise_late_format_errors(tmp_path: Path) -> None:
    text = b">a\nACGTACGT\n>b\nGGGG\n>a\nTT\n"
    path = tmp_path / "dup.fa.gz"
    path.write_bytes(gzip.compress(text))
    seen = []
    with FastaFile(path) as fa, pytest.raises(FastaFormatError, match="duplicate") as err:
        for w in iter_genome_windows(fa, size=4):
            seen.append((w.record, w.seq))
    assert seen == [("a", b"ACGT"), ("a", b"ACGT")]  # then the error, not silence
    assert (err.value.record, err.value.line) == ("a", 5)
    good = tmp_path / "ok.fa.gz"
    good.write_bytes(gzip.compress(b">a\nACGTACGT\n>b\nGGGGG\n"))
    with FastaFile(good) as fa:
        assert [w.pad for w in iter_genome_windows(fa, size=4)] == [0, 0, 0, 3]
        assert fa._records is not None  # the single pass measured the records
        assert fa.lengths() == {"a": 8, "b": 5}
