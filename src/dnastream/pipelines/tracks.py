"""Genome-browser tracks and plots from a ``dnastream score`` HDF5 file.

bedGraph (:func:`write_bedgraph`)
---------------------------------
One ``track type=bedGraph name="..." description="..."`` line, then ``chrom start end value``
rows: 0-based half-open, sorted by record name (byte order, as ``LC_ALL=C sort -k1,1
-k2,2n`` and ``bedGraphToBigWig`` expect) then start, never overlapping. Positions whose value
is NaN (a target's first base, N bases) are left out. Consecutive bases with the same float32
value are merged into one row. Values are written with 9 significant digits, which
round-trips float32 exactly.

Overlapping targets (genes overlap, e.g. antisense pairs, and their values differ even on
the same strand since each target is its own stream): **the first target wins**. Targets are
ordered by ``(chrom, start, -end, key)``; each base is written from the first target in that
order that covers it, i.e. the one that starts leftmost (then the longest). A later target only
contributes the bases to the right of everything before it. The values of ``-`` targets are
in their own reading direction (see :mod:`dnastream.pipelines.score`); strand is not a
bedGraph column, so the track mixes both strands. Every target's full track stays in the
HDF5 file.

Plot (:func:`plot_tracks`)
--------------------------
One panel per target (the first ``max_panels``, in scoring order): the per-base
``logprob`` averaged over bins (NaN skipped; the bin width is 1, 2 or 5 x 10^k bases, the
smallest giving at most ``max_bins`` bins: 1 kb for a 542 kb gene) against the + strand
coordinate, with the gene's exons drawn below it (thick: CDS, thin: UTR/non-coding exons,
line: introns) from the annotation (BED12 blocks, GTF/GFF3 exons merged over transcripts).
Needs matplotlib (``pip install 'dnastream[plot]'``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import h5py
import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "PlotDependencyError",
    "TrackRegion",
    "binned_means",
    "bin_width",
    "plot_tracks",
    "read_regions",
    "require_matplotlib",
    "write_bedgraph",
]

PathLike = str | os.PathLike[str]
READ_CHUNK = 1 << 18
"""Values read from the HDF5 file at a time."""

PLOT_INSTALL_HINT = "pip install 'dnastream[plot]'"


class PlotDependencyError(ImportError):
    """``--plot`` was asked for but matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`PlotDependencyError` (naming the install command) without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotDependencyError(
            f"--plot needs matplotlib, which is not installed; install it with "
            f"`{PLOT_INSTALL_HINT}` (or `pip install matplotlib`)"
        ) from exc


@dataclass(frozen=True)
class TrackRegion:
    """One scored target as stored in the HDF5 file (``/regions/<key>``)."""

    key: str
    name: str
    chrom: str
    start: int
    end: int
    strand: str
    row: int
    mean_nll: float
    exons: np.ndarray
    cds: np.ndarray

    @property
    def length(self) -> int:
        return self.end - self.start


def read_regions(h5: h5py.File) -> list[TrackRegion]:
    """The targets of a score file, in scoring order (their ``/summary`` row)."""
    out = []
    for key, g in h5["regions"].items():
        a = g.attrs
        out.append(
            TrackRegion(
                key=key,
                name=str(a["name"]),
                chrom=str(a["chrom"]),
                start=int(a["start"]),
                end=int(a["end"]),
                strand=str(a["strand"]),
                row=int(a.get("row", len(out))),
                mean_nll=float(a.get("mean_nll", math.nan)),
                exons=g["exons"][()] if "exons" in g else np.zeros((0, 2), np.int64),
                cds=g["cds"][()] if "cds" in g else np.zeros((0, 2), np.int64),
            )
        )
    out.sort(key=lambda r: r.row)
    return out


