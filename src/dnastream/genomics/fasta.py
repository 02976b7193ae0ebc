"""FASTA input: plain, gzip and BGZF files, indexed random access or bounded-memory streaming.

:class:`FastaFile` opens one FASTA file and picks its access mode:

* **Random access** (plain text or BGZF) goes through :mod:`pyfaidx`. An existing, up-to-date
  ``.fai`` (and ``.gzi`` for BGZF) is reused. Otherwise, with ``build_index=True`` the index is
  built next to the file when its folder is writable; when it is not, the index is built in a
  temporary folder, loaded into memory and the temporary files are deleted, so nothing is ever
  written beside a read-only FASTA. The compression is read from the file's first bytes (BGZF:
  gzip extra subfield ``BC``), not its name; a misnamed file is handed to pyfaidx through a
  correctly named temporary symlink.
* **Streaming** (plain gzip, which has no random access, or ``build_index=False`` without an
  index) reads the file front to back in large blocks; memory is bounded by the block and chunk
  size, never by the record length. Random-access calls still work on a streaming file but
  decompress from the start each time, and warn with :class:`StreamingAccessWarning`, whose
  message tells how to ``bgzip`` the file. The first call that needs the record list
  (``records``, ``fetch``, ``iter_chunks``) makes one validating pass over the whole file and
  caches it; ``iter_record_chunks()`` over all records validates while it reads instead.

Coordinates are 0-based, half-open, on the + strand. Sequences are returned as raw ASCII
``bytes`` exactly as stored (case kept, so soft-masking survives), with line breaks removed.

Malformed input raises :class:`~dnastream.genomics.errors.FastaFormatError` naming the file,
the record and the line: text before the first header, an empty record, a duplicate record id,
truncated or corrupt gzip/BGZF data. A missing file raises :class:`FastaNotFoundError` (both a
``FastaFormatError`` and a ``FileNotFoundError``). A region that does not fit a record raises
:class:`~dnastream.genomics.errors.IntervalError`.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import pyfaidx

from dnastream.genomics.errors import FastaFormatError, IntervalError

Compression = Literal["plain", "gzip", "bgzf"]

DEFAULT_BLOCK_SIZE = 1 << 20
"""Bytes of (decompressed) text read at a time when streaming."""

# A BGZF file ends with this empty block (SAM/BAM spec, section 4.1.2).
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, struct.error)


class FastaNotFoundError(FastaFormatError, FileNotFoundError):
    """The FASTA file does not exist (a ``FastaFormatError`` and a ``FileNotFoundError``)."""


class StreamingAccessWarning(UserWarning):
    """A random-access call on a file that can only be streamed (slow: reads from the start)."""


@dataclass(frozen=True)
class RecordInfo:
    """One FASTA record: its id (first word of the header) and its length in bases."""

    name: str
    length: int


def detect_compression(path: str | os.PathLike[str]) -> Compression:
    """Return ``"bgzf"``, ``"gzip"`` or ``"plain"`` from the first bytes of ``path``.

    BGZF is gzip whose header carries an extra subfield with identifiers ``B``, ``C``.
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
        if head[:2] != b"\x1f\x8b":
            return "plain"
        if len(head) < 12 or not head[3] & 0x04:  # FLG.FEXTRA not set
            return "gzip"
        xlen = int.from_bytes(head[10:12], "little")
        extra = fh.read(xlen)
    i = 0
    while i + 4 <= len(extra):
        slen = int.from_bytes(extra[i + 2 : i + 4], "little")
        if extra[i : i + 2] == b"BC":
            return "bgzf"
        i += 4 + slen
    return "gzip"


def bgzip_hint(path: str | os.PathLike[str]) -> str:
    """The shell command that turns a plain-gzip FASTA into an indexed BGZF one."""
    p = os.fspath(path)
    stem = p[:-3] if p.endswith(".gz") else p
    return (
        f"Recompress it with bgzip for random access: "
        f"`gunzip -c {p} | bgzip > {stem}.bgz && samtools faidx {stem}.bgz` "
        f"(or open the .bgz with FastaFile, which indexes it through pyfaidx)"
    )


