"""Intervals: BED, GTF, GFF3 and region strings; coordinate conventions; checks against the FASTA.

Real-data tests use ``../shared/data`` (skipped when absent): every yeast CDS read through the
GFF3 must translate like a CDS, the MYT1L BED12 must cut the right bases out of hg38, and the
gene BED files must agree with the FASTA and the GFF3.
"""

from __future__ import annotations

import gzip
import string
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from Bio.Seq import Seq
from hypothesis import given
from hypothesis import strategies as st

from dnastream.genomics.errors import IntervalError
from dnastream.genomics.gff import AnnotationWarning, Gene, read_gff3, read_gtf
from dnastream.genomics.intervals import (
    Interval,
    annotation_format,
    feature_sequence,
    format_region,
    half_open_to_one_based,
    one_based_to_half_open,
    parse_region,
    read_annotation,
    read_bed,
    read_intervals,
    spliced_sequence,
    suggest_contigs,
    validate,
)

STOPS = (b"TAA", b"TAG", b"TGA")
HG38_FRAGMENT_LENGTH = 2_333_275

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def expect_error(
    call: Callable[[], object], path: Path | None, line: int | None, *fragments: str
) -> IntervalError:
    """``call`` raises an IntervalError whose message names the file, the line and the problem."""
    with pytest.raises(IntervalError) as info:
        call()
    err = info.value
    msg = str(err)
    if path is not None:
        assert err.path == str(path), msg
        assert msg.startswith(f"{path}: "), msg
    if line is not None:
        assert err.line == line, msg
        assert f"line {line}" in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return err


