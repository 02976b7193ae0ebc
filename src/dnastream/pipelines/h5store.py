"""HDF5 output of ``dnastream embed``: layout, incremental writer, resume.

Layout (plain h5py reads it; L = region length, d = model width)::

    /                                   root attributes:
        format            "dnastream.embed"
        format_version    1
        complete          bool, True once every region is finished
        settings          JSON: everything a resumed run must match (below)
        model_path, model_sha256 (of the weights file), model_config (JSON),
        tokenizer (JSON policy), dnastream_version, command, n_regions,
        pool, strand, rc_average, layers, dtype, filter_len, chunk,
        started, finished (UTC ISO times: they differ between otherwise identical runs)
    /regions/<key>/                     one group per region; <key> = its name, "/" -> "_"
                                        (and "#2", "#3"... if two names collide)
        attrs: name (original), record, start, end (0-based half-open, + strand),
               strand (annotation strand of the region), length, index (input order),
               done_plus, done_minus (bases committed per pass, reading order),
               complete (bool), ready (datasets created)
        mask           (L,) uint8 bit flags per base, + strand order:
                       1 = N (or any non-ACGT code), 2 = soft-masked (lower case)
        plus/          the + strand reading            (--strand + or both)
        minus/         the - strand reading            (--strand - or both)
        rc_average/    mean of plus and minus          (--rc-average)
            embedding  final hidden state after ln_f:
                       (L, d) per base (--pool none), (d,) (--pool mean), or
                       (ceil(L / N), d) (--pool bin:N; the last bin may be shorter)
            layer_<i>  residual stream after block i (--layers), same shape

Every track is stored in + strand coordinate order: row ``p`` of ``minus/embedding`` is the
output at + strand base ``start + p`` of the reverse-complement reading (which reads that base
as its ``L - 1 - p``-th token). ``rc_average`` = (plus + minus) / 2 per base (or per bin /
region), averaged in float32. Bins cover ``[start + jN, start + (j + 1)N)`` on the + strand for
both strands. Datasets are chunked and compressed (lzf by default, gzip or none on request;
the mask always gzip). A whole chunk of a compressed (rows, d) dataset whose sample (every
k-th row, ~32 KiB: :data:`PROBE_BYTES`) does not shrink by at least 20% under the dataset's own
filters (:data:`RAW_RATIO`) is stored unfiltered: written as it is with HDF5's per-chunk filter
mask set (all filters skipped), which HDF5 itself honours on reading, so readers (plain h5py, no
plugins) see no difference. Float embeddings barely compress (shuffle + lzf: 0.89 of the size
for float32, 0.90 for float16), and compressing them cost more than the model on a GPU; runs of
N (constant outputs), zeros and pooled or quantized values still compress. The choice is made
per chunk from its content alone, so a resumed run stores the same bytes.
``DNASTREAM_COMPRESS_ALWAYS=1`` filters every chunk (the former behaviour).

Writing and resuming: a run writes ``OUT.h5.part`` and renames it to ``OUT.h5`` when complete,
so a finished file is never half-written and is only replaced with ``--force`` (a forced run
replaces it only when it completes). After each chunk the data is written, the file flushed,
then ``done_<strand>`` raised and the file flushed again. Killed at any moment (even SIGKILL),
rerunning the same command reopens the ``.part``, checks the settings, skips complete regions
and re-streams an unfinished region from its start, which rebuilds the exact streaming state
(at most one region's compute is repeated; nothing of the state is stored), writing only what
lies beyond ``done`` (chunks around each ``done`` boundary are decoded first: one a kill left
half-written is reset and its rows written again, see :meth:`EmbedStore.repair_region`). The
finished file equals an uninterrupted run's bit for bit: same
chunking, same arithmetic (the one exception: a CUDA OOM back-off in one run but not the other
changes the step sizes, hence the rounding; and a repaired chunk holds the same values but may
be encoded differently).
``--rc-average`` keeps the + pass in a sidecar ``OUT.h5.stage.part`` (float32, unfiltered)
until the - pass has averaged it, then deletes it. HDF5 is used with superblock v2 (``libver
v108``): the v3 superblock of ``libver='latest'`` marks a file as open for writing and HDF5 then
refuses to reopen a file whose writer was killed.

Settings compared on resume (a difference is refused, naming the setting): format version,
dnastream version, model sha256 and config, filter_len, compute dtype, output dtype, device
type, chunk, batch size, pool, layers, strand, rc_average, tokenizer policy, compression,
input FASTA sha256, and the region list (and, for a shard of a multi-process run, the rank
and process count: see :mod:`dnastream.pipelines.distributed`).
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5s

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "AsyncWriter",
    "EmbedStore",
    "IncompatibleOutputError",
    "OutputExistsError",
    "PROBE_BYTES",
    "RAW_RATIO",
    "RegionLayout",
    "compress_processes",
    "compression_pool",
    "hdf5_key",
    "part_path",
    "read_settings",
    "settings_difference",
    "stage_path",
]

FORMAT = "dnastream.embed"
FORMAT_VERSION = 1
LIBVER = ("v108", "latest")
CHUNK_CACHE_BYTES = 64 << 20
TRACKS = ("plus", "minus", "rc_average")
COMPRESS_PROCS_ENV = "DNASTREAM_COMPRESS_PROCS"
"""Processes compressing HDF5 chunks beside the writer (0: the writer thread compresses)."""
COMPRESS_ALWAYS_ENV = "DNASTREAM_COMPRESS_ALWAYS"
"""``1``: filter every chunk, even one that does not shrink (no raw chunks)."""
RAW_RATIO = 0.8
"""A whole chunk whose sample compresses to at least this fraction of its size is stored raw."""
PROBE_BYTES = 32 << 10
"""Bytes of a chunk's sample (every k-th row) compressed to decide; ~1/32 of a 1 MiB chunk."""


