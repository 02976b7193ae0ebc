"""``dnastream score``: per-base next-token log-likelihood of genes and regions.

What is computed
----------------
Each *target* (a gene of an annotation file, or a ``--region``) is one independent stream: the
model starts with no context at the target's first base (in reading direction) and reads the
target's whole span ``[start, end)`` (introns included) chunk by chunk
(:func:`~dnastream.pipelines.source.iter_token_chunks` read ahead in a thread ->
:class:`~dnastream.pipelines.runner.ModelRunner`, exact streaming): the result equals one full
forward over the span with the same long-filter length K. For reading position ``t``::

    logprob[t] = log p(base_t | base_0 .. base_{t-1})      (natural log, LM head, softmax
                                                            over the model's whole vocabulary)

* **Strand.** ``+`` and ``.`` targets are read on the + strand, left to right. A ``-`` target
  is read on its reverse complement, i.e. in transcription direction (5'->3' of the gene), so
  its first scored base is the gene's 5' end, the *highest* + coordinate. The stored track is
  mapped back to + strand coordinates either way: ``logprob[i]`` is the value of the base at
  genomic position ``start + i`` (0-based), on the target's strand. For a ``-`` target the
  base scored is the complement of the + strand base, and its context is the bases *to its
  right* on the + strand.
* **Tokens.** No special tokens (convention ``none``); soft-masked (lowercase) bases are read
  as their uppercase base; IUPAC ambiguity codes become ``N``; any other character is an
  error naming the file, the record and the 0-based position.
* **NaN.** ``logprob`` is NaN (i) at the target's first base in reading direction (position
  ``0`` for ``+``/``.``, position ``L - 1`` for ``-``): nothing predicts it; and (ii) at every
  base that is not A/C/G/T (``N``, IUPAC codes): the probability the model gives the token
  ``N`` is not a likelihood of a base. Bases *after* an ``N`` are scored normally (the ``N``
  tokens are part of their context).

Per-target summary (TSV row, HDF5 ``/summary`` row and group attributes)
-----------------------------------------------------------------------
``length = end - start``; ``scored_bases`` = number of non-NaN ``logprob`` values, i.e. the
A/C/G/T bases except the first base in reading direction; ``mean_nll = -sum(logprob) /
scored_bases`` over those bases, in nats per base (summed in float64 over the stored float32
values; NaN when ``scored_bases == 0``); ``perplexity = exp(mean_nll)``; ``bits_per_base =
mean_nll / ln 2``; ``n_fraction`` = bases that are N or IUPAC codes / length;
``softmask_fraction`` = lowercase (soft-masked, e.g. RepeatMasker) bases / length.

HDF5 layout (``format = "dnastream.score"``, ``format_version = 1``)
-------------------------------------------------------------------
* root attributes: format, versions, creation time, command, the FASTA, annotation, genes
  and regions given, the model path and config (JSON), the effective long-filter length K
  (``filter_len``), ``chunk`` (and ``chunk_final``/``oom_backoffs`` after CUDA OOM back-off),
  ``dtype``, ``device``, tokenizer policy and the definitions above as text;
* ``/regions/<key>``: one group per target; dataset ``logprob`` float32 ``(L,)`` (chunks of
  65,536, NaN fill, gzip level 1 + shuffle except whole chunks gzip would not shrink by 20%,
  stored unfiltered through the per-chunk filter mask; + strand order, see above), datasets
  ``exons`` and ``cds`` int64 ``(n, 2)`` (absolute 0-based half-open, possibly empty) and
  attributes ``key id name chrom start end strand reading_strand length`` + the summary
  fields + ``source``/``line`` (annotation file and line) + ``seconds``;
* ``/summary``: one row per target in scoring order, a compound dataset with the TSV columns.

``key`` is the target's name (``/`` replaced by ``_``); names that occur more than once (e.g.
a lncRNA annotated twice) get ``@chrom:start-end`` (1-based, inclusive) appended to every copy.

Memory per target is O(chunk + K) for the model plus the HDF5 chunk cache: the track is
written to the file chunk by chunk, never held whole. On a GPU the chunks to compress are
compressed in worker processes beside the model (as in ``dnastream embed``:
:func:`~dnastream.pipelines.h5store.compress_processes`, ``DNASTREAM_COMPRESS_PROCS=N``
overrides the count; none on CPU), by HDF5's own filter code, so the file holds the same bytes
either way. Outputs are written to temporary files beside their destination and renamed into
place at the end, so an interrupted run leaves no half-written output and existing files are
untouched unless the run succeeds with ``force``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import difflib
import json
import math
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import torch

from dnastream import __version__
from dnastream.genomics import (
    FastaFile,
    GenomicsInputError,
    Interval,
    format_region,
    parse_region,
    read_annotation,
    validate,
)
from dnastream.models import HyenaDNAModel, load_model
from dnastream.pipelines.convert import OutputExistsError
from dnastream.pipelines.h5store import (
    COMPRESS_ALWAYS_ENV,
    _filter_chunk,
    _filters,
    compress_processes,
    compression_pool,
    probe_rows,
    stored_raw,
)
from dnastream.pipelines.runner import DEFAULT_CHUNK, ModelRunner, resolve_device, tune_malloc
from dnastream.pipelines.source import FLAG_N, FLAG_SOFTMASK, Region, iter_token_chunks
from dnastream.pipelines.stats import PhaseStats

if TYPE_CHECKING:
    from dnastream.genomics import Gene

__all__ = [
    "SCORE_FORMAT",
    "SCORE_FORMAT_VERSION",
    "SUMMARY_COLUMNS",
    "ModelInputError",
    "OutputExistsError",
    "ScoreReport",
    "ScoreTarget",
    "TargetSummary",
    "UnknownGeneError",
    "check_outputs",
    "load_targets",
    "region_targets",
    "run_score",
    "score_targets",
    "select_genes",
    "write_tsv",
]

SCORE_FORMAT = "dnastream.score"
SCORE_FORMAT_VERSION = 1
H5_CHUNK = 1 << 16
"""Elements per HDF5 chunk of a ``logprob`` track (256 KiB of float32)."""
H5_CACHE = 2 << 20
"""HDF5 chunk cache of the output (bytes): room for the chunks one write touches."""
LOGPROB_FILTERS = _filters("gzip")
"""Filters of a ``logprob`` track: gzip level 1 + shuffle, exactly what the compression
processes apply (:func:`~dnastream.pipelines.h5store._filter_chunk` with ``"gzip"``), so a
chunk they filter is stored as a normal write would store it."""

LOGPROB_DEFINITION = (
    "logprob[i] = ln p(base | preceding bases of the target in reading direction) for the base "
    "at 0-based + strand position start + i; '-' targets are read on the reverse complement "
    "(transcription direction) and mapped back to + strand order. NaN at the first base in "
    "reading direction (no context) and at bases that are not A/C/G/T (N, IUPAC codes)."
)
SUMMARY_DEFINITION = (
    "scored_bases = non-NaN logprob values; mean_nll = -sum(logprob)/scored_bases (nats/base, "
    "float64 sum of the stored float32 values); perplexity = exp(mean_nll); bits_per_base = "
    "mean_nll/ln 2; n_fraction = (N or IUPAC bases)/length; softmask_fraction = lowercase "
    "bases/length"
)
TOKENIZER_POLICY = "convention=none, softmask=upper (lowercase read as its base), IUPAC -> N"

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

Block = tuple[int, int]
PathLike = str | os.PathLike[str]


class UnknownGeneError(GenomicsInputError):
    """A ``--gene`` name is neither the name nor the ID of any gene of the annotation."""


# --------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreTarget:
    """One stretch to score: a gene (whole span) or a region; 0-based half-open, + strand.

    ``exons``/``cds`` (absolute, sorted, merged over transcripts) are only used for plots.
    ``key`` is unique within a run and names the HDF5 group (see :func:`assign_keys`).
    """

    id: str
    name: str
    chrom: str
    start: int
    end: int
    strand: str = "."
    exons: tuple[Block, ...] = ()
    cds: tuple[Block, ...] = ()
    source: str | None = None
    line: int | None = None
    key: str = ""

    @property
    def length(self) -> int:
        """Span ``end - start`` (introns included)."""
        return self.end - self.start

    @property
    def reading_strand(self) -> str:
        """``-`` for minus-strand targets (read on the reverse complement), else ``+``."""
        return "-" if self.strand == "-" else "+"

    @property
    def region(self) -> str:
        """1-based inclusive region string, e.g. ``chr2:1789113-2331664:-``."""
        iv = Interval(self.chrom, self.start, self.end, self.strand)  # type: ignore[arg-type]
        return format_region(iv)


def _merge(blocks: Iterable[Block]) -> tuple[Block, ...]:
    merged: list[Block] = []
    for s, e in sorted(blocks):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return tuple(merged)


def _target_from_interval(iv: Interval) -> ScoreTarget:
    name = iv.name or format_region(iv)
    return ScoreTarget(
        id=name,
        name=name,
        chrom=iv.chrom,
        start=iv.start,
        end=iv.end,
        strand=iv.strand,
        exons=iv.blocks or (),
        cds=iv.cds if iv.blocks is not None else (),
        source=iv.source,
        line=iv.line,
    )


def _target_from_gene(gene: Gene) -> ScoreTarget:
    exons = _merge(b for t in gene.transcripts for b in t.exons)
    cds = _merge(b for t in gene.transcripts for b in t.cds)
    return ScoreTarget(
        id=gene.id,
        name=gene.name or gene.id,
        chrom=gene.chrom,
        start=gene.start,
        end=gene.end,
        strand=gene.strand,
        exons=exons,
        cds=cds,
        source=gene.source,
        line=gene.line,
    )


def load_targets(
    annotation: PathLike, contig_lengths: Mapping[str, int] | None = None
) -> list[ScoreTarget]:
    """Every gene (GTF/GFF3) or row (BED) of ``annotation`` as a target, in file order.

    With ``contig_lengths`` (the FASTA's ``{record: length}``) every target is checked to lie
    on a known record and inside it; the :class:`~dnastream.genomics.IntervalError` names the
    annotation file and line and suggests close contig names.
    """
    from dnastream.genomics.gff import Gene  # GTF/GFF3 only: not loaded for --region runs

    records = read_annotation(annotation)
    targets = [
        _target_from_gene(r) if isinstance(r, Gene) else _target_from_interval(r) for r in records
    ]
    if contig_lengths is not None:
        validate(records, contig_lengths, path=annotation)
    return targets


def region_targets(regions: Sequence[str], contig_lengths: Mapping[str, int]) -> list[ScoreTarget]:
    """Targets from region strings (``chr2:1,000-2,000[:strand]``, 1-based inclusive, or a
    whole record ``chr2``); each is named by its normalised region string."""
    out = []
    for text in regions:
        iv = parse_region(text, contig_lengths)
        name = format_region(iv)
        out.append(ScoreTarget(name, name, iv.chrom, iv.start, iv.end, iv.strand))
    return out


def select_genes(
    targets: Sequence[ScoreTarget], names: Sequence[str], *, path: PathLike | None = None
) -> list[ScoreTarget]:
    """The targets whose name or ID is one of ``names``, in the order of ``names``.

    A name shared by several genes selects all of them (annotation order). An unknown name
    raises :class:`UnknownGeneError` listing close matches (case-insensitive and by spelling).
    """
    by_label: dict[str, list[int]] = {}
    for i, t in enumerate(targets):
        for label in dict.fromkeys((t.name, t.id)):
            by_label.setdefault(label, []).append(i)
    unknown = [n for n in dict.fromkeys(names) if n not in by_label]
    if unknown:
        labels = list(by_label)
        lower: dict[str, list[str]] = {}
        for label in labels:
            lower.setdefault(label.lower(), []).append(label)
        parts = []
        for n in unknown:
            close = list(lower.get(n.lower(), []))
            close += [c for c in difflib.get_close_matches(n, labels, n=5, cutoff=0.6) if c != n]
            close = list(dict.fromkeys(close))[:5]
            parts.append(
                f"{n!r} (close matches: {', '.join(close)})" if close else f"{n!r} (no close match)"
            )
        raise UnknownGeneError(
            f"unknown gene{'s' if len(unknown) > 1 else ''} " + "; ".join(parts),
            path=path,
            hint=f"--gene takes a gene name or ID of the annotation ({len(targets)} genes)",
        )
    chosen: list[int] = []
    for n in names:
        chosen.extend(i for i in by_label[n] if i not in chosen)
    return [targets[i] for i in chosen]


def assign_keys(targets: Sequence[ScoreTarget]) -> list[ScoreTarget]:
    """Give every target a unique ``key``: its name with ``/`` -> ``_``, plus
    ``@chrom:start-end`` (1-based) on every copy of a repeated name (or ``#n`` if still equal).
    Targets that already have a key keep it. The same target given twice is kept once."""
    unique = list(dict.fromkeys(targets))
    base = [(t.key or t.name).replace("/", "_") or "." for t in unique]
    counts: dict[str, int] = {}
    for b in base:
        counts[b] = counts.get(b, 0) + 1
    out: list[ScoreTarget] = []
    used: set[str] = set()
    for t, b in zip(unique, base, strict=True):
        key = b
        if not t.key and counts[b] > 1:
            key = f"{b}@{t.chrom.replace('/', '_')}:{t.start + 1}-{t.end}"
        k, n = key, 1
        while k in used or k in (".", ".."):
            n += 1
            k = f"{key}#{n}"
        used.add(k)
        out.append(dataclasses.replace(t, key=k))
    return out


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------


def check_outputs(outputs: Mapping[str, PathLike | None], *, force: bool) -> dict[str, Path]:
    """Check the output paths (``{label: path}``, ``None`` = not requested) before any work.

    Raises ``ValueError`` when two outputs are the same file or a folder is in the way, and
    :class:`OutputExistsError` (listing every existing one) when files exist without ``force``.
    """
    paths = {label: Path(p) for label, p in outputs.items() if p is not None}
    seen: dict[Path, str] = {}
    for label, p in paths.items():
        resolved = p.resolve()
        if resolved in seen:
            raise ValueError(f"{label} and {seen[resolved]} are the same file: {p}")
        seen[resolved] = label
        if p.is_dir():
            raise ValueError(f"{label} {p} is a folder, expected a file path")
        if not p.parent.is_dir():
            raise ValueError(f"{label} {p}: folder {p.parent} does not exist")
    existing = [f"{p} ({label})" for label, p in paths.items() if p.exists()]
    if existing and not force:
        raise OutputExistsError(
            "output exists: " + ", ".join(existing) + "; nothing was written. Pass --force to "
            "overwrite (outputs are replaced only when the run succeeds)"
        )
    return paths


def _temp_beside(path: Path) -> Path:
    """A fresh name beside ``path`` (not created: the writer creates it with the umask)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")


# --------------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------------

SUMMARY_COLUMNS: tuple[str, ...] = (
    "key", "id", "name", "chrom", "start", "end", "strand", "length", "scored_bases",
    "n_fraction", "softmask_fraction", "mean_nll", "perplexity", "bits_per_base",
)  # fmt: skip
"""Columns of the TSV and of the HDF5 ``/summary`` table (``start`` 0-based, ``end`` excl.)."""


@dataclass(frozen=True)
class TargetSummary:
    """Summary of one scored target; see the module docstring for the exact definitions."""

    key: str
    id: str
    name: str
    chrom: str
    start: int
    end: int
    strand: str
    length: int
    scored_bases: int
    n_bases: int
    softmasked_bases: int
    nll_sum: float
    seconds: float = 0.0

    @property
    def n_fraction(self) -> float:
        return self.n_bases / self.length

    @property
    def softmask_fraction(self) -> float:
        return self.softmasked_bases / self.length

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / self.scored_bases if self.scored_bases else math.nan

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)

    @property
    def bits_per_base(self) -> float:
        return self.mean_nll / math.log(2)

    def row(self) -> dict[str, object]:
        """The values of :data:`SUMMARY_COLUMNS`."""
        return {c: getattr(self, c) for c in SUMMARY_COLUMNS}


@dataclass
class _Tally:
    """Running counts of one target while its chunks stream by."""

    n_bases: int = 0
    softmasked: int = 0
    scored: int = 0
    nll_sum: float = 0.0

    def add(self, logprob: np.ndarray, not_base: np.ndarray, softmask: np.ndarray) -> None:
        """logprob (C,) with NaN already set; not_base/softmask (C,) bool."""
        self.n_bases += int(np.count_nonzero(not_base))
        self.softmasked += int(np.count_nonzero(softmask))
        ok = ~np.isnan(logprob)
        self.scored += int(np.count_nonzero(ok))
        self.nll_sum -= float(logprob[ok].sum(dtype=np.float64))


def write_tsv(summaries: Sequence[TargetSummary], path: PathLike) -> None:
    """One header line (:data:`SUMMARY_COLUMNS`) and one tab-separated row per target.

    Floats: fractions and mean_nll/bits_per_base with 6 decimals, perplexity with 6
    significant digits; ``nan`` when nothing was scored.
    """

    def fmt(column: str, value: object) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return "nan"
            return f"{value:.6g}" if column == "perplexity" else f"{value:.6f}"
        return str(value)

    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\t".join(SUMMARY_COLUMNS) + "\n")
        for s in summaries:
            fh.write("\t".join(fmt(c, v) for c, v in s.row().items()) + "\n")


def _summary_table(summaries: Sequence[TargetSummary]) -> np.ndarray:
    text, ints = (
        ("key", "id", "name", "chrom", "strand"),
        ("start", "end", "length", "scored_bases"),
    )
    dtype = np.dtype(
        [
            (c, h5py.string_dtype() if c in text else np.dtype(np.int64 if c in ints else float))
            for c in SUMMARY_COLUMNS
        ]
    )
    return np.array([tuple(s.row().values()) for s in summaries], dtype=dtype)


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


def resolve_dtype(dtype: str) -> torch.dtype:
    """``float32``/``float64``/``bfloat16``/``float16`` -> the torch dtype."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


ProgressCallback = Callable[[ScoreTarget, int], None]
"""Called after each chunk with the target and the number of its bases done so far."""


def _release_heap() -> None:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``; no-op elsewhere).

    The runner's ``tune_malloc`` keeps freed activation buffers in the heap so the steps of a
    region reuse them (much less page-fault time on CPU), but across regions the heap then
    only fragments further: over the 42 genes of the hg38 fragment peak RSS grew from 2 GB to
    5 GB. Trimming after each target keeps it flat (same speed: the reuse within a region is
    what matters).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class _TrackWriter:
    """Writes a (L,) track piece by piece, in any order, a whole HDF5 chunk at a time.

    Pieces are gathered per chunk; a complete chunk whose sample does not compress by 20%
    (float32 log-likelihoods: gzip keeps ~83%) is stored unfiltered through the HDF5
    per-chunk filter mask (plain h5py reads it transparently), the others go through the
    dataset's filters as before (N runs: NaN, compress to almost nothing). Same policy as
    ``dnastream embed`` (:func:`dnastream.pipelines.h5store.stored_raw`); the choice is a
    function of the chunk's content only.

    With a ``pool`` (:func:`~dnastream.pipelines.h5store.compression_pool`, ``workers``
    processes) a chunk to filter is filtered in a worker by HDF5's own code
    (:func:`~dnastream.pipelines.h5store._filter_chunk`: the same bytes a normal write stores,
    an edge chunk padded with the NaN fill as HDF5 pads it) and stored with
    ``write_direct_chunk`` once done, in the order submitted; at most ``4 * workers + 4``
    chunks are in flight. Only for a dataset with exactly those filters (gzip level 1 +
    shuffle, :data:`LOGPROB_FILTERS`); another dataset is written the normal way.
    :meth:`close` stores everything; :meth:`abandon` (a failed run) drops what is in flight.
    """

    def __init__(self, ds: h5py.Dataset, pool: Executor | None = None, workers: int = 1) -> None:
        self.ds = ds
        self.rows = ds.shape[0]
        self.cr = ds.chunks[0]
        self.raw_mask = (1 << ds.id.get_create_plist().get_nfilters()) - 1
        self.stride = probe_rows(self.cr, 1, ds.dtype.itemsize)
        self.always = os.environ.get(COMPRESS_ALWAYS_ENV, "").strip() not in ("", "0")
        self.open: dict[int, tuple[np.ndarray, list[int]]] = {}
        self.pool = pool if pool is not None and _pool_filters(ds) else None
        self.depth = 4 * max(1, workers) + 4
        self.pending: deque[tuple[tuple[int], Future[tuple[int, bytes]]]] = deque()
        self.raw_chunks = 0  # whole chunks stored unfiltered
        self.filtered_chunks = 0  # whole chunks stored filtered (in the pool or here)
        self.compress_wait = 0.0  # seconds waiting for the pool's results

    def write(self, lo: int, values: np.ndarray) -> None:
        """Write ``values`` at ``[lo, lo + len(values))``. The array is not copied when it
        fills a whole chunk: the caller must not change it afterwards."""
        hi = lo + len(values)
        cr = self.cr
        for c in range(lo // cr, (hi - 1) // cr + 1):
            s, e = max(lo, c * cr), min(hi, (c + 1) * cr)
            need = min(cr, self.rows - c * cr)
            if e - s == need and c not in self.open:
                self._store(c, values[s - lo : e - lo])
                continue
            buf, got = self.open.setdefault(c, (np.full(cr, np.nan, np.float32), [0]))
            buf[s - c * cr : e - c * cr] = values[s - lo : e - lo]
            got[0] += e - s
            if got[0] == need:
                del self.open[c]
                self._store(c, buf[:need])
        if self.pending:
            self._pump(keep=self.depth)

    def _store(self, c: int, values: np.ndarray) -> None:
        lo = c * self.cr
        full = values
        if len(values) < self.cr:  # the edge chunk is stored whole: pad with the fill
            full = np.full(self.cr, np.nan, np.float32)
            full[: len(values)] = values
        if not self.always and stored_raw(full, "gzip", self.stride):
            self.ds.id.write_direct_chunk((lo,), np.ascontiguousarray(full), self.raw_mask)
            self.raw_chunks += 1
            return
        self.filtered_chunks += 1
        if self.pool is None:
            self.ds[lo : lo + len(values)] = values
            return
        fut = self.pool.submit(_filter_chunk, np.ascontiguousarray(full), "gzip")
        self.pending.append(((lo,), fut))

    def _pump(self, keep: int = 0) -> None:
        """Store the finished chunks at the head of the queue (in order); wait while more
        than ``keep`` are in flight."""
        while self.pending:
            offset, fut = self.pending[0]
            if len(self.pending) <= keep and not fut.done():
                return
            t0 = time.perf_counter()
            try:
                mask, data = fut.result()
            finally:
                self.compress_wait += time.perf_counter() - t0
                self.pending.popleft()
            self.ds.id.write_direct_chunk(offset, data, mask)

    def close(self) -> None:
        """Store the chunks in flight, then what is left (only when pieces were missing: a
        failed run)."""
        try:
            self._pump()
        except BaseException:
            self.abandon()
            raise
        for c, (buf, _) in sorted(self.open.items()):
            need = min(self.cr, self.rows - c * self.cr)
            self.ds[c * self.cr : c * self.cr + need] = buf[:need]
        self.open.clear()

    def abandon(self) -> None:
        """Drop the chunks in flight and the partial ones (the run failed; its file is
        discarded). Never waits for the pool."""
        for _, fut in self.pending:
            fut.cancel()
        self.pending.clear()
        self.open.clear()


def _pool_filters(ds: h5py.Dataset) -> bool:
    """Whether ``ds`` filters float32 chunks exactly as ``_filter_chunk(..., "gzip")`` does."""
    return (
        ds.dtype == np.dtype("<f4")
        and ds.compression == LOGPROB_FILTERS["compression"]
        and ds.compression_opts == LOGPROB_FILTERS["compression_opts"]
        and bool(ds.shuffle) == LOGPROB_FILTERS["shuffle"]
        and ds.id.get_create_plist().get_nfilters() == 2
    )


def score_target(
    runner: ModelRunner,
    fasta: FastaFile,
    target: ScoreTarget,
    dataset: h5py.Dataset,
    *,
    prefetch: int = 2,
    progress: ProgressCallback | None = None,
    pool: Executor | None = None,
    workers: int = 1,
) -> TargetSummary:
    """Stream ``target`` through ``runner`` and write its track into ``dataset`` (L,) float32.

    The target is read by :func:`~dnastream.pipelines.source.iter_token_chunks` (reverse
    complement for ``-``, ``prefetch`` chunks read ahead in a thread) in ``runner.chunk``
    pieces; each piece's values are written at once, in + strand order (whole HDF5 chunks
    filtered in ``pool``, ``workers`` processes, when given: :class:`_TrackWriter`).
    Returns the summary.
    """
    t0 = time.perf_counter()
    region = Region(target.key, target.chrom, target.start, target.end, target.reading_strand)
    chunks = iter_token_chunks(fasta, region, chunk=runner.chunk, prefetch=prefetch)
    tally = _Tally()
    length = target.length
    reverse = region.strand == "-"
    clock = time.perf_counter
    track = _TrackWriter(dataset, pool, workers)
    try:
        for res in runner.run_region(chunks, logprobs=True, hidden=False):
            assert res.logprobs is not None and res.flags is not None
            lp = np.array(res.logprobs, dtype=np.float32)
            not_base = (res.flags & FLAG_N) != 0
            lp[not_base] = np.nan
            tally.add(lp, not_base, (res.flags & FLAG_SOFTMASK) != 0)
            n = len(lp)
            t1 = clock()
            # (lp is never changed after this: the writer may hand it to the pool as it is)
            if reverse:
                track.write(length - res.offset - n, np.ascontiguousarray(lp[::-1]))
            else:
                track.write(res.offset, lp)
            runner.stats.add("write", clock() - t1)
            if progress is not None:
                progress(target, res.offset + n)
        t1 = clock()
        track.close()
        runner.stats.add("write_close", clock() - t1)
    except BaseException:
        track.abandon()
        raise
    finally:
        runner.stats.add("compress_wait", track.compress_wait)
        runner.stats.extra["raw_chunks"] = (
            int(runner.stats.extra.get("raw_chunks", 0)) + track.raw_chunks
        )
        runner.stats.extra["filtered_chunks"] = (
            int(runner.stats.extra.get("filtered_chunks", 0)) + track.filtered_chunks
        )
    return TargetSummary(
        key=target.key,
        id=target.id,
        name=target.name,
        chrom=target.chrom,
        start=target.start,
        end=target.end,
        strand=target.strand,
        length=length,
        scored_bases=tally.scored,
        n_bases=tally.n_bases,
        softmasked_bases=tally.softmasked,
        nll_sum=tally.nll_sum,
        seconds=time.perf_counter() - t0,
    )


def _blocks_array(blocks: Sequence[Block]) -> np.ndarray:
    return np.asarray(blocks, dtype=np.int64).reshape(-1, 2)


def _write_target_attrs(group: h5py.Group, t: ScoreTarget, s: TargetSummary | None) -> None:
    attrs = {
        "key": t.key,
        "id": t.id,
        "name": t.name,
        "chrom": t.chrom,
        "start": t.start,
        "end": t.end,
        "strand": t.strand,
        "reading_strand": t.reading_strand,
        "length": t.length,
        "source": t.source or "",
        "line": -1 if t.line is None else t.line,
    }
    if s is not None:
        attrs |= {
            "scored_bases": s.scored_bases,
            "n_bases": s.n_bases,
            "softmasked_bases": s.softmasked_bases,
            "n_fraction": s.n_fraction,
            "softmask_fraction": s.softmask_fraction,
            "mean_nll": s.mean_nll,
            "perplexity": s.perplexity,
            "bits_per_base": s.bits_per_base,
            "seconds": s.seconds,
        }
    group.attrs.update(attrs)


def score_targets(
    fasta: FastaFile,
    targets: Sequence[ScoreTarget],
    runner: ModelRunner,
    h5: h5py.File,
    *,
    prefetch: int = 2,
    progress: ProgressCallback | None = None,
    on_done: Callable[[TargetSummary], None] | None = None,
    pool: Executor | None = None,
    workers: int = 1,
) -> list[TargetSummary]:
    """Score every target into ``h5`` (groups ``/regions/<key>`` and the ``/summary`` table).

    ``targets`` must have unique keys (:func:`assign_keys`). ``runner`` sets the device, the
    step size (``runner.chunk``) and the long-filter length K (``runner.filter_len``); each
    target is a fresh stream. Also sets the root attributes ``filter_len``, ``chunk_final``
    (the step size after any OOM back-off) and ``oom_backoffs``. ``pool`` (``workers``
    processes, :func:`~dnastream.pipelines.h5store.compression_pool`): where whole chunks of
    the tracks are compressed, beside the model (None: here, synchronously).
    """
    keys = [t.key for t in targets]
    if len(set(keys)) != len(keys) or not all(keys):
        raise ValueError("targets need unique non-empty keys; call assign_keys() first")
    regions = h5.require_group("regions")
    summaries = []
    for t in targets:
        group = regions.create_group(t.key)
        ds = group.create_dataset(
            "logprob",
            shape=(t.length,),
            dtype=np.float32,
            chunks=(min(t.length, H5_CHUNK),),
            fillvalue=np.float32(np.nan),
            **LOGPROB_FILTERS,
        )
        ds.attrs["definition"] = LOGPROB_DEFINITION
        ds.attrs["units"] = "nats"
        group.create_dataset("exons", data=_blocks_array(t.exons))
        group.create_dataset("cds", data=_blocks_array(t.cds))
        _write_target_attrs(group, t, None)
        summary = score_target(
            runner, fasta, t, ds, prefetch=prefetch, progress=progress, pool=pool, workers=workers
        )
        _release_heap()
        _write_target_attrs(group, t, summary)
        group.attrs["row"] = len(summaries)
        summaries.append(summary)
        if on_done is not None:
            on_done(summary)
    if "summary" in h5:
        del h5["summary"]
    table = h5.create_dataset("summary", data=_summary_table(summaries))
    table.attrs["definition"] = SUMMARY_DEFINITION
    table.attrs["coordinates"] = "start 0-based, end exclusive, + strand"
    h5.attrs["filter_len"] = runner.filter_len
    h5.attrs["chunk_final"] = runner.chunk
    h5.attrs["oom_backoffs"] = runner.backoffs
    return summaries


# --------------------------------------------------------------------------------------------
# the whole job (what the CLI runs)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreReport:
    """What :func:`run_score` did: summaries in scoring order, the files written, timings."""

    summaries: list[TargetSummary]
    outputs: dict[str, Path]
    total_bases: int
    seconds: float
    filter_len: int
    device: str

    @property
    def bases_per_second(self) -> float:
        return self.total_bases / self.seconds if self.seconds > 0 else math.nan


def plan_targets(
    fasta: FastaFile,
    *,
    annotation: PathLike | None = None,
    genes: Sequence[str] = (),
    regions: Sequence[str] = (),
) -> list[ScoreTarget]:
    """Targets of a run: the annotation's genes (only ``genes`` when given) then ``regions``,
    checked against ``fasta``'s records, with unique keys."""
    if annotation is None and not regions:
        raise ValueError("nothing to score: give an annotation (--genes) or --region")
    if genes and annotation is None:
        raise ValueError("--gene selects genes of an annotation: give --genes FILE too")
    lengths = fasta.lengths()
    targets: list[ScoreTarget] = []
    if annotation is not None:
        all_genes = load_targets(annotation, lengths)
        targets += select_genes(all_genes, genes, path=annotation) if genes else all_genes
    targets += region_targets(regions, lengths)
    if not targets:
        raise ValueError(f"{annotation}: the annotation holds no gene or interval")
    return assign_keys(targets)


