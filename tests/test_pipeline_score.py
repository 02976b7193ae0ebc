"""``dnastream score``: per-base next-token log-likelihood of genes/regions, real data end to end.

Everything runs the real CLI (typer's runner, in process) on the real hg38 chr2 fragment and
yeast genome with the tiny fixture model (K = l_max = 1026), and checks the files it writes:

* the HDF5 tracks equal a direct full forward ``model(ids, return_logprobs=True)`` over the same
  tokens (reverse complement for '-' genes, mapped back to + order), NaN where documented;
* the summaries (TSV, ``/summary``, group attributes) agree with each other and with values
  recomputed from the track and the FASTA;
* MYT1L (542 kb, '-') is scored whole; deep inside it the track equals a forward over the
  receptive field; 22 genes of the 42-gene BED (both strands, overlapping ones) and yeast
  GFF3 genes by name and ID; bedGraph and PNG outputs parse back;
* errors: unknown gene (close matches listed), unknown contig (file and line), invalid base
  (record and position), existing outputs (exit 3, files untouched), missing matplotlib.

The full 42-gene (1.97 Mbp, incl. SNTG2 417 kb) and whole-fragment (2.33 Mbp) runs take
about a minute each on 2 idle CPU cores (several when the cores are shared); they are run by
hand, not in this suite, to keep it short.
"""

from __future__ import annotations

import io
import math
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import Result
from typer.testing import CliRunner

from dnastream.cli.main import app
from dnastream.genomics import (
    FastaFile,
    StreamingAccessWarning,
    encode,
    read_bed,
    reverse_complement_ids,
)
from dnastream.models import HyenaDNAModel, load_model
from dnastream.pipelines.score import SUMMARY_COLUMNS, assign_keys, load_targets
from dnastream.pipelines.tracks import _RunWriter, bin_width

runner = CliRunner()

HG38 = "genomes/hg38_chr2_1-2333275.fa.gz"
GENES_BED = "annotations/hg38_chr2_1-2333275.genes.bed"
MYT1L_BED = "annotations/hg38_chr2_1-2333275.MYT1L_MANE_AND_PE.bed"
YEAST = "genomes/sacCer_S288C_R64_chrI-XVI.fa.gz"
YEAST_GFF = "annotations/sacCer_S288C_R64.gff3.gz"
K = 1026  # the fixture's l_max, the default filter length
FIELD = 2 * ((K - 1) + 2) + 8  # receptive field of the 2-block model (long + short conv), margin

# Every gene of the 42-gene BED shorter than 10 kb (21 genes: 11 '-', 10 '+') except the 577 bp
# copy of LINC01115 (its name also selects the 88,769 bp copy); includes the overlapping pair
# ENSG00000223751/ENSG00000231173 (both '+'), and LINC01874 (12,962 bp, '-') is added because
# ENSG00000284452 ('+') lies inside it: overlap rules of the bedGraph.
SHORT_GENES = (
    "FAM110C", "ALKAL2", "ENSG00000277997", "ENSG00000226277", "ENSG00000284452", "LINC01875",
    "ENSG00000280360", "ENSG00000233970", "ENSG00000227713", "ENSG00000223751",
    "ENSG00000231173", "LINC01939", "SNTG2-AS1", "ENSG00000235403", "ENSG00000236665",
    "ENSG00000233553", "ENSG00000283766", "ENSG00000203635", "ENSG00000232057", "MYT1L-AS1",
    "ENSG00000289941", "LINC01874",
)  # fmt: skip


def invoke(args: list[object]) -> Result:
    return runner.invoke(app, ["score", *map(str, args)])


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def is_base(ids: np.ndarray) -> np.ndarray:
    return (ids >= 7) & (ids <= 10)  # A C G T


@pytest.fixture(scope="module")
def tiny(hyenadna_fixtures: Path) -> Path:
    return hyenadna_fixtures / "hf_tiny"


@pytest.fixture(scope="module")
def model(tiny: Path) -> HyenaDNAModel:
    return load_model(tiny, filter_len=K).eval()


