"""``dnastream embed`` over several processes (GPUs) with PyTorch's own launcher.

Usage (one machine, one process per GPU; ``-m dnastream`` is the ``python -m dnastream``
entry point)::

    torchrun --nproc-per-node 2 -m dnastream embed genome.fa.gz -o genome.h5 --model MODEL
    python -m torch.distributed.run --nproc-per-node 2 -m dnastream embed ...   # the same

Under torchrun (``WORLD_SIZE`` > 1) every process initialises ``torch.distributed`` (backend
``nccl`` on CUDA, ``gloo`` on CPU; a ``gloo`` group carries the few Python objects exchanged)
and takes ``cuda:LOCAL_RANK`` (``--device auto`` or ``cuda``) or the CPU (``--device cpu``, or
no GPU). Without torchrun, or with one process, nothing changes.

Sharding: the work is split by region, never within one: the batches a single run makes
(one region each, or equal-length regions with ``--batch-size``) are dealt out longest first,
each to the process with the fewest bases so far (ties: lowest rank), the same way on every
process. A genome of one huge record therefore runs on one GPU; use ``--regions``/``--region``
to cut it into pieces (the pieces are then separate regions of the output).

Files: rank ``k`` writes its regions, with the single-process writer, to
``OUT.h5.rank<k>.part`` (its stage file too, for ``--rc-average``). Its settings are those of
a single run plus ``shard`` (rank and process count). When every rank is done, rank 0 copies
the region groups as they are into ``OUT.h5`` (written as ``OUT.h5.part`` and renamed, like a
single run) and deletes the shards. ``OUT.h5`` equals a single-process run with the same
arguments dataset by dataset (the same bytes: the same batches and steps run on each region)
and attribute by attribute, ``command`` included (it is the ``dnastream embed ...`` line,
without the launcher); only the times ``started`` (the earliest rank's) and ``finished``
differ, as between any two runs. Caveat as for any two runs: GPUs of another model, or a CUDA
OOM back-off in one run only, may round differently.

Resume: rerun the same torchrun command with the same process count. Each rank resumes its
``.rank<k>.part`` (a finished shard is kept and skipped), then the merge runs again. Another
process count is refused (``shard`` differs: pass ``--force`` to start over). ``--force``
restarts every shard. A single-process ``OUT.h5.part`` is neither used nor kept by a
multi-process run (the merge starts ``OUT.h5.part`` afresh).

Errors: a process that fails (bad input, output exists, ...) reports its error, waits for
the others to finish their share (which is kept for a resume), and no merge happens; every
process exits non-zero (every process also does when the merge fails). The environment
variable ``DNASTREAM_DIST_TIMEOUT`` (seconds, default one week) bounds how long processes
wait for each other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import h5py
import torch

from dnastream.pipelines.embed import EmbedOptions, EmbedProgress, EmbedReport, _now, run_embed
from dnastream.pipelines.h5store import EmbedStore, read_settings
from dnastream.pipelines.source import Region

__all__ = [
    "DistributedEmbedError",
    "Shard",
    "assign",
    "is_main_process",
    "merge_shards",
    "run_embed_auto",
    "world_size",
]

TIMEOUT_ENV = "DNASTREAM_DIST_TIMEOUT"
_RUN_ATTRS = ("format", "format_version", "complete", "settings", "started", "finished")


class DistributedEmbedError(RuntimeError):
    """Another process failed, or the shards cannot be merged."""


def world_size() -> int:
    """Processes of this run (``WORLD_SIZE`` set by torchrun; 1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    """True unless this is a rank other than 0 of a multi-process run."""
    return world_size() <= 1 or int(os.environ.get("RANK", "0") or 0) == 0


def assign(sizes: Sequence[int], world: int) -> list[int]:
    """Owner rank of each work item: longest first, to the least loaded rank (ties: lowest
    rank; equal sizes keep their order). Deterministic."""
    loads = [0] * world
    owner = [0] * len(sizes)
    for item in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        owner[item] = rank
        loads[rank] += sizes[item]
    return owner


@dataclass(frozen=True)
class Shard:
    """One process's share of a run (used by :func:`~dnastream.pipelines.embed.run_embed`)."""

    rank: int
    world_size: int

    def path(self, output: str | os.PathLike[str]) -> Path:
        """Its file, ``OUT.h5.rank<k>`` (written, and left, as ``OUT.h5.rank<k>.part``)."""
        out = Path(output)
        return out.with_name(f"{out.name}.rank{self.rank}")

    def settings(self) -> dict[str, Any]:
        """Added to the settings of its part file: a resume must match them."""
        return {"shard": {"rank": self.rank, "world_size": self.world_size}}

    def select(self, batches: Sequence[list[int]], regions: Sequence[Region]) -> list[list[int]]:
        """Its batches (region indices), in the order given."""
        owner = assign([sum(regions[i].length for i in b) for b in batches], self.world_size)
        return [b for b, rank in zip(batches, owner, strict=True) if rank == self.rank]


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def merge_shards(output: str | os.PathLike[str], world: int) -> Path:
    """Merge the complete shards ``OUT.h5.rank<k>.part`` (k < ``world``) into ``output``
    (written as ``output.part``, then renamed) and delete them; returns ``output``.

    Raises:
        DistributedEmbedError: a shard is missing, unfinished or of another run.
    """
    out = Path(output)
    parts = [_part(Shard(k, world).path(out)) for k in range(world)]
    with ExitStack() as stack:
        files = []
        for k, path in enumerate(parts):
            found = read_settings(path) if path.exists() else None
            if found is None or not found[1]:
                raise DistributedEmbedError(f"{path}: missing or unfinished shard")
            settings = dict(found[0])
            if settings.pop("shard", None) != Shard(k, world).settings()["shard"]:
                raise DistributedEmbedError(f"{path}: a shard of another run")
            if k == 0:
                common = settings
            elif settings != common:
                raise DistributedEmbedError(f"{path}: started with other settings than rank 0")
            files.append(stack.enter_context(h5py.File(path, "r")))
        first = files[0].attrs
        attrs: dict[str, Any] = {k: v for k, v in first.items() if k not in _RUN_ATTRS}
        attrs["started"] = min(str(f.attrs["started"]) for f in files)
        groups = [(int(g.attrs["index"]), g) for f in files for g in f["regions"].values()]
        groups.sort(key=lambda t: t[0])
        if [i for i, _ in groups] != list(range(int(first["n_regions"]))):
            raise DistributedEmbedError(f"the shards of {out} do not hold each region once")
        store, _ = EmbedStore.open(out, common, attrs, force=True)
        try:
            for _, group in groups:
                store.copy_region(group)
            store.finish({"finished": _now()})
        except BaseException:
            store.discard()
            raise
    for path in parts:
        path.unlink()
    return out


def _device(spec: str, local_rank: int) -> torch.device:
    """This rank's device: cuda:LOCAL_RANK for auto/cuda when CUDA is there, else the CPU."""
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if spec not in ("auto", "cuda"):
        raise ValueError(
            f"--device {spec!r}: under torchrun each process takes cuda:LOCAL_RANK; "
            "pass --device cuda (or auto) or cpu, and CUDA_VISIBLE_DEVICES to pick GPUs"
        )
    if not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible (use --device cpu)")
    if local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"process {local_rank} of this machine has no GPU: only "
            f"{torch.cuda.device_count()} visible (lower --nproc-per-node)"
        )
    return torch.device("cuda", local_rank)


