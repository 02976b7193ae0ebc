"""GTF and GFF3 gene models: genes -> transcripts -> exons and CDS, 0-based half-open.

Both formats write 1-based inclusive ``start..end``; every coordinate here is converted to
0-based half-open ``[start - 1, end)`` (see :mod:`dnastream.genomics.intervals`).

GFF3 (:func:`read_gff3`) follows ``Parent`` links: gene -> transcript (mRNA, tRNA, ncRNA, ...)
-> exon / CDS / UTR. A feature may have several parents (``Parent=t1,t2``); features sharing an
``ID`` are one multi-line feature (a CDS split over exons). Genes are features of type ``gene``,
``pseudogene`` or ``*_gene`` and any top-level feature that has transcripts or exons under it.
Exons or CDS directly under a gene form one transcript with the gene's ID. A transcript without
``exon`` children takes its exons from its CDS/UTR parts, or else its own span. Attribute values
are URL-unescaped (``%3B`` -> ``;``). A ``Parent`` that no line defines is an error with
``strict=True``; by default its children become an *implicit* transcript (``feature_type ==
"implicit"``), wrapped in an implicit gene of the same ID, and one :class:`AnnotationWarning`
says how many there were.

GTF (:func:`read_gtf`) groups lines by ``gene_id`` and ``transcript_id`` (both required on
transcript parts; ``gene_id`` on ``gene`` lines). ``gene``/``transcript`` lines are optional;
without them the spans are the union of the parts. GTF's CDS excludes the stop codon; here the
``stop_codon`` features are folded into :attr:`Transcript.cds`, so in both formats (and in BED12's
thick range) the CDS ends with its stop codon.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from dnastream.genomics.errors import IntervalError
from dnastream.genomics.intervals import (
    Block,
    Interval,
    PathLike,
    Strand,
    one_based_to_half_open,
    open_text_lines,
    parse_int,
    parse_score,
)

__all__ = [
    "AnnotationWarning",
    "Gene",
    "GffRecord",
    "Transcript",
    "iter_gff3_records",
    "iter_gtf_records",
    "read_gff3",
    "read_gtf",
]


class AnnotationWarning(UserWarning):
    """An annotation file was read, but part of it had to be interpreted (e.g. missing parents)."""


# --------------------------------------------------------------------------------------------
# data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transcript:
    """One transcript: exons and CDS as sorted absolute 0-based half-open ``(start, end)``.

    ``cds`` includes the stop codon and is empty for non-coding transcripts. ``feature_type``
    is the GFF3/GTF type (``mRNA``, ``tRNA``, ``transcript``...) or ``implicit`` when no line
    defines the transcript itself.
    """

    id: str
    chrom: str
    start: int
    end: int
    strand: Strand
    exons: tuple[Block, ...]
    cds: tuple[Block, ...] = ()
    name: str | None = None
    gene_id: str | None = None
    biotype: str | None = None
    feature_type: str = "transcript"
    attributes: dict[str, str] = field(default_factory=dict, hash=False, repr=False)
    source: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    @property
    def length(self) -> int:
        """Genomic span, introns included."""
        return self.end - self.start

    @property
    def spliced_length(self) -> int:
        """Sum of the exon lengths."""
        return sum(e - s for s, e in self.exons)

    @property
    def cds_length(self) -> int:
        """Sum of the CDS part lengths (0 when non-coding)."""
        return sum(e - s for s, e in self.cds)

    def to_interval(self) -> Interval:
        """A BED12-like :class:`Interval` (exons as blocks, CDS bounds as the thick range)."""
        extra = {"gene_id": self.gene_id} if self.gene_id else {}
        start, end = self.exons[0][0], self.exons[-1][1]
        thick = (self.cds[0][0], self.cds[-1][1]) if self.cds else (None, None)
        return Interval(
            chrom=self.chrom,
            start=start,
            end=end,
            strand=self.strand,
            name=self.id,
            thick_start=thick[0],
            thick_end=thick[1],
            blocks=self.exons,
            extra=extra,
            source=self.source,
            line=self.line,
        )


@dataclass(frozen=True)
class Gene:
    """One gene and its transcripts; ``feature_type`` is ``gene``, ``pseudogene``... or
    ``implicit`` when no line defines the gene itself."""

    id: str
    chrom: str
    start: int
    end: int
    strand: Strand
    name: str | None = None
    biotype: str | None = None
    feature_type: str = "gene"
    transcripts: tuple[Transcript, ...] = ()
    attributes: dict[str, str] = field(default_factory=dict, hash=False, repr=False)
    source: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    @property
    def length(self) -> int:
        """Genomic span ``end - start``."""
        return self.end - self.start

    def to_interval(self) -> Interval:
        """The gene's span as an :class:`Interval` named by the gene ID."""
        extra = {k: v for k, v in (("gene_name", self.name), ("biotype", self.biotype)) if v}
        return Interval(
            chrom=self.chrom,
            start=self.start,
            end=self.end,
            strand=self.strand,
            name=self.id,
            extra=extra,
            source=self.source,
            line=self.line,
        )


