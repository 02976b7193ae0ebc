"""Opt-in phase timing of ``dnastream embed`` / ``dnastream score`` (for benchmarks).

Off unless ``--stats-json PATH`` is given or ``DNASTREAM_PROFILE=PATH`` is set; then the run
writes one JSON object to PATH when it ends (under torchrun, rank k > 0 writes
``PATH.rank<k>``). Recording is a few ``perf_counter`` calls per chunk, so the counters are
always kept; only the file is optional. Nothing here synchronizes a GPU: on CUDA, ``step`` is
the time to *launch* a chunk and ``d2h_wait`` the time the host then waited for its outputs.

The JSON (seconds unless named otherwise)::

    job, device, bases, chunks, first_chunk_bases
    process_start_to_entry   process start -> run_embed/run_score entered (python, torch and
                             dnastream imports, CLI parsing); null where /proc is missing
    entry_epoch              time.time() at entry (a parent can subtract its spawn time)
    marks                    {name: seconds since entry}: model_loaded (FASTA index, CUDA
                             init, checkpoint load, model on device), loop_start (output
                             file open), first_chunk (first chunk's outputs on the host:
                             includes Triton JIT / warm-up), loop_end (last chunk handed to
                             the writer), drained (writer caught up), end (file finished,
                             renamed; TSV etc. written)
    phases                   the same as durations: setup, prepare, first_chunk, steady,
                             drain, finalize, total (= process_start_to_entry + end)
    loop                     sums over chunks: step (model call), d2h_wait, input_wait (for
                             the reader thread), host (consumer's post-processing, writes
                             included), write (synchronous HDF5 writes, score), write_wait
                             (blocked handing work to the writer thread, embed), writer_busy
                             (writer thread working), compress_wait (writer waiting for
                             compression processes)
    steady_kbp_s             (bases - first_chunk_bases) / steady / 1e3
    raw_chunks, filtered_chunks   (embed) whole HDF5 chunks stored unfiltered / filtered
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["PROFILE_ENV", "PhaseStats", "process_age"]

PROFILE_ENV = "DNASTREAM_PROFILE"

_MARK_ORDER = ("model_loaded", "loop_start", "first_chunk", "loop_end", "drained", "end")


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat(5): start time, clock ticks after boot
        hz = os.sysconf("SC_CLK_TCK")
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / hz
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class PhaseStats:
    """Marks (first time only) and summed durations of one run; written by :meth:`save`."""

    def __init__(self, path: str | os.PathLike[str] | None = None, job: str = "") -> None:
        self.path = Path(path) if path else None
        self.job = job
        self.age_at_entry = process_age()
        self.entry_epoch = time.time()
        self.t0 = time.perf_counter()
        self.marks: dict[str, float] = {}
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.bases = 0
        self.chunks = 0
        self.first_chunk_bases = 0
        self.extra: dict[str, Any] = {}

    @classmethod
    def from_env(cls, path: str | os.PathLike[str] | None = None, job: str = "") -> PhaseStats:
        """Stats written to ``path``, else to ``$DNASTREAM_PROFILE``, else not written."""
        return cls(path or os.environ.get(PROFILE_ENV) or None, job)

    @property
    def enabled(self) -> bool:
        """Whether :meth:`save` writes a file."""
        return self.path is not None

    def mark(self, name: str) -> None:
        """Record ``name`` now (only its first occurrence counts)."""
        if name not in self.marks:
            self.marks[name] = time.perf_counter() - self.t0

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to the sum ``name``."""
        self.sums[name] = self.sums.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + 1

    def chunk_done(self, bases: int) -> None:
        """A chunk's outputs reached the consumer (the first one sets ``first_chunk``)."""
        if "first_chunk" not in self.marks:
            self.mark("first_chunk")
            self.first_chunk_bases = bases
        self.bases += bases
        self.chunks += 1

    def report(self) -> dict[str, Any]:
        """The JSON object (see the module docstring)."""
        m = self.marks
        prev = 0.0
        phases: dict[str, float | None] = {}
        names = ("setup", "prepare", "first_chunk", "steady", "drain", "finalize")
        for phase, mark in zip(names, _MARK_ORDER, strict=True):
            if mark in m:
                phases[phase] = m[mark] - prev
                prev = m[mark]
            else:
                phases[phase] = None
        end = m.get("end", prev)
        phases["total"] = end + (self.age_at_entry or 0.0)
        steady = phases.get("steady")
        rate = None
        if steady and self.bases > self.first_chunk_bases:
            rate = (self.bases - self.first_chunk_bases) / steady / 1e3
        return {
            "job": self.job,
            "bases": self.bases,
            "chunks": self.chunks,
            "first_chunk_bases": self.first_chunk_bases,
            "process_start_to_entry": self.age_at_entry,
            "entry_epoch": self.entry_epoch,
            "marks": dict(m),
            "phases": phases,
            "loop": dict(self.sums),
            "loop_counts": dict(self.counts),
            "steady_kbp_s": rate,
            **self.extra,
        }

    def save(self) -> Path | None:
        """Write the JSON file when enabled (rank suffix under torchrun); returns its path."""
        if self.path is None:
            return None
        self.mark("end")
        path = self.path
        rank = int(os.environ.get("RANK", "0") or 0)
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and rank > 0:
            path = path.with_name(f"{path.name}.rank{rank}")
        path.write_text(json.dumps(self.report(), indent=1, default=str) + "\n", encoding="utf-8")
        return path