def _combine(reports: Sequence[EmbedReport], output: Path, device: str) -> EmbedReport:
    """The whole run's report from the ranks' reports."""
    return EmbedReport(
        output=output,
        n_regions=sum(r.n_regions for r in reports),
        n_skipped=sum(r.n_skipped for r in reports),
        bases=sum(r.bases for r in reports),
        seconds=max(r.seconds for r in reports),
        device=device,
        filter_len=reports[0].filter_len,
        chunk=reports[0].chunk,
        resumed=any(r.resumed for r in reports),
        backoffs=sum(r.backoffs for r in reports),
        regions=[n for r in reports for n in r.regions],  # rank by rank
    )


def run_embed_auto(
    fasta: str | os.PathLike[str],
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    options: EmbedOptions | None = None,
    progress: EmbedProgress | None = None,
    **kwargs: Any,
) -> EmbedReport:
    """:func:`~dnastream.pipelines.embed.run_embed`, sharded when torchrun started several
    processes (see the module docstring). Every process returns the whole run's report.

    Raises what ``run_embed`` raises (this process's error), or DistributedEmbedError when
    another process failed or the merge failed.
    """
    world = world_size()
    if world <= 1:
        return run_embed(fasta, model, output, options=options, progress=progress, **kwargs)
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    opts = options or EmbedOptions()
    device = _device(opts.device, local_rank)
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 7 * 24 * 3600)))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timeout)
    try:
        group = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
        mine: BaseException | None = None
        try:
            status: Any = run_embed(
                fasta,
                model,
                output,
                options=replace(opts, device=str(device)),
                progress=progress,
                shard=Shard(rank, world),
                **kwargs,
            )
        except Exception as exc:  # reported to the other ranks, then raised
            mine, status = exc, f"{type(exc).__name__}: {exc}"
        statuses: list[Any] = [None] * world
        dist.all_gather_object(statuses, status, group=group)
        if mine is not None:
            raise mine
        failed = [f"rank {k}: {s}" for k, s in enumerate(statuses) if isinstance(s, str)]
        if failed:
            raise DistributedEmbedError(
                "no output merged, another process failed (rerun to resume): " + "; ".join(failed)
            )
        merged: list[str | None] = [None]
        if rank == 0:
            try:
                merge_shards(output, world)
            except Exception as exc:
                merged[0] = f"{type(exc).__name__}: {exc}"
                dist.broadcast_object_list(merged, src=0, group=group)
                raise
        dist.broadcast_object_list(merged, src=0, group=group)
        if merged[0] is not None:
            raise DistributedEmbedError(f"rank 0 could not merge the shards: {merged[0]}")
        return _combine(statuses, Path(output), f"{world} processes, {device.type}")
    finally:
        dist.destroy_process_group()
