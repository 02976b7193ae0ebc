"""GPU: the pipelines on CUDA, end to end.

* ``torchrun --nproc-per-node 2 -m dnastream embed ... --device cuda`` (NCCL, one GPU per
  process) writes the same file, byte for byte, as one process on one GPU; every rank takes
  ``cuda:LOCAL_RANK`` under the ``nccl`` backend. Needs two visible GPUs, else skipped.
* A real CUDA out-of-memory error inside a streaming step (the caching allocator is capped
  below what the first step needs) is backed off from: the run completes with smaller steps,
  and its outputs equal an unconstrained run.
* ``dnastream embed`` and ``dnastream score`` on CUDA equal the same commands on the CPU
  (float32 tolerance).

Run on a GPU machine from the repository root (no install needed; subprocesses get the
repository's ``src`` on ``PYTHONPATH``)::

    PYTHONPATH=src python -m pytest -m gpu tests/test_gpu_pipeline.py

All of these are deselected by the default ``-m 'not gpu'``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu

REPO_ROOT = Path(__file__).resolve().parents[1]
SRC = REPO_ROOT / "src"
TINY = REPO_ROOT / "tests" / "data" / "hyenadna_tiny_random_hf"
ECOLI = REPO_ROOT / "tests" / "data" / "ecoli_K12_W3110_first200kb.fa.gz"
ECOLI_ID = "NC_007779.1"

# 200 kb cut into 4 regions (1-based inclusive): the two of 50 kb are batched together
# (--batch-size 2), so the 2 ranks get 100 kb (the batch) and 60 + 40 kb.
SHARDED_REGIONS = (
    f"{ECOLI_ID}:1-60,000",
    f"{ECOLI_ID}:60,001-110,000",
    f"{ECOLI_ID}:110,001-160,000",
    f"{ECOLI_ID}:160,001-200,000",
)
RUN_TIMES = ("started", "finished")
TIMEOUT = 600


# --------------------------------------------------------------------------------------------
# helpers: subprocesses and file comparison
# --------------------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    """The test's environment plus the repository's ``src`` first on PYTHONPATH (the GPU
    machine runs without an install) and settings for one-node NCCL/gloo groups."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), path) if p)
    env["NCCL_NVLS_ENABLE"] = "0"  # no NVLink multicast (SHARP) objects on a shared node
    env["TORCH_SYMM_MEM_DISABLE_MULTICAST"] = "1"
    if Path("/sys/class/net/lo").exists():  # one node: keep the rendezvous on loopback
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nproc: int) -> list[str]:
    """``torchrun`` as ``python -m torch.distributed.run`` (the binary may not be on PATH)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
    ]


def _run(cmd: Sequence[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd``; fail the test (showing its output) unless it exits 0."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        list(cmd), cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc


def _dnastream() -> list[str]:
    return [sys.executable, "-m", "dnastream"]


def _embed_args(device: str, *extra: str) -> list[str]:
    return ["embed", str(ECOLI), "-o", "out.h5", "--model", str(TINY), "--device", device, *extra]


def _sharded_args(device: str) -> list[str]:
    regions = [w for r in SHARDED_REGIONS for w in ("--region", r)]
    return _embed_args(
        device,
        *regions,
        "--strand",
        "both",
        "--rc-average",
        "--layers",
        "0",
        "--chunk",
        "16384",
        "--batch-size",
        "2",
    )


def _dump(
    path: Path, skip_root: Sequence[str] = RUN_TIMES, skip_any: Sequence[str] = ()
) -> dict[str, object]:
    """Every dataset (dtype, shape, chunks, filters, bytes) and attribute (type and value)
    of an HDF5 file, minus the root attributes ``skip_root`` and attributes ``skip_any``."""
    out: dict[str, object] = {}

    def attrs(prefix: str, obj: h5py.HLObject) -> None:
        for k, v in obj.attrs.items():
            if (prefix or k not in skip_root) and k not in skip_any:
                out[f"{prefix}@{k}"] = (np.asarray(v).dtype.str, np.asarray(v).tolist())

    def visit(name: str, obj: h5py.HLObject) -> None:
        if isinstance(obj, h5py.Dataset):
            props = (obj.dtype.str, obj.shape, obj.chunks, obj.compression, obj.shuffle)
            out[name] = (*props, obj[()].tobytes())
        attrs(name, obj)

    with h5py.File(path, "r") as f:
        attrs("", f)
        f.visititems(visit)
    return out


def assert_identical_files(got: Path, want: Path) -> None:
    """Same datasets (bytes, layout) and attributes, except the run times."""
    a, b = _dump(got), _dump(want)
    assert sorted(a) == sorted(b)
    assert [k for k in b if a[k] != b[k]] == []


def _datasets(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: found.update({n: o[()]}) if isinstance(o, h5py.Dataset) else None)
    return found


def assert_close_files(
    got: Path, want: Path, *, atol: float, rtol: float, skip: Sequence[str]
) -> None:
    """Same datasets (names, dtypes, shapes) and attributes, except attributes named in
    ``skip`` (anywhere); floats (datasets, compound fields, attributes) equal within
    ``atol``/``rtol`` (NaN where the other has NaN), everything else exactly."""

    def close(x: np.ndarray, y: np.ndarray, what: str) -> None:
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, atol=atol, rtol=rtol, equal_nan=True, err_msg=what)
        else:
            np.testing.assert_array_equal(x, y, err_msg=what)

    a, b = _datasets(got), _datasets(want)
    assert sorted(a) == sorted(b)
    for name, y in b.items():
        x = a[name]
        assert (x.dtype, x.shape) == (y.dtype, y.shape), name
        for field in y.dtype.names or [None]:  # compound datasets (score's /summary) by field
            close(x if field is None else x[field], y if field is None else y[field], name)
    sa = {k: v for k, v in _dump(got, (), skip).items() if "@" in k}
    sb = {k: v for k, v in _dump(want, (), skip).items() if "@" in k}
    assert sorted(sa) == sorted(sb)
    for key, (dtype, value) in sb.items():
        assert sa[key][0] == dtype, key
        close(np.asarray(sa[key][1]), np.asarray(value), key)


# --------------------------------------------------------------------------------------------
# several GPUs under torchrun (NCCL)
# --------------------------------------------------------------------------------------------

_PROBE = """\
import json, os, runpy, sys
import torch, torch.distributed as dist
import dnastream.pipelines.distributed as d

