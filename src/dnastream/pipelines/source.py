"""Regions of a FASTA -> token chunks, read and tokenized ahead in a background thread.

* :class:`Region`: a named stretch of one record, 0-based half-open on the + strand, with the
  strand to read it on.
* :func:`regions_from`: whole records, or regions from an annotation (BED, GTF, GFF3) and/or
  region strings, checked against the FASTA.
* :func:`iter_token_chunks`: a region as :class:`TokenChunk` pieces in reading order (5'->3'
  of the strand read). A thread reads and tokenizes ``prefetch`` chunks ahead of the consumer
  (bounded queue), so a GPU never waits on decompression; an error raised there (bad base,
  truncated file...) is re-raised in the consumer, message unchanged.

Minus strand: the chunk at reading offset ``o`` covers + strand bases ``[end - o - C, end - o)``,
reverse-complemented (case kept, so soft-masking follows the base). Indexed files (BGZF or
plain text with a ``.fai``) are read backwards by seeking; a plain-gzip file (no random access)
is first spooled to an uncompressed temporary file, one pass, bounded memory.
"""

from __future__ import annotations

import os
import queue
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from dnastream.genomics import (
    DNATokenizer,
    FastaFile,
    Interval,
    IntervalError,
    StreamingAccessWarning,
    format_region,
    parse_region,
    read_intervals,
    validate,
)
from dnastream.genomics.intervals import suggest_contigs
from dnastream.genomics.tokenizer import Convention, reverse_complement_ids

__all__ = [
    "FLAG_N",
    "FLAG_SOFTMASK",
    "Region",
    "TokenChunk",
    "base_flags",
    "iter_batch_chunks",
    "iter_token_chunks",
    "lower_thread_priority",
    "regions_from",
    "run_ahead",
]

FLAG_N = 1
"""Mask bit: the base is N or another ambiguity code (not A/C/G/T)."""
FLAG_SOFTMASK = 2
"""Mask bit: the base is soft-masked (lower case in the FASTA)."""

_FLAGS = np.full(256, FLAG_N, dtype=np.uint8)
for _c in b"ACGT":
    _FLAGS[_c] = 0
for _c in range(ord("a"), ord("z") + 1):
    _FLAGS[_c] = FLAG_SOFTMASK | (0 if _c in b"acgt" else FLAG_N)
_FLAGS.setflags(write=False)

STRANDS = ("+", "-")


@dataclass(frozen=True)
class Region:
    """A stretch ``[start, end)`` (0-based, half-open, + strand coordinates) of ``record``.

    ``strand`` ('+' or '-') is the strand read: '-' reads the reverse complement, 5'->3'.
    ``name`` is unique within one :func:`regions_from` result.
    """

    name: str
    record: str
    start: int
    end: int
    strand: str = "+"

    def __post_init__(self) -> None:
        if self.strand not in STRANDS:
            raise ValueError(
                f"region {self.name!r}: strand must be '+' or '-', got {self.strand!r}"
            )
        if not 0 <= self.start < self.end:
            raise ValueError(
                f"region {self.name!r}: need 0 <= start < end, got [{self.start}, {self.end})"
            )

    @property
    def length(self) -> int:
        """Number of bases ``end - start``."""
        return self.end - self.start

    def on_strand(self, strand: str) -> Region:
        """The same stretch read on ``strand``."""
        return Region(self.name, self.record, self.start, self.end, strand)


@dataclass(frozen=True)
class TokenChunk:
    """``C`` consecutive tokens of a region in reading order.

    offset: 0-based position of ``ids[0]`` within the region, in reading order (for '-',
        counted from the region's + strand end).
    ids: (C,) int64 token ids.
    mask: (C,) bool, True where the base is soft-masked or N (or another ambiguity code).
    flags: (C,) uint8 bit flags, :data:`FLAG_N` | :data:`FLAG_SOFTMASK`.
    """

    region: Region
    offset: int
    ids: np.ndarray
    mask: np.ndarray
    flags: np.ndarray

    @property
    def plus_start(self) -> int:
        """0-based start within the region, in + strand order, of the bases of this chunk."""
        if self.region.strand == "-":
            return self.region.length - self.offset - len(self.ids)
        return self.offset


def base_flags(bases: bytes | np.ndarray) -> np.ndarray:
    """Bit flags (L,) uint8 of raw FASTA bytes: 1 = not A/C/G/T (N...), 2 = lower case."""
    arr = np.frombuffer(bases, dtype=np.uint8) if isinstance(bases, bytes) else bases
    return _FLAGS[arr]