class OutputExistsError(FileExistsError):
    """The output exists (finished) and ``--force`` was not given."""


class IncompatibleOutputError(OutputExistsError):
    """An existing (partial or finished) output was written with other settings."""


def part_path(path: str | os.PathLike[str]) -> Path:
    """Where an unfinished output lives: ``OUT.h5.part``."""
    p = Path(path)
    return p.with_name(p.name + ".part")


def stage_path(path: str | os.PathLike[str]) -> Path:
    """Sidecar holding + strand outputs until the - pass averages them (``--rc-average``)."""
    p = Path(path)
    return p.with_name(p.name + ".stage.part")


def hdf5_key(name: str) -> str:
    """A group name for ``name``: ``/`` becomes ``_``; ``.`` or empty becomes ``_``."""
    key = name.replace("/", "_")
    return "_" if key in ("", ".") else key


def _open(path: Path, mode: str) -> h5py.File:
    return h5py.File(path, mode, libver=LIBVER, rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=10007)


def read_settings(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bool] | None:
    """(settings, complete) of a dnastream embed file; None when it is not one.

    Raises OSError when the file cannot be opened as HDF5.
    """
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT or "settings" not in f.attrs:
            return None
        return json.loads(f.attrs["settings"]), bool(f.attrs.get("complete", False))


_FLAG_NAMES = {
    "model_sha256": "the model (--model weights differ)",
    "model_config": "the model config",
    "filter_len": "--filter-len",
    "compute_dtype": "--compute-dtype",
    "dtype": "--dtype",
    "device_type": "--device",
    "chunk": "--chunk",
    "batch_size": "--batch-size",
    "pool": "--pool",
    "layers": "--layers",
    "strand": "--strand",
    "rc_average": "--rc-average",
    "tokenizer": "the tokenizer policy",
    "compression": "--compression",
    "input_sha256": "the input FASTA (its content differs)",
    "regions": "the regions (--regions/--region)",
    "shard": "the process count (torchrun --nproc-per-node) or this process's rank",
    "format_version": "the file format version",
    "dnastream_version": "the dnastream version",
}


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def settings_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """Describe the first setting that differs (None when all match)."""
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            what = _FLAG_NAMES.get(key, key)
            return f"{what}: {key}={_short(old.get(key))} in the file, {_short(new.get(key))} now"
    return None