@dataclass(frozen=True)
class GffRecord:
    """One GTF/GFF3 feature line; ``start``/``end`` already 0-based half-open."""

    seqid: str
    source: str
    type: str
    start: int
    end: int
    score: float | None
    strand: Strand
    phase: int | None
    attributes: dict[str, str] = field(hash=False)
    parents: tuple[str, ...] = ()
    line: int = 0

    @property
    def id(self) -> str | None:
        """The GFF3 ``ID`` attribute."""
        return self.attributes.get("ID")


# --------------------------------------------------------------------------------------------
# line parsing, shared by GTF and GFF3
# --------------------------------------------------------------------------------------------

_PHASES = {".": None, "0": 0, "1": 1, "2": 2}
_GFF_STRANDS = {"+": "+", "-": "-", ".": ".", "?": "."}


def _parse_columns(
    line: str, *, path: str, lineno: int, fmt: str
) -> tuple[list[str], int, int, Strand, float | None, int | None]:
    fields = line.split("\t")
    if len(fields) != 9:
        hint = "columns must be separated by tabs" if len(fields) < 9 and " " in line else None
        raise IntervalError(
            f"{fmt} lines have 9 tab-separated columns, found {len(fields)}",
            path=path,
            line=lineno,
            hint=hint,
        )
    start1 = parse_int(fields[3], "column 4 (start)", path=path, line=lineno)
    end1 = parse_int(fields[4], "column 5 (end)", path=path, line=lineno)
    if start1 < 1:
        raise IntervalError(
            "column 4 (start) is 0, but coordinates are 1-based", path=path, line=lineno
        )
    if start1 > end1:
        raise IntervalError(
            f"start {start1} > end {end1}",
            path=path,
            line=lineno,
            hint=f"{fmt} coordinates are 1-based inclusive, so start <= end",
        )
    if fields[6] not in _GFF_STRANDS:
        raise IntervalError(
            f"column 7 (strand) must be '+', '-', '.' or '?', got {fields[6]!r}",
            path=path,
            line=lineno,
        )
    if fields[7] not in _PHASES:
        raise IntervalError(
            f"column 8 (phase) must be '.', 0, 1 or 2, got {fields[7]!r}", path=path, line=lineno
        )
    if not fields[0]:
        raise IntervalError("column 1 (seqid) is empty", path=path, line=lineno)
    start, end = one_based_to_half_open(start1, end1)
    score = parse_score(fields[5], "column 6 (score)", path=path, line=lineno)
    strand: Strand = _GFF_STRANDS[fields[6]]  # type: ignore[assignment]
    return fields, start, end, strand, score, _PHASES[fields[7]]


def _parse_gff3_attributes(
    text: str, *, path: str, lineno: int
) -> tuple[dict[str, str], tuple[str, ...]]:
    """``tag=value;...`` with URL-unescaping; ``Parent`` split on commas before unescaping."""
    attrs: dict[str, str] = {}
    parents: tuple[str, ...] = ()
    if text in ("", "."):
        return attrs, parents
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        tag, sep, value = item.partition("=")
        if not sep or not tag:
            raise IntervalError(
                f"attribute {item!r} is not tag=value",
                path=path,
                line=lineno,
                hint="GFF3 column 9 is tag=value pairs separated by ';' (a GTF file? read_gtf)",
            )
        tag = unquote(tag)
        if tag == "Parent":
            parents += tuple(unquote(v) for v in value.split(",") if v)
        value = unquote(value)
        attrs[tag] = f"{attrs[tag]},{value}" if tag in attrs else value
    return attrs, parents


_GTF_ATTR = re.compile(r'\s*([^\s;"]+)\s+(?:"([^"]*)"|([^\s;"]+))\s*(?:;|$)')