def read_fasta_gz(path: Path) -> dict[str, bytes]:
    """A tiny independent FASTA reader (whole file in memory), upper-cased."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    seqs = {}
    for record in data.split(b">")[1:]:
        header, _, body = record.partition(b"\n")
        seqs[header.split()[0].decode()] = body.replace(b"\n", b"").replace(b"\r", b"").upper()
    return seqs


def fetcher(seqs: dict[str, bytes]) -> Callable[[str, int, int], bytes]:
    return lambda chrom, start, end: seqs[chrom][start:end]


TOY = {"chr1": b"ACGTTGCAACGGATCCAAGT" * 10}  # 200 bp
TOY_LENGTHS = {name: len(seq) for name, seq in TOY.items()}

# --------------------------------------------------------------------------------------------
# coordinate conventions
# --------------------------------------------------------------------------------------------


def test_conversion_helpers() -> None:
    assert one_based_to_half_open(1, 10) == (0, 10)
    assert half_open_to_one_based(0, 10) == (1, 10)
    assert one_based_to_half_open(*half_open_to_one_based(999, 2000)) == (999, 2000)


def test_gff3_feature_1_to_10_is_0_to_10(tmp_path: Path) -> None:
    path = write(tmp_path, "a.gff3", "chr1\tt\tgene\t1\t10\t.\t+\t.\tID=g\n")
    (gene,) = read_gff3(path)
    assert (gene.start, gene.end, gene.length) == (0, 10, 10)


def test_gtf_feature_1_to_10_is_0_to_10(tmp_path: Path) -> None:
    path = write(
        tmp_path, "a.gtf", 'chr1\tt\texon\t1\t10\t.\t+\t.\tgene_id "g"; transcript_id "t";\n'
    )
    (gene,) = read_gtf(path)
    assert (gene.start, gene.end) == (0, 10)
    assert gene.transcripts[0].exons == ((0, 10),)


def test_region_is_one_based_inclusive() -> None:
    assert parse_region("chr2:1,000-2,000") == Interval("chr2", 999, 2000)
    assert parse_region("chr2:1000-1000").length == 1
    assert parse_region("chr2:1-10").length == 10


def test_same_base_in_every_notation(tmp_path: Path) -> None:
    """Base 5 (1-based) of chr1 is the same whether named by BED, GFF3, GTF or a region."""
    bed = read_bed(write(tmp_path, "a.bed", "chr1\t4\t5\n"))[0]
    gff = read_gff3(write(tmp_path, "a.gff3", "chr1\tt\tgene\t5\t5\t.\t+\t.\tID=g\n"))[0]
    gtf_text = 'chr1\tt\texon\t5\t5\t.\t+\t.\tgene_id "g"; transcript_id "t";\n'
    gtf = read_gtf(write(tmp_path, "a.gtf", gtf_text))[0].transcripts[0]
    region = parse_region("chr1:5-5")
    assert {(x.start, x.end) for x in (bed, gff, gtf, region)} == {(4, 5)}
    fetch = fetcher(TOY)
    assert feature_sequence(region, fetch) == TOY["chr1"][4:5] == b"T"
    assert feature_sequence(gtf, fetch) == b"T"


# --------------------------------------------------------------------------------------------
# region strings
# --------------------------------------------------------------------------------------------


def test_region_forms() -> None:
    lengths = {"chr2": 5000, "HLA-A*01:01": 300}
    assert parse_region("chr2", lengths) == Interval("chr2", 0, 5000)
    assert parse_region("chr2:1000", lengths) == Interval("chr2", 999, 5000)
    assert parse_region("chr2:1000-", lengths) == Interval("chr2", 999, 5000)
    assert parse_region("chr2:1-100:-") == Interval("chr2", 0, 100, "-")
    assert parse_region("chr2:1,000:+", lengths) == Interval("chr2", 999, 5000, "+")
    assert parse_region("chr2:-", lengths) == Interval("chr2", 0, 5000, "-")
    assert parse_region("  chr2:5-6 ") == Interval("chr2", 4, 6)
    assert parse_region("HLA-A*01:01", lengths) == Interval("HLA-A*01:01", 0, 300)
    assert parse_region("{HLA-A*01:01}:1-10") == Interval("HLA-A*01:01", 0, 10)
    assert parse_region("HLA-A*01:01:1-10") == Interval("HLA-A*01:01", 0, 10)


@pytest.mark.parametrize(
    ("text", "lengths", "fragment"),
    [
        ("", None, "empty region"),
        ("chr2:0-10", None, "1-based, so the start cannot be 0"),
        ("chr2:200-100", None, "start 200 > end 100"),
        ("chr2:1,000-999", None, "start 1,000 > end 999"),
        ("chr2", None, "runs to the end of the contig"),
        ("chr2:100", None, "runs to the end of the contig"),
        ("chr2:1-6000", {"chr2": 5000}, "past the end of contig 'chr2' (5,000 bp)"),
        ("chr2:6000", {"chr2": 5000}, "past the end of 'chr2'"),
        ("chr9:1-10", {"chr2": 5000}, "unknown contig 'chr9'"),
        ("2:1-10", {"chr2": 5000}, "did you mean 'chr2'?"),
        ("{chr2:1-10", None, "unbalanced braces"),
    ],
)
def test_region_errors(text: str, lengths: dict[str, int] | None, fragment: str) -> None:
    err = expect_error(lambda: parse_region(text, lengths), None, None, fragment)
    assert err.path is None


def test_format_region() -> None:
    iv = Interval("chr2", 999, 2_000_000, "-")
    assert format_region(iv) == "chr2:1000-2000000:-"
    assert format_region(iv, thousands=True, strand=False) == "chr2:1,000-2,000,000"
    assert format_region(Interval("chr2", 0, 1)) == "chr2:1-1"
    assert format_region(Interval("chr2", 0, 1), strand=True) == "chr2:1-1:."
    assert format_region(Interval("a:b", 0, 5)) == "{a:b}:1-5"
    with pytest.raises(ValueError, match="empty interval"):
        format_region(Interval("chr2", 5, 5))


_CHROM_ALPHABET = string.ascii_letters + string.digits + "_.-*:|,+#="


@given(
    chrom=st.text(_CHROM_ALPHABET, min_size=1, max_size=12),
    start=st.integers(0, 10**10),
    length=st.integers(1, 10**9),
    strand=st.sampled_from(["+", "-", "."]),
    thousands=st.booleans(),
    show_strand=st.sampled_from([None, True]),
)
def test_region_round_trip(
    chrom: str, start: int, length: int, strand: str, thousands: bool, show_strand: bool | None
) -> None:
    iv = Interval(chrom, start, start + length, strand)  # type: ignore[arg-type]
    text = format_region(iv, thousands=thousands, strand=show_strand)
    assert parse_region(text) == iv


@given(a=st.integers(1, 10**9), n=st.integers(0, 10**6))
def test_region_numbers_are_one_based_inclusive(a: int, n: int) -> None:
    iv = parse_region(f"chrX:{a:,}-{a + n}")
    assert (iv.start, iv.end, iv.length) == (a - 1, a + n, n + 1)


# --------------------------------------------------------------------------------------------
# the Interval type and sequences
# --------------------------------------------------------------------------------------------


def test_interval_properties() -> None:
    blocks = ((10, 20), (50, 60), (90, 100))
    iv = Interval("c", 10, 100, "-", blocks=blocks, thick_start=15, thick_end=95)
    assert iv.length == 90
    assert iv.spliced_length == 30
    assert iv.cds == ((15, 20), (50, 60), (90, 95))
    assert Interval("c", 0, 7).spliced_length == 7
    assert Interval("c", 0, 7).exons == ((0, 7),)
    assert Interval("c", 0, 7).cds == ()
    hash(iv)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"start": 5, "end": 4}, "start 5 > end 4"),
        ({"start": -1, "end": 4}, "negative"),
        ({"strand": "x"}, "strand 'x'"),
        ({"blocks": ((0, 5), (4, 10))}, "overlaps the previous block"),
        ({"blocks": ((0, 5), (6, 9))}, "not the interval"),
        ({"thick_start": 2, "thick_end": 11}, "outside"),
    ],
)
def test_interval_rejects_bad_fields(kwargs: dict, fragment: str) -> None:
    fields = {"chrom": "c", "start": 0, "end": 10, **kwargs}
    with pytest.raises(IntervalError, match=fragment):
        Interval(**fields)


def test_spliced_sequence_plus_and_minus() -> None:
    fetch = fetcher({"c": b"AAACCCGGGTTTacgt"})
    assert spliced_sequence("c", [(6, 9), (0, 3)], "+", fetch) == b"AAAGGG"
    assert spliced_sequence("c", [(0, 3), (6, 9)], "-", fetch) == b"CCCTTT"
    assert spliced_sequence("c", [(12, 16)], "-", fetch) == b"acgt"  # soft-masking kept
    assert spliced_sequence("c", [], "+", fetch) == b""

    def as_text(chrom: str, start: int, end: int) -> str:
        return "AAACCCGGGTTT"[start:end]

    assert spliced_sequence("c", [(0, 2)], "-", as_text) == b"TT"


def test_spliced_sequence_short_fetch_is_an_error() -> None:
    fetch = fetcher({"c": b"ACGT"})
    with pytest.raises(IntervalError, match="fetch returned 2 bases"):
        spliced_sequence("c", [(2, 10)], "+", fetch)


# --------------------------------------------------------------------------------------------
# BED
# --------------------------------------------------------------------------------------------

BED_TEXT = """\
browser position chr1:1-100
track name=test description="toy"
# a comment