@pytest.fixture(scope="module")
def hg38(shared_data: Path) -> Iterator[FastaFile]:
    with FastaFile(shared_data / HG38) as fa:
        yield fa


def reading_ids(fasta: FastaFile, chrom: str, start: int, end: int, strand: str) -> np.ndarray:
    """Token ids of [start, end) in reading order (reverse complement for '-')."""
    ids = encode(fasta.fetch(chrom, start, end))
    return reverse_complement_ids(ids) if strand == "-" else ids


def direct_track(
    model: HyenaDNAModel, fasta: FastaFile, chrom: str, start: int, end: int, strand: str
) -> np.ndarray:
    """The documented track from one full forward: (L,) float64, + strand order."""
    ids = reading_ids(fasta, chrom, start, end, strand)
    with torch.no_grad():
        out = model(torch.from_numpy(ids)[None], return_logprobs=True)
    track = np.concatenate([[np.nan], out.next_token_logprobs[0].double().numpy()])
    track[~is_base(ids)] = np.nan
    return track[::-1] if strand == "-" else track


def read_tsv(path: Path) -> list[dict[str, str]]:
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def check_summary(h5: h5py.File, fasta: FastaFile, tsv: Path | None = None) -> None:
    """Group attributes, /summary and the TSV agree and match the track and the FASTA."""
    table = h5["summary"][()]
    assert list(table.dtype.names) == list(SUMMARY_COLUMNS)
    rows = read_tsv(tsv) if tsv is not None else None
    if rows is not None:
        assert len(rows) == len(table)
    for i, rec in enumerate(table):
        key = rec["key"].decode()
        g = h5["regions"][key]
        a = g.attrs
        assert a["row"] == i
        lp = g["logprob"][()]
        start, end, strand = int(a["start"]), int(a["end"]), str(a["strand"])
        assert lp.dtype == np.float32 and lp.shape == (end - start,)
        seq = fasta.fetch(str(a["chrom"]), start, end)
        ids = encode(seq)
        scored = int(np.count_nonzero(~np.isnan(lp)))
        first = -1 if strand == "-" else 0  # first base in reading direction
        assert scored == int(np.count_nonzero(is_base(ids))) - int(is_base(ids)[first])
        assert np.isnan(lp[first])
        assert np.isnan(lp[~is_base(ids)]).all()
        mean_nll = -float(np.nansum(lp.astype(np.float64))) / scored
        assert rec["length"] == end - start == a["length"]
        assert rec["scored_bases"] == scored == a["scored_bases"]
        assert math.isclose(rec["mean_nll"], mean_nll, rel_tol=1e-9)
        assert math.isclose(rec["perplexity"], math.exp(mean_nll), rel_tol=1e-9)
        assert math.isclose(rec["bits_per_base"], mean_nll / math.log(2), rel_tol=1e-9)
        assert rec["n_fraction"] == np.count_nonzero(ids == 11) / len(ids) == a["n_fraction"]
        lower = sum(c in b"acgtn" for c in seq) / len(seq)
        assert math.isclose(rec["softmask_fraction"], lower) and a["mean_nll"] == rec["mean_nll"]
        if rows is not None:
            row = rows[i]
            assert row["key"] == key and row["chrom"] == a["chrom"] and row["strand"] == strand
            assert (int(row["start"]), int(row["end"])) == (start, end)
            assert int(row["scored_bases"]) == scored
            assert abs(float(row["mean_nll"]) - mean_nll) <= 1e-6
            assert math.isclose(float(row["perplexity"]), math.exp(mean_nll), rel_tol=1e-5)