@dataclass(frozen=True)
class RegionLayout:
    """Datasets of one region: tracks, output names, rows and dtype.

    rows: pooled rows per track dataset (None: one (d,) vector, ``--pool mean``).
    """

    tracks: tuple[str, ...]
    outputs: tuple[str, ...]  # "embedding", "layer_0", ...
    length: int
    rows: int | None
    width: int
    dtype: str
    compression: str | None
    chunk_rows: int

    def shape(self) -> tuple[int, ...]:
        """Shape of one track dataset."""
        return (self.width,) if self.rows is None else (self.rows, self.width)

    def chunks(self) -> tuple[int, ...] | None:
        """HDF5 chunk shape of one track dataset."""
        if self.rows is None:
            return None
        return (max(1, min(self.rows, self.chunk_rows)), self.width)


def _filters(compression: str | None) -> dict[str, Any]:
    if compression in (None, "none"):
        return {}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": True}
    raise ValueError(f"compression must be lzf, gzip or none, got {compression!r}")


# --------------------------------------------------------------------------------------------
# parallel chunk compression
# --------------------------------------------------------------------------------------------

_SCRATCH: dict[tuple[str, tuple[int, ...], str], tuple[h5py.File, h5py.Dataset, int]] = {}
_SCRATCH_REUSE = 256
_SCRATCH_NAMES = itertools.count()


def _filter_chunk(values: np.ndarray, compression: str) -> tuple[int, bytes]:
    """(filter mask, stored bytes) of one whole HDF5 chunk, filtered by HDF5 itself.

    Runs in a worker process: the chunk is written to an in-memory HDF5 file with the same
    dtype, chunk shape and filters as the output and its stored bytes read back, so they
    equal what a normal write would store, bit for bit (the same filter code runs).
    """
    k = (values.dtype.str, values.shape, compression)
    entry = _SCRATCH.get(k)
    if entry is None or entry[2] >= _SCRATCH_REUSE:
        if entry is not None:
            entry[0].close()
        name = f"dnastream-scratch-{next(_SCRATCH_NAMES)}.h5"  # in memory; names must differ
        f = h5py.File(name, "w", driver="core", backing_store=False, libver=LIBVER, rdcc_nbytes=0)
        ds = f.create_dataset(
            "c", shape=values.shape, dtype=values.dtype, chunks=values.shape,
            **_filters(compression),
        )  # fmt: skip
        entry = (f, ds, 0)
    f, ds, n = entry
    ds.id.write(h5s.ALL, h5s.ALL, np.ascontiguousarray(values, dtype=ds.dtype))
    _SCRATCH[k] = (f, ds, n + 1)
    mask, data = ds.id.read_direct_chunk((0,) * values.ndim)
    return int(mask), bytes(data)