def _parse_gtf_attributes(text: str, *, path: str, lineno: int) -> dict[str, str]:
    """``key "value"; key2 value2;``; repeated keys (``tag``) are joined with commas."""
    attrs: dict[str, str] = {}
    pos = 0
    while True:
        while pos < len(text) and (text[pos].isspace() or text[pos] == ";"):
            pos += 1
        if pos >= len(text):
            return attrs
        m = _GTF_ATTR.match(text, pos)
        if m is None:
            raise IntervalError(
                f"malformed attribute near {text[pos : pos + 40]!r}",
                path=path,
                line=lineno,
                hint='GTF column 9 is key "value"; pairs (a GFF3 file? read_gff3)',
            )
        key, value = m[1], m[2] if m[2] is not None else m[3]
        attrs[key] = f"{attrs[key]},{value}" if key in attrs else value
        pos = m.end()


def iter_gff3_records(path: PathLike) -> Iterator[GffRecord]:
    """Yield every feature line of a GFF3 file (plain or gzip), stopping at ``##FASTA``."""
    p = os.fspath(path)
    for lineno, line in open_text_lines(p):
        if line.startswith("##FASTA"):
            return
        if not line.strip() or line.startswith("#"):
            continue
        fields, start, end, strand, score, phase = _parse_columns(
            line, path=p, lineno=lineno, fmt="GFF3"
        )
        attrs, parents = _parse_gff3_attributes(fields[8], path=p, lineno=lineno)
        yield GffRecord(
            fields[0],
            fields[1],
            fields[2],
            start,
            end,
            score,
            strand,
            phase,
            attrs,
            parents,
            lineno,
        )


def iter_gtf_records(path: PathLike) -> Iterator[GffRecord]:
    """Yield every feature line of a GTF file (plain or gzip); ``parents`` stays empty."""
    p = os.fspath(path)
    for lineno, line in open_text_lines(p):
        if not line.strip() or line.startswith("#"):
            continue
        fields, start, end, strand, score, phase = _parse_columns(
            line, path=p, lineno=lineno, fmt="GTF"
        )
        attrs = _parse_gtf_attributes(fields[8], path=p, lineno=lineno)
        yield GffRecord(
            fields[0], fields[1], fields[2], start, end, score, strand, phase, attrs, (), lineno
        )


# --------------------------------------------------------------------------------------------
# span helpers
# --------------------------------------------------------------------------------------------


def _merge_touching(spans: Iterable[Block]) -> list[Block]:
    """Union of spans, joining overlapping and abutting ones."""
    merged: list[Block] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def _check_disjoint(exons: Sequence[Block], what: str, *, path: str, line: int | None) -> None:
    for (s1, e1), (s2, e2) in zip(exons, exons[1:], strict=False):
        if s2 < e1:
            raise IntervalError(
                f"exons of {what} overlap: [{s1}, {e1}) and [{s2}, {e2}) (0-based half-open)",
                path=path,
                line=line,
            )


def _with_stop_codons(cds: Iterable[Block], stops: Iterable[Block]) -> tuple[Block, ...]:
    """CDS parts with the stop codon parts joined onto the CDS part they abut."""
    parts = sorted(set(cds))
    for stop in sorted(set(stops)):
        if stop in parts or any(s <= stop[0] and stop[1] <= e for s, e in parts):
            continue  # the CDS already includes it
        for i, (s, e) in enumerate(parts):
            if e == stop[0]:
                parts[i] = (s, stop[1])
                break
            if s == stop[1]:
                parts[i] = (stop[0], e)
                break
        else:
            parts.append(stop)
    return tuple(sorted(parts))


def _exons_or_fallback(
    exons: Iterable[Block], other_parts: Iterable[Block], span: Block
) -> tuple[Block, ...]:
    found = sorted(set(exons))
    if found:
        return tuple(found)
    return tuple(_merge_touching(other_parts)) or (span,)


def _first(attrs: dict[str, str], *keys: str) -> str | None:
    for key in keys:
        if attrs.get(key):
            return attrs[key]
    return None


# --------------------------------------------------------------------------------------------
# GFF3 -> genes
# --------------------------------------------------------------------------------------------

_PART_TYPES = frozenset(
    {"exon", "CDS", "five_prime_UTR", "three_prime_UTR", "UTR", "start_codon", "stop_codon"}
)


def _is_gene_type(feature_type: str) -> bool:
    return feature_type in ("gene", "pseudogene") or feature_type.endswith("_gene")