# --------------------------------------------------------------------------------------------
# exactness against a full forward, '+' and '-' genes, N-containing regions
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parity_run(shared_data: Path, tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parity") / "parity.h5"
    result = invoke(
        [shared_data / HG38, "--genes", shared_data / GENES_BED, "-o", out, "--model", tiny]
        + ["--gene", "ENSG00000226277", "--gene", "ENSG00000203635", "--chunk", 1000]
        + ["--region", "chr2:9,001-12,000", "--region", "chr2:9,001-12,000:-", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert result.output == ""  # --quiet
    return out


@pytest.mark.parametrize(
    "key, strand",
    [
        ("ENSG00000226277", "+"),  # 3,003 bp: 4 chunks of 1,000 tokens
        ("ENSG00000203635", "-"),  # 4,910 bp: reverse complement, last chunk partial
        ("chr2:9001-12000", "."),  # 1,000 N then sequence
        ("chr2:9001-12000:-", "-"),  # the same on the minus strand: N at the end of reading
    ],
)
def test_track_equals_full_forward(
    parity_run: Path, model: HyenaDNAModel, hg38: FastaFile, key: str, strand: str
) -> None:
    with h5py.File(parity_run) as h5:
        g = h5["regions"][key]
        assert g.attrs["strand"] == strand
        got = g["logprob"][()]
        assert h5.attrs["filter_len"] == K and h5.attrs["chunk"] == 1000
        want = direct_track(model, hg38, "chr2", int(g.attrs["start"]), int(g.attrs["end"]), strand)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert ok.sum() > 1900
    assert rel_err(got[ok], want[ok]) <= 1e-5


def test_parity_run_summaries(parity_run: Path, hg38: FastaFile) -> None:
    with h5py.File(parity_run) as h5:
        check_summary(h5, hg38)
        n_frac = {k: h5["regions"][k].attrs["n_fraction"] for k in h5["regions"]}
        assert h5.attrs["format"] == "dnastream.score"
        assert h5["regions"]["ENSG00000203635"].attrs["reading_strand"] == "-"
    assert n_frac["chr2:9001-12000"] == pytest.approx(1000 / 3000)  # the fragment's N run


# --------------------------------------------------------------------------------------------
# MYT1L whole (542 kb, minus strand), with bedGraph and plot
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def myt1l_run(shared_data: Path, tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("myt1l")
    args = [shared_data / HG38, "--genes", shared_data / MYT1L_BED, "-o", out / "m.h5"]
    args += ["--tsv", out / "m.tsv", "--bedgraph", out / "m.bedGraph", "--plot", out / "m.png"]
    result = invoke([*args, "--model", tiny])
    assert result.exit_code == 0, result.output
    assert "MYT1L_PE" in result.output and "kbp/s" in result.output
    return out


def test_myt1l_whole_gene_minus_strand(
    myt1l_run: Path, model: HyenaDNAModel, hg38: FastaFile, shared_data: Path
) -> None:
    bed = read_bed(shared_data / MYT1L_BED)
    tx = bed[0]
    assert (tx.name, tx.strand, tx.length) == ("ENST00000647738.2", "-", 542_163)
    with h5py.File(myt1l_run / "m.h5") as h5:
        check_summary(h5, hg38, myt1l_run / "m.tsv")
        g = h5["regions"]["ENST00000647738.2"]
        assert g["logprob"].chunks is not None and g["logprob"].compression == "gzip"
        assert [tuple(e) for e in g["exons"][()]] == list(tx.exons)
        assert [tuple(e) for e in g["cds"][()]] == list(tx.cds)
        track = g["logprob"][()]
        assert h5["regions"]["MYT1L_PE"].attrs["strand"] == "."
    # Deep inside the stream the track equals a full forward over the receptive field: the
    # gene's 3' end (+ coordinates near its start) is ~542,000 tokens into the reading.
    for r0 in (5_000, 270_000, 540_000):  # reading offsets of 2,000-base windows
        r1 = r0 + 2_000
        lo, hi = tx.end - r1, tx.end - (r0 - FIELD)  # + strand span of reading [r0-FIELD, r1)
        ids = reading_ids(hg38, "chr2", lo, hi, "-")
        with torch.no_grad():
            lp = model(torch.from_numpy(ids)[None], return_logprobs=True).next_token_logprobs
        want = lp[0, FIELD - 1 :].double().numpy()  # reading r0 .. r1-1
        want[~is_base(ids[FIELD:])] = np.nan
        got = track[tx.length - r1 : tx.length - r0][::-1]  # + order -> reading order
        ok = ~np.isnan(want)
        assert np.array_equal(np.isnan(got), ~ok)
        assert rel_err(got[ok], want[ok]) <= 1e-5


def test_myt1l_bedgraph_and_plot(myt1l_run: Path) -> None:
    rows = parse_bedgraph(myt1l_run / "m.bedGraph", name="m")
    with h5py.File(myt1l_run / "m.h5") as h5:
        expected = first_wins(h5)
    assert_bedgraph_matches(rows, expected)
    assert_png(myt1l_run / "m.png")
    assert bin_width(542_163) == 1_000  # 1 kb bins for MYT1L


# --------------------------------------------------------------------------------------------
# 22 genes of the 42-gene BED (21 < 10 kb + LINC01874), both strands, overlaps
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def genes_run(shared_data: Path, tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("genes")
    args = [shared_data / HG38, "--genes", shared_data / GENES_BED, "-o", out / "g.h5"]
    args += ["--tsv", out / "g.tsv", "--bedgraph", out / "g.bedGraph", "-q", "--model", tiny]
    for name in SHORT_GENES:
        args += ["--gene", name]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    return out


def test_short_genes_end_to_end(genes_run: Path, hg38: FastaFile, shared_data: Path) -> None:
    bed = {iv.name: iv for iv in read_bed(shared_data / GENES_BED)}
    with h5py.File(genes_run / "g.h5") as h5:
        check_summary(h5, hg38, genes_run / "g.tsv")
        keys = [k.decode() for k in h5["summary"]["key"]]
        assert keys == list(SHORT_GENES)  # the order of --gene
        for key in keys:
            a = h5["regions"][key].attrs
            iv = bed[key]
            assert (a["chrom"], a["start"], a["end"], a["strand"]) == (
                iv.chrom, iv.start, iv.end, iv.strand,
            )  # fmt: skip
            assert a["line"] == iv.line and a["source"].endswith("genes.bed")
    strands = {bed[n].strand for n in SHORT_GENES}
    assert strands == {"+", "-"}
    assert sum(bed[n].length < 10_000 for n in SHORT_GENES) == 21


def test_overlapping_genes_keep_their_own_stream(
    genes_run: Path, model: HyenaDNAModel, hg38: FastaFile
) -> None:
    """ENSG00000231173 lies mostly inside ENSG00000223751 (both '+'): each is its own stream,
    so their values differ where they overlap near the inner gene's start, then converge."""
    with h5py.File(genes_run / "g.h5") as h5:
        outer = h5["regions"]["ENSG00000223751"]
        inner = h5["regions"]["ENSG00000231173"]
        shift = int(inner.attrs["start"] - outer.attrs["start"])
        a = outer["logprob"][shift : shift + 5000]
        b = inner["logprob"][:5000]
        inner_track = inner["logprob"][()]
        want = direct_track(
            model, hg38, "chr2", *(int(inner.attrs[k]) for k in ("start", "end")), "+"
        )
    ok = ~np.isnan(a) & ~np.isnan(b)
    assert np.abs(a[ok][:100] - b[ok][:100]).max() > 1e-3  # no shared context at the start
    assert np.abs(a[ok][-100:] - b[ok][-100:]).max() <= 1e-4  # beyond the receptive field
    keep = ~np.isnan(want)
    assert rel_err(inner_track[keep], want[keep]) <= 1e-5


def test_bedgraph_parses_back_to_the_hdf5_values(genes_run: Path) -> None:
    rows = parse_bedgraph(genes_run / "g.bedGraph", name="g")
    with h5py.File(genes_run / "g.h5") as h5:
        expected = first_wins(h5)
        # the gene inside LINC01874 contributes nothing: LINC01874 starts first and wins
        inner = h5["regions"]["ENSG00000284452"]
        outer = h5["regions"]["LINC01874"]
        lo, hi = int(inner.attrs["start"]), int(inner.attrs["end"])
        o0 = int(outer.attrs["start"])
        assert o0 < lo and hi < outer.attrs["end"]
        outer_values = outer["logprob"][lo - o0 : hi - o0]
    assert_bedgraph_matches(rows, expected)
    inside = {p: v for _, s, e, v in rows for p in range(s, e) if lo <= p < hi}
    ok = ~np.isnan(outer_values)
    assert len(inside) == ok.sum()
    assert np.array_equal(np.float32([inside[p] for p in sorted(inside)]), outer_values[ok])


# bedGraph helpers -----------------------------------------------------------------------


def parse_bedgraph(path: Path, *, name: str) -> list[tuple[str, int, int, float]]:
    """Rows of a bedGraph file, checking its header and the BED conventions on the way."""
    lines = path.read_text().splitlines()
    assert lines[0].startswith(f'track type=bedGraph name="{name}" description="')
    rows = []
    for line in lines[1:]:
        chrom, s, e, v = line.split("\t")
        rows.append((chrom, int(s), int(e), float(v)))
    assert rows, "empty bedGraph"
    for (c0, s0, e0, v0), (c1, s1, _, v1) in zip(rows, rows[1:], strict=False):
        assert (c0.encode(), s0) < (c1.encode(), s1)  # sorted
        assert c0 != c1 or e0 <= s1  # never overlapping
        assert not (c0 == c1 and e0 == s1 and v0 == v1)  # equal neighbours are merged
    assert all(s < e and not math.isnan(v) for _, s, e, v in rows)
    return rows


def first_wins(h5: h5py.File) -> dict[tuple[str, int], float]:
    """{(chrom, position): value} by the documented rule: targets ordered by (chrom, start,
    -end, key); each base is taken from the first target covering it, and left out when that
    target's value is NaN (even if a later target has one)."""
    regions = sorted(
        h5["regions"].values(),
        key=lambda g: (g.attrs["chrom"], g.attrs["start"], -g.attrs["end"], g.attrs["key"]),
    )
    covered: set[tuple[str, int]] = set()
    out: dict[tuple[str, int], float] = {}
    for g in regions:
        chrom, start = str(g.attrs["chrom"]), int(g.attrs["start"])
        track = g["logprob"][()]
        for i, v in enumerate(track.tolist()):
            if (chrom, start + i) not in covered:
                covered.add((chrom, start + i))
                if not math.isnan(v):
                    out[(chrom, start + i)] = v
    return out


def assert_bedgraph_matches(
    rows: list[tuple[str, int, int, float]], expected: dict[tuple[str, int], float]
) -> None:
    seen = 0
    for chrom, s, e, v in rows:
        for p in range(s, e):
            assert np.float32(v) == np.float32(expected[(chrom, p)])  # exact float32 round trip
        seen += e - s
    assert seen == len(expected)  # every non-NaN base once, nothing else


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 500 and height >= 200


# --------------------------------------------------------------------------------------------
# yeast GFF3 (plain gzip FASTA, streamed), genes by Name and by ID, both strands
# --------------------------------------------------------------------------------------------


def test_yeast_gff3_genes_by_name_and_id(
    shared_data: Path, tiny: Path, model: HyenaDNAModel, tmp_path: Path
) -> None:
    # PAU8 = YAL068C ('-'), YAL067W-A ('+', no Name), SUS1 = YBR111W-A ('+', 2 introns),
    # ACT1 = YFL039C ('-', 1 intron), YAL067C by ID (= SEO1, '-')
    names = ["PAU8", "YAL067W-A", "SUS1", "ACT1", "YAL067C"]
    args = [shared_data / YEAST, "--genes", shared_data / YEAST_GFF, "-o", tmp_path / "y.h5"]
    args += ["--tsv", tmp_path / "y.tsv", "--plot", tmp_path / "y.png", "--model", tiny]
    result = invoke(args + [a for n in names for a in ("--gene", n)])
    assert result.exit_code == 0, result.output
    assert_png(tmp_path / "y.png")
    rows = read_tsv(tmp_path / "y.tsv")
    assert [(r["id"], r["name"], r["strand"]) for r in rows] == [
        ("YAL068C", "PAU8", "-"),
        ("YAL067W-A", "YAL067W-A", "+"),
        ("YBR111W-A", "SUS1", "+"),
        ("YFL039C", "ACT1", "-"),
        ("YAL067C", "SEO1", "-"),
    ]
    with FastaFile(shared_data / YEAST) as fa, h5py.File(tmp_path / "y.h5") as h5:
        assert not fa.random_access  # plain gzip: '-' genes are spooled, not re-read
        for r in rows:
            g = h5["regions"][r["key"]]
            a = g.attrs
            with warnings.catch_warnings():  # fetch() on plain gzip reads from the start
                warnings.simplefilter("ignore", StreamingAccessWarning)
                want = direct_track(
                    model, fa, a["chrom"], int(a["start"]), int(a["end"]), r["strand"]
                )
            got = g["logprob"][()]
            assert np.array_equal(np.isnan(got), np.isnan(want))
            ok = ~np.isnan(want)
            assert rel_err(got[ok], want[ok]) <= 1e-5
        assert len(h5["regions"]["SUS1"]["exons"]) == 3  # two introns, from the GFF3 exons
        assert len(h5["regions"]["ACT1"]["exons"]) == 2


# --------------------------------------------------------------------------------------------
# plotting without matplotlib
# --------------------------------------------------------------------------------------------


def test_plot_without_matplotlib_is_a_clear_error(
    shared_data: Path, tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    args = [shared_data / HG38, "--region", "chr2:20,001-20,100", "-o", tmp_path / "o.h5"]
    result = invoke([*args, "--plot", tmp_path / "o.png", "--model", tiny])
    assert result.exit_code == 2
    assert "pip install 'dnastream[plot]'" in " ".join(result.output.split())
    assert list(tmp_path.iterdir()) == []  # checked before anything is written


def test_plot_with_or_without_matplotlib_installed(
    shared_data: Path, tiny: Path, tmp_path: Path
) -> None:
    """The environment's own matplotlib: a PNG when installed, else the clear error."""
    args = [shared_data / HG38, "--region", "chr2:20,001-23,000:-", "-o", tmp_path / "o.h5"]
    result = invoke([*args, "--plot", tmp_path / "o.png", "--model", tiny])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert result.exit_code == 2
        assert "pip install 'dnastream[plot]'" in " ".join(result.output.split())
    else:
        assert result.exit_code == 0, result.output
        assert_png(tmp_path / "o.png")


# --------------------------------------------------------------------------------------------
# errors and overwrite protection
# --------------------------------------------------------------------------------------------


def test_unknown_gene_lists_close_matches(shared_data: Path, tiny: Path, tmp_path: Path) -> None:
    args = [shared_data / HG38, "--genes", shared_data / GENES_BED, "-o", tmp_path / "o.h5"]
    result = invoke([*args, "--model", tiny, "--gene", "TPO", "--gene", "myt1l", "--gene", "SNTG"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "genes.bed" in text and "unknown genes 'myt1l'" in text
    assert "MYT1L" in text and "SNTG2" in text and "'TPO'" not in text
    assert list(tmp_path.iterdir()) == []


def test_unknown_contig_names_the_file_and_line(
    shared_data: Path, tiny: Path, tmp_path: Path
) -> None:
    lines = (shared_data / GENES_BED).read_text().splitlines()
    lines[2] = lines[2].replace("chr2", "2", 1)  # line 3: "2" instead of "chr2"
    bed = tmp_path / "genes.bed"
    bed.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o.h5"
    result = invoke([shared_data / HG38, "--genes", bed, "-o", out, "--model", tiny])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert f"{bed}: record 'SH3YL1', line 3: unknown contig '2'" in text
    assert "did you mean 'chr2'" in text
    assert not out.exists()


def test_bad_region_and_invalid_base_are_exit_2(
    shared_data: Path, tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o.h5"
    base = [shared_data / HG38, "-o", out, "--model", tiny]
    past = invoke([*base, "--region", "chr2:2,333,000-2,334,000"])
    assert past.exit_code == 2 and "past the end" in " ".join(past.output.split())
    fasta = tmp_path / "bad.fa"
    fasta.write_text(">r1\n" + "ACGT" * 30 + "\n>r2\nACGTACGTAC\nGTXACGT\n")
    bad = invoke([fasta, "-o", out, "--model", tiny, "--region", "r2:1-17:-"])
    assert bad.exit_code == 2
    text = " ".join(bad.output.split())
    assert "bad.fa" in text and "record 'r2'" in text and "position 12" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.fa", "bad.fa.fai"]  # no output
    lonely = invoke([shared_data / HG38, "-o", out, "--model", tiny, "--gene", "TPO"])
    assert lonely.exit_code == 2 and "--genes" in lonely.output
    same = invoke([*base, "--region", "chr2:20001-20100", "--tsv", out])
    assert same.exit_code == 2 and "same file" in same.output


def test_existing_outputs_are_kept_without_force(
    shared_data: Path, tiny: Path, tmp_path: Path
) -> None:
    h5, tsv, bg = tmp_path / "o.h5", tmp_path / "o.tsv", tmp_path / "o.bedGraph"
    tsv.write_text("precious\n")
    bg.write_text("also precious\n")
    args = [shared_data / HG38, "--region", "chr2:20,001-20,500", "-o", h5, "--tsv", tsv]
    args += ["--bedgraph", bg, "--model", tiny]
    result = invoke(args)
    assert result.exit_code == 3
    text = " ".join(result.output.split())
    assert str(tsv) in text and str(bg) in text and "--force" in text
    assert not h5.exists()  # all outputs are checked before starting
    assert tsv.read_text() == "precious\n" and bg.read_text() == "also precious\n"
    forced = invoke([*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert read_tsv(tsv)[0]["key"] == "chr2:20001-20500"
    assert bg.read_text().startswith("track type=bedGraph")
    before = h5.read_bytes()
    again = invoke(args)  # now the HDF5 exists too
    assert again.exit_code == 3 and str(h5) in " ".join(again.output.split())
    assert h5.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.bedGraph", "o.h5", "o.tsv"]


def test_repeated_gene_names_get_unique_keys(shared_data: Path, hg38: FastaFile) -> None:
    targets = assign_keys(load_targets(shared_data / GENES_BED, hg38.lengths()))
    keys = [t.key for t in targets]
    assert len(targets) == 42 and len(set(keys)) == 42
    assert "LINC01115@chr2:739588-740164" in keys and "LINC01115@chr2:779840-868608" in keys
    assert "MYT1L" in keys


def test_bedgraph_runs_merge_across_pieces_and_skip_nan() -> None:
    """Equal neighbours become one row, also across the pieces the writer is fed; NaN and gaps
    split runs (the real tracks above never repeat a float32 value, so this runs the merge)."""
    fh = io.StringIO()
    writer = _RunWriter(fh)
    nan = np.nan
    writer.add("chr1", 10, np.float32([1.5, 1.5, nan, 2.0, 2.0]))
    writer.add("chr1", 15, np.float32([2.0, 3.0]))  # continues the 2.0 run
    writer.add("chr1", 20, np.float32([3.0]))  # same value, not adjacent: new row
    writer.add("chr2", 21, np.float32([3.0, -0.1]))  # other record: new row
    writer.close()
    assert fh.getvalue().splitlines() == [
        "chr1\t10\t12\t1.5",
        "chr1\t13\t16\t2",
        "chr1\t16\t17\t3",
        "chr1\t20\t21\t3",
        "chr2\t21\t22\t3",
        "chr2\t22\t23\t-0.100000001",
    ]
    assert np.float32(float("-0.100000001")) == np.float32(-0.1)
    assert [bin_width(n) for n in (1, 600, 601, 2_333_275)] == [1, 1, 2, 5_000]
