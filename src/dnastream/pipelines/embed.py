"""``dnastream embed``: HyenaDNA embeddings of FASTA records or regions, streamed into HDF5.

Each region is read chunk by chunk (``source``), streamed through the model exactly
(``runner``: outputs equal a whole-sequence forward with the same K-tap filters; K defaults to
the model's l_max, and any length works since streaming *is* that partial convolution), pooled
on the fly and written incrementally (``h5store``, whose docstring gives the file layout and
the resume rules). Memory is bounded by the chunk size, never by the region length.

Strands: ``+`` reads the region as stored, ``-`` its reverse complement (5'->3'), ``both`` does
both; ``rc_average`` stores (plus + minus) / 2. Every output is stored in + strand order.

Three threads share the work: a reader (decompress, tokenize), the model (main thread, torch's
intra-op threads) and a writer (HDF5 compression releases the GIL). On CPU the helpers run at
a lower priority (``DNASTREAM_HELPER_NICE``), glibc is told to reuse large buffers
(:func:`~dnastream.pipelines.runner.tune_malloc`) and the CLI sets ``OMP_WAIT_POLICY=PASSIVE``
before torch loads; together with 4096-token steps that took the whole E. coli genome (tiny
model, 2 cores, per-base float32 + lzf) from 50 to 60 kbp/s.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from dnastream import __version__
from dnastream.genomics import DNATokenizer, FastaFile, GenomicsInputError
from dnastream.genomics.fasta import bgzip_hint
from dnastream.models import load_model
from dnastream.pipelines.h5store import (
    AsyncWriter,
    EmbedStore,
    IncompatibleOutputError,
    OutputExistsError,
    RegionLayout,
    compress_processes,
    compression_pool,
    hdf5_key,
)
from dnastream.pipelines.runner import (
    DEFAULT_CHUNK,
    ModelRunner,
    RegionChunkResult,
    resolve_device,
    tune_malloc,
)
from dnastream.pipelines.source import (
    Region,
    iter_batch_chunks,
    iter_token_chunks,
    lower_thread_priority,
    regions_from,
)
from dnastream.pipelines.stats import PhaseStats

if TYPE_CHECKING:
    from dnastream.pipelines.distributed import Shard

__all__ = [
    "DEFAULT_CHUNK",
    "EmbedInputError",
    "EmbedOptions",
    "EmbedProgress",
    "EmbedReport",
    "IncompatibleOutputError",
    "OutputExistsError",
    "Pooling",
    "parse_layers",
    "run_embed",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "float16": torch.float16}  # fmt: skip
_STORE_DTYPES = ("float32", "float16")
_WEIGHT_FILES = ("model.safetensors", "weights.ckpt", "pytorch_model.bin")


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pooling:
    """``none`` (per base), ``mean`` (one vector per region) or ``bin`` of ``size`` bases."""

    kind: str = "none"
    size: int = 1

    @classmethod
    def parse(cls, text: str) -> Pooling:
        """``none``, ``mean`` or ``bin:N`` (N >= 1)."""
        t = text.strip().lower()
        if t in ("none", "mean"):
            return cls(t)
        if t.startswith("bin:"):
            try:
                n = int(t[4:])
            except ValueError:
                n = 0
            if n >= 1:
                return cls("bin", n)
        raise ValueError(f"--pool must be none, mean or bin:N (N >= 1), got {text!r}")

    def rows(self, length: int) -> int | None:
        """Rows of a pooled dataset for a region of ``length`` (None: a single (d,) vector)."""
        if self.kind == "mean":
            return None
        return length if self.kind == "none" else math.ceil(length / self.size)

    def __str__(self) -> str:
        return f"bin:{self.size}" if self.kind == "bin" else self.kind


def parse_layers(spec: str | Sequence[int] | None, n_layer: int) -> tuple[int, ...]:
    """Block indices from ``"0,1"`` (negative counts from the end), sorted, in range."""
    if spec is None or spec == "":
        return ()
    items: Iterable[Any] = spec.split(",") if isinstance(spec, str) else spec
    out = set()
    for item in items:
        try:
            i = int(str(item).strip())
        except ValueError:
            raise ValueError(f"--layers takes block indices like 0,1; got {spec!r}") from None
        if not -n_layer <= i < n_layer:
            raise ValueError(f"--layers: block {i} is out of range for a {n_layer}-block model")
        out.add(i % n_layer)
    return tuple(sorted(out))


@dataclass(frozen=True)
class EmbedOptions:
    """What to compute and how (the ``dnastream embed`` flags).

    pool: ``none``, ``mean`` or ``bin:N``. layers: block indices (str ``"0,1"`` or ints).
    strand: ``+``, ``-`` or ``both``. rc_average: also store (plus + minus) / 2.
    chunk: tokens per streaming step (default :data:`DEFAULT_CHUNK` for the device).
    filter_len: long-filter taps K (default l_max). dtype: stored float32/float16.
    compute_dtype: model dtype. device: auto/cpu/cuda/cuda:N. batch_size: equal-length
    regions run together. compression: lzf, gzip or none. threads: torch CPU threads.
    prefetch: chunks read ahead.
    """

    pool: str = "none"
    layers: str | tuple[int, ...] = ()
    strand: str = "+"
    rc_average: bool = False
    chunk: int | None = None
    filter_len: int | None = None
    dtype: str = "float32"
    compute_dtype: str = "float32"
    device: str = "auto"
    batch_size: int = 1
    compression: str = "lzf"
    force: bool = False
    threads: int | None = None
    prefetch: int = 2

    def validate(self) -> None:
        """Raise ValueError for an invalid option (before anything is read or written)."""
        Pooling.parse(self.pool)
        if self.strand not in ("+", "-", "both"):
            raise ValueError(f"--strand must be +, - or both, got {self.strand!r}")
        if self.dtype not in _STORE_DTYPES:
            raise ValueError(f"--dtype must be float32 or float16, got {self.dtype!r}")
        if self.compute_dtype not in _DTYPES:
            raise ValueError(f"--compute-dtype must be one of {sorted(_DTYPES)}")
        if self.compression not in ("lzf", "gzip", "none"):
            raise ValueError(f"--compression must be lzf, gzip or none, got {self.compression!r}")
        for name in ("chunk", "filter_len", "batch_size", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")

    def passes(self) -> tuple[str, ...]:
        """Strands read, in order."""
        if self.rc_average or self.strand == "both":
            return ("+", "-")
        return (self.strand,)

    def tracks(self) -> tuple[str, ...]:
        """Track groups stored per region."""
        stored = {"+": ("plus",), "-": ("minus",), "both": ("plus", "minus")}[self.strand]
        if self.rc_average:
            return (("plus", "minus") if self.strand == "both" else ()) + ("rc_average",)
        return stored


class EmbedProgress(Protocol):
    """Progress callbacks: ``start`` once, ``advance`` per chunk."""

    def start(self, total_bases: int, n_regions: int, n_skipped: int) -> None: ...

    def advance(self, region: str, bases: int) -> None: ...


@dataclass
class EmbedReport:
    """What :func:`run_embed` did."""

    output: Path
    n_regions: int
    n_skipped: int
    bases: int
    seconds: float
    device: str
    filter_len: int
    chunk: int
    resumed: bool
    backoffs: int = 0
    regions: list[str] = field(default_factory=list)

    @property
    def kbp_per_s(self) -> float:
        """Thousand bases (per pass) embedded per second."""
        return self.bases / self.seconds / 1e3 if self.seconds > 0 else float("nan")


# --------------------------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------------------------


class _Pool:
    """Turns + strand segments ``[a, b)`` of outputs into rows to write.

    Segments of one pass arrive contiguous, left to right (+) or right to left (-). ``feed``
    returns ``(lo, hi, values)`` row ranges that are final (``lo`` None: the whole (d,)
    vector); :attr:`covered` is the number of bases, in reading order, whose rows are final.
    Sums are accumulated in float64.
    """

    def __init__(self, pooling: Pooling, length: int, reverse: bool) -> None:
        self.p = pooling
        self.length = length
        self.reverse = reverse
        self.covered = 0
        self._sum: np.ndarray | None = None
        self._partial: dict[int, tuple[np.ndarray, int]] = {}

    def _bin_size(self, j: int) -> int:
        n = self.p.size
        return min(self.length, (j + 1) * n) - j * n

    def feed(
        self, a: int, b: int, x: np.ndarray
    ) -> list[tuple[int | None, int | None, np.ndarray]]:
        """x: (b - a, d) float32 outputs of + strand positions [a, b) of the region."""
        if self.p.kind == "none":
            self.covered += b - a
            return [(a, b, x)]
        if self.p.kind == "mean":
            s = x.sum(axis=0, dtype=np.float64)
            self._sum = s if self._sum is None else self._sum + s
            return []
        n = self.p.size
        j0, j1 = a // n, (b - 1) // n
        starts = np.maximum(np.arange(j0, j1 + 1) * n, a) - a
        sums = np.add.reduceat(x.astype(np.float64), starts, axis=0)
        counts = np.diff(np.append(starts, b - a))
        done: list[tuple[int, np.ndarray]] = []
        for k, j in enumerate(range(j0, j1 + 1)):
            s, c = sums[k], int(counts[k])
            if j in self._partial:
                ps, pc = self._partial.pop(j)
                s, c = ps + s, pc + c
            if c == self._bin_size(j):
                done.append((j, (s / c).astype(np.float32)))
            else:
                self._partial[j] = (s, c)
        if not done:
            return []
        done.sort(key=lambda t: t[0])
        lo, hi = done[0][0], done[-1][0] + 1
        if self.reverse:
            self.covered = self.length - lo * n
        else:
            self.covered = min(self.length, hi * n)
        return [(lo, hi, np.stack([v for _, v in done]))]

    def finish(self) -> list[tuple[int | None, int | None, np.ndarray]]:
        """Rows still pending at the end of the pass (the mean vector)."""
        if self.p.kind == "mean":
            assert self._sum is not None
            self.covered = self.length
            return [(None, None, (self._sum / self.length).astype(np.float32))]
        assert not self._partial, "unfinished bins at the end of a pass"
        return []


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _weights_file(model_path: Path) -> Path:
    if model_path.is_file():
        return model_path
    for name in _WEIGHT_FILES:
        if (model_path / name).is_file():
            return model_path / name
    found = sorted(model_path.glob("*.ckpt"))
    if not found:
        raise FileNotFoundError(f"{model_path}: no weights file found")
    return found[0]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _keys(regions: Sequence[Region]) -> list[str]:
    seen: set[str] = set()
    keys = []
    for r in regions:
        key = base = hdf5_key(r.name)
        k = 1
        while key in seen:
            k += 1
            key = f"{base}#{k}"
        seen.add(key)
        keys.append(key)
    return keys


def _batches(regions: Sequence[Region], size: int) -> list[list[int]]:
    """Region indices run together: equal lengths, at most ``size``; fixed by the input."""
    if size <= 1:
        return [[i] for i in range(len(regions))]
    by_length: dict[int, list[int]] = {}
    for i, r in enumerate(regions):
        by_length.setdefault(r.length, []).append(i)
    return [ids[k : k + size] for ids in by_length.values() for k in range(0, len(ids), size)]


@dataclass
class _Job:
    """One region of a batch during one pass."""

    key: str
    region: Region
    done: int  # bases committed in this pass before this run (reading order)
    pools: dict[str, _Pool]
    mask: bool


class _Embedder:
    def __init__(
        self,
        fasta: FastaFile,
        runner: ModelRunner,
        store: EmbedStore,
        writer: AsyncWriter,
        opts: EmbedOptions,
        layers: tuple[int, ...],
        progress: EmbedProgress | None,
    ) -> None:
        self.fasta, self.runner, self.store, self.writer = fasta, runner, store, writer
        self.opts = opts
        self.pooling = Pooling.parse(opts.pool)
        self.layers = layers
        self.outputs = ("embedding", *(f"layer_{i}" for i in layers))
        self.tracks = opts.tracks()
        self.progress = progress
        self.bases = 0

    def layout(self, length: int) -> RegionLayout:
        d = self.runner.d_model
        itemsize = np.dtype(self.opts.dtype).itemsize
        chunk_rows = 1 << max(0, ((1 << 20) // (d * itemsize)).bit_length() - 1)
        return RegionLayout(
            tracks=self.tracks,
            outputs=self.outputs,
            length=length,
            rows=self.pooling.rows(length),
            width=d,
            dtype=self.opts.dtype,
            compression=None if self.opts.compression == "none" else self.opts.compression,
            chunk_rows=chunk_rows,
        )

    # -- one batch of equal-length regions -------------------------------------------------

    def run_batch(self, keys: list[str], regions: list[Region], states: list[tuple]) -> None:
        passes = self.opts.passes()
        for strand in passes:
            done = [s[1] if strand == "+" else s[2] for s in states]
            if all(d >= r.length for d, r in zip(done, regions, strict=True)):
                continue
            jobs = [
                _Job(
                    key,
                    region.on_strand(strand),
                    d,
                    {o: _Pool(self.pooling, region.length, strand == "-") for o in self.outputs},
                    strand == passes[0],
                )
                for key, region, d in zip(keys, regions, done, strict=True)
            ]
            self._pass(jobs, strand)
        for key in keys:
            self.writer.submit(self.store.complete_region, key)

    def _results(self, jobs: list[_Job]) -> Iterator[list[RegionChunkResult]]:
        chunk, kw = self._chunk(), {"layers": self.layers}
        if len(jobs) == 1:
            tcs = iter_token_chunks(
                self.fasta, jobs[0].region, chunk=chunk, prefetch=self.opts.prefetch
            )
            return ([r] for r in self.runner.run_region(tcs, **kw))
        steps = iter_batch_chunks(
            self.fasta, [j.region for j in jobs], chunk=chunk, prefetch=self.opts.prefetch
        )
        return self.runner.run_batch(steps, **kw)

    def _chunk(self) -> int:
        return int(self.opts.chunk or DEFAULT_CHUNK[self.runner.device.type])

    def _pass(self, jobs: list[_Job], strand: str) -> None:
        for results in self._results(jobs):
            for job, res in zip(jobs, results, strict=True):
                self._chunk_out(job, res, strand)
                self.bases += len(res.flags)  # type: ignore[arg-type]
                if self.progress is not None:
                    self.progress.advance(job.region.name, len(res.flags))  # type: ignore[arg-type]
        for job in jobs:
            for out, pool in job.pools.items():
                for lo, hi, values in pool.finish():
                    self._emit(job, strand, out, lo, hi, values)
            self.writer.submit(self.store.commit, job.key, strand, job.region.length)

    def _committed(self, job: _Job, strand: str, a: int, b: int) -> tuple[int, int]:
        """The part of + positions [a, b) not committed before this run (may be empty)."""
        length = job.region.length
        if strand == "+":
            return max(a, job.done), b
        return a, min(b, length - job.done)

    def _chunk_out(self, job: _Job, res: RegionChunkResult, strand: str) -> None:
        n = len(res.flags)  # type: ignore[arg-type]
        length = job.region.length
        a = res.offset if strand == "+" else length - res.offset - n
        b = a + n
        before = job.pools["embedding"].covered
        if job.mask:
            lo, hi = self._committed(job, strand, a, b)
            if lo < hi:
                flags = res.flags if strand == "+" else res.flags[::-1]  # type: ignore[index]
                flags = np.ascontiguousarray(flags[lo - a : hi - a])  # type: ignore[index]
                self.writer.submit(self.store.write, job.key, "mask", lo, hi, flags)
        for out in self.outputs:
            x = res.hidden if out == "embedding" else res.layers[int(out.split("_")[1])]
            assert x is not None
            if strand == "-":
                x = np.ascontiguousarray(x[::-1])
            for lo, hi, values in job.pools[out].feed(a, b, x):
                self._emit(job, strand, out, lo, hi, values)
        covered = job.pools["embedding"].covered
        if covered > before and covered > job.done:
            self.writer.submit(self.store.commit, job.key, strand, covered)

    def _emit(
        self, job: _Job, strand: str, out: str, lo: int | None, hi: int | None, values: np.ndarray
    ) -> None:
        if lo is not None and self.pooling.kind == "none":
            # skip rows committed by an earlier run (rewriting them would give the same bytes)
            clo, chi = self._committed(job, strand, lo, hi)  # type: ignore[arg-type]
            if clo >= chi:
                return
            values, lo, hi = values[clo - lo : chi - lo], clo, chi
        dtype = np.dtype(self.opts.dtype)
        if strand == "+":
            if "plus" in self.tracks:
                self.writer.submit(
                    self.store.write,
                    job.key,
                    f"plus/{out}",
                    lo,
                    hi,
                    values.astype(dtype, copy=False),
                )
            if "rc_average" in self.tracks:
                layout = self.layout(job.region.length)
                self.writer.submit(self.store.stage_write, job.key, out, lo, hi, values, layout)
        else:
            if "minus" in self.tracks:
                self.writer.submit(
                    self.store.write,
                    job.key,
                    f"minus/{out}",
                    lo,
                    hi,
                    values.astype(dtype, copy=False),
                )
            if "rc_average" in self.tracks:
                self.writer.submit(self.store.write_average, job.key, out, lo, hi, values)


class EmbedInputError(ValueError):
    """A bad input that is not a FASTA/annotation problem (e.g. an unloadable checkpoint)."""


def _load(model_path: Path, opts: EmbedOptions, device: torch.device) -> Any:
    try:
        return load_model(
            model_path,
            filter_len=opts.filter_len,
            dtype=_DTYPES[opts.compute_dtype],
            device=device,
        )
    except Exception as exc:  # corrupt files raise anything from pickle to safetensors errors
        msg = str(exc)
        if model_path.name not in msg:
            try:
                where = _weights_file(model_path)
            except OSError:
                where = model_path
            msg = f"{where}: {msg}"
        raise EmbedInputError(f"cannot load the model checkpoint: {msg}") from exc


def run_embed(
    fasta: str | os.PathLike[str],
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    regions_path: str | os.PathLike[str] | None = None,
    region_strings: Iterable[str] = (),
    genes: Iterable[str] = (),
    options: EmbedOptions | None = None,
    command: str = "",
    progress: EmbedProgress | None = None,
    shard: Shard | None = None,
    stats_path: str | os.PathLike[str] | None = None,
) -> EmbedReport:
    """Embed the records (or regions) of ``fasta`` with ``model`` into the HDF5 ``output``.

    Inputs are checked (options, FASTA, regions, checkpoint) before the output is touched.
    A previous unfinished run with the same settings is resumed (see :mod:`.h5store`).
    ``shard``: compute only this process's share of the batches into its own part file,
    left complete under its ``.part`` name for :mod:`.distributed` to merge (the report then
    counts that share only). ``stats_path`` (or ``$DNASTREAM_PROFILE``): write the phase
    timings there (:mod:`.stats`).

    Raises:
        ValueError: bad options, or bad input (``GenomicsInputError`` for the FASTA and the
            regions, ``ModelLoadError`` for the checkpoint; messages name file and position).
        OutputExistsError: ``output`` is finished and ``force`` is not set.
        IncompatibleOutputError: an existing output has other settings.
    """
    stats = PhaseStats.from_env(stats_path, "embed")
    opts = options or EmbedOptions()
    opts.validate()
    tune_malloc()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    fasta_path, model_path, out_path = Path(fasta), Path(model), Path(output)
    device = resolve_device(opts.device)
    with FastaFile(fasta_path) as fa:
        regions = regions_from(
            fa, regions_path=regions_path, region_strings=region_strings, genes=genes
        )
        net = _load(model_path, opts, device)
        layers = parse_layers(opts.layers, net.config.n_layer)
        chunk = int(opts.chunk or DEFAULT_CHUNK[device.type])
        runner = ModelRunner(
            net,
            device=device,
            dtype=_DTYPES[opts.compute_dtype],
            chunk=chunk,
            filter_len=opts.filter_len,
            stats=stats,
        )
        stats.mark("model_loaded")
        if not fa.random_access and (len(regions) > 1 or "-" in opts.passes()):
            warnings.warn(
                f"{fasta_path} has no random access (plain gzip): every region is read from "
                f"the start of the file. {bgzip_hint(fasta_path)}",
                stacklevel=2,
            )
        keys = _keys(regions)
        region_list = [[r.name, r.record, r.start, r.end, r.strand] for r in regions]
        settings = {
            "format_version": 1,
            "dnastream_version": __version__,
            "model_sha256": _sha256(_weights_file(model_path)),
            "model_config": json.loads(json.dumps(net.config.to_json(), default=str)),
            "filter_len": runner.filter_len,
            "compute_dtype": opts.compute_dtype,
            "dtype": opts.dtype,
            "device_type": device.type,
            "chunk": chunk,
            "batch_size": opts.batch_size,
            "pool": str(Pooling.parse(opts.pool)),
            "layers": list(layers),
            "strand": opts.strand,
            "rc_average": opts.rc_average,
            "tokenizer": asdict(DNATokenizer()) | {"convention": "none"},
            "compression": opts.compression,
            "input_sha256": _sha256(fasta_path),
            "regions": {
                "n": len(regions),
                "sha256": hashlib.sha256(json.dumps(region_list).encode()).hexdigest(),
            },
        }
        attrs = {
            "model_path": str(model_path.resolve()),
            "model_sha256": settings["model_sha256"],
            "model_config": json.dumps(settings["model_config"], sort_keys=True),
            "tokenizer": json.dumps(settings["tokenizer"], sort_keys=True),
            "dnastream_version": __version__,
            "command": command,
            "input_path": str(fasta_path.resolve()),
            "n_regions": len(regions),
            "pool": settings["pool"],
            "strand": opts.strand,
            "rc_average": opts.rc_average,
            "layers": np.asarray(layers, dtype=np.int64),
            "dtype": opts.dtype,
            "filter_len": runner.filter_len,
            "chunk": chunk,
            "started": _now(),
        }
        store_path, store_settings = out_path, settings
        if shard is not None:
            if out_path.exists() and not opts.force:
                EmbedStore.refuse_finished(out_path, settings)
            store_path, store_settings = shard.path(out_path), settings | shard.settings()
        procs = 0
        if opts.compression != "none" and Pooling.parse(opts.pool).kind == "none":
            procs = compress_processes(device.type)
        pool = compression_pool(procs)  # forked before the output is opened (file locks)
        try:
            store, resumed = EmbedStore.open(store_path, store_settings, attrs, force=opts.force)
        except BaseException:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            raise
        store.compress_in(pool, procs)
        # From here HDF5 is only touched on the writer thread. Collect any cyclic garbage the
        # caller left first: if it held h5py objects, their finalizers would otherwise run in
        # this thread's next collection and wait for h5py's lock while the writer, holding that
        # lock, waits for the GIL (a deadlock seen in the test suite after a failed test).
        gc.collect()
        writer = AsyncWriter(on_start=lower_thread_priority)
        stats.mark("loop_start")
        t0 = time.perf_counter()
        try:
            embedder = _Embedder(fa, runner, store, writer, opts, layers, progress)
            batches = _batches(regions, opts.batch_size)
            if shard is not None:
                batches = shard.select(batches, regions)
            mine = [i for b in batches for i in b]
            states = {i: writer.call(store.region_state, keys[i]) for i in mine}
            todo = [b for b in batches if not all(states[i][0] for i in b)]
            skipped = sum(1 for i in mine if states[i][0])
            if progress is not None:
                n_pass = len(opts.passes())
                total = sum(regions[i].length for b in todo for i in b) * n_pass
                progress.start(total, len(mine), skipped)
            for batch in todo:
                for i in batch:
                    r = regions[i]
                    region_attrs = {"name": r.name, "record": r.record, "start": r.start,
                                    "end": r.end, "strand": r.strand, "length": r.length,
                                    "index": i}  # fmt: skip
                    writer.submit(
                        store.prepare_region, keys[i], region_attrs, embedder.layout(r.length)
                    )
                embedder.run_batch(
                    [keys[i] for i in batch],
                    [regions[i] for i in batch],
                    [states[i] for i in batch],
                )
            stats.mark("loop_end")
            writer.call(int)  # the writer has caught up with the data
            stats.mark("drained")
            written = writer.call(store.finish, {"finished": _now()}, shard is None)
            writer.close()
        except BaseException as exc:
            try:
                writer.close()
            except BaseException:  # noqa: BLE001 - the first error is the one to report
                pass
            store.close()
            if isinstance(exc, GenomicsInputError):
                # bad sequence (e.g. an invalid base): the same run can never finish, and a
                # fixed input has another checksum, so the partial output is of no use
                store.discard()
            raise
    stats.add("write_wait", writer.waited)
    stats.add("writer_busy", writer.busy)
    stats.add("compress_wait", store.compress_wait)
    stats.extra.update(
        {"device": str(device), "chunk": chunk, "compress_processes": procs,
         "overlap": runner.overlap, "compression": opts.compression,
         "raw_chunks": store.raw_chunks, "filtered_chunks": store.filtered_chunks}
    )  # fmt: skip
    stats.save()
    return EmbedReport(
        output=written,
        n_regions=len(mine),
        n_skipped=skipped,
        bases=embedder.bases,
        seconds=time.perf_counter() - t0,
        device=str(device),
        filter_len=runner.filter_len,
        chunk=chunk,
        resumed=resumed,
        backoffs=runner.backoffs,
        regions=[regions[i].name for i in sorted(mine)],
    )