def _dir_is_writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _is_fresh(index: Path, fasta: Path) -> bool:
    return index.exists() and index.stat().st_mtime >= fasta.stat().st_mtime


class _FastaStream:
    """Block-wise FASTA parser over a decompressed byte stream.

    Iterating yields ``(name, None)`` at each header and ``(None, piece)`` for sequence
    pieces (``bytes`` without line breaks, at most ``block_size`` long). It validates as it
    goes and raises :class:`FastaFormatError` with the line number for: text before the first
    header, an empty header, an empty record, a duplicate id, truncated/corrupt compressed data
    and a file with no record. Newlines are stripped with ``bytes.translate``, not per line.
    """

    def __init__(self, path: Path, compression: Compression, block_size: int) -> None:
        self.path = path
        self.compression = compression
        self.block_size = block_size
        self.lines_done = 0  # newlines in all fully processed blocks
        self.record: str | None = None
        self.record_line = 0
        self.record_bases = 0
        self.seen: dict[str, int] = {}

    def _open(self) -> BinaryIO:
        if self.compression == "plain":
            return open(self.path, "rb")
        return gzip.open(self.path, "rb")  # type: ignore[return-value]

    def _blocks(self, fh: BinaryIO) -> Iterator[bytes]:
        while True:
            try:
                block = fh.read(self.block_size)
            except _GZIP_ERRORS as exc:
                raise FastaFormatError(
                    f"compressed data is truncated or corrupt ({exc})",
                    path=self.path,
                    record=self.record,
                    line=self.lines_done + 1,
                    hint="Nothing was read past this line; check the file with `gzip -t` "
                    "and download or copy it again",
                ) from exc
            if not block:
                return
            yield block

    def _error(self, message: str, line: int, record: str | None = None, hint: str | None = None):
        return FastaFormatError(message, path=self.path, record=record, line=line, hint=hint)

    def _end_record(self) -> None:
        if self.record is not None and self.record_bases == 0:
            raise self._error(
                "empty record (a header with no sequence line)",
                self.record_line,
                self.record,
                "Remove the header or add its sequence",
            )

    def _header(self, text: bytes, line: int) -> str:
        self._end_record()
        words = text.split()
        if not words:
            raise self._error("header line with no record id", line, hint="Write `>id [text]`")
        name = words[0].decode("ascii", errors="backslashreplace")
        if name in self.seen:
            raise self._error(
                f"duplicate record id (first defined at line {self.seen[name]})",
                line,
                name,
                "Record ids (the first word after '>') must be unique",
            )
        self.seen[name] = line
        self.record, self.record_line, self.record_bases = name, line, 0
        return name

    def _before_first_header(self, text: bytes, line0: int) -> None:
        """``text`` precedes any header and starts at line ``line0``: only blanks allowed."""
        stripped = text.lstrip()
        if stripped:
            skipped = text[: len(text) - len(stripped)]
            raise self._error(
                "sequence text before the first header line",
                line0 + skipped.count(b"\n"),
                hint="A FASTA file must start with a '>id' header line",
            )

    def __iter__(self) -> Iterator[tuple[str | None, bytes | None]]:
        try:
            fh = self._open()
        except FileNotFoundError as exc:
            raise FastaNotFoundError("file not found", path=self.path) from exc
        with fh:
            yield from self._parse(self._blocks(fh))

    def _parse(self, blocks: Iterable[bytes]) -> Iterator[tuple[str | None, bytes | None]]:
        at_line_start = True
        pending: bytearray | None = None  # header text split across blocks
        pending_line = 0
        for block in blocks:
            pos = 0
            n = len(block)
            if pending is not None:
                nl = block.find(b"\n")
                if nl < 0:
                    pending += block
                    at_line_start = False
                    continue
                pending += block[:nl]
                yield self._header(bytes(pending), pending_line), None
                pending, pos = None, nl + 1
            counted_pos, counted_lines = 0, self.lines_done  # newlines before counted_pos
            while pos < n:
                if block[pos] == 62 and (pos > 0 or at_line_start):  # '>' at line start
                    h = pos
                else:
                    h = block.find(b"\n>", pos)
                    h = h + 1 if h >= 0 else -1
                seg_end = h if h >= 0 else n
                if seg_end > pos:
                    if self.record is None:
                        line0 = counted_lines + block.count(b"\n", counted_pos, pos) + 1
                        self._before_first_header(block[pos:seg_end], line0)
                    else:
                        piece = block[pos:seg_end].translate(None, b"\r\n")
                        if piece:
                            self.record_bases += len(piece)
                            yield None, piece
                if h < 0:
                    break
                counted_lines += block.count(b"\n", counted_pos, h)
                counted_pos = h
                line = counted_lines + 1
                nl = block.find(b"\n", h)
                if nl < 0:
                    pending, pending_line = bytearray(block[h + 1 :]), line
                    break
                yield self._header(block[h + 1 : nl], line), None
                pos = nl + 1
            self.lines_done += block.count(b"\n")
            at_line_start = block.endswith(b"\n")
        if pending is not None:
            yield self._header(bytes(pending), pending_line), None
        self._end_record()
        if self.record is None:
            raise self._error(
                "no FASTA record found (empty file?)",
                self.lines_done + 1,
                hint="A FASTA file must start with a '>id' header line",
            )


