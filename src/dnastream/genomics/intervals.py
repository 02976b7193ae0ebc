"""Genomic intervals: BED files, region strings, checks against the FASTA, spliced sequence.

Coordinate conventions
----------------------
Every coordinate held by this package is **0-based, half-open** (``[start, end)``, like BED,
Python slices and pyfaidx's ``fasta[chrom][start:end]``). Conversions happen at the edges:

========================  ===========================  ===============================
input                     convention in the input      internal ``(start, end)``
========================  ===========================  ===============================
BED columns 2-3           0-based, half-open           taken as is
GTF / GFF3 columns 4-5    1-based, inclusive           ``(start - 1, end)``
region ``chr2:1000-2000`` 1-based, inclusive           ``(999, 2000)``
========================  ===========================  ===============================

so a GFF3 feature at ``1..10`` and the region ``chr:1-10`` are both ``[0, 10)``, ten bases.

Region strings follow samtools: ``chr2:1,000-2,000`` (commas allowed) is 1-based inclusive,
``chr2`` alone is the whole contig and ``chr2:1000`` (or ``chr2:1000-``) runs from base 1000
to the end of the contig; the last two need the contig lengths. An optional strand suffix
``:+``, ``:-`` or ``:.`` may follow (``chr2:1-100:-``). A contig name holding ``:`` may be
written in braces, ``{HLA-A*01:01}:1-100``.

Empty intervals: BED allows ``start == end`` (an insertion point between two bases), so the
BED reader accepts it; :func:`validate` rejects it unless ``allow_empty=True``, since a model
cannot be run over zero bases. ``start > end`` is always an error.

Errors are :class:`~dnastream.genomics.errors.IntervalError` naming the file, line and problem.
"""

from __future__ import annotations

import difflib
import gzip
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, Union

from dnastream.genomics.errors import IntervalError
from dnastream.genomics.sequence import reverse_complement

if TYPE_CHECKING:
    from dnastream.genomics.gff import Gene, Transcript

__all__ = [
    "Block",
    "Interval",
    "Strand",
    "STRANDS",
    "Fetch",
    "annotation_format",
    "clip_blocks",
    "feature_sequence",
    "format_region",
    "iter_bed",
    "one_based_to_half_open",
    "half_open_to_one_based",
    "open_text_lines",
    "parse_region",
    "read_annotation",
    "read_bed",
    "read_intervals",
    "spliced_sequence",
    "suggest_contigs",
    "validate",
]

Strand = Literal["+", "-", "."]
STRANDS: tuple[str, ...] = ("+", "-", ".")
Block = tuple[int, int]
PathLike = Union[str, "os.PathLike[str]"]
Fetch = Callable[[str, int, int], "bytes | str"]
"""``fetch(chrom, start, end)`` returning the bases of ``[start, end)`` (0-based, half-open)."""


# --------------------------------------------------------------------------------------------
# conventions
# --------------------------------------------------------------------------------------------


def one_based_to_half_open(start: int, end: int) -> tuple[int, int]:
    """Convert a 1-based inclusive ``start..end`` (GTF/GFF3/regions) to 0-based half-open."""
    return start - 1, end


def half_open_to_one_based(start: int, end: int) -> tuple[int, int]:
    """Convert a 0-based half-open ``[start, end)`` to 1-based inclusive ``start..end``."""
    return start + 1, end