chr1\t0\t100\ttx1\t960\t-\t10\t90\t255,0,0\t3\t20,10,30,\t0,40,70,
chr1\t5\t6\tins\t0\t+\t5\t5\t0\t1\t1\t0
"""


def test_bed12_with_headers(tmp_path: Path) -> None:
    path = write(tmp_path, "a.bed", BED_TEXT)
    tx, one = read_bed(path)
    assert (tx.chrom, tx.start, tx.end, tx.strand, tx.name) == ("chr1", 0, 100, "-", "tx1")
    assert tx.score == 960.0
    assert tx.blocks == ((0, 20), (40, 50), (70, 100))
    assert (tx.thick_start, tx.thick_end) == (10, 90)
    assert tx.spliced_length == 60
    assert tx.cds == ((10, 20), (40, 50), (70, 90))
    assert tx.extra == {"itemRgb": "255,0,0"}
    assert (tx.source, tx.line) == (str(path), 5)
    assert one.blocks == ((5, 6),) and one.line == 6
    assert (one.thick_start, one.thick_end, one.cds) == (5, 5, ())  # thickStart == thickEnd: no CDS
    seq = feature_sequence(tx, fetcher(TOY))
    expected = Seq((TOY["chr1"][0:20] + TOY["chr1"][40:50] + TOY["chr1"][70:100]).decode())
    assert seq.decode() == str(expected.reverse_complement())


def test_bed_gzip_equals_plain(tmp_path: Path) -> None:
    text = "chr1\t0\t10\ta\nchr1\t20\t30\tb\n"
    plain = read_bed(write(tmp_path, "a.bed", text))
    gz = read_bed(write(tmp_path, "b.bed.gz", text))
    assert plain == gz and len(gz) == 2


def test_bed3_bed6_and_whitespace(tmp_path: Path) -> None:
    (b3,) = read_bed(write(tmp_path, "a.bed", "chr1 0 10\n"))
    assert b3 == Interval("chr1", 0, 10)
    (b6,) = read_bed(write(tmp_path, "b.bed", "chr1\t0\t10\t.\t.\t+\r\n"))
    assert (b6.name, b6.score, b6.strand) == (None, None, "+")


def test_bed_extra_columns(tmp_path: Path) -> None:
    text = "chr1\t0\t10\tg\t0\t-\tlncRNA\t10\n"
    (iv,) = read_bed(write(tmp_path, "a.bed", text))
    assert iv.extra == {"col7": "lncRNA", "col8": "10"} and iv.thick_start is None
    (iv,) = read_bed(write(tmp_path, "b.bed", text), extra_columns=["gene_type", "length"])
    assert iv.extra == {"gene_type": "lncRNA", "length": "10"}
    header = "#chrom\tstart\tend\tname\tscore\tstrand\tgene_type\tlength\n"
    (iv,) = read_bed(write(tmp_path, "c.bed", header + text))
    assert iv.extra == {"gene_type": "lncRNA", "length": "10"}
    # numeric extra columns are taken as thickStart/thickEnd unless told otherwise
    (iv,) = read_bed(write(tmp_path, "d.bed", "chr1\t0\t10\tg\t0\t-\t3\t7\n"))
    assert (iv.thick_start, iv.thick_end) == (3, 7)
    (iv,) = read_bed(write(tmp_path, "e.bed", "chr1\t0\t10\tg\t0\t-\t3\t7\n"), bed_columns=6)
    assert iv.extra == {"col7": "3", "col8": "7"}
    (iv,) = read_bed(write(tmp_path, "f.bed", "chr1\t0\t10\tg\tpeak\tzz\n"), bed_columns=4)
    assert iv.extra == {"col5": "peak", "col6": "zz"}


def test_bed_zero_length_is_read_but_not_valid(tmp_path: Path) -> None:
    path = write(tmp_path, "a.bed", "chr1\t0\t10\nchr1\t5\t5\n")
    intervals = read_bed(path)
    assert intervals[1].length == 0
    validate(intervals, TOY_LENGTHS, allow_empty=True)
    expect_error(lambda: validate(intervals, TOY_LENGTHS), path, 2, "start 5 >= end 5", "empty")


_BED6 = "chr1\t0\t10\ta\t0\t+"
_BED12 = "chr1\t0\t100\ta\t0\t+\t10\t90\t0\t2\t20,30,\t0,70,"


@pytest.mark.parametrize(
    ("good", "bad", "fragment"),
    [
        ("chr1\t0\t10", "chr1\tx\t10", "column 2 (chromStart) is not an integer: 'x'"),
        ("chr1\t0\t10", "chr1\t0\t1.5", "column 3 (chromEnd) is not an integer: '1.5'"),
        ("chr1\t0\t10", "chr1\t-5\t10", "column 2 (chromStart) is negative (-5)"),
        ("chr1\t0\t10", "chr1\t20\t10", "chromStart 20 > chromEnd 10"),
        ("chr1\t0\t10", "\t0\t10", "column 1 (chrom) is empty"),
        ("chr1\t0\t10", "chr1\t5", "found 2 columns, but the first data line (line 3) has 3"),
        (None, "chr1\t5", "BED needs at least 3 columns (chrom, start, end), found 2"),
        (_BED6, "chr1\t0\t10\tb\t0\tx", "column 6 (strand) must be '+', '-' or '.', got 'x'"),
        (_BED6, "chr1\t0\t10\tb\tabc\t+", "column 5 (score) is not a number or '.': 'abc'"),
        (_BED12, _BED12.replace("\t2\t", "\t3\t"), "blockSizes has 2 values but blockCount is 3"),
        (_BED12, _BED12.replace("0,70,", "0,70,80"), "blockStarts has 3 values but blockCount"),
        (_BED12, _BED12.replace("20,30,", "20,x"), "column 11 (blockSizes) value 2 is not an"),
        (_BED12, _BED12.replace("\t2\t", "\tz\t"), "column 10 (blockCount) is not an integer"),
        (_BED12, _BED12.replace("\t2\t20,30,\t0,70,", "\t0\t\t"), "blockCount must be at least"),
        (_BED12, _BED12.replace("0,70,", "5,70,"), "the first blockStart must be 0, got 5"),
        (_BED12, _BED12.replace("20,30,", "20,40,"), "last block ends at 110 (chromStart"),
        (
            _BED12,
            _BED12.replace("2\t20,30,\t0,70,", "3\t50,10,30\t0,40,70"),
            "block 2 [40, 50) overlaps the previous block",
        ),
        (_BED12, _BED12.replace("20,30,", "20,0,"), "block 2 [70, 70) is empty"),
        (_BED12, _BED12.replace("\t90\t", "\t120\t"), "thickStart 10 / thickEnd 120 must"),
        (_BED12, _BED12.replace("\t10\t90\t", "\t50\t40\t"), "thickStart 50 / thickEnd 40"),
    ],
)
def test_bed_errors_name_file_line_and_problem(
    tmp_path: Path, good: str | None, bad: str, fragment: str
) -> None:
    lines = ["track name=x", "# comment", *([good] if good else []), bad, "chr1\t0\t10"]
    path = write(tmp_path, "bad.bed", "\n".join(lines) + "\n")
    expect_error(lambda: read_bed(path), path, 4 if good else 3, fragment)


def test_truncated_gzip_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.bed.gz", "".join(f"chr1\t{i}\t{i + 5}\n" for i in range(20000)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(lambda: read_bed(path), path, None, "truncated or corrupt gzip")


# --------------------------------------------------------------------------------------------
# GFF3
# --------------------------------------------------------------------------------------------

GFF3_TEXT = """\
##gff-version 3
##sequence-region chr1 1 200
# comment
chr1\tt\tgene\t1\t10\t.\t+\t.\tID=g1;Name=Gene%3BOne%2Cx
chr1\tt\tmRNA\t1\t10\t.\t+\t.\tID=t1;Parent=g1
chr1\tt\tmRNA\t1\t10\t.\t+\t.\tID=t2;Parent=g1;biotype=protein_coding
chr1\tt\texon\t1\t3\t.\t+\t.\tParent=t1,t2
chr1\tt\texon\t6\t10\t.\t+\t.\tID=e2;Parent=t1
chr1\tt\texon\t8\t10\t.\t+\t.\tParent=t2
chr1\tt\tCDS\t2\t3\t.\t+\t0\tID=cds1;Parent=t1
chr1\tt\tCDS\t6\t9\t.\t+\t2\tID=cds1;Parent=t1
chr1\tt\tgene\t20\t40\t.\t-\t.\tID=g2
chr1\tt\ttRNA\t20\t40\t.\t-\t.\tID=g2.tRNA;Parent=g2
chr1\tt\texon\t20\t25\t.\t-\t.\tParent=g2.tRNA
chr1\tt\texon\t31\t40\t.\t-\t.\tParent=g2.tRNA
chr1\tt\tncRNA_gene\t50\t60\t.\t+\t.\tID=g3;biotype=snRNA
chr1\tt\texon\t50\t60\t.\t+\t.\tParent=g3
chr1\tt\tpseudogene\t70\t80\t.\t.\t.\tID=g4
chr1\tt\trep_origin\t90\t95\t.\t+\t.\tID=ori
chr1\tt\tmRNA\t101\t130\t.\t?\t.\tID=lonely
chr1\tt\texon\t101\t130\t.\t?\t.\tParent=lonely
###
##FASTA
>chr1
ACGT
"""


def test_gff3_hierarchy(tmp_path: Path) -> None:
    for name in ("a.gff3", "a.gff3.gz"):
        genes = read_gff3(write(tmp_path, name, GFF3_TEXT))
        assert [g.id for g in genes] == ["g1", "g2", "g3", "g4", "lonely"]
    by_id = {g.id: g for g in genes}
    g1 = by_id["g1"]
    assert (g1.start, g1.end, g1.strand, g1.name) == (0, 10, "+", "Gene;One,x")
    t1, t2 = g1.transcripts
    assert t1.exons == ((0, 3), (5, 10)) and t2.exons == ((0, 3), (7, 10))
    assert t1.cds == ((1, 3), (5, 9)) and t2.cds == ()
    assert (t1.gene_id, t1.feature_type, t2.biotype) == ("g1", "mRNA", "protein_coding")
    assert t1.spliced_length == 8 and t1.cds_length == 6
    (trna,) = by_id["g2"].transcripts
    assert (trna.strand, trna.exons, trna.feature_type) == ("-", ((19, 25), (30, 40)), "tRNA")
    (direct,) = by_id["g3"].transcripts  # exon straight under the gene
    assert (direct.id, direct.exons, direct.feature_type) == ("g3", ((49, 60),), "implicit")
    assert by_id["g3"].biotype == "snRNA"
    assert by_id["g4"].transcripts == () and by_id["g4"].feature_type == "pseudogene"
    lonely = by_id["lonely"]
    assert (lonely.feature_type, lonely.strand) == ("implicit", ".")  # '?' strand reads as '.'
    assert lonely.transcripts[0].exons == ((100, 130),)
    assert genes[0].line == 4 and t1.line == 5


def test_gff3_missing_parent_warns_or_fails(tmp_path: Path) -> None:
    text = GFF3_TEXT.replace("Parent=g2.tRNA", "Parent=nowhere")
    path = write(tmp_path, "a.gff3", text)
    with pytest.warns(AnnotationWarning, match="1 Parent ID"):
        genes = read_gff3(path)
    implicit = next(g for g in genes if g.id == "nowhere")
    assert implicit.feature_type == "implicit"
    assert implicit.transcripts[0].exons == ((19, 25), (30, 40))
    assert next(g for g in genes if g.id == "g2").transcripts[0].exons == ((19, 40),)
    expect_error(lambda: read_gff3(path, strict=True), path, 14, "Parent 'nowhere' is not the ID")


_GENE = "chr1\tt\tgene\t1\t10\t.\t+\t.\tID=g"


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("chr1\tt\tgene\t1\t10\t.\t+\t.", "GFF3 lines have 9 tab-separated columns, found 8"),
        ("chr1 t gene 1 10 . + . ID=x", "columns must be separated by tabs"),
        (_GENE.replace("\t1\t", "\t0\t") + "2", "column 4 (start) is 0, but coordinates are 1"),
        (_GENE.replace("\t1\t10", "\t20\t10") + "2", "start 20 > end 10"),
        (_GENE.replace("\t1\t", "\tone\t") + "2", "column 4 (start) is not an integer: 'one'"),
        (_GENE.replace("\t10\t", "\t-10\t") + "2", "column 5 (end) is negative"),
        (_GENE.replace("\t+\t", "\tx\t") + "2", "column 7 (strand) must be"),
        (_GENE.replace("\t.\tID", "\t3\tID") + "2", "column 8 (phase) must be"),
        (_GENE.replace(".\t+", "high\t+") + "2", "column 6 (score) is not a number"),
        ("chr1\tt\tgene\t1\t10\t.\t+\t.\tName=x", "gene feature has no ID attribute"),
        ("chr1\tt\texon\t1\t10\t.\t+\t.\tID=x", "exon feature has no Parent attribute"),
        ('chr1\tt\tgene\t1\t10\t.\t+\t.\tgene_id "x"', "attribute 'gene_id \"x\"' is not tag="),
        ("chr1\tt\tmRNA\t1\t10\t.\t+\t.\tID=g", "ID 'g' is already used by a gene"),
        ("chr2\tt\tmRNA\t1\t10\t.\t+\t.\tID=t;Parent=g", "has Parent 'g' on chr1 (line 3)"),
    ],
)
def test_gff3_errors_name_file_line_and_problem(tmp_path: Path, bad: str, fragment: str) -> None:
    path = write(tmp_path, "bad.gff3", f"##gff-version 3\n# c\n{_GENE}\n{bad}\n")
    expect_error(lambda: read_gff3(path), path, 4, fragment)


def test_gff3_children_of_one_missing_parent_on_two_contigs(tmp_path: Path) -> None:
    text = "chr2\tt\texon\t1\t10\t.\t+\t.\tParent=x\nchr3\tt\texon\t5\t9\t.\t+\t.\tParent=x\n"
    path = write(tmp_path, "a.gff3", text)
    expect_error(lambda: read_gff3(path), path, 2, "feature on chr3 has Parent 'x' on chr2")


# --------------------------------------------------------------------------------------------
# GTF
# --------------------------------------------------------------------------------------------

GTF_TEXT = """\
#!genome-build toy
chr1\tt\tgene\t1\t100\t.\t+\t.\tgene_id "G1"; gene_name "ONE"; gene_type "protein_coding";
chr1\tt\ttranscript\t1\t100\t.\t+\t.\tgene_id "G1"; transcript_id "T1"; \
transcript_name "ONE-201"; transcript_type "protein_coding"; tag "basic"; tag "CCDS";
chr1\tt\texon\t1\t20\t.\t+\t.\tgene_id "G1"; transcript_id "T1"; exon_number 1;
chr1\tt\texon\t51\t100\t.\t+\t.\tgene_id "G1"; transcript_id "T1"; exon_number 2;
chr1\tt\tCDS\t11\t20\t.\t+\t0\tgene_id "G1"; transcript_id "T1";
chr1\tt\tCDS\t51\t60\t.\t+\t2\tgene_id "G1"; transcript_id "T1";
chr1\tt\tstart_codon\t11\t13\t.\t+\t0\tgene_id "G1"; transcript_id "T1";
chr1\tt\tstop_codon\t61\t63\t.\t+\t0\tgene_id "G1"; transcript_id "T1";
chr1\tt\texon\t200\t300\t.\t-\t.\tgene_id "G2"; transcript_id "T2"
chr1\tt\tCDS\t211\t290\t.\t-\t0\tgene_id "G2"; transcript_id "T2";
chr1\tt\tstop_codon\t208\t210\t.\t-\t0\tgene_id "G2"; transcript_id "T2";
chr1\tt\trepeat\t1\t5\t.\t+\t.\tfoo "bar";
"""


def test_gtf_genes(tmp_path: Path) -> None:
    g1, g2 = read_gtf(write(tmp_path, "a.gtf.gz", GTF_TEXT))
    assert (g1.id, g1.name, g1.biotype, g1.feature_type) == ("G1", "ONE", "protein_coding", "gene")
    assert (g1.start, g1.end) == (0, 100)
    (t1,) = g1.transcripts
    assert (t1.name, t1.biotype, t1.feature_type) == ("ONE-201", "protein_coding", "transcript")
    assert t1.exons == ((0, 20), (50, 100))
    assert t1.cds == ((10, 20), (50, 63))  # stop codon folded into the CDS
    assert t1.attributes["tag"] == "basic,CCDS"  # repeated keys are joined
    assert (g2.start, g2.end, g2.strand, g2.feature_type) == (199, 300, "-", "implicit")
    assert g2.transcripts[0].cds == ((207, 290),)


_GTF_OK = 'chr1\tt\texon\t1\t10\t.\t+\t.\tgene_id "g"; transcript_id "t";'


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ('chr1\tt\texon\t1\t10\t.\t+\t.\ttranscript_id "t";', "exon line has no gene_id"),
        ('chr1\tt\tCDS\t1\t10\t.\t+\t0\tgene_id "g";', "CDS line has no transcript_id"),
        ("chr1\tt\texon\t1\t10\t.\t+\t.\tgene_id=g;transcript_id=t", "malformed attribute"),
        ('chr1\tt\texon\t1\t10\t.\t+\tgene_id "g";', "GTF lines have 9 tab-separated columns"),
        (_GTF_OK.replace("\t1\t", "\t1,000\t"), "column 4 (start) is not an integer"),
        (_GTF_OK.replace('"g"', '"h"'), "transcript_id 't' belongs to gene_id 'g' (line 2)"),
        (_GTF_OK.replace("chr1", "chr2"), "gene_id 'g' is on chr1 + at line 2 but on chr2 +"),
        (_GTF_OK.replace("\t+\t", "\t-\t"), "is on chr1 + at line 2 but on chr1 -"),
        (_GTF_OK.replace("\t1\t10", "\t5\t12"), "exons of transcript 't' overlap"),
    ],
)
def test_gtf_errors_name_file_line_and_problem(tmp_path: Path, bad: str, fragment: str) -> None:
    path = write(tmp_path, "bad.gtf", f"# c\n{_GTF_OK}\n{bad}\n")
    line = None if "overlap" in fragment else 3
    expect_error(lambda: read_gtf(path), path, line, fragment)


# --------------------------------------------------------------------------------------------
# dispatch and validation
# --------------------------------------------------------------------------------------------


def test_read_annotation_dispatch(tmp_path: Path) -> None:
    assert annotation_format("x.BED") == "bed"
    assert annotation_format("x.gff.gz") == "gff3"
    assert annotation_format(Path("a/x.gtf.bgz")) == "gtf"
    bed = write(tmp_path, "a.bed.gz", "chr1\t0\t10\n")
    assert read_annotation(bed) == [Interval("chr1", 0, 10)]
    gff = write(tmp_path, "a.gff3", GFF3_TEXT)
    genes = read_annotation(gff)
    assert all(isinstance(g, Gene) for g in genes) and len(genes) == 5
    assert isinstance(read_annotation(write(tmp_path, "b.gtf", GTF_TEXT))[0], Gene)
    genes_iv = read_intervals(gff)
    assert genes_iv[0] == Interval("chr1", 0, 10, "+", "g1", extra={"gene_name": "Gene;One,x"})
    tx_iv = read_intervals(gff, level="transcript")
    assert tx_iv[0].blocks == ((0, 3), (5, 10))
    assert (tx_iv[0].thick_start, tx_iv[0].thick_end) == (1, 9)
    other = write(tmp_path, "a.txt", "chr1\t0\t10\n")
    expect_error(lambda: read_annotation(other), other, None, "extension '.txt'")
    assert read_annotation(other, format="bed") == [Interval("chr1", 0, 10)]


def test_contig_suggestions() -> None:
    assert suggest_contigs("chr2", ["1", "2", "3"])[0] == "2"
    assert suggest_contigs("2", ["chr1", "chr2"])[0] == "chr2"
    assert suggest_contigs("chrM", ["chr1", "MT"])[0] == "MT"
    assert suggest_contigs("CHRX", ["chrX", "chrY"])[0] == "chrX"
    assert suggest_contigs("scaffold_1", ["chrI", "chrII"]) == []


def test_validate_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "a.bed", "chr1\t0\t10\tok\nchr2\t0\t10\tfar\n")
    intervals = read_bed(path)
    lengths = {"1": 100, "2": 100}
    err = expect_error(
        lambda: validate(intervals, lengths), path, 1, "unknown contig 'chr1'", "did you mean '1'"
    )
    assert "'chr' prefix" in str(err) and err.record == "ok"
    expect_error(
        lambda: validate(intervals, {"chr1": 100, "chr2": 5}),
        path,
        2,
        "chr2:[0, 10) (0-based half-open) ends at 10, past the end of contig 'chr2' (5 bp)",
    )
    expect_error(
        lambda: validate(Interval("chrQ", 0, 5), {"a": 1, "b": 1}, path="x.bed"),
        Path("x.bed"),
        None,
        "unknown contig 'chrQ'",
        "the FASTA has 'a', 'b'",
    )
    validate(intervals, {"chr1": 10, "chr2": 10})
    validate(intervals[0], {"chr1": 10})


def test_validate_genes_checks_transcripts(tmp_path: Path) -> None:
    path = write(tmp_path, "a.gff3", GFF3_TEXT)
    genes = read_gff3(path)
    validate(genes, {"chr1": 130})
    expect_error(lambda: validate(genes, {"chr1": 129}), path, 20, "past the end of contig")
    short = {"chr1": 35}
    expect_error(lambda: validate(genes[1], short), path, 12, "ends at 40")


# --------------------------------------------------------------------------------------------
# real data (../shared/data)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def yeast_genome(shared_data: Path) -> dict[str, bytes]:
    return read_fasta_gz(shared_data / "genomes" / "sacCer_S288C_R64_chrI-XVI.fa.gz")


@pytest.fixture(scope="session")
def yeast_genes(shared_data: Path) -> list[Gene]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)  # 6 CDS name an undefined mRNA
        return read_gff3(shared_data / "annotations" / "sacCer_S288C_R64.gff3.gz")


@pytest.fixture(scope="session")
def hg38_fragment(shared_data: Path) -> dict[str, bytes]:
    return read_fasta_gz(shared_data / "genomes" / "hg38_chr2_1-2333275.fa.gz")


def test_yeast_gff3_shape(shared_data: Path, yeast_genes: list[Gene]) -> None:
    path = shared_data / "annotations" / "sacCer_S288C_R64.gff3.gz"
    with pytest.warns(AnnotationWarning, match="6 Parent ID"):
        read_gff3(path)
    genes = [g for g in yeast_genes if g.feature_type == "gene"]
    assert len(genes) == 6399
    types = [t.feature_type for g in genes for t in g.transcripts]
    assert types.count("mRNA") == 5995 and types.count("tRNA") == 275
    assert types.count("ncRNA") == 101 and types.count("rRNA") == 12
    dur = next(g for g in genes if g.id == "YBR208C")
    assert dur.name == "DUR1,2"


def test_yeast_every_cds_reads_as_a_cds(
    yeast_genes: list[Gene], yeast_genome: dict[str, bytes]
) -> None:
    fetch = fetcher(yeast_genome)
    validate(yeast_genes, {k: len(v) for k, v in yeast_genome.items()})
    coding = [t for g in yeast_genes for t in g.transcripts if t.cds]
    assert len(coding) == 5989
    bad = []
    for tx in coding:
        seq = feature_sequence(tx, fetch, cds=True)
        if not (seq[:3] == b"ATG" and seq[-3:] in STOPS and len(seq) % 3 == 0):
            bad.append((tx.id, tx.strand, len(seq), seq[:3], seq[-3:]))
    assert bad == []
    # the check covered both strands and spliced CDS (introns removed, minus strand revcomp'd)
    spliced = [t for t in coding if len(t.cds) > 1]
    assert {t.strand for t in spliced} == {"+", "-"} and len(spliced) > 200
    # and it can fail: the same CDS read off the wrong strand, or unspliced, is not a CDS
    tx = next(t for t in spliced if t.strand == "-")
    wrong = spliced_sequence(tx.chrom, tx.cds, "+", fetch)
    assert not (wrong[:3] == b"ATG" and wrong[-3:] in STOPS)
    unspliced = spliced_sequence(tx.chrom, [(tx.cds[0][0], tx.cds[-1][1])], "-", fetch)
    assert len(unspliced) > len(feature_sequence(tx, fetch, cds=True))


def test_yeast_genes_bed_agrees_with_gff3(shared_data: Path, yeast_genes: list[Gene]) -> None:
    rows = read_bed(shared_data / "annotations" / "sacCer_S288C_R64.genes.bed")
    assert len(rows) == 6399
    genes = {g.id: g for g in yeast_genes if g.feature_type == "gene"}
    assert {r.name for r in rows} == set(genes)
    for row in rows:
        gene = genes[row.name]  # type: ignore[index]
        assert (row.chrom, row.start, row.end) == (gene.chrom, gene.start, gene.end)
        assert row.strand == gene.strand
        assert row.extra["col7"] == (gene.name or ".")
    longest = max(rows, key=lambda r: r.length)
    assert (longest.name, longest.length) == ("YLR106C", 14_733)


def test_myt1l_bed12_on_hg38(shared_data: Path, hg38_fragment: dict[str, bytes]) -> None:
    pyfaidx = pytest.importorskip("pyfaidx")
    fasta_path = shared_data / "genomes" / "hg38_chr2_1-2333275.fa.gz"
    bed = shared_data / "annotations" / "hg38_chr2_1-2333275.MYT1L_MANE_AND_PE.bed"
    tx, pe = read_bed(bed)
    fa = pyfaidx.Fasta(str(fasta_path), sequence_always_upper=True)
    assert len(fa["chr2"]) == HG38_FRAGMENT_LENGTH
    validate([tx, pe], {"chr2": len(fa["chr2"])})

    assert (tx.name, tx.strand, tx.start, tx.end) == ("ENST00000647738.2", "-", 1789112, 2331275)
    assert len(tx.exons) == 25 and tx.spliced_length == 7144
    fetch = fetcher(hg38_fragment)  # our own reader; pyfaidx is the independent reference
    for start, end in tx.exons:
        # 0-based half-open [start, end) is 1-based start+1..end in pyfaidx.get_seq
        assert fetch("chr2", start, end) == fa.get_seq("chr2", start + 1, end).seq.encode()
    mrna = feature_sequence(tx, fetch)
    assert len(mrna) == 7144
    genomic = b"".join(fa.get_seq("chr2", s + 1, e).seq.encode() for s, e in tx.exons)
    assert mrna == str(Seq(genomic.decode()).reverse_complement()).encode()

    cds = feature_sequence(tx, fetch, cds=True)
    assert len(tx.cds) == 20 and len(cds) == 3561 and len(cds) % 3 == 0
    assert cds[:3] == b"ATG" and cds[-3:] == b"TGA"
    protein = str(Seq(cds.decode()).translate())
    assert protein.index("*") == len(protein) - 1  # the only stop is the last codon
    assert protein.startswith("MEVDTEEKRHRTRSKG")  # MYT1L's N-terminus

    assert (pe.name, pe.strand, pe.length, pe.blocks) == (
        "MYT1L_PE",
        ".",
        90,
        ((1860161, 1860251),),
    )
    assert format_region(pe) == "chr2:1860162-1860251"


def test_hg38_genes_bed(shared_data: Path, hg38_fragment: dict[str, bytes]) -> None:
    path = shared_data / "annotations" / "hg38_chr2_1-2333275.genes.bed"
    genes = read_bed(path, extra_columns=["gene_type", "length"])
    assert len(genes) == 42
    validate(genes, {"chr2": len(hg38_fragment["chr2"])})
    assert all(g.strand in "+-" and g.name for g in genes)
    assert sum(g.extra["gene_type"] == "protein_coding" for g in genes) == 9
    assert all(int(g.extra["length"]) == g.length for g in genes)  # BED end - start
    myt1l = next(g for g in genes if g.name == "MYT1L")
    assert (myt1l.strand, myt1l.length) == ("-", 542_552)
    (tx, _) = read_bed(shared_data / "annotations" / "hg38_chr2_1-2333275.MYT1L_MANE_AND_PE.bed")
    assert myt1l.start <= tx.start and tx.end <= myt1l.end
    expect_error(
        lambda: validate(genes, {"chr2": 2_000_000}),
        path,
        next(g.line for g in genes if g.end > 2_000_000),
        "past the end of contig 'chr2' (2,000,000 bp)",
    )
    expect_error(lambda: validate(genes, {"2": HG38_FRAGMENT_LENGTH}), path, 1, "'2'?")
