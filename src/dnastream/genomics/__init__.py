"""dnastream.genomics: FASTA, windows, tokenizer, intervals — the files genomics users have.

Imports nothing else from dnastream. Coordinates are 0-based half-open on the + strand
everywhere inside; BED is read as such, GTF/GFF3 and region strings (``chr2:1,000-2,000``) are
1-based inclusive and converted on input.
"""

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
