"""Fixed-size windows over FASTA records, on either strand, with an explicit last-window policy.

Window ``i`` of a region ``[start, end)`` of length ``L`` covers stream offsets
``[i*stride, i*stride + size)``. All windows that fit entirely are *full*. If the full windows
do not reach the end of the region, one more window starting at the next grid point
``n_full*stride`` covers the remainder; it is shorter than ``size`` and ``last`` says what
happens to it:

* ``"pad"`` (default): it is yielded with ``pad = size - len(seq)``. ``seq`` holds only the
  real bases, never padding; the consumer adds ``pad`` padding tokens to reach ``size`` on the
  side its model expects (e.g. ``tokenizer.pad_ids``: left, like HyenaDNA's tokenizers).
* ``"short"``: it is yielded as is, shorter, with ``pad = 0``.
* ``"error"``: :class:`~dnastream.genomics.errors.IntervalError` is raised before any window is
  yielded, naming the file, record and region.

Nothing is silently dropped: with ``stride <= size`` the windows cover every base of the
region. (With ``stride > size`` the bases between windows are skipped by design.)

Strands: ``"+"`` windows run 5'->3' on the + strand, from ``start``. ``"-"`` windows run 5'->3'
on the - strand, i.e. from ``end`` backwards; each ``seq`` is the reverse complement (case
kept) and ``Window.start``/``Window.end`` stay + strand coordinates. The - strand windows of a
region are therefore exactly the + strand windows of its reverse complement.

:func:`iter_windows` covers one record or region; :func:`iter_genome_windows` every record.
Memory is bounded by ``size`` plus one chunk, whatever the record length, on indexed files and
on streamed (plain gzip) files alike. On a streamed file the - strand first spools the region's
bases (no line breaks) into an anonymous temporary file, then reads it backwards.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np

from dnastream.genomics.errors import IntervalError
from dnastream.genomics.fasta import FastaFile
from dnastream.genomics.sequence import complement_array

Strand = Literal["+", "-"]
LastWindow = Literal["pad", "short", "error"]

DEFAULT_CHUNK_SIZE = 1 << 20
_LAST_POLICIES = ("pad", "short", "error")
# bytes.translate table for the IUPAC complement of sequence.py (case kept).
_COMPLEMENT_TABLE = complement_array(np.arange(256, dtype=np.uint8)).tobytes()


@dataclass(frozen=True, slots=True)
class Window:
    """One window: ``seq`` is ``(end - start,)`` ASCII bytes, ``len(seq) + pad`` the window size.

    ``start``/``end`` are 0-based, half-open, + strand coordinates of the real bases;
    ``seq`` is reverse-complemented when ``strand == "-"``; ``index`` counts windows in the
    order they are yielded for this record and strand.
    """

    record: str
    start: int
    end: int
    strand: Strand
    seq: bytes
    pad: int
    index: int

    @property
    def size(self) -> int:
        """Window length including padding (the ``size`` asked for, or less if short)."""
        return len(self.seq) + self.pad


@dataclass(frozen=True)
class WindowPlan:
    """How a region of ``length`` bases splits into windows (stream offsets from its 5' end)."""

    length: int
    size: int
    stride: int
    n_full: int
    tail: int  # bases in the last, partial window (0: none)

    @property
    def n_windows(self) -> int:
        return self.n_full + (1 if self.tail else 0)

    def starts(self) -> np.ndarray:
        """Offsets of the windows from the region's 5' end (on the window strand), ``(n,)``."""
        return np.arange(self.n_windows, dtype=np.int64) * self.stride


def plan_windows(length: int, size: int, stride: int | None = None) -> WindowPlan:
    """Split ``length`` bases into full windows of ``size`` every ``stride`` plus a tail."""
    stride = size if stride is None else stride
    if size < 1 or stride < 1:
        raise ValueError(f"size and stride must be >= 1, got size={size}, stride={stride}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if length >= size:
        n_full = (length - size) // stride + 1
        covered = (n_full - 1) * stride + size
    else:
        n_full, covered = 0, 0
    next_start = n_full * stride
    tail = length - next_start if covered < length and next_start < length else 0
    return WindowPlan(length, size, stride, n_full, tail)


def count_windows(
    length: int, *, size: int, stride: int | None = None, last: LastWindow = "pad"
) -> int:
    """Number of windows ``iter_windows`` yields for a region of ``length`` bases."""
    _check_last(last)
    plan = plan_windows(length, size, stride)
    if last == "error" and plan.tail:
        raise ValueError(f"{length} bases do not tile into windows of {size} every {plan.stride}")
    return plan.n_windows


def _check_last(last: str) -> None:
    if last not in _LAST_POLICIES:
        raise ValueError(f"last must be one of {_LAST_POLICIES}, got {last!r}")


def _revcomp(chunk: bytes) -> bytes:
    return chunk.translate(_COMPLEMENT_TABLE)[::-1]


def _slide(chunks: Iterable[bytes], size: int, stride: int) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, seq)`` per window from contiguous ``chunks`` of a region (5'->3').

    The region length need not be known in advance: full windows are yielded as soon as
    their bases arrive and the tail (see :func:`plan_windows`) once the chunks run out. The
    buffer holds less than ``size`` bases plus one chunk.
    """
    buf = b""
    buf_off = 0  # stream offset of buf[0]
    s = 0  # next window start
    last_full_end = 0
    for chunk in chunks:
        cut = min(s - buf_off, len(buf))
        if cut > 0:
            buf, buf_off = buf[cut:], buf_off + cut
        buf = buf + chunk if buf else chunk
        while buf_off + len(buf) >= s + size:
            lo = s - buf_off
            yield s, buf[lo : lo + size]
            last_full_end = s + size
            s += stride
    length = buf_off + len(buf)
    if last_full_end < length and s < length:
        yield s, buf[s - buf_off :]


def _backward_chunks_indexed(
    fasta: FastaFile, record: str, start: int, end: int, chunk_size: int
) -> Iterator[bytes]:
    hi = end
    while hi > start:
        lo = max(start, hi - chunk_size)
        yield _revcomp(fasta.fetch(record, lo, hi))
        hi = lo


def _backward_chunks_from(tmp: BinaryIO, length: int, chunk_size: int) -> Iterator[bytes]:
    hi = length
    while hi > 0:
        lo = max(0, hi - chunk_size)
        tmp.seek(lo)
        yield _revcomp(tmp.read(hi - lo))
        hi = lo


def _windows_of_region(
    fasta: FastaFile,
    record: str,
    start: int,
    end: int | None,
    *,
    size: int,
    stride: int | None,
    strand: str,
    last: str,
    chunk_size: int,
    forward: Iterable[bytes] | None = None,
) -> Iterator[Window]:
    """Windows of ``[start, end)``; ``end=None`` only with ``forward`` (the region's chunks)."""
    stride = size if stride is None else stride
    if last == "error":
        end = start + fasta.lengths()[record] if end is None else end
        plan = plan_windows(end - start, size, stride)
        if plan.tail:
            raise _tiling_error(fasta, record, start, end, plan)
    if forward is None:
        forward = (c for _, c in fasta.iter_chunks(record, chunk_size, start, end))
    if strand == "+":
        yield from _make_windows(record, start, None, _slide(forward, size, stride), size, last)
    elif fasta.random_access:
        end = fasta.check_region(record, start, end)
        chunks = _backward_chunks_indexed(fasta, record, start, end, chunk_size)
        yield from _make_windows(record, None, end, _slide(chunks, size, stride), size, last)
    else:  # spool the + strand bases, then read them backwards: memory stays bounded
        with tempfile.TemporaryFile(prefix="dnastream-rc-") as tmp:
            for chunk in forward:
                tmp.write(chunk)
            length = tmp.tell()
            chunks = _backward_chunks_from(tmp, length, chunk_size)  # type: ignore[arg-type]
            windows = _slide(chunks, size, stride)
            yield from _make_windows(record, None, start + length, windows, size, last)


def _make_windows(
    record: str,
    start: int | None,
    end: int | None,
    slid: Iterable[tuple[int, bytes]],
    size: int,
    last: str,
) -> Iterator[Window]:
    """+ strand: offsets count from ``start``; - strand: from ``end`` backwards."""
    pad_tail = last == "pad"
    for i, (off, seq) in enumerate(slid):
        pad = size - len(seq) if pad_tail else 0
        if start is not None:
            yield Window(record, start + off, start + off + len(seq), "+", seq, pad, i)
        else:
            assert end is not None
            yield Window(record, end - off - len(seq), end - off, "-", seq, pad, i)


def _tiling_error(
    fasta: FastaFile, record: str, start: int, end: int, plan: WindowPlan
) -> IntervalError:
    return IntervalError(
        f"region [{start}, {end}) of {plan.length} bases does not tile into windows of "
        f"{plan.size} every {plan.stride}: the last window would hold {plan.tail} bases",
        path=fasta.path,
        record=record,
        hint="Use last='pad' or last='short' to keep it",
    )


def _check_args(size: int, stride: int | None, strand: str, last: str, chunk_size: int) -> None:
    plan_windows(0, size, stride)  # validates size/stride
    if strand not in ("+", "-"):
        raise ValueError(f"strand must be '+' or '-', got {strand!r}")
    _check_last(last)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def iter_windows(
    fasta: FastaFile | str | os.PathLike[str],
    record: str,
    *,
    size: int,
    stride: int | None = None,
    start: int = 0,
    end: int | None = None,
    strand: Strand = "+",
    last: LastWindow = "pad",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[Window]:
    """Windows of ``size`` bases every ``stride`` (default ``size``) over ``[start, end)``.

    ``end=None`` means the record's end. See the module docstring for the last-window policy
    and strand order. Overlap between neighbours is ``size - stride``. A path is opened (and
    closed when the iterator finishes) as ``FastaFile(path)``.
    """
    _check_args(size, stride, strand, last, chunk_size)
    if not isinstance(fasta, FastaFile):
        with FastaFile(fasta) as opened:
            yield from iter_windows(
                opened,
                record,
                size=size,
                stride=stride,
                start=start,
                end=end,
                strand=strand,
                last=last,
                chunk_size=chunk_size,
            )
        return
    end = fasta.check_region(record, start, end)
    yield from _windows_of_region(
        fasta,
        record,
        start,
        end,
        size=size,
        stride=stride,
        strand=strand,
        last=last,
        chunk_size=chunk_size,
    )


def iter_genome_windows(
    fasta: FastaFile | str | os.PathLike[str],
    *,
    size: int,
    stride: int | None = None,
    strand: Strand = "+",
    last: LastWindow = "pad",
    records: Iterable[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[Window]:
    """``iter_windows`` over every record (or ``records``), in file order.

    A streamed file is decompressed once for the whole genome, not once per record. With
    ``records=None`` (and ``last`` other than ``"error"``) that single pass also validates the
    file, so a format error late in the file is raised after the windows of earlier records;
    otherwise the records are measured (one validating pass) before any window is yielded.
    """
    _check_args(size, stride, strand, last, chunk_size)
    if not isinstance(fasta, FastaFile):
        with FastaFile(fasta) as opened:
            yield from iter_genome_windows(
                opened,
                size=size,
                stride=stride,
                strand=strand,
                last=last,
                records=records,
                chunk_size=chunk_size,
            )
        return
    opts = {"size": size, "stride": stride, "strand": strand, "last": last}
    if records is None and last != "error" and not fasta.random_access:
        names = None  # one validating pass that also yields the windows
    else:
        lengths = fasta.lengths()
        wanted = set(lengths) if records is None else set(records)
        for name in wanted:
            fasta.check_region(name)
        names = [n for n in lengths if n in wanted]
        if last == "error":  # fail before yielding anything
            for name in names:
                plan = plan_windows(lengths[name], size, stride)
                if plan.tail:
                    raise _tiling_error(fasta, name, 0, lengths[name], plan)
        if fasta.random_access:
            for name in names:
                yield from _windows_of_region(
                    fasta, name, 0, lengths[name], chunk_size=chunk_size, **opts
                )
            return
    stream = fasta.iter_record_chunks(chunk_size, names)
    for name, group in itertools.groupby(stream, key=lambda item: item[0]):
        chunks = (chunk for _, _, chunk in group)
        yield from _windows_of_region(
            fasta, name, 0, None, chunk_size=chunk_size, forward=chunks, **opts
        )