# --------------------------------------------------------------------------------------------
# regions
# --------------------------------------------------------------------------------------------


def _strand(value: str) -> str:
    return "-" if value == "-" else "+"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            n = f"{n}#{seen[n]}"
        else:
            seen[n] = 1
        out.append(n)
    return out


def _select_genes(
    intervals: list[Interval], genes: Sequence[str], path: str | os.PathLike[str]
) -> list[Interval]:
    keys: dict[str, list[Interval]] = {}
    for iv in intervals:
        for key in (iv.name, iv.extra.get("gene_name"), iv.extra.get("gene_id")):
            if key:
                keys.setdefault(key, []).append(iv)
    picked: list[Interval] = []
    for g in genes:
        if g not in keys:
            close = suggest_contigs(g, keys)
            hint = f"did you mean {' or '.join(map(repr, close))}?" if close else None
            raise IntervalError(f"gene {g!r} is not in the annotation", path=path, hint=hint)
        picked.extend(iv for iv in keys[g] if iv not in picked)
    return picked


def regions_from(
    fasta: FastaFile,
    *,
    regions_path: str | os.PathLike[str] | None = None,
    region_strings: Iterable[str] = (),
    genes: Iterable[str] = (),
) -> list[Region]:
    """The regions to process, in order: annotation rows, then region strings.

    With nothing given, every record of the FASTA (file order, '+' strand). Annotation rows
    (BED, or GTF/GFF3 genes via :func:`~dnastream.genomics.read_intervals`) keep their strand
    ('.' reads as '+') and are named by their name column / gene ID (else their region
    string); ``genes`` restricts them to these names or IDs. Region strings are
    ``chr:1,000-2,000[:strand]`` (1-based, inclusive) or a record name. Duplicate names get a
    ``#2``, ``#3`` ... suffix. Everything is checked against the FASTA's record lengths.

    Raises:
        IntervalError: unreadable annotation, unknown record/gene, region past a record end
            (the message names the file, line and record).
    """
    genes = list(genes)
    region_strings = list(region_strings)
    lengths = fasta.lengths()
    if genes and regions_path is None:
        raise IntervalError(
            "genes were named but no annotation was given", hint="pass --regions BED|GTF|GFF3"
        )
    named: list[tuple[str, Interval]] = []
    if regions_path is not None:
        intervals = read_intervals(regions_path)
        if genes:
            intervals = _select_genes(intervals, genes, regions_path)
        if not intervals:
            raise IntervalError("no intervals in the annotation", path=regions_path)
        validate(intervals, lengths, path=regions_path)
        named += [(iv.name or format_region(iv, strand=False), iv) for iv in intervals]
    for text in region_strings:
        iv = parse_region(text, lengths)
        named.append((text.strip() if text.strip() in lengths else format_region(iv), iv))
    if regions_path is None and not region_strings:
        return [Region(name, name, 0, length, "+") for name, length in lengths.items()]
    names = _unique([n for n, _ in named])
    return [
        Region(n, iv.chrom, iv.start, iv.end, _strand(iv.strand))
        for n, (_, iv) in zip(names, named, strict=True)
    ]


# --------------------------------------------------------------------------------------------
# prefetching
# --------------------------------------------------------------------------------------------

T = TypeVar("T")


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


HELPER_NICE_ENV = "DNASTREAM_HELPER_NICE"


def lower_thread_priority() -> None:
    """Nice the calling helper thread (reader, writer) by 10, on Linux, where priorities are
    per thread: the model's threads then keep their cores, and the helpers use the gaps
    (measured on 2 cores: fewer stalls of the OpenMP threads). ``DNASTREAM_HELPER_NICE=N``
    sets another value, 0 turns it off."""
    try:
        nice = int(os.environ.get(HELPER_NICE_ENV, "10") or 0)
    except ValueError:
        nice = 0
    if nice > 0 and sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:
            pass


def run_ahead(source: Callable[[], Iterator[T]], depth: int = 2) -> Iterator[T]:
    """Run the iterator ``source()`` in a daemon thread, ``depth`` items ahead (bounded queue).

    Items come out in order. An exception raised by the source is re-raised here (the same
    object, so its message and type are unchanged). Closing the returned generator early
    stops the thread. ``depth <= 0`` runs the source inline.
    """
    if depth <= 0:
        yield from source()
        return
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        lower_thread_priority()
        try:
            for item in source():
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(_Failure(exc))
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="dnastream-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


# --------------------------------------------------------------------------------------------
# reading and tokenizing
# --------------------------------------------------------------------------------------------