def _rechunk(
    pieces: Iterable[bytes], start: int, end: int | None, chunk_size: int
) -> Iterator[tuple[int, bytes]]:
    """Cut a stream of sequence pieces into ``chunk_size`` chunks of ``[start, end)``."""
    pos = 0  # record coordinate of the next byte of `pieces`
    buf = bytearray()
    buf_start = start
    for piece in pieces:
        lo = max(start - pos, 0)
        hi = len(piece) if end is None else min(len(piece), end - pos)
        pos += len(piece)
        if hi > lo:
            buf += piece[lo:hi] if (lo or hi < len(piece)) else piece
            while len(buf) >= chunk_size:
                yield buf_start, bytes(buf[:chunk_size])
                del buf[:chunk_size]
                buf_start += chunk_size
        if end is not None and pos >= end:
            break
    if buf:
        yield buf_start, bytes(buf)


class FastaFile:
    """A FASTA file (plain, gzip or BGZF, one or many records); use as a context manager.

    Args:
        path: the FASTA file.
        build_index: build a missing or stale ``.fai`` (``.gzi``) for plain/BGZF files; next to
            the file when its folder is writable, else in memory (via a temporary folder).
            With ``False`` an up-to-date existing index is still used, otherwise the file is
            streamed.
        block_size: bytes of decompressed text read at a time when streaming.

    Attributes:
        path: the FASTA path.
        compression: ``"plain"``, ``"gzip"`` or ``"bgzf"`` (from the BGZF header, not the name).
        random_access: whether ``fetch`` seeks (pyfaidx) rather than streams.
        index_source: ``"existing"`` (reused ``.fai``), ``"built"`` (written next to the file),
            ``"memory"`` (built in a temporary folder) or ``None`` (streaming).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        build_index: bool = True,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> None:
        self.path = Path(path)
        self.block_size = int(block_size)
        self._faidx: pyfaidx.Faidx | None = None
        self._records: list[RecordInfo] | None = None
        self._warned = False
        self._closed = False
        self.index_source: Literal["existing", "built", "memory"] | None = None
        if not self.path.exists():
            raise FastaNotFoundError("file not found", path=self.path)
        if not self.path.is_file():
            raise FastaFormatError("not a regular file", path=self.path)
        self.compression: Compression = detect_compression(self.path)
        if self.path.stat().st_size == 0:
            raise FastaFormatError("empty file: no FASTA record", path=self.path)
        if self.compression == "bgzf":
            self._check_bgzf_eof()
        if self.compression != "gzip":
            self._open_index(build_index)

    # ------------------------------------------------------------------ opening / indexing
    def _check_bgzf_eof(self) -> None:
        with open(self.path, "rb") as fh:
            fh.seek(max(self.path.stat().st_size - len(_BGZF_EOF), 0))
            tail = fh.read()
        if tail != _BGZF_EOF:
            raise FastaFormatError(
                "BGZF file has no end-of-file marker: it is truncated",
                path=self.path,
                hint="Copy or download it again, or recompress it with bgzip",
            )

    def _open_index(self, build_index: bool) -> None:
        fai = Path(f"{self.path}.fai")
        gzi = Path(f"{self.path}.gzi")
        needed = [fai, gzi] if self.compression == "bgzf" else [fai]
        created = [p for p in needed if not p.exists()]
        try:
            if all(_is_fresh(p, self.path) for p in needed):
                self._faidx, self.index_source = self._load_faidx(fai, gzi), "existing"
            elif not build_index:
                return  # no usable index: stream
            elif _dir_is_writable(self.path.parent):
                try:
                    self._faidx, self.index_source = self._load_faidx(fai, gzi), "built"
                except OSError:  # e.g. a read-only mount: fall back to a temporary index
                    self._build_in_memory()
            else:
                self._build_in_memory()
            self._validate_index()
        except FastaFormatError:
            self.close()
            for p in created:  # don't leave an index of a file we rejected
                p.unlink(missing_ok=True)
            raise

    def _build_in_memory(self) -> None:
        with tempfile.TemporaryDirectory(prefix="dnastream-fai-") as tmp:
            tmp_path = Path(tmp)
            self._faidx = self._load_faidx(tmp_path / "index.fai", tmp_path / "index.gzi")
        self.index_source = "memory"

    def _load_faidx(self, fai: Path, gzi: Path) -> pyfaidx.Faidx:
        """Open with pyfaidx, which picks BGZF by file name: link a misnamed file if needed."""
        is_bgzf = self.compression == "bgzf"
        if self.path.name.lower().endswith((".gz", ".bgz", ".bz2", ".zip")) == is_bgzf:
            return self._faidx_from(self.path, fai, gzi)
        with tempfile.TemporaryDirectory(prefix="dnastream-link-") as tmp:
            link = Path(tmp) / ("seq.fa.gz" if is_bgzf else "seq.fa")
            try:
                link.symlink_to(self.path.resolve())
            except OSError as exc:
                raise FastaFormatError(
                    f"cannot index: the file name does not match its {self.compression} content",
                    path=self.path,
                    hint="Name BGZF files *.gz or *.bgz and plain files otherwise",
                ) from exc
            return self._faidx_from(link, fai, gzi)  # pyfaidx keeps its open handle

    def _faidx_from(self, path: Path, fai: Path, gzi: Path) -> pyfaidx.Faidx:
        try:
            return pyfaidx.Faidx(
                os.fspath(path),
                indexname=os.fspath(fai),
                gzi_indexname=os.fspath(gzi),
                strict_bounds=True,
                as_raw=True,
            )
        except OSError as exc:
            if isinstance(exc, FileNotFoundError | PermissionError) or "writable" in str(exc):
                raise
            self._raise_precise(exc)
        except Exception as exc:  # pyfaidx/Bio.bgzf raise ValueError, struct.error, ...
            self._raise_precise(exc)
        raise AssertionError("unreachable")

    def _raise_precise(self, exc: BaseException, record: str | None = None) -> None:
        """Re-raise a pyfaidx failure as a FastaFormatError, located by a streaming pass."""
        self._scan()  # raises the precise error (line numbers) when the file is malformed
        raise FastaFormatError(
            f"pyfaidx cannot index this file: {exc}",
            path=self.path,
            record=record,
            hint="Indexed access needs every sequence line of a record to have the same "
            "length (except the last); rewrap the file (e.g. `seqkit seq -w 60`) or open "
            "it with build_index=False to stream it",
        ) from exc

    def _validate_index(self) -> None:
        assert self._faidx is not None
        for name, rec in self._faidx.index.items():
            if rec.rlen == 0:
                self._raise_precise(ValueError(f"record {name!r} is empty"), record=name)

    def _scan(self) -> list[RecordInfo]:
        """One streaming pass: validate the whole file and measure its records."""
        lengths: dict[str, int] = {}
        name = None
        for header, piece in _FastaStream(self.path, self.compression, self.block_size):
            if header is not None:
                name = header
                lengths[name] = 0
            else:
                lengths[name] += len(piece)  # type: ignore[index,arg-type]
        return [RecordInfo(n, n_bases) for n, n_bases in lengths.items()]

    # ------------------------------------------------------------------ metadata
    @property
    def random_access(self) -> bool:
        """Whether ``fetch`` seeks in an index (``True``) or streams from the start."""
        return self._faidx is not None

    def records(self) -> list[RecordInfo]:
        """Records in file order. On a streaming file the first call reads the whole file."""
        if self._records is None:
            if self._faidx is not None:
                self._records = [RecordInfo(n, r.rlen) for n, r in self._faidx.index.items()]
            else:
                self._records = self._scan()
        return list(self._records)

    def lengths(self) -> dict[str, int]:
        """``{record id: length}`` in file order."""
        return {r.name: r.length for r in self.records()}

    def __contains__(self, name: object) -> bool:
        return name in self.lengths()

    def check_region(self, name: str, start: int = 0, end: int | None = None) -> int:
        """Validate ``[start, end)`` of record ``name`` and return ``end`` (default: length)."""
        lengths = self.lengths()
        if name not in lengths:
            known = ", ".join(list(lengths)[:10]) + (", ..." if len(lengths) > 10 else "")
            raise IntervalError(
                "no such record", path=self.path, record=name, hint=f"Records are: {known}"
            )
        length = lengths[name]
        end = length if end is None else end
        if start < 0 or start >= end:
            raise IntervalError(
                f"empty or negative region [{start}, {end}) (0-based, half-open)",
                path=self.path,
                record=name,
                position=start,
                hint="Need 0 <= start < end",
            )
        if end > length:
            raise IntervalError(
                f"region end {end} is past the record length {length}",
                path=self.path,
                record=name,
                position=end,
            )
        return end

    # ------------------------------------------------------------------ sequence access
    def fetch(self, name: str, start: int, end: int) -> bytes:
        """Bases ``[start, end)`` (0-based, half-open, + strand) of ``name``, ``(end-start,)``.

        Case is kept. On a streaming file this reads from the start of the file and warns.
        """
        self.check_region(name, start, end)
        if self._faidx is None:
            self._warn_streaming("fetch")
            return b"".join(c for _, c in self._stream_chunks(name, end - start, start, end))
        return self._fetch_indexed(name, start, end)

    def _fetch_indexed(self, name: str, start: int, end: int) -> bytes:
        assert self._faidx is not None
        try:
            seq = self._faidx.from_file(name, start + 1, end).encode("ascii")
        except (UnicodeError, *_GZIP_ERRORS, OSError, ValueError, RuntimeError) as exc:
            raise FastaFormatError(
                f"cannot read bases [{start}, {end}): {exc}",
                path=self.path,
                record=name,
                position=start,
                hint="The file holds non-ASCII bytes, is corrupt, or does not match its index "
                "(delete the .fai/.gzi to rebuild it)",
            ) from exc
        if len(seq) != end - start:
            raise FastaFormatError(
                f"read {len(seq)} bases for [{start}, {end}), expected {end - start}: "
                "the file is truncated or does not match its index",
                path=self.path,
                record=name,
                position=start + len(seq),
                hint="Delete the .fai/.gzi to rebuild the index, or copy the file again",
            )
        return seq

    def iter_chunks(
        self, name: str, chunk_size: int, start: int = 0, end: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """Yield ``(chunk_start, bases)`` over ``[start, end)`` of ``name``, in order.

        Every chunk is ``chunk_size`` long except possibly the last; memory is bounded by
        ``chunk_size`` plus one read block, whatever the record length.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        end = self.check_region(name, start, end)
        if self._faidx is None:
            yield from self._stream_chunks(name, chunk_size, start, end)
            return
        for lo in range(start, end, chunk_size):
            yield lo, self._fetch_indexed(name, lo, min(lo + chunk_size, end))

    def iter_record_chunks(
        self, chunk_size: int, names: Iterable[str] | None = None
    ) -> Iterator[tuple[str, int, bytes]]:
        """Yield ``(record, chunk_start, bases)`` over whole records, in file order.

        On a streaming file this is a single pass. With ``names=None`` and the records not
        measured yet, it does not first run the validating pass: it validates as it reads, so
        a format error late in the file (say, a duplicate id) is raised after the chunks of
        the records before it. It is always raised; nothing is silently skipped. A completed
        pass also fills the ``records()`` cache.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if names is not None or self._records is not None or self._faidx is not None:
            lengths: dict[str, int] | None = self.lengths()
            wanted = set(lengths) if names is None else set(names)
            for n in wanted:
                self.check_region(n)
        else:
            lengths, wanted = None, None
        if self._faidx is not None:
            for n in (n for n in self.lengths() if n in wanted):  # type: ignore[operator]
                for lo, chunk in self.iter_chunks(n, chunk_size):
                    yield n, lo, chunk
            return
        events = iter(_FastaStream(self.path, self.compression, self.block_size))
        current: list[str | None] = [None]
        measured: list[RecordInfo] = []

        def pieces() -> Iterator[bytes]:
            for header, piece in events:
                if header is not None:
                    current[0] = header
                    return
                yield piece  # type: ignore[misc]
            current[0] = None

        for header, _ in events:  # advance to the first header
            current[0] = header
            break
        while current[0] is not None:
            name = current[0]
            got = 0
            if wanted is None or name in wanted:
                for lo, chunk in _rechunk(pieces(), 0, None, chunk_size):
                    got = lo + len(chunk)
                    yield name, lo, chunk
            else:
                got = sum(len(piece) for piece in pieces())
            if lengths is not None:
                self._check_streamed(name, got, lengths[name])
            measured.append(RecordInfo(name, got))
        if self._records is None:
            self._records = measured

    def _stream_chunks(
        self, name: str, chunk_size: int, start: int, end: int
    ) -> Iterator[tuple[int, bytes]]:
        def pieces() -> Iterator[bytes]:
            inside = False
            for header, piece in _FastaStream(self.path, self.compression, self.block_size):
                if header is not None:
                    if inside:
                        return
                    inside = header == name
                elif inside:
                    yield piece  # type: ignore[misc]

        got = start
        for lo, chunk in _rechunk(pieces(), start, end, chunk_size):
            got = lo + len(chunk)
            yield lo, chunk
        self._check_streamed(name, got, end)

    def _check_streamed(self, name: str, got: int, expected: int) -> None:
        if got != expected:
            raise FastaFormatError(
                f"record ended at {got} bases, expected {expected}: the file changed while open",
                path=self.path,
                record=name,
                position=got,
            )

    def _warn_streaming(self, what: str) -> None:
        if self._warned:
            return
        self._warned = True
        if self.compression == "gzip":
            why = "is plain gzip, which has no random access"
            hint = bgzip_hint(self.path)
        else:
            why = "has no index (opened with build_index=False)"
            hint = f"Index it with `samtools faidx {self.path}` or open it with build_index=True"
        warnings.warn(
            f"{self.path} {why}: {what}() decompresses from the start of the file on every "
            f"call. {hint}",
            StreamingAccessWarning,
            stacklevel=3,
        )

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the underlying file handle (pyfaidx); safe to call twice."""
        if self._faidx is not None and not self._closed:
            self._faidx.close()
        self._closed = True

    def __enter__(self) -> FastaFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = f"indexed ({self.index_source})" if self.random_access else "streaming"
        return f"FastaFile({os.fspath(self.path)!r}, {self.compression}, {mode})"