@dataclass
class _Node:
    """One GFF3 feature (all lines sharing its ID) and its children, while building genes."""

    id: str | None
    records: list[GffRecord]
    parents: list[str]
    line: int
    children: list[_Node] = field(default_factory=list)

    @property
    def type(self) -> str:
        return self.records[0].type if self.records else "implicit"

    @property
    def seqid(self) -> str:
        return (self.records or self.children[0].records)[0].seqid

    @property
    def strand(self) -> Strand:
        return (self.records or self.children[0].records)[0].strand

    @property
    def attributes(self) -> dict[str, str]:
        return dict(self.records[0].attributes) if self.records else {}

    def spans(self) -> list[Block]:
        return [(r.start, r.end) for r in self.records]

    def part_spans(self, types: Iterable[str]) -> list[Block]:
        wanted = set(types)
        return [span for c in self.children if c.type in wanted for span in c.spans()]

    def has_parts(self) -> bool:
        return any(c.type in _PART_TYPES for c in self.children)


def _collect_nodes(records: Iterable[GffRecord], path: str) -> list[_Node]:
    """Group lines by ID into nodes (file order), checking the IDs and Parents that are needed."""
    nodes: list[_Node] = []
    by_id: dict[str, _Node] = {}
    for rec in records:
        rid = rec.id
        if _is_gene_type(rec.type) and not rid:
            raise IntervalError(f"{rec.type} feature has no ID attribute", path=path, line=rec.line)
        if rec.type in _PART_TYPES and not rec.parents:
            raise IntervalError(
                f"{rec.type} feature has no Parent attribute",
                path=path,
                line=rec.line,
                hint="exon/CDS/UTR lines must name their transcript with Parent=<ID>",
            )
        if rid is not None and rid in by_id:
            node = by_id[rid]
            first = node.records[0]
            if first.type != rec.type or first.seqid != rec.seqid:
                raise IntervalError(
                    f"ID {rid!r} is already used by a {first.type} on {first.seqid} "
                    f"at line {first.line}",
                    path=path,
                    line=rec.line,
                    hint="IDs must be unique, except across the lines of one multi-line feature",
                )
            node.records.append(rec)
            node.parents.extend(p for p in rec.parents if p not in node.parents)
            continue
        node = _Node(rid, [rec], list(dict.fromkeys(rec.parents)), rec.line)
        nodes.append(node)
        if rid is not None:
            by_id[rid] = node
    return nodes


def _link_parents(nodes: list[_Node], path: str, strict: bool) -> list[_Node]:
    """Attach each node to its parents; missing parents become implicit nodes (or errors)."""
    by_id = {n.id: n for n in nodes if n.id is not None}
    implicit: list[_Node] = []
    for node in list(nodes):
        for pid in node.parents:
            parent = by_id.get(pid)
            if parent is None:
                if strict:
                    raise IntervalError(
                        f"Parent {pid!r} is not the ID of any feature in the file",
                        path=path,
                        line=node.line,
                        hint="with strict=False such features form an implicit transcript",
                    )
                parent = _Node(pid, [], [], node.line)
                by_id[pid] = parent
                implicit.append(parent)
            if parent is node:
                raise IntervalError(f"feature {pid!r} is its own Parent", path=path, line=node.line)
            if (parent.records or parent.children) and parent.seqid != node.records[0].seqid:
                raise IntervalError(
                    f"feature on {node.records[0].seqid} has Parent {pid!r} on "
                    f"{parent.seqid} (line {parent.line})",
                    path=path,
                    line=node.line,
                )
            parent.children.append(node)
    if implicit:
        first = implicit[0]
        warnings.warn(
            f"{path}: {len(implicit)} Parent ID(s) are not defined by any line (first: "
            f"{first.id!r}, named at line {first.line}); their children were grouped into "
            "implicit transcripts",
            AnnotationWarning,
            stacklevel=3,
        )
    return nodes + implicit