real = d.run_embed

def probe(*args, **kwargs):
    info = {
        "rank": int(os.environ["RANK"]),
        "local_rank": int(os.environ["LOCAL_RANK"]),
        "device": kwargs["options"].device,
        "current_device": torch.cuda.current_device() if torch.cuda.is_available() else None,
        "backend": str(dist.get_backend()),
        "world_size": dist.get_world_size(),
    }
    with open(os.path.join(os.environ["PROBE_DIR"], f"rank{info['rank']}.json"), "w") as fh:
        json.dump(info, fh)
    return real(*args, **kwargs)

d.run_embed = probe
runpy.run_module("dnastream", run_name="__main__", alter_sys=True)
"""


def _need_gpus(n: int) -> None:
    found = torch.cuda.device_count()
    if found < n:
        pytest.skip(f"needs {n} CUDA GPUs for torchrun --nproc-per-node {n}, found {found}")


def test_two_gpus_torchrun_equals_one_gpu(tmp_path):
    """``torchrun --nproc-per-node 2 -m dnastream embed --device cuda``: the merged file
    equals a single-GPU run of the same command, byte for byte (datasets and attributes)."""
    _need_gpus(2)
    single = _run([*_dnastream(), *_sharded_args("cuda")], tmp_path / "single")
    assert "4 regions" in single.stdout
    dist = _run([*_torchrun(2), "-m", "dnastream", *_sharded_args("cuda")], tmp_path / "dist")
    assert dist.stdout.count("4 regions") == 1 and "2 processes, cuda" in dist.stdout
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == ["out.h5"]
    assert_identical_files(tmp_path / "dist" / "out.h5", tmp_path / "single" / "out.h5")
    with h5py.File(tmp_path / "dist" / "out.h5", "r") as f:
        assert f.attrs["complete"] and int(f.attrs["n_regions"]) == 4
        assert f.attrs["command"].startswith("dnastream embed ")


def test_two_gpus_each_rank_takes_its_gpu_under_nccl(tmp_path):
    """Every process of ``torchrun --nproc-per-node 2`` runs on ``cuda:LOCAL_RANK`` with a
    ``nccl`` default group (recorded from inside the ranks by a wrapper of ``-m dnastream``)."""
    _need_gpus(2)
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    script = tmp_path / "probe_dnastream.py"
    script.write_text(_PROBE)
    args = _embed_args("cuda", "--region", f"{ECOLI_ID}:1-20,000", "--region",
                       f"{ECOLI_ID}:20,001-30,000", "--pool", "mean")  # fmt: skip
    proc = _run([*_torchrun(2), str(script), *args], tmp_path / "run", PROBE_DIR=str(probe_dir))
    assert "2 processes, cuda" in proc.stdout
    infos = [json.loads((probe_dir / f"rank{k}.json").read_text()) for k in range(2)]
    for k, info in enumerate(infos):
        assert info == {
            "rank": k,
            "local_rank": k,
            "device": f"cuda:{k}",
            "current_device": k,
            "backend": "nccl",
            "world_size": 2,
        }
    with h5py.File(tmp_path / "run" / "out.h5", "r") as f:
        assert f.attrs["complete"] and len(f["regions"]) == 2


# --------------------------------------------------------------------------------------------
# a real CUDA OOM inside a step: back-off, same outputs
# --------------------------------------------------------------------------------------------

OOM_CHUNK = 1 << 21  # tokens per input chunk and first step: ~11 KB/token of activations
OOM_CHUNKS = 2  # input chunks (the stream state crosses a chunk boundary after the back-off)
OOM_SMALL = OOM_CHUNK >> 5  # a step size that surely fits (measured, not assumed)


def _token_chunks() -> list:
    from dnastream.pipelines.source import Region, TokenChunk

    total = OOM_CHUNK * OOM_CHUNKS
    region = Region("random", "random", 0, total)
    ids = np.random.default_rng(7).integers(7, 11, size=total, dtype=np.int64)  # A C G T
    ids[12_345:12_400] = 11  # an N run
    zeros = np.zeros(OOM_CHUNK, dtype=bool)
    return [
        TokenChunk(region, o, ids[o : o + OOM_CHUNK], zeros, zeros.astype(np.uint8))
        for o in range(0, total, OOM_CHUNK)
    ]


def _runner(chunk: int):
    """A fresh runner (fresh model: no filter spectra cached from another run)."""
    from dnastream.models import load_model
    from dnastream.pipelines.runner import ModelRunner

    return ModelRunner(load_model(TINY), device="cuda", chunk=chunk)


def _stream(runner, chunks) -> list[dict[str, np.ndarray]]:
    """Outputs per input chunk: final hidden state and next-token logprobs (no layer
    outputs: the less a chunk's outputs take on the GPU, the wider the gap between the memory
    of a big and of a small step)."""
    return [
        {"hidden": r.hidden, "logprobs": r.logprobs}
        for r in runner.run_region(chunks, logprobs=True)
    ]


def _track_steps(runner, plan: Sequence[int] | None = None) -> list[int]:
    """Record the tokens of every step the runner's engine completes (failed attempts are not
    recorded). With ``plan`` (the steps of another run), the runner's step size is set to the
    planned size of each next step, so it takes exactly those steps."""
    taken: list[int] = []
    step = runner.engine.step
    upcoming = iter(plan[1:]) if plan else None

    def tracked(ids, **kwargs):
        out = step(ids, **kwargs)
        taken.append(ids.shape[1])
        if upcoming is not None:
            runner.chunk = next(upcoming, runner.chunk)
        return out

    runner.engine.step = tracked
    return taken


def _measured(chunk: int, chunks) -> tuple[list[dict[str, np.ndarray]], int, int]:
    """Outputs, and the peak bytes allocated and reserved above the level before the run."""
    runner = _runner(chunk)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    alloc0, res0 = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    out = _stream(runner, chunks)
    torch.cuda.synchronize()
    peaks = torch.cuda.max_memory_allocated() - alloc0, torch.cuda.max_memory_reserved() - res0
    assert runner.backoffs == 0 and runner.chunk == chunk
    del runner
    torch.cuda.empty_cache()
    return out, *peaks


def assert_same_outputs(got, want, *, atol: float = 0.0, rtol: float = 0.0) -> None:
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.keys() == w.keys()
        for name in w:
            if atol == 0 and rtol == 0:
                np.testing.assert_array_equal(g[name], w[name], err_msg=f"chunk {k} {name}")
            else:
                np.testing.assert_allclose(
                    g[name], w[name], atol=atol, rtol=rtol, equal_nan=True,
                    err_msg=f"chunk {k} {name}",
                )  # fmt: skip


def test_real_cuda_oom_backs_off_and_matches_unconstrained(caplog):
    """Cap the caching allocator between what a 2M-token step and a 64k-token step need: the
    first step raises a real ``torch.cuda.OutOfMemoryError``, the runner halves its steps
    until they fit, and the outputs equal an unconstrained run (the same bytes as an uncapped
    run that takes the same steps, float32 rounding of other step sizes otherwise).

    A cap of the allocator (``set_per_process_memory_fraction``), not a blocker tensor, is
    used: it fails exactly the allocations of the caching allocator (what the runner recovers
    from) and leaves physical memory for cuFFT plans and the CUDA context, whose failures
    would not be OOM errors."""
    chunks = _token_chunks()
    big, big_alloc, _ = _measured(OOM_CHUNK, chunks)  # also compiles / tunes every kernel
    small, _, small_reserved = _measured(OOM_SMALL, chunks)
    assert_same_outputs(small, big, atol=1e-5, rtol=1e-5)  # step size changes rounding only
    del small  # 2 GiB of host memory per run
    assert big_alloc > 2 * small_reserved, (
        f"a {OOM_CHUNK}-token step needs {big_alloc / 2**30:.2f} GiB, a {OOM_SMALL}-token one "
        f"{small_reserved / 2**30:.2f} GiB: too close to force an OOM of the first only"
    )
    budget = small_reserved + (big_alloc - small_reserved) // 3

    runner = _runner(OOM_CHUNK)
    steps = _track_steps(runner)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    limit = torch.cuda.memory_reserved() + budget
    assert limit < free + torch.cuda.memory_reserved()  # the cap, not the GPU, must bind
    caplog.set_level(logging.WARNING, logger="dnastream.pipelines")
    try:
        torch.cuda.set_per_process_memory_fraction(limit / total)
        constrained = _stream(runner, chunks)
        torch.cuda.synchronize()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert runner.backoffs >= 1 and runner.chunk < OOM_CHUNK, (runner.backoffs, runner.chunk)
    assert runner.chunk >= OOM_SMALL  # halved until it fit, not further
    assert "out of memory on cuda" in caplog.text
    assert sum(steps) == OOM_CHUNK * OOM_CHUNKS and max(steps) < OOM_CHUNK, steps
    del runner
    torch.cuda.empty_cache()

    assert_same_outputs(constrained, big, atol=1e-5, rtol=1e-5)
    # The back-off may come at a later step than the first (a step can fit at the start and
    # not later, e.g. while the previous step's outputs are still being copied), so the
    # exact reference is an uncapped run made to take the same steps, not a run with the
    # final step size throughout: a different step split changes the overlap-save windows
    # of the step's tail, hence the rounding there.
    replay = _runner(steps[0])
    replayed = _track_steps(replay, steps)
    same_steps = _stream(replay, chunks)
    assert replayed == steps and replay.backoffs == 0
    del replay
    assert_same_outputs(constrained, same_steps)  # exactly: the same steps, the same kernels


# --------------------------------------------------------------------------------------------
# CUDA against the CPU, end to end
# --------------------------------------------------------------------------------------------

# attributes that name the device or its default chunk, and the run times
_DEVICE_ATTRS = ("settings", "command", "chunk", "device", "chunk_final", "oom_backoffs",
                 "started", "finished", "created", "seconds")  # fmt: skip


def test_embed_cuda_equals_cpu(tmp_path):
    """The 200 kb E. coli slice, per base, both strands, layer 0: CUDA (default 262,144-token
    steps) against CPU (4096-token steps), float32 within 1e-4."""
    args = ["--strand", "both", "--layers", "0", "--quiet"]
    _run([*_dnastream(), *_embed_args("cuda", *args)], tmp_path / "cuda")
    _run([*_dnastream(), *_embed_args("cpu", *args)], tmp_path / "cpu")
    got, want = tmp_path / "cuda" / "out.h5", tmp_path / "cpu" / "out.h5"
    with h5py.File(got, "r") as f:
        assert f.attrs["complete"] and json.loads(f.attrs["settings"])["device_type"] == "cuda"
        assert f[f"regions/{ECOLI_ID}/plus/embedding"].shape == (200_000, 128)
    assert_close_files(got, want, atol=1e-4, rtol=1e-4, skip=_DEVICE_ATTRS)


def test_score_cuda_equals_cpu(tmp_path):
    """``dnastream score`` of a + and a - region: per-base logprobs and summaries."""
    regions = ["--region", f"{ECOLI_ID}:1-20,000", "--region", f"{ECOLI_ID}:100,001-130,000:-"]

    def score(device: str) -> Path:
        cwd = tmp_path / device
        args = ["score", str(ECOLI), *regions, "-o", "s.h5", "--tsv", "s.tsv"]
        _run([*_dnastream(), *args, "--model", str(TINY), "--device", device, "--quiet"], cwd)
        return cwd / "s.h5"

    got, want = score("cuda"), score("cpu")
    with h5py.File(got, "r") as f:
        assert len(f["regions"]) == 2
        for g in f["regions"].values():
            lp = g["logprob"][()]
            assert lp.shape == (int(g.attrs["length"]),) and np.isfinite(lp).sum() > 0
    assert_close_files(got, want, atol=1e-4, rtol=1e-4, skip=_DEVICE_ATTRS)