def _plus_pieces(fasta: FastaFile, region: Region, chunk: int) -> Iterator[tuple[int, bytes]]:
    """(+ strand record position, bases) of the region front to back."""
    yield from fasta.iter_chunks(region.record, chunk, region.start, region.end)


def _minus_pieces(fasta: FastaFile, region: Region, chunk: int) -> Iterator[tuple[int, bytes]]:
    """(+ strand record position, + strand bases) of the region back to front."""
    bounds = [(max(region.start, hi - chunk), hi) for hi in range(region.end, region.start, -chunk)]
    if fasta.random_access:
        for lo, hi in bounds:
            yield lo, fasta.fetch(region.record, lo, hi)
        return
    # No random access (plain gzip): spool the region once, then read it backwards.
    with tempfile.TemporaryFile(prefix="dnastream-region-") as spool:
        for _, piece in fasta.iter_chunks(region.record, 1 << 20, region.start, region.end):
            spool.write(piece)
        for lo, hi in bounds:
            spool.seek(lo - region.start)
            yield lo, spool.read(hi - lo)


def _check_tokenizer(tokenizer: DNATokenizer) -> None:
    if tokenizer.convention is not Convention.NONE or tokenizer.special_literals:
        raise ValueError(
            "chunked reading needs a tokenizer without special tokens "
            "(convention 'none', special_literals=False)"
        )


def _tokenize(
    fasta: FastaFile, region: Region, tokenizer: DNATokenizer, lo: int, bases: bytes
) -> tuple[np.ndarray, np.ndarray]:
    """Ids and flags (reading order) of + strand bases starting at record position ``lo``."""
    ids = tokenizer.encode(bases, record=region.record, offset=lo, path=fasta.path)
    assert isinstance(ids, np.ndarray)
    flags = base_flags(bases)
    if region.strand == "-":
        return reverse_complement_ids(ids), flags[::-1].copy()
    return ids, flags


def _chunks(
    fasta: FastaFile, region: Region, chunk: int, tokenizer: DNATokenizer
) -> Iterator[TokenChunk]:
    pieces = _minus_pieces if region.strand == "-" else _plus_pieces
    offset = 0
    with warnings.catch_warnings():
        # a plain-gzip file warns once per fetch; the caller has been told at open time
        warnings.simplefilter("ignore", StreamingAccessWarning)
        for lo, bases in pieces(fasta, region, chunk):
            ids, flags = _tokenize(fasta, region, tokenizer, lo, bases)
            yield TokenChunk(region, offset, ids, flags != 0, flags)
            offset += len(ids)


def iter_token_chunks(
    fasta: FastaFile,
    region: Region,
    *,
    chunk: int,
    tokenizer: DNATokenizer | None = None,
    prefetch: int = 2,
) -> Iterator[TokenChunk]:
    """Token chunks of ``region`` in reading order, ``chunk`` tokens each (the last shorter).

    Args:
        fasta: the open FASTA.
        region: what to read; its ``strand`` picks the strand (see the module docstring).
        chunk: tokens per chunk (>= 1).
        tokenizer: character policy (default :class:`DNATokenizer`: soft-masked bases read as
            their base, IUPAC codes as N, anything else raises
            :class:`~dnastream.genomics.InvalidBaseError` naming file, record and position).
            Must add no special tokens.
        prefetch: chunks read ahead in a background thread (0: read inline).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    tok = tokenizer or DNATokenizer()
    _check_tokenizer(tok)
    fasta.check_region(region.record, region.start, region.end)
    return run_ahead(lambda: _chunks(fasta, region, chunk, tok), prefetch)


def iter_batch_chunks(
    fasta: FastaFile,
    regions: Sequence[Region],
    *,
    chunk: int,
    tokenizer: DNATokenizer | None = None,
    prefetch: int = 2,
) -> Iterator[list[TokenChunk]]:
    """Token chunks of several regions of equal length, step by step: one list per step.

    One background thread reads all of them (the FASTA handle is not shared between
    threads). Used to run equal-length regions as one batch.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if len({r.length for r in regions}) > 1:
        raise ValueError("batched regions must have equal lengths")
    tok = tokenizer or DNATokenizer()
    _check_tokenizer(tok)
    for r in regions:
        fasta.check_region(r.record, r.start, r.end)

    def steps() -> Iterator[list[TokenChunk]]:
        iters = [_chunks(fasta, r, chunk, tok) for r in regions]
        yield from (list(step) for step in zip(*iters, strict=True))

    return run_ahead(steps, prefetch)