def probe_rows(chunk_rows: int, width: int, itemsize: int) -> int:
    """The row stride of a chunk's sample: about :data:`PROBE_BYTES` of its rows."""
    return max(1, chunk_rows * width * itemsize // PROBE_BYTES)


def stored_raw(values: np.ndarray, compression: str, stride: int) -> bool:
    """Whether a whole chunk (as stored: an edge chunk's padding rows included) is better
    stored unfiltered: its every ``stride``-th row, filtered as the dataset would filter them,
    keeps at least :data:`RAW_RATIO` of its size (or the filter gave up). A function of the
    chunk's content only, so a resumed run decides the same."""
    sample = np.ascontiguousarray(values[::stride])
    mask, data = _filter_chunk(sample, compression)
    return mask != 0 or len(data) >= RAW_RATIO * sample.nbytes


def _worker_start() -> None:
    """In a compression process: exit when the parent is gone (even SIGKILLed: siblings
    hold the queue's pipe open, so no EOF would come)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="dnastream-orphan-watch", daemon=True).start()


def compression_pool(processes: int) -> ProcessPoolExecutor | None:
    """Start ``processes`` chunk-compressing processes (None for 0).

    They are forked now, from the calling thread: call it before any output file is open
    (a forked child would hold the file's lock until it exits) and before helper threads
    start (spawn and forkserver would re-run an unguarded ``__main__`` of a script).
    """
    if processes <= 0:
        return None
    ctx = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(max_workers=processes, mp_context=ctx, initializer=_worker_start)
    pool.submit(int).result()  # with fork, this starts every worker
    return pool


def compress_processes(device_type: str) -> int:
    """Default number of chunk-compressing processes: none on CPU (the model has the
    cores), on a GPU up to 8, leaving two cores to the compute and reader threads.
    ``DNASTREAM_COMPRESS_PROCS=N`` overrides it."""
    env = os.environ.get(COMPRESS_PROCS_ENV, "").strip()
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            pass
    if device_type == "cpu":
        return 0
    return max(1, min(8, (os.cpu_count() or 1) - 2))


@dataclass
class _Chunk:
    """One HDF5 chunk being assembled from row writes of this run."""

    values: np.ndarray
    spans: list[tuple[int, int]] = field(default_factory=list)  # rows held, dataset rows
    count: int = 0


@dataclass
class _Track:
    """Per dataset: chunks being assembled and chunks left to HDF5's own writes.

    raw_mask: the filter mask of an unfiltered chunk (every filter of the pipeline skipped).
    stride: row stride of the sample deciding raw or filtered (0: always filtered)."""

    ds: h5py.Dataset
    rows: int
    chunk_rows: int
    compression: str
    raw_mask: int
    stride: int
    open: dict[int, _Chunk] = field(default_factory=dict)
    plain: set[int] = field(default_factory=set)


REPAIR_WINDOW_CHUNKS = 256
"""Chunks beyond a ``done`` boundary that a resumed run checks (more than a run keeps in
flight between two commits)."""


def _decodes(ds: h5py.Dataset, lo: int, hi: int) -> bool:
    """Whether rows [lo, hi) of ``ds`` read back (unallocated chunks read as the fill)."""
    offset = (lo,) + (0,) * (ds.ndim - 1)
    try:
        if ds.id.get_chunk_info_by_coord(offset).byte_offset is None:
            return True
    except (KeyError, ValueError, RuntimeError):
        return True
    try:
        ds[lo:hi]
    except OSError:
        return False
    return True


def _reset_chunk(ds: h5py.Dataset, c: int) -> None:
    """Overwrite chunk ``c`` with zeros, stored unfiltered (every filter's mask bit set)."""
    shape = ds.chunks
    offset = (c * shape[0],) + (0,) * (ds.ndim - 1)
    n_filters = ds.id.get_create_plist().get_nfilters()
    zeros = np.zeros(shape, dtype=ds.dtype)
    ds.id.write_direct_chunk(offset, zeros.tobytes(), (1 << n_filters) - 1)


class EmbedStore:
    """The ``.part`` file being written (and the rc-average stage); synchronous h5py calls.

    Use it from one thread at a time (:class:`AsyncWriter` runs its methods in order).

    Whole chunks of the compressed (rows, d) datasets are assembled here and stored with
    ``write_direct_chunk``: unfiltered (all filters masked) when a sample of the chunk does not
    shrink enough (:func:`stored_raw`), else filtered by HDF5 (same bytes as a normal write),
    in the :meth:`compress_in` processes when there are some, else in this thread. A chunk
    still partly filled at a commit is written the normal way instead (HDF5 filters it). A
    commit's ``done`` is recorded only once everything written before it is in the file and
    flushed, so the resume rules are unchanged.
    """

    def __init__(self, final: Path, file: h5py.File) -> None:
        self.final = final
        self.file = file
        self.stage: h5py.File | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._workers = 0
        self._tracks: dict[tuple[str, str], _Track | None] = {}
        self._pending: deque[tuple[Any, ...]] = deque()
        self.compress_wait = 0.0  # seconds waiting for compression processes
        self.raw_chunks = 0  # whole chunks stored unfiltered
        self.filtered_chunks = 0  # whole chunks stored filtered
        self._always = os.environ.get(COMPRESS_ALWAYS_ENV, "").strip() not in ("", "0")

    # -- parallel compression --------------------------------------------------------------

    def compress_in(self, pool: ProcessPoolExecutor | None, processes: int) -> None:
        """Filter whole chunks in ``pool`` (from :func:`compression_pool`; None: off). The
        store shuts it down when closed."""
        if pool is None or processes <= 0 or self._pool is not None:
            return
        self._pool = pool
        self._workers = processes

    def _track(self, key: str, name: str) -> _Track | None:
        tk = (key, name)
        if tk not in self._tracks:
            ds = self.file["regions"][key][name]
            comp = ds.compression
            ok = (
                ds.chunks is not None
                and len(ds.shape) == 2
                and ds.chunks[1] == ds.shape[1]
                and comp in ("lzf", "gzip")
                and name != "mask"
            )
            if not ok:
                self._tracks[tk] = None
                return None
            n_filters = ds.id.get_create_plist().get_nfilters()
            stride = probe_rows(ds.chunks[0], ds.shape[1], ds.dtype.itemsize)
            self._tracks[tk] = _Track(
                ds, ds.shape[0], ds.chunks[0], comp, (1 << n_filters) - 1,
                0 if self._always else stride,
            )  # fmt: skip
        return self._tracks[tk]

    def _pump(self, block: bool = False, keep: int = 0) -> None:
        """Store the finished compressions at the head of the queue, then the commits that
        follow them (``block``: wait for all; ``keep``: wait until at most that many
        chunks are in flight)."""
        commits: dict[tuple[str, str], int] = {}
        wrote = False
        while self._pending:
            item = self._pending[0]
            if item[0] == "chunk":
                fut: Future[tuple[int, bytes]] = item[3]
                if not (block or len(self._pending) > keep or fut.done()):
                    break
                t0 = time.perf_counter()
                mask, data = fut.result()
                self.compress_wait += time.perf_counter() - t0
                item[1].id.write_direct_chunk(item[2], data, mask)
                wrote = True
            else:
                commits[(item[1], item[2])] = item[3]
            self._pending.popleft()
        if commits:
            self.file.flush()
            if self.stage is not None:
                self.stage.flush()
            for (key, strand), done in commits.items():
                self.file["regions"][key].attrs[f"done_{'plus' if strand == '+' else 'minus'}"] = (
                    done
                )
            self.file.flush()
        elif wrote and block:
            self.file.flush()

    def _write_rows(self, t: _Track, lo: int, hi: int, values: np.ndarray) -> None:
        cr = t.chunk_rows
        if values.dtype != t.ds.dtype:
            values = values.astype(t.ds.dtype)  # e.g. a float32 average into float16
        for c in range(lo // cr, (hi - 1) // cr + 1):
            s, e = max(lo, c * cr), min(hi, (c + 1) * cr)
            part = values[s - lo : e - lo]
            if c in t.plain:
                t.ds[s:e] = part
                continue
            if e - s == cr and c not in t.open:
                # a whole chunk in one write: store the caller's rows as they are (no
                # staging copy; the caller never changes an array it handed over)
                self._submit(t, c, np.ascontiguousarray(part))
                continue
            ch = t.open.get(c)
            if ch is None:
                ch = t.open[c] = _Chunk(np.zeros((cr, values.shape[1]), dtype=t.ds.dtype))
            ch.values[s - c * cr : e - c * cr] = part
            ch.spans.append((s, e))
            ch.count += e - s
            if ch.count == min(cr, t.rows - c * cr):
                del t.open[c]
                self._submit(t, c, ch.values)
        self._pump(keep=4 * self._workers + 4)

    def _submit(self, t: _Track, c: int, values: np.ndarray) -> None:
        """Store whole chunk ``c`` (an edge chunk padded with zeros)."""
        offset = (c * t.chunk_rows, 0)
        if t.stride and stored_raw(values, t.compression, t.stride):
            # written now, from here: no round trip through a compressing process
            t.ds.id.write_direct_chunk(offset, values, t.raw_mask)
            self.raw_chunks += 1
            return
        self.filtered_chunks += 1
        if self._pool is None:
            mask, data = _filter_chunk(values, t.compression)
            t.ds.id.write_direct_chunk(offset, data, mask)
            return
        fut = self._pool.submit(_filter_chunk, values, t.compression)
        self._pending.append(("chunk", t.ds, offset, fut))

    def _close_partial(self, key: str) -> None:
        """Write the partly filled chunks of region ``key`` the normal way."""
        for (k, _), t in self._tracks.items():
            if k != key or t is None:
                continue
            for c, ch in t.open.items():
                for s, e in ch.spans:
                    t.ds[s:e] = ch.values[s - c * t.chunk_rows : e - c * t.chunk_rows]
                t.plain.add(c)
            t.open.clear()

    def _settle(self) -> None:
        """Everything queued is in the file (before any other kind of access)."""
        if self._pending:
            self._pump(block=True)

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        settings: Mapping[str, Any],
        attrs: Mapping[str, Any],
        *,
        force: bool = False,
    ) -> tuple[EmbedStore, bool]:
        """Open (resume) or create ``path.part``; returns (store, resumed).

        Raises:
            OutputExistsError: ``path`` is finished and ``force`` is not set.
            IncompatibleOutputError: ``path`` or its ``.part`` has other settings.
        """
        final, part = Path(path), part_path(path)
        if final.exists() and not force:
            cls.refuse_finished(final, settings)
        if part.exists() and not force:
            try:
                found = read_settings(part)
            except OSError as exc:
                raise IncompatibleOutputError(
                    f"{part}: an unfinished output that cannot be read ({exc}); delete it or "
                    "pass --force to start over"
                ) from exc
            if found is None:
                raise IncompatibleOutputError(
                    f"{part} is not a dnastream embed file; delete it or pass --force"
                )
            diff = settings_difference(found[0], settings)
            if diff:
                raise IncompatibleOutputError(
                    f"{part}: cannot resume, it was started with other settings ({diff}); "
                    "rerun with the same settings, another -o, or --force to start over"
                )
            return cls(final, _open(part, "r+")), True
        for stale in (part, stage_path(path)):
            stale.unlink(missing_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        with _open(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["complete"] = False
            f.attrs["settings"] = json.dumps(dict(settings), sort_keys=True)
            for k, v in attrs.items():
                f.attrs[k] = v
            f.create_group("regions")
        os.replace(tmp, part)
        return cls(final, _open(part, "r+")), False

    @staticmethod
    def refuse_finished(final: Path, settings: Mapping[str, Any]) -> None:
        """Raise the error for an existing ``final`` (OutputExistsError or, when it was
        written with other settings, IncompatibleOutputError)."""
        try:
            found = read_settings(final)
        except OSError:
            found = None
        if found is None:
            raise OutputExistsError(
                f"{final} exists and is not a dnastream embed output; pass --force to replace it"
            )
        diff = settings_difference(found[0], settings)
        if diff:
            raise IncompatibleOutputError(
                f"{final} exists and was written with other settings ({diff}); "
                "use another -o or pass --force to replace it"
            )
        raise OutputExistsError(
            f"{final} is already complete (same settings); pass --force to recompute it"
        )

    # -- regions ---------------------------------------------------------------------------

    def region_state(self, key: str) -> tuple[bool, int, int]:
        """(complete, done_plus, done_minus) of a region; zeros when absent. An unfinished
        region is first checked for chunks a killed run left half-written
        (:meth:`repair_region`), which may lower its ``done`` counters."""
        self._settle()
        g = self.file["regions"].get(key)
        if g is None or not g.attrs.get("ready", False):
            return False, 0, 0
        if not g.attrs["complete"]:
            self.repair_region(key)
        return (
            bool(g.attrs["complete"]),
            int(g.attrs["done_plus"]),
            int(g.attrs["done_minus"]),
        )

    def repair_region(self, key: str, window: int = REPAIR_WINDOW_CHUNKS) -> int:
        """Make an unfinished region resumable after a kill; returns the chunks reset.

        A run killed while HDF5 rewrote a compressed chunk can leave that chunk undecodable
        (its index and its bytes disagree), and the resumed run would fail reading it back to
        add rows. For every dataset of the region, the chunks around each pass's ``done``
        boundary and up to ``window`` chunks beyond it (the uncommitted side) are decoded; one
        that fails is reset to raw zeros (the fill value, stored unfiltered). If it held
        committed rows, that pass's ``done`` is lowered to the chunk's start so the resumed run
        writes them again (same values; that chunk's stored encoding may differ from an
        uninterrupted run's).
        """
        g = self.file["regions"][key]
        length = int(g.attrs["length"])
        done = {"+": int(g.attrs["done_plus"]), "-": int(g.attrs["done_minus"])}
        lowered = dict(done)
        reset = 0
        datasets: list[tuple[str, h5py.Dataset]] = []
        g.visititems(
            lambda name, obj: (
                datasets.append((name, obj))
                if isinstance(obj, h5py.Dataset) and obj.chunks is not None and obj.shape[0] > 0
                else None
            )
        )
        for name, ds in datasets:
            if name.startswith("plus/"):
                passes = ("+",)
            elif name.startswith(("minus/", "rc_average/")):
                passes = ("-",)
            else:  # the mask: written by whichever pass gets there first
                passes = ("+", "-")
            rows, cr = ds.shape[0], ds.chunks[0]
            n_chunks = -(-rows // cr)
            for strand in passes:
                d = done[strand]
                if d >= length:
                    continue
                if strand == "+":
                    edge = d * rows // length  # rows [0, edge) are committed
                    first = max(0, edge // cr - 1)
                    chunks = range(first, min(n_chunks, edge // cr + 1 + window))
                else:
                    edge = -(-(length - d) * rows // length)  # rows [edge, rows) committed
                    last = min(n_chunks - 1, edge // cr + 1)
                    chunks = range(last, max(-1, edge // cr - 1 - window), -1)
                for c in chunks:
                    lo, hi = c * cr, min(rows, (c + 1) * cr)
                    if _decodes(ds, lo, hi):
                        continue
                    _reset_chunk(ds, c)
                    reset += 1
                    # (lowering also for a chunk that looks uncommitted: at worst some rows
                    # are written twice, never a committed row left as zeros)
                    if strand == "+":
                        lowered["+"] = min(lowered["+"], lo * length // rows)
                    else:
                        lowered["-"] = min(lowered["-"], max(0, length - -(-hi * length // rows)))
        if lowered != done:
            g.attrs["done_plus"] = lowered["+"]
            g.attrs["done_minus"] = lowered["-"]
        if reset:
            self.file.flush()
        return reset

    def prepare_region(self, key: str, attrs: Mapping[str, Any], layout: RegionLayout) -> None:
        """Create the region's group and datasets (again if a previous run died half-way)."""
        self._settle()
        regions = self.file["regions"]
        g = regions.get(key)
        if g is not None and g.attrs.get("ready", False):
            return
        if g is not None:
            del regions[key]
        g = regions.create_group(key)
        for k, v in attrs.items():
            g.attrs[k] = v
        g.attrs["done_plus"] = 0
        g.attrs["done_minus"] = 0
        g.attrs["complete"] = False
        g.create_dataset(
            "mask",
            shape=(layout.length,),
            dtype="u1",
            chunks=(min(layout.length, 1 << 16),),
            compression="gzip",
            compression_opts=4,
            shuffle=False,
        )
        for track in layout.tracks:
            t = g.create_group(track)
            t.attrs["strand"] = {"plus": "+", "minus": "-", "rc_average": "rc_average"}[track]
            for out in layout.outputs:
                t.create_dataset(
                    out,
                    shape=layout.shape(),
                    dtype=layout.dtype,
                    chunks=layout.chunks(),
                    **(_filters(layout.compression) if layout.rows is not None else {}),
                )
        g.attrs["ready"] = True
        self.file.flush()

    def write(
        self, key: str, name: str, lo: int | None, hi: int | None, values: np.ndarray
    ) -> None:
        """Write rows ``[lo, hi)`` of ``/regions/key/name`` (whole dataset when lo is None)."""
        if lo is not None and hi is not None and hi > lo:
            t = self._track(key, name)
            if t is not None:
                self._write_rows(t, lo, hi, values)
                return
        ds = self.file["regions"][key][name]
        if lo is None:
            ds[...] = values
        else:
            ds[lo:hi] = values

    def commit(self, key: str, strand: str, done: int) -> None:
        """Flush the data, then record ``done`` bases of the ``strand`` pass, flush again."""
        self._close_partial(key)
        self._pending.append(("commit", key, strand, done))
        self._pump()

    def complete_region(self, key: str) -> None:
        """Mark a region finished and drop its staged + strand outputs."""
        self._close_partial(key)
        self._settle()
        self._tracks = {k: t for k, t in self._tracks.items() if k[0] != key}
        self.file["regions"][key].attrs["complete"] = True
        self.file.flush()
        if self.stage is not None and key in self.stage:
            del self.stage[key]
            self.stage.flush()

    # -- rc-average stage ------------------------------------------------------------------

    def _stage_file(self) -> h5py.File:
        if self.stage is None:
            self.stage = _open(stage_path(self.final), "a")
        return self.stage

    def stage_write(
        self,
        key: str,
        name: str,
        lo: int | None,
        hi: int | None,
        values: np.ndarray,
        layout: RegionLayout,
    ) -> None:
        """Keep + strand outputs (float32) for the later average."""
        st = self._stage_file()
        ds = st.get(f"{key}/{name}")
        if ds is None:
            ds = st.create_dataset(
                f"{key}/{name}",
                shape=layout.shape(),
                dtype="f4",
                chunks=layout.chunks(),
            )  # unfiltered: written once, read once, then deleted
        if lo is None:
            ds[...] = values
        else:
            ds[lo:hi] = values

    def write_average(
        self, key: str, name: str, lo: int | None, hi: int | None, minus: np.ndarray
    ) -> None:
        """``rc_average/name[lo:hi] = (staged plus + minus) / 2`` in float32."""
        st = self._stage_file()
        plus = st[f"{key}/{name}"][...] if lo is None else st[f"{key}/{name}"][lo:hi]
        avg = (plus.astype(np.float32) + minus.astype(np.float32)) * np.float32(0.5)
        self.write(key, f"rc_average/{name}", lo, hi, avg)

    # -- end -------------------------------------------------------------------------------

    def copy_region(self, group: h5py.Group) -> None:
        """Copy a region group of another embed file as it is (datasets with their chunks,
        filters and bytes, attributes): how :mod:`.distributed` merges its shards."""
        self._settle()
        group.file.copy(group, self.file["regions"])

    def finish(self, attrs: Mapping[str, Any], rename: bool = True) -> Path:
        """Mark the file complete, close it and move it to its final name (``rename``
        False: keep the ``.part`` name, as a shard of :mod:`.distributed` does)."""
        for key in {k for k, _ in self._tracks}:
            self._close_partial(key)
        self._settle()
        for k, v in attrs.items():
            self.file.attrs[k] = v
        self.file.attrs["complete"] = True
        self.file.flush()
        self.close()
        stage_path(self.final).unlink(missing_ok=True)
        if not rename:
            return part_path(self.final)
        os.replace(part_path(self.final), self.final)
        return self.final

    def discard(self) -> None:
        """Close and delete the unfinished output (and its stage)."""
        self.close()
        part_path(self.final).unlink(missing_ok=True)
        stage_path(self.final).unlink(missing_ok=True)

    def close(self) -> None:
        """Close the files (safe to call twice); what is still queued is dropped."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._pending.clear()
        for f in (self.stage, self.file):
            if f is not None and f.id.valid:
                f.close()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class AsyncWriter:
    """Runs calls in order in one background thread (h5py releases the GIL while it writes
    and compresses, so writing overlaps the model). A bounded queue caps the memory held.

    ``submit`` queues a call; ``call`` queues one and waits for its result. An exception in
    the thread is re-raised by the next ``submit``/``call``/``close``. ``on_start`` runs
    first in the thread (e.g. to lower its priority).
    """

    def __init__(self, depth: int = 4, on_start: Callable[[], None] | None = None) -> None:
        self._nice = on_start
        self._q: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self.busy = 0.0  # seconds the thread spent running calls
        self.waited = 0.0  # seconds callers were blocked handing calls over (queue full)
        self._thread = threading.Thread(target=self._work, name="dnastream-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        if self._nice is not None:
            self._nice()
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, args, box = item  # type: ignore[misc]
            if self._error is not None:
                if box is not None:
                    box.put(_Failure(self._error))
                continue
            t0 = time.perf_counter()
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._error = exc
                result = _Failure(exc)
            self.busy += time.perf_counter() - t0
            if box is not None:
                box.put(result)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``."""
        self._check()
        t0 = time.perf_counter()
        self._q.put((fn, args, None))
        self.waited += time.perf_counter() - t0

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Queue ``fn(*args)`` after everything before it and return its result."""
        self._check()
        box: queue.Queue[object] = queue.Queue(maxsize=1)
        self._q.put((fn, args, box))
        result = box.get()
        if isinstance(result, _Failure):
            raise result.exc
        return result

    def close(self) -> None:
        """Finish the queued calls and stop the thread; re-raises a pending error."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        self._check()