def _gff3_transcript(
    node: _Node, gene_id: str, path: str, *, parts_of: _Node | None = None
) -> Transcript:
    """A transcript from a node's part children (``parts_of``: take the parts of that node,
    used for exons/CDS written directly under a gene)."""
    holder = parts_of or node
    own = node.spans() if parts_of is None else []
    exon_spans = holder.part_spans(["exon"])
    other = holder.part_spans(_PART_TYPES - {"exon"})
    all_spans = own + exon_spans + other
    span = (min(s for s, _ in all_spans), max(e for _, e in all_spans))
    exons = _exons_or_fallback(exon_spans, other, span)
    tid = node.id or _first(node.attributes, "Name") or f"{node.type}_line{node.line}"
    _check_disjoint(exons, f"transcript {tid!r}", path=path, line=node.line)
    attrs = node.attributes
    return Transcript(
        id=tid,
        chrom=node.seqid,
        start=span[0],
        end=span[1],
        strand=node.strand,
        exons=exons,
        cds=tuple(sorted(set(holder.part_spans(["CDS"])))),
        name=attrs.get("Name"),
        gene_id=gene_id,
        biotype=_first(attrs, "biotype", "transcript_biotype", "transcript_type"),
        feature_type=node.type if parts_of is None else "implicit",
        attributes=attrs,
        source=path,
        line=node.line,
    )


def _gff3_gene(node: _Node, path: str) -> Gene:
    gene_id = node.id or f"{node.type}_line{node.line}"
    transcripts = [
        _gff3_transcript(c, gene_id, path)
        for c in node.children
        if c.type not in _PART_TYPES and not _is_gene_type(c.type)
    ]
    if node.has_parts():
        transcripts.append(_gff3_transcript(node, gene_id, path, parts_of=node))
    spans = node.spans() + [(t.start, t.end) for t in transcripts]
    attrs = node.attributes
    return Gene(
        id=gene_id,
        chrom=node.seqid,
        start=min(s for s, _ in spans),
        end=max(e for _, e in spans),
        strand=node.strand,
        name=attrs.get("Name"),
        biotype=_first(attrs, "biotype", "gene_biotype", "gene_type"),
        feature_type=node.type,
        transcripts=tuple(transcripts),
        attributes=attrs,
        source=path,
        line=node.line,
    )


def _wrap_transcript(node: _Node, path: str) -> Gene:
    """An implicit gene holding one top-level transcript (e.g. an mRNA with no gene line)."""
    transcript = _gff3_transcript(node, node.id or f"{node.type}_line{node.line}", path)
    return Gene(
        id=transcript.id,
        chrom=transcript.chrom,
        start=transcript.start,
        end=transcript.end,
        strand=transcript.strand,
        name=transcript.name,
        feature_type="implicit",
        transcripts=(transcript,),
        source=path,
        line=node.line,
    )


def read_gff3(path: PathLike, *, strict: bool = False) -> list[Gene]:
    """Genes (with transcripts, exons, CDS) of a GFF3 file, plain or gzip, in file order.

    See the module docstring for how features are grouped. ``strict=True`` makes a ``Parent``
    that no line defines an error instead of an implicit transcript. Bad lines raise
    :class:`IntervalError` naming the file, the line and the problem.
    """
    p = os.fspath(path)
    nodes = _link_parents(_collect_nodes(iter_gff3_records(p), p), p, strict)
    genes = []
    for node in nodes:
        if _is_gene_type(node.type):
            genes.append(_gff3_gene(node, p))
        elif node.parents:
            continue
        elif node.has_parts():
            genes.append(_wrap_transcript(node, p))
        elif any(c.has_parts() for c in node.children):
            genes.append(_gff3_gene(node, p))
    genes.sort(key=lambda g: g.line or 0)
    return genes


# --------------------------------------------------------------------------------------------
# GTF -> genes
# --------------------------------------------------------------------------------------------

_GTF_PARTS = frozenset(
    {
        "exon", "CDS", "UTR", "five_prime_utr", "three_prime_utr", "5UTR", "3UTR",
        "start_codon", "stop_codon", "Selenocysteine",
    }
)  # fmt: skip


@dataclass
class _GtfGroup:
    """Lines of one GTF gene or transcript while reading."""

    id: str
    first: GffRecord
    own: GffRecord | None = None
    parts: dict[str, list[Block]] = field(default_factory=dict)
    members: dict[str, _GtfGroup] = field(default_factory=dict)

    def add_part(self, rec: GffRecord) -> None:
        self.parts.setdefault(rec.type, []).append((rec.start, rec.end))


def _gtf_require(rec: GffRecord, key: str, path: str) -> str:
    value = rec.attributes.get(key)
    if not value:
        raise IntervalError(
            f"{rec.type} line has no {key} attribute",
            path=path,
            line=rec.line,
            hint=f'GTF {rec.type} lines need {key} "...";',
        )
    return value


