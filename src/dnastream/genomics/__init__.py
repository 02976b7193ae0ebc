"""dnastream.genomics: FASTA, windows, tokenizer, intervals — the files genomics users have.

Imports nothing else from dnastream. Coordinates are 0-based half-open on the + strand
everywhere inside; BED is read as such, GTF/GFF3 and region strings (``chr2:1,000-2,000``) are
1-based inclusive and converted on input.

The names below are loaded on first use (:pep:`562`): importing the package, or one name of
it, imports only the submodules that name needs, so ``dnastream score --region`` does not pay
for the GTF/GFF3 parser or the window planner (tests/test_import_cost.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dnastream.genomics.errors import (
        FastaFormatError,
        GenomicsInputError,
        IntervalError,
        InvalidBaseError,
    )
    from dnastream.genomics.fasta import (
        FastaFile,
        FastaNotFoundError,
        RecordInfo,
        StreamingAccessWarning,
        detect_compression,
    )
    from dnastream.genomics.gff import AnnotationWarning, Gene, Transcript, read_gff3, read_gtf
    from dnastream.genomics.intervals import (
        Interval,
        feature_sequence,
        format_region,
        parse_region,
        read_annotation,
        read_bed,
        read_intervals,
        spliced_sequence,
        validate,
    )
    from dnastream.genomics.sequence import reverse_complement
    from dnastream.genomics.tokenizer import (
        PAD_ID,
        VOCAB,
        Convention,
        DNATokenizer,
        decode,
        encode,
        encode_batch,
        reverse_complement_ids,
    )
    from dnastream.genomics.windows import (
        Window,
        count_windows,
        iter_genome_windows,
        iter_windows,
        plan_windows,
    )

_SUBMODULE = {
    "FastaFormatError": "errors",
    "GenomicsInputError": "errors",
    "IntervalError": "errors",
    "InvalidBaseError": "errors",
    "FastaFile": "fasta",
    "FastaNotFoundError": "fasta",
    "RecordInfo": "fasta",
    "StreamingAccessWarning": "fasta",
    "detect_compression": "fasta",
    "AnnotationWarning": "gff",
    "Gene": "gff",
    "Transcript": "gff",
    "read_gff3": "gff",
    "read_gtf": "gff",
    "Interval": "intervals",
    "feature_sequence": "intervals",
    "format_region": "intervals",
    "parse_region": "intervals",
    "read_annotation": "intervals",
    "read_bed": "intervals",
    "read_intervals": "intervals",
    "spliced_sequence": "intervals",
    "validate": "intervals",
    "reverse_complement": "sequence",
    "PAD_ID": "tokenizer",
    "VOCAB": "tokenizer",
    "Convention": "tokenizer",
    "DNATokenizer": "tokenizer",
    "decode": "tokenizer",
    "encode": "tokenizer",
    "encode_batch": "tokenizer",
    "reverse_complement_ids": "tokenizer",
    "Window": "windows",
    "count_windows": "windows",
    "iter_genome_windows": "windows",
    "iter_windows": "windows",
    "plan_windows": "windows",
}
"""Public name -> the submodule of this package that defines it."""

__all__ = [
    "PAD_ID",
    "VOCAB",
    "AnnotationWarning",
    "Convention",
    "DNATokenizer",
    "FastaFile",
    "FastaFormatError",
    "FastaNotFoundError",
    "Gene",
    "GenomicsInputError",
    "Interval",
    "IntervalError",
    "InvalidBaseError",
    "RecordInfo",
    "StreamingAccessWarning",
    "Transcript",
    "Window",
    "count_windows",
    "decode",
    "detect_compression",
    "encode",
    "encode_batch",
    "feature_sequence",
    "format_region",
    "iter_genome_windows",
    "iter_windows",
    "parse_region",
    "plan_windows",
    "read_annotation",
    "read_bed",
    "read_gff3",
    "read_gtf",
    "read_intervals",
    "reverse_complement",
    "reverse_complement_ids",
    "spliced_sequence",
    "validate",
]


def __getattr__(name: str) -> Any:
    module = _SUBMODULE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # __import__, not importlib.import_module: the import then shows in ``python -X importtime``
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