def _iter_values(ds: h5py.Dataset, lo: int, hi: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, values)`` of ``ds[lo:hi]`` in pieces of at most :data:`READ_CHUNK`."""
    for s in range(lo, hi, READ_CHUNK):
        e = min(hi, s + READ_CHUNK)
        yield s, ds[s:e]


# --------------------------------------------------------------------------------------------
# bedGraph
# --------------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


class _RunWriter:
    """Merges per-base values into bedGraph runs and writes them."""

    def __init__(self, fh: TextIO) -> None:
        self.fh = fh
        self.pending: tuple[str, int, int, np.float32] | None = None
        self.rows = 0

    def _emit(self, chrom: str, starts: np.ndarray, ends: np.ndarray, vals: np.ndarray) -> None:
        if len(starts):
            prefix = chrom + "\t"
            self.fh.write(
                "".join(
                    f"{prefix}{s}\t{e}\t{v:.9g}\n"
                    for s, e, v in zip(starts.tolist(), ends.tolist(), vals.tolist(), strict=True)
                )
            )
            self.rows += len(starts)

    def add(self, chrom: str, pos0: int, values: np.ndarray) -> None:
        """Values (n,) float32 for positions ``pos0 .. pos0 + n - 1``; NaN are skipped."""
        idx = np.flatnonzero(~np.isnan(values))
        if not len(idx):
            return
        vals = values[idx]
        pos = idx.astype(np.int64) + pos0
        new = np.ones(len(idx), dtype=bool)
        new[1:] = (np.diff(pos) != 1) | (vals[1:] != vals[:-1])
        first = np.flatnonzero(new)
        run_start = pos[first]
        run_end = pos[np.r_[first[1:], len(idx)] - 1] + 1
        run_val = vals[first]
        if self.pending is not None:
            pc, ps, pe, pv = self.pending
            if pc == chrom and pe == run_start[0] and pv == run_val[0]:
                run_start[0] = ps
            else:
                self._emit(pc, np.array([ps]), np.array([pe]), np.array([pv]))
        self._emit(chrom, run_start[:-1], run_end[:-1], run_val[:-1])
        self.pending = (chrom, int(run_start[-1]), int(run_end[-1]), run_val[-1])

    def close(self) -> None:
        if self.pending is not None:
            pc, ps, pe, pv = self.pending
            self._emit(pc, np.array([ps]), np.array([pe]), np.array([pv]))
            self.pending = None


@dataclass(frozen=True)
class BedGraphReport:
    """Rows written and bases covered by :func:`write_bedgraph`."""

    rows: int
    bases: int


def write_bedgraph(
    h5_path: PathLike, out_path: PathLike, *, name: str = "dnastream", description: str = ""
) -> BedGraphReport:
    """Write the ``logprob`` tracks of a score file as one bedGraph track (see module doc).

    Reads and writes piecewise: memory is O(:data:`READ_CHUNK`) whatever the track lengths.
    """
    with h5py.File(h5_path, "r") as h5, open(out_path, "w", encoding="utf-8") as fh:
        regions = read_regions(h5)
        regions.sort(key=lambda r: (r.chrom.encode("utf-8"), r.start, -r.end, r.key))
        header = f"track type=bedGraph name={_quote(name)}"
        if description:
            header += f" description={_quote(description)}"
        fh.write(header + " visibility=full autoScale=on alwaysZero=off\n")
        writer = _RunWriter(fh)
        frontier: dict[str, int] = {}
        bases = 0
        for r in regions:
            lo = max(r.start, frontier.get(r.chrom, 0))
            if lo >= r.end:
                continue
            frontier[r.chrom] = r.end
            ds = h5["regions"][r.key]["logprob"]
            for i, values in _iter_values(ds, lo - r.start, r.length):
                writer.add(r.chrom, r.start + i, values)
                bases += int(np.count_nonzero(~np.isnan(values)))
        writer.close()
    return BedGraphReport(writer.rows, bases)


# --------------------------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------------------------


def bin_width(length: int, max_bins: int = 600) -> int:
    """Smallest ``{1, 2, 5} x 10^k`` width giving at most ``max_bins`` bins over ``length``."""
    need = max(1, math.ceil(length / max_bins))
    k = 0
    while True:
        for m in (1, 2, 5):
            if m * 10**k >= need:
                return m * 10**k
        k += 1


def binned_means(ds: h5py.Dataset, width: int) -> np.ndarray:
    """Mean of the non-NaN values of ``ds`` (L,) in consecutive bins of ``width``: (ceil(L/w),)
    float64, NaN for bins with no value. Reads piecewise."""
    length = ds.shape[0]
    nbins = math.ceil(length / width)
    sums = np.zeros(nbins)
    counts = np.zeros(nbins)
    step = max(width, (READ_CHUNK // width) * width)
    for s in range(0, length, step):
        v = ds[s : s + step].astype(np.float64)
        ok = ~np.isnan(v)
        b = ((np.flatnonzero(ok) + s) // width) - s // width
        first = s // width
        part = slice(first, first + math.ceil(len(v) / width))
        sums[part] += np.bincount(b, weights=v[ok], minlength=part.stop - part.start)
        counts[part] += np.bincount(b, minlength=part.stop - part.start)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _draw_gene(ax: Axes, r: TrackRegion) -> None:
    """The gene model under a track: exons (CDS taller), introns as a line, strand arrow."""
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    if not len(r.exons):  # no exon annotation (BED6 row, --region): the span only
        ax.broken_barh([(r.start, r.length)], (0.4, 0.2), color="0.6")
    else:
        exons = [(int(s), int(e)) for s, e in r.exons]
        ax.plot([exons[0][0], exons[-1][1]], [0.5, 0.5], color="0.3", lw=1, zorder=0)
        ax.broken_barh([(s, e - s) for s, e in exons], (0.3, 0.4), color="tab:blue")
    if len(r.cds):
        ax.broken_barh([(int(s), int(e - s)) for s, e in r.cds], (0.15, 0.7), color="tab:blue")
    arrow = {"+": "\u2192", "-": "\u2190"}.get(r.strand, "")
    ax.set_ylabel(arrow, rotation=0, va="center", fontsize=12)


def plot_tracks(
    h5_path: PathLike, out_path: PathLike, *, max_panels: int = 20, max_bins: int = 600
) -> int:
    """Plot the binned ``logprob`` of the first ``max_panels`` targets to a PNG (see module
    doc); returns the number of panels drawn."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    with h5py.File(h5_path, "r") as h5:
        regions = read_regions(h5)[:max_panels]
        n = len(regions)
        fig = plt.figure(figsize=(10, 2.6 * n), layout="constrained")
        panels = fig.subfigures(n, 1, squeeze=False)[:, 0]
        for panel, r in zip(panels, regions, strict=True):
            width = bin_width(r.length, max_bins)
            means = binned_means(h5["regions"][r.key]["logprob"], width)
            x = r.start + (np.arange(len(means)) + 0.5) * width
            ax, gene_ax = panel.subplots(2, 1, sharex=True, height_ratios=[4, 1])
            ax.plot(x, means, color="tab:red", lw=0.8, drawstyle="steps-mid")
            ax.set_xlim(r.start, r.end)
            ax.set_ylabel("mean ln p\n(nats/base)", fontsize=8)
            bins = f"{width:,} bp bins" if width > 1 else "per base"
            ax.set_title(
                f"{r.name}  {r.chrom}:{r.start + 1:,}-{r.end:,} ({r.strand})  {r.length:,} bp  "
                f"mean NLL {r.mean_nll:.4f} nats/base  ({bins})",
                fontsize=9,
                loc="left",
            )
            ax.tick_params(labelbottom=False, labelsize=8)
            _draw_gene(gene_ax, r)
            gene_ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
            gene_ax.tick_params(labelsize=8)
            gene_ax.set_xlabel(f"{r.chrom} position (0-based, + strand)", fontsize=8)
        fig.savefig(Path(out_path), format="png", dpi=100)
        plt.close(fig)
    return n