def _gtf_same_place(group: _GtfGroup, rec: GffRecord, what: str, path: str) -> None:
    first = group.first
    if (rec.seqid, rec.strand) != (first.seqid, first.strand):
        raise IntervalError(
            f"{what} {group.id!r} is on {first.seqid} {first.strand} at line {first.line} "
            f"but on {rec.seqid} {rec.strand} here",
            path=path,
            line=rec.line,
        )


def _group_gtf(records: Iterable[GffRecord], path: str) -> list[_GtfGroup]:
    genes: dict[str, _GtfGroup] = {}
    transcripts: dict[str, tuple[str, _GtfGroup]] = {}
    for rec in records:
        if rec.type != "gene" and rec.type != "transcript" and rec.type not in _GTF_PARTS:
            continue
        gid = _gtf_require(rec, "gene_id", path)
        gene = genes.setdefault(gid, _GtfGroup(gid, rec))
        _gtf_same_place(gene, rec, "gene_id", path)
        if rec.type == "gene":
            if gene.own is not None:
                raise IntervalError(
                    f"second gene line for gene_id {gid!r} (first at line {gene.own.line})",
                    path=path,
                    line=rec.line,
                )
            gene.own = rec
            continue
        tid = _gtf_require(rec, "transcript_id", path)
        owner, tx = transcripts.setdefault(tid, (gid, _GtfGroup(tid, rec)))
        if owner != gid:
            raise IntervalError(
                f"transcript_id {tid!r} belongs to gene_id {owner!r} (line {tx.first.line}), "
                f"not {gid!r}",
                path=path,
                line=rec.line,
            )
        gene.members.setdefault(tid, tx)
        _gtf_same_place(tx, rec, "transcript_id", path)
        if rec.type == "transcript":
            if tx.own is not None:
                raise IntervalError(
                    f"second transcript line for {tid!r} (first at line {tx.own.line})",
                    path=path,
                    line=rec.line,
                )
            tx.own = rec
        else:
            tx.add_part(rec)
    return list(genes.values())


def _gtf_transcript(group: _GtfGroup, gene_id: str, path: str) -> Transcript:
    parts = group.parts
    other = [s for t, spans in parts.items() if t != "exon" for s in spans]
    all_spans = parts.get("exon", []) + other
    if group.own is not None:
        all_spans.append((group.own.start, group.own.end))
    span = (min(s for s, _ in all_spans), max(e for _, e in all_spans))
    exons = _exons_or_fallback(parts.get("exon", []), other, span)
    _check_disjoint(exons, f"transcript {group.id!r}", path=path, line=group.first.line)
    attrs = dict((group.own or group.first).attributes)
    return Transcript(
        id=group.id,
        chrom=group.first.seqid,
        start=span[0],
        end=span[1],
        strand=group.first.strand,
        exons=exons,
        cds=_with_stop_codons(parts.get("CDS", []), parts.get("stop_codon", [])),
        name=attrs.get("transcript_name"),
        gene_id=gene_id,
        biotype=_first(attrs, "transcript_type", "transcript_biotype"),
        feature_type=group.own.type if group.own is not None else "implicit",
        attributes=attrs,
        source=path,
        line=(group.own or group.first).line,
    )


def _gtf_gene(group: _GtfGroup, path: str) -> Gene:
    transcripts = tuple(_gtf_transcript(t, group.id, path) for t in group.members.values())
    spans = [(t.start, t.end) for t in transcripts]
    if group.own is not None:
        spans.append((group.own.start, group.own.end))
    attrs = dict((group.own or group.first).attributes)
    return Gene(
        id=group.id,
        chrom=group.first.seqid,
        start=min(s for s, _ in spans),
        end=max(e for _, e in spans),
        strand=group.first.strand,
        name=attrs.get("gene_name"),
        biotype=_first(attrs, "gene_type", "gene_biotype"),
        feature_type="gene" if group.own is not None else "implicit",
        transcripts=transcripts,
        attributes=attrs,
        source=path,
        line=(group.own or group.first).line,
    )


def read_gtf(path: PathLike) -> list[Gene]:
    """Genes (with transcripts, exons, CDS incl. stop codon) of a GTF file, in file order.

    Lines of types other than gene, transcript, exon, CDS, UTRs, start/stop codon and
    Selenocysteine are checked for syntax and otherwise ignored. Bad lines raise
    :class:`IntervalError` naming the file, the line and the problem.
    """
    p = os.fspath(path)
    return [_gtf_gene(g, p) for g in _group_gtf(iter_gtf_records(p), p)]