# --------------------------------------------------------------------------------------------
# the interval type
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A stretch of one contig, 0-based half-open, optionally spliced into blocks (exons).

    ``blocks`` are absolute ``(start, end)`` pairs, sorted ascending, non-overlapping, inside
    ``[start, end)``; ``None`` means one unspliced block. ``thick_start``/``thick_end`` are the
    BED12 coding range (``None`` when absent). ``extra`` holds the columns past the standard
    BED ones, as text. ``source``/``line`` say where the interval was read (not compared).
    """

    chrom: str
    start: int
    end: int
    strand: Strand = "."
    name: str | None = None
    score: float | None = None
    thick_start: int | None = None
    thick_end: int | None = None
    blocks: tuple[Block, ...] | None = None
    extra: dict[str, str] = field(default_factory=dict, hash=False)
    source: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        problem = _interval_problem(self)
        if problem:
            raise IntervalError(problem, path=self.source, line=self.line, record=self.name)

    @property
    def length(self) -> int:
        """Genomic span ``end - start`` (introns included)."""
        return self.end - self.start

    @property
    def exons(self) -> tuple[Block, ...]:
        """The blocks, or the whole interval as one block when unspliced."""
        return self.blocks if self.blocks is not None else ((self.start, self.end),)

    @property
    def spliced_length(self) -> int:
        """Sum of the block lengths (equals :attr:`length` when unspliced)."""
        return sum(e - s for s, e in self.exons)

    @property
    def cds(self) -> tuple[Block, ...]:
        """The parts of the blocks inside ``[thick_start, thick_end)``; empty when no CDS."""
        if self.thick_start is None or self.thick_end is None:
            return ()
        return clip_blocks(self.exons, self.thick_start, self.thick_end)


def clip_blocks(blocks: Iterable[Block], start: int, end: int) -> tuple[Block, ...]:
    """The non-empty parts of ``blocks`` inside ``[start, end)``."""
    out = []
    for s, e in blocks:
        s, e = max(s, start), min(e, end)
        if s < e:
            out.append((s, e))
    return tuple(out)


def _interval_problem(iv: Interval) -> str | None:
    """What is structurally wrong with an interval (None when it is fine)."""
    if not iv.chrom:
        return "empty contig name"
    if iv.strand not in STRANDS:
        return f"strand {iv.strand!r} is not one of '+', '-', '.'"
    if iv.start < 0:
        return f"start {iv.start} is negative"
    if iv.start > iv.end:
        return f"start {iv.start} > end {iv.end}"
    if (iv.thick_start is None) != (iv.thick_end is None):
        return "thick_start and thick_end must be given together"
    if iv.thick_start is not None and not (
        iv.start <= iv.thick_start <= iv.thick_end <= iv.end  # type: ignore[operator]
    ):
        return f"thick range [{iv.thick_start}, {iv.thick_end}) is outside [{iv.start}, {iv.end})"
    if iv.blocks is not None:
        return _blocks_problem(iv.blocks, iv.start, iv.end)
    return None


def _blocks_problem(blocks: Sequence[Block], start: int, end: int) -> str | None:
    if not blocks:
        return "no blocks"
    prev_end = start
    for i, (s, e) in enumerate(blocks, 1):
        if s >= e:
            return f"block {i} [{s}, {e}) is empty"
        if s < prev_end:
            what = "starts before the interval" if i == 1 else "overlaps the previous block"
            return f"block {i} [{s}, {e}) {what} or blocks are not sorted"
        prev_end = e
    if blocks[0][0] != start or blocks[-1][1] != end:
        return f"blocks span [{blocks[0][0]}, {blocks[-1][1]}), not the interval [{start}, {end})"
    return None


# --------------------------------------------------------------------------------------------
# reading text (plain or gzip) with line numbers
# --------------------------------------------------------------------------------------------


def open_text_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` (1-based, newline stripped) from a plain or gzip file.

    gzip (and bgzip) is recognised by its magic bytes, whatever the extension. A truncated or
    corrupt gzip stream, or text that is not UTF-8, raises :class:`IntervalError` naming the
    file and the line reached.
    """
    p = os.fspath(path)
    with open(p, "rb") as fh:
        is_gzip = fh.read(2) == b"\x1f\x8b"
    lineno = 0
    try:
        with (
            gzip.open(p, "rt", encoding="utf-8", newline="")
            if is_gzip
            else open(p, encoding="utf-8", newline="")
        ) as fh:
            for lineno, line in enumerate(fh, 1):
                yield lineno, line.rstrip("\r\n")
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise IntervalError(
            f"truncated or corrupt gzip data ({exc})", path=p, line=lineno + 1
        ) from None
    except UnicodeDecodeError as exc:
        raise IntervalError(f"not UTF-8 text ({exc.reason})", path=p, line=lineno + 1) from None


