"""Errors raised for bad genomics input: each names the file, the record/line and the position."""

from __future__ import annotations

import os


class GenomicsInputError(ValueError):
    """Bad input file or argument, located as precisely as possible.

    The message reads ``<path>: record '<id>', line <n>, position <p>: <what>. <hint>``,
    leaving out the parts that are unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        record: str | None = None,
        line: int | None = None,
        position: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = message
        self.path = os.fspath(path) if path is not None else None
        self.record = record
        self.line = line
        self.position = position
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.record is not None:
            where.append(f"record {self.record!r}")
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.position is not None:
            where.append(f"position {self.position}")
        head = f"{self.path}: " if self.path else ""
        loc = ", ".join(where)
        text = f"{head}{loc + ': ' if loc else ''}{self.reason}"
        if self.hint:
            text += f". {self.hint}" if not text.endswith(".") else f" {self.hint}"
        return text


class FastaFormatError(GenomicsInputError):
    """A FASTA file is malformed (no header, empty or duplicate record, truncated gzip...)."""


class InvalidBaseError(GenomicsInputError):
    """A sequence holds a character that is not a nucleotide (or, in strict mode, not A/C/G/T/N)."""


class IntervalError(GenomicsInputError):
    """A BED/GTF/GFF3 line or a region string is malformed or does not fit the genome."""