class ModelInputError(ValueError):
    """The model checkpoint cannot be loaded (the message names the file)."""


def _load(
    model_path: PathLike, filter_len: int | None, dtype: torch.dtype, device: torch.device
) -> HyenaDNAModel:
    try:
        return load_model(model_path, filter_len=filter_len, dtype=dtype, device=device)
    except Exception as exc:  # corrupt files raise anything, from pickle to safetensors
        msg = str(exc)
        where = os.fspath(model_path)
        raise ModelInputError(
            f"cannot load the model checkpoint: {msg if where in msg else f'{where}: {msg}'}"
        ) from exc


def run_score(
    fasta_path: PathLike,
    model_path: PathLike,
    *,
    output: PathLike,
    annotation: PathLike | None = None,
    genes: Sequence[str] = (),
    regions: Sequence[str] = (),
    tsv: PathLike | None = None,
    bedgraph: PathLike | None = None,
    plot: PathLike | None = None,
    chunk: int | None = None,
    filter_len: int | None = None,
    device: str = "auto",
    dtype: str = "float32",
    force: bool = False,
    progress: ProgressCallback | None = None,
    on_start: Callable[[Sequence[ScoreTarget]], None] | None = None,
    on_done: Callable[[TargetSummary], None] | None = None,
    command: str | None = None,
    stats_path: PathLike | None = None,
) -> ScoreReport:
    """Check everything, score every target into ``output`` (HDF5), then write the TSV,
    bedGraph and PNG requested; see the module docstring for the formats.

    All checks happen before the model runs: outputs (:class:`OutputExistsError` when one
    exists without ``force``), the optional plotting dependency, the FASTA, the annotation,
    gene names (:class:`UnknownGeneError`), regions, settings and the model. Outputs are
    written to temporary files and renamed into place only when everything succeeded.
    ``stats_path`` (or ``$DNASTREAM_PROFILE``): write the phase timings there (:mod:`.stats`).
    """
    stats = PhaseStats.from_env(stats_path, "score")
    from dnastream.pipelines import tracks

    outputs = check_outputs(
        {"--output": output, "--tsv": tsv, "--bedgraph": bedgraph, "--plot": plot}, force=force
    )
    if plot is not None:
        tracks.require_matplotlib()
    if chunk is not None and chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {chunk}")
    if filter_len is not None and filter_len < 1:
        raise ValueError(f"--filter-len must be >= 1, got {filter_len}")
    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    chunk = int(chunk or DEFAULT_CHUNK[dev.type])
    tune_malloc()
    with FastaFile(fasta_path) as fasta:
        targets = plan_targets(fasta, annotation=annotation, genes=genes, regions=regions)
        model = _load(model_path, filter_len, torch_dtype, dev)
        runner = ModelRunner(model, device=dev, dtype=torch_dtype, chunk=chunk, stats=stats)
        stats.mark("model_loaded")
        if on_start is not None:
            on_start(targets)
        temps = {label: _temp_beside(p) for label, p in outputs.items()}
        procs = compress_processes(dev.type)
        # forked before the output is opened (a child would inherit the file's lock) and
        # before the reader threads start; shut down below, whatever happens
        pool = compression_pool(procs)
        ok = False
        try:
            t0 = time.perf_counter()
            # a small chunk cache: finished chunks are compressed (and written) while the
            # target streams, overlapping the GPU, instead of piling up for the close
            with h5py.File(temps["--output"], "w", rdcc_nbytes=H5_CACHE) as h5:
                h5.attrs.update(
                    {
                        "format": SCORE_FORMAT,
                        "format_version": SCORE_FORMAT_VERSION,
                        "dnastream_version": __version__,
                        "torch_version": str(torch.__version__),
                        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "command": command or "",
                        "fasta": os.fspath(fasta_path),
                        "annotation": os.fspath(annotation) if annotation is not None else "",
                        "genes": json.dumps(list(genes)),
                        "regions": json.dumps(list(regions)),
                        "model": os.fspath(model_path),
                        "model_config": json.dumps(model.config.to_json()),
                        "modulation_shift": model.config.modulation_shift,
                        "chunk": chunk,
                        "dtype": dtype,
                        "device": str(dev),
                        "tokenizer": TOKENIZER_POLICY,
                        "coordinates": "0-based half-open, + strand",
                        "logprob_definition": LOGPROB_DEFINITION,
                        "summary_definition": SUMMARY_DEFINITION,
                    }
                )
                stats.mark("loop_start")
                summaries = score_targets(
                    fasta, targets, runner, h5, progress=progress, on_done=on_done,
                    pool=pool, workers=procs,
                )  # fmt: skip
                taps = int(h5.attrs["filter_len"])
                stats.mark("loop_end")
            stats.mark("drained")
            seconds = time.perf_counter() - t0
            if "--tsv" in temps:
                write_tsv(summaries, temps["--tsv"])
            if "--bedgraph" in temps:
                tracks.write_bedgraph(
                    temps["--output"],
                    temps["--bedgraph"],
                    name=outputs["--bedgraph"].stem,
                    description=f"dnastream score: ln p(base | preceding bases), "
                    f"model {Path(model_path).name}",
                )
            if "--plot" in temps:
                tracks.plot_tracks(temps["--output"], temps["--plot"])
            for label, path in outputs.items():
                if path.exists() and not force:
                    raise OutputExistsError(f"{path} ({label}) appeared during the run; kept it")
            for label, path in outputs.items():
                os.replace(temps[label], path)
            ok = True
        finally:
            if pool is not None:
                # every chunk was stored (each track's close drains it); after a failure
                # nothing in flight is wanted: do not wait for it
                pool.shutdown(wait=ok, cancel_futures=True)
            for tmp in temps.values():
                tmp.unlink(missing_ok=True)
    stats.extra.update(
        {"device": str(dev), "chunk": chunk, "overlap": runner.overlap,
         "compress_processes": procs}
    )  # fmt: skip
    stats.save()
    return ScoreReport(
        summaries=summaries,
        outputs=outputs,
        total_bases=sum(s.length for s in summaries),
        seconds=seconds,
        filter_len=taps,
        device=str(dev),
    )