def parse_int(text: str, column: str, *, path: str, line: int) -> int:
    """A non-negative decimal integer, or an :class:`IntervalError` naming the column."""
    if text.isascii() and text.isdigit():
        return int(text)
    if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
        raise IntervalError(f"{column} is negative ({text})", path=path, line=line)
    raise IntervalError(f"{column} is not an integer: {text!r}", path=path, line=line)


def parse_score(text: str, column: str, *, path: str, line: int) -> float | None:
    """A float score, ``None`` for ``.``."""
    if text == ".":
        return None
    try:
        return float(text)
    except ValueError:
        raise IntervalError(
            f"{column} is not a number or '.': {text!r}", path=path, line=line
        ) from None


# --------------------------------------------------------------------------------------------
# BED
# --------------------------------------------------------------------------------------------

_BED_COLUMN_NAMES = (
    "chrom", "chromStart", "chromEnd", "name", "score", "strand", "thickStart", "thickEnd",
    "itemRgb", "blockCount", "blockSizes", "blockStarts",
)  # fmt: skip
_BED_STANDARD_COUNTS = (3, 4, 5, 6, 8, 9, 12)


def _is_uint(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _is_uint_list(text: str) -> bool:
    parts = text.rstrip(",").split(",")
    return bool(parts) and all(_is_uint(p) for p in parts)


def _is_rgb(text: str) -> bool:
    parts = text.split(",")
    return text == "." or (len(parts) in (1, 3) and all(_is_uint(p) for p in parts))


def _detect_bed_columns(fields: Sequence[str]) -> int:
    """How many leading columns of a BED line are standard BED (the rest are extra).

    Lines of 3 to 6 columns are BED3..BED6. Past 6, columns 7-8 must both be integers for the
    line to be BED8/9/12; otherwise it is BED6 plus extra columns (``bed6+2`` and the like).
    With exactly 9 or 12 columns, integer columns 7-8 make it BED9/BED12 outright, so a broken
    itemRgb or block list is reported rather than silently taken as extra columns.
    """
    n = len(fields)
    if n <= 6:
        return n
    if n == 7 or not (_is_uint(fields[6]) and _is_uint(fields[7])):
        return 6
    if n in (8, 9, 12):
        return n
    if n > 12 and _is_uint(fields[9]) and _is_uint_list(fields[10]) and _is_uint_list(fields[11]):
        return 12
    return 9 if _is_rgb(fields[8]) else 8


def _split_bed(line: str) -> list[str]:
    """BED columns are tab-separated; lines without a tab are split on any whitespace."""
    return line.split("\t") if "\t" in line else line.split()


def _is_bed_header(line: str) -> bool:
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return True
    first = stripped.split(None, 1)[0]
    return first in ("track", "browser")


def _parse_blocks(
    fields: Sequence[str], start: int, end: int, *, path: str, line: int
) -> tuple[Block, ...]:
    """BED12 columns 10-12 as absolute blocks, checked against each other and the interval."""
    count = parse_int(fields[9], "column 10 (blockCount)", path=path, line=line)
    if count < 1:
        raise IntervalError("blockCount must be at least 1", path=path, line=line)
    lists = []
    for col, name in ((10, "blockSizes"), (11, "blockStarts")):
        text = fields[col].rstrip(",")
        values = [
            parse_int(v, f"column {col + 1} ({name}) value {i}", path=path, line=line)
            for i, v in enumerate(text.split(","), 1)
        ]
        if len(values) != count:
            raise IntervalError(
                f"{name} has {len(values)} values but blockCount is {count}", path=path, line=line
            )
        lists.append(values)
    sizes, rel_starts = lists
    blocks = tuple((start + s, start + s + z) for s, z in zip(rel_starts, sizes, strict=True))
    if rel_starts[0] != 0:
        raise IntervalError(
            f"the first blockStart must be 0, got {rel_starts[0]}", path=path, line=line
        )
    problem = _blocks_problem(blocks, start, blocks[-1][1])  # empty or overlapping blocks
    if problem:
        raise IntervalError(problem, path=path, line=line)
    if blocks[-1][1] != end:
        raise IntervalError(
            f"the last block ends at {blocks[-1][1]} (chromStart + blockStart + blockSize), "
            f"not at chromEnd {end}",
            path=path,
            line=line,
        )
    return blocks


def _parse_thick(
    fields: Sequence[str], start: int, end: int, *, path: str, line: int
) -> tuple[int | None, int | None]:
    ts = parse_int(fields[6], "column 7 (thickStart)", path=path, line=line)
    te = parse_int(fields[7], "column 8 (thickEnd)", path=path, line=line)
    if ts == te and not start <= ts <= end:
        return None, None  # "no coding region", written with an arbitrary position
    if not start <= ts <= te <= end:
        raise IntervalError(
            f"thickStart {ts} / thickEnd {te} must satisfy chromStart {start} <= thickStart "
            f"<= thickEnd <= chromEnd {end}",
            path=path,
            line=line,
        )
    return ts, te


def _parse_bed_line(
    fields: Sequence[str], standard: int, extra_names: Sequence[str], *, path: str, line: int
) -> Interval:
    chrom = fields[0]
    if not chrom:
        raise IntervalError("column 1 (chrom) is empty", path=path, line=line)
    start = parse_int(fields[1], "column 2 (chromStart)", path=path, line=line)
    end = parse_int(fields[2], "column 3 (chromEnd)", path=path, line=line)
    if start > end:
        raise IntervalError(
            f"chromStart {start} > chromEnd {end}",
            path=path,
            line=line,
            hint="BED coordinates are 0-based half-open; start may equal end, never exceed it",
        )
    name = fields[3] if standard >= 4 and fields[3] not in ("", ".") else None
    score = None
    if standard >= 5:
        score = parse_score(fields[4], "column 5 (score)", path=path, line=line)
    strand = "."
    if standard >= 6:
        strand = fields[5]
        if strand not in STRANDS:
            raise IntervalError(
                f"column 6 (strand) must be '+', '-' or '.', got {strand!r}",
                path=path,
                line=line,
                hint="if the columns after the 4th or 5th are custom, pass bed_columns=4 or 5",
            )
    thick_start = thick_end = None
    if standard >= 8:
        thick_start, thick_end = _parse_thick(fields, start, end, path=path, line=line)
    extra = {}
    if standard >= 9:
        extra["itemRgb"] = fields[8]
    blocks = _parse_blocks(fields, start, end, path=path, line=line) if standard >= 12 else None
    extra.update(zip(extra_names, fields[standard:], strict=True))
    return Interval(
        chrom=chrom,
        start=start,
        end=end,
        strand=strand,  # type: ignore[arg-type]
        name=name,
        score=score,
        thick_start=thick_start,
        thick_end=thick_end,
        blocks=blocks,
        extra=extra,
        source=path,
        line=line,
    )


def iter_bed(
    path: PathLike,
    *,
    bed_columns: int | None = None,
    extra_columns: Sequence[str] | None = None,
) -> Iterator[Interval]:
    """Yield the intervals of a BED file (plain or gzip), 0-based half-open as written.

    ``track``/``browser`` lines, ``#`` comments and blank lines are skipped. Columns are
    tab-separated (whitespace when a line has no tab) and every data line must have as many
    columns as the first. ``bed_columns`` is how many leading columns are standard BED
    (3-9 or 12, like ``bedN+M``); by default it is detected from the first data line (see
    :func:`_detect_bed_columns`). Columns past those go into :attr:`Interval.extra`, named by
    ``extra_columns``, else by a ``#`` header line just before the data when it has one name per
    column, else ``col7``, ``col8``, ... (1-based column numbers). BED9+ ``itemRgb`` is kept in
    ``extra["itemRgb"]``.

    Zero-length intervals (``start == end``) are accepted here; :func:`validate` rejects them.
    """
    p = os.fspath(path)
    standard: int | None = bed_columns
    if standard is not None and standard not in _BED_STANDARD_COUNTS:
        raise ValueError(f"bed_columns must be one of {_BED_STANDARD_COUNTS}, got {standard}")
    names: list[str] | None = None
    first_line = 0
    header: list[str] | None = None
    for lineno, line in open_text_lines(p):
        if _is_bed_header(line):
            if line.startswith("#") and names is None:
                header = _split_bed(line.lstrip("#").strip())
            continue
        fields = _split_bed(line)
        if names is None:
            if len(fields) < 3:
                raise IntervalError(
                    f"BED needs at least 3 columns (chrom, start, end), found {len(fields)}",
                    path=p,
                    line=lineno,
                )
            if standard is None:
                standard = _detect_bed_columns(fields)
            names = _extra_names(fields, standard, extra_columns, header, path=p, line=lineno)
            first_line = lineno
        if len(fields) != standard + len(names):
            raise IntervalError(
                f"found {len(fields)} columns, but the first data line (line {first_line}) has "
                f"{standard + len(names)}",
                path=p,
                line=lineno,
                hint="every line of a BED file must have the same number of columns",
            )
        yield _parse_bed_line(fields, standard, names, path=p, line=lineno)


def _extra_names(
    fields: Sequence[str],
    standard: int,
    given: Sequence[str] | None,
    header: Sequence[str] | None,
    *,
    path: str,
    line: int,
) -> list[str]:
    if len(fields) < standard:
        raise IntervalError(
            f"bed_columns={standard} but the line has only {len(fields)} columns",
            path=path,
            line=line,
        )
    n_extra = len(fields) - standard
    if given is not None:
        if len(given) != n_extra:
            raise IntervalError(
                f"{len(given)} extra_columns names given for {n_extra} extra columns",
                path=path,
                line=line,
            )
        return list(given)
    if header is not None and len(header) == len(fields):
        return list(header[standard:])
    return [f"col{i}" for i in range(standard + 1, len(fields) + 1)]


def read_bed(
    path: PathLike,
    *,
    bed_columns: int | None = None,
    extra_columns: Sequence[str] | None = None,
) -> list[Interval]:
    """All intervals of a BED file; see :func:`iter_bed`."""
    return list(iter_bed(path, bed_columns=bed_columns, extra_columns=extra_columns))


# --------------------------------------------------------------------------------------------
# region strings
# --------------------------------------------------------------------------------------------

_NUM = r"[0-9][0-9,]*"
_COORDS = rf":(?P<start>{_NUM})(?:-(?P<end>{_NUM})?)?(?::(?P<strand>[+\-.]))?"
_REGION_RE = re.compile(rf"(?P<chrom>.+){_COORDS}")
_BRACED_RE = re.compile(rf"\{{(?P<chrom>[^{{}}]+)\}}(?:{_COORDS}|:(?P<strand2>[+\-.]))?")
_WHOLE_RE = re.compile(r"(?P<chrom>.+?)(?::(?P<strand>[+\-.]))?")


def _region_error(text: str, problem: str, hint: str | None = None) -> IntervalError:
    return IntervalError(f"region {text!r}: {problem}", hint=hint)


def _region_number(text: str, raw: str) -> int:
    digits = raw.replace(",", "")
    if not digits:
        raise _region_error(text, f"bad number {raw!r}")
    return int(digits)


def _match_region(text: str) -> tuple[str, str | None, str | None, str | None]:
    """Split a region string into (chrom, start, end, strand) texts; numbers still raw."""
    if text.startswith("{"):
        m = _BRACED_RE.fullmatch(text)
        if not m:
            raise _region_error(text, "unbalanced braces or bad coordinates after '}'")
        return m["chrom"], m["start"], m["end"], m["strand"] or m["strand2"]
    m = _REGION_RE.fullmatch(text)
    if m:
        return m["chrom"], m["start"], m["end"], m["strand"]
    m = _WHOLE_RE.fullmatch(text)
    assert m is not None  # matches any non-empty text
    return m["chrom"], None, None, m["strand"]


def parse_region(text: str, contig_lengths: Mapping[str, int] | None = None) -> Interval:
    """Parse a samtools/UCSC-style region into a 0-based half-open :class:`Interval`.

    ``chr2:1,000-2,000`` (1-based, inclusive, commas allowed) becomes ``[999, 2000)``;
    ``chr2:1000-1000`` is one base. ``chr2`` (whole contig), ``chr2:1000`` and ``chr2:1000-``
    (base 1000 to the contig end) need ``contig_lengths``. A strand suffix ``:+``/``:-``/``:.``
    is optional (default ``.``). With ``contig_lengths`` the result is also checked with
    :func:`validate` (known contig, end inside it). Raises :class:`IntervalError`.
    """
    stripped = text.strip()
    if not stripped:
        raise _region_error(text, "empty region")
    if contig_lengths is not None and stripped in contig_lengths:
        chrom, start_s, end_s, strand = stripped, None, None, None
    else:
        chrom, start_s, end_s, strand = _match_region(stripped)
    start = 0 if start_s is None else _region_number(text, start_s) - 1
    if start < 0:
        raise _region_error(
            text, "positions are 1-based, so the start cannot be 0", "did you mean 1?"
        )
    if end_s is not None:
        end = _region_number(text, end_s)
        if end <= start:
            raise _region_error(
                text,
                f"start {start + 1:,} > end {end:,}",
                "regions are 1-based inclusive: chr:100-100 is one base",
            )
    elif contig_lengths is None:
        raise _region_error(
            text,
            "a region without an end runs to the end of the contig, so its length is needed",
            "pass contig_lengths (e.g. from the FASTA index)",
        )
    elif chrom not in contig_lengths:
        raise _unknown_contig(chrom, contig_lengths, path=None, line=None, record=text)
    else:
        end = contig_lengths[chrom]
    if end <= start:
        raise _region_error(text, f"start {start + 1:,} is past the end of {chrom!r} ({end:,} bp)")
    interval = Interval(chrom, start, end, strand or ".")  # type: ignore[arg-type]
    if contig_lengths is not None:
        validate(interval, contig_lengths, record=text)
    return interval


def format_region(
    interval: Interval, *, thousands: bool = False, strand: bool | None = None
) -> str:
    """The 1-based inclusive region string of an interval, e.g. ``chr2:1000-2000:-``.

    ``[999, 2000)`` gives ``chr2:1000-2000``. ``thousands`` adds commas (``1,000``). The strand
    suffix is written when ``strand`` is True, or by default when the strand is ``+`` or ``-``.
    Contig names holding ``:`` are braced. Empty intervals have no 1-based form (ValueError).
    """
    if interval.end <= interval.start:
        raise ValueError(f"an empty interval has no 1-based region form: {interval}")
    one_start, one_end = half_open_to_one_based(interval.start, interval.end)
    fmt = "{:,}" if thousands else "{}"
    chrom = f"{{{interval.chrom}}}" if ":" in interval.chrom else interval.chrom
    text = f"{chrom}:{fmt.format(one_start)}-{fmt.format(one_end)}"
    if strand or (strand is None and interval.strand != "."):
        text += f":{interval.strand}"
    return text


# --------------------------------------------------------------------------------------------
# validation against the FASTA's contigs
# --------------------------------------------------------------------------------------------


class _Located(Protocol):
    chrom: str
    start: int
    end: int


def suggest_contigs(name: str, contig_names: Iterable[str]) -> list[str]:
    """Contig names close to ``name``: the ``chr``-prefix twin (``chr2``/``2``, ``chrM``/``MT``),
    a case-insensitive match, then close spellings."""
    names = list(contig_names)
    known = set(names)
    twins = [name[3:], "MT" if name == "chrM" else ""] if name.startswith("chr") else []
    twins += ["chr" + name, "chrM" if name in ("MT", "M") else ""]
    found = [t for t in twins if t and t in known]
    lower = name.lower()
    found += [n for n in names if n.lower() == lower and n not in found]
    found += [n for n in difflib.get_close_matches(name, names, n=3) if n not in found]
    return found[:3]


def _unknown_contig(
    chrom: str,
    contig_lengths: Mapping[str, int],
    *,
    path: str | None,
    line: int | None,
    record: str | None,
) -> IntervalError:
    close = suggest_contigs(chrom, contig_lengths)
    if close:
        hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
        if any(c == "chr" + chrom or chrom == "chr" + c for c in close):
            hint += " (the annotation and the FASTA disagree on the 'chr' prefix)"
    else:
        listed = ", ".join(repr(c) for c in list(contig_lengths)[:5])
        more = f" and {len(contig_lengths) - 5} more" if len(contig_lengths) > 5 else ""
        hint = f"the FASTA has {listed}{more}"
    return IntervalError(
        f"unknown contig {chrom!r}", path=path, line=line, record=record, hint=hint
    )


def _check_one(
    item: _Located,
    contig_lengths: Mapping[str, int],
    *,
    path: str | None,
    record: str | None,
    allow_empty: bool,
) -> None:
    path = getattr(item, "source", None) or path
    line = getattr(item, "line", None)
    record = record or getattr(item, "id", None) or getattr(item, "name", None)
    where = f"{item.chrom}:[{item.start:,}, {item.end:,}) (0-based half-open)"
    if item.chrom not in contig_lengths:
        raise _unknown_contig(item.chrom, contig_lengths, path=path, line=line, record=record)
    if item.start > item.end or (item.start == item.end and not allow_empty):
        raise IntervalError(
            f"start {item.start:,} >= end {item.end:,}: {where} is "
            + ("inverted" if item.start > item.end else "empty"),
            path=path,
            line=line,
            record=record,
        )
    length = contig_lengths[item.chrom]
    if item.end > length:
        raise IntervalError(
            f"{where} ends at {item.end:,}, past the end of contig {item.chrom!r} ({length:,} bp)",
            path=path,
            line=line,
            record=record,
            hint="is the annotation for another assembly or a fragment of it?",
        )


def validate(
    features: _Located | Iterable[_Located],
    contig_lengths: Mapping[str, int],
    *,
    path: PathLike | None = None,
    record: str | None = None,
    allow_empty: bool = False,
) -> None:
    """Check intervals (or genes/transcripts) against the FASTA's ``{contig: length}``.

    Raises :class:`IntervalError` for the first feature on an unknown contig (suggesting close
    names, e.g. ``chr2`` vs ``2``), with ``start >= end`` (``start == end`` is allowed with
    ``allow_empty``), or ending past its contig. A gene's transcripts are checked too. The
    error names the feature's file and line (``path`` is used when the feature has none).
    """
    items: Iterable[_Located] = (
        [features] if hasattr(features, "chrom") else features  # type: ignore[list-item]
    )
    fallback = os.fspath(path) if path is not None else None
    for item in items:
        _check_one(item, contig_lengths, path=fallback, record=record, allow_empty=allow_empty)
        for transcript in getattr(item, "transcripts", ()):
            _check_one(
                transcript, contig_lengths, path=fallback, record=record, allow_empty=allow_empty
            )


# --------------------------------------------------------------------------------------------
# sequence of a (spliced) feature
# --------------------------------------------------------------------------------------------


def spliced_sequence(chrom: str, blocks: Iterable[Block], strand: str, fetch: Fetch) -> bytes:
    """Join the bases of ``blocks`` (0-based half-open, any order) in genome order and reverse
    complement the result when ``strand`` is ``-``, giving the feature's 5'->3' sequence.

    ``fetch(chrom, start, end)`` returns bytes (or ASCII text) of ``[start, end)``; a result of
    the wrong length (e.g. a block past the contig end) raises :class:`IntervalError`.
    """
    if strand not in STRANDS:
        raise ValueError(f"strand must be '+', '-' or '.', got {strand!r}")
    parts = []
    for start, end in sorted(blocks):
        seq = fetch(chrom, start, end)
        if isinstance(seq, str):
            seq = seq.encode("ascii")
        if len(seq) != end - start:
            raise IntervalError(
                f"fetch returned {len(seq)} bases for {chrom}:[{start:,}, {end:,}), "
                f"expected {end - start}",
                hint="is the block past the end of the contig?",
            )
        parts.append(bytes(seq))
    joined = b"".join(parts)
    return reverse_complement(joined) if strand == "-" else joined  # type: ignore[return-value]


def feature_sequence(feature: Interval | Transcript, fetch: Fetch, *, cds: bool = False) -> bytes:
    """The spliced 5'->3' sequence of an :class:`Interval` or transcript (its exons), or of
    its coding part with ``cds=True`` (empty when it has none)."""
    blocks = feature.cds if cds else feature.exons
    return spliced_sequence(feature.chrom, blocks, feature.strand, fetch)


# --------------------------------------------------------------------------------------------
# any annotation file
# --------------------------------------------------------------------------------------------

AnnotationFormat = Literal["bed", "gtf", "gff3"]
_EXTENSIONS: dict[str, AnnotationFormat] = {
    ".bed": "bed", ".gtf": "gtf", ".gff": "gff3", ".gff3": "gff3",
}  # fmt: skip


def annotation_format(path: PathLike) -> AnnotationFormat:
    """``bed``, ``gtf`` or ``gff3`` from the file name (``.bed``, ``.gtf``, ``.gff``/``.gff3``,
    each optionally followed by ``.gz``/``.bgz``)."""
    name = Path(os.fspath(path)).name.lower()
    for comp in (".gz", ".bgz"):
        name = name.removesuffix(comp)
    suffix = Path(name).suffix
    if suffix not in _EXTENSIONS:
        raise IntervalError(
            f"cannot tell the annotation format from the extension {suffix or '(none)'!r}",
            path=os.fspath(path),
            hint="use .bed, .gtf, .gff or .gff3 (optionally .gz), or pass format=",
        )
    return _EXTENSIONS[suffix]


def read_annotation(
    path: PathLike, *, format: AnnotationFormat | None = None
) -> list[Interval] | list[Gene]:
    """Read BED (-> list of :class:`Interval`) or GTF/GFF3 (-> list of ``Gene``), choosing the
    reader by extension (see :func:`annotation_format`) unless ``format`` is given."""
    from dnastream.genomics import gff  # imported here: gff imports this module

    fmt = format or annotation_format(path)
    if fmt == "bed":
        return read_bed(path)
    if fmt == "gtf":
        return gff.read_gtf(path)
    if fmt == "gff3":
        return gff.read_gff3(path)
    raise ValueError(f"format must be 'bed', 'gtf' or 'gff3', got {fmt!r}")


def read_intervals(
    path: PathLike,
    *,
    level: Literal["gene", "transcript"] = "gene",
    format: AnnotationFormat | None = None,
) -> list[Interval]:
    """Any annotation file as intervals: BED rows as they are; GTF/GFF3 genes (or, with
    ``level="transcript"``, transcripts with their exons as blocks and CDS as thick range)."""
    records = read_annotation(path, format=format)
    out: list[Interval] = []
    for rec in records:
        if isinstance(rec, Interval):
            out.append(rec)
        elif level == "gene":
            out.append(rec.to_interval())
        else:
            out.extend(t.to_interval() for t in rec.transcripts)
    return out
