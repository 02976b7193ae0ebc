"""``torchrun -m dnastream embed``: 2 real CPU processes (gloo) against a single-process run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from dnastream.genomics import FastaFile
from dnastream.pipelines.distributed import Shard, assign
from dnastream.pipelines.source import Region
from resume_helpers import done_counters

ECOLI_SLICE = Path(__file__).parent / "data" / "ecoli_K12_W3110_first200kb.fa.gz"
ECOLI_ID = "NC_007779.1"
# (start, length) of the records cut from the E. coli slice; two of equal length are batched
SLICES = ((0, 3000), (10_000, 2000), (50_000, 2000), (90_000, 1500), (120_000, 700))


@pytest.fixture(scope="module")
def multi_fasta(tmp_path_factory) -> Path:
    """Five records of real sequence (one with an N run and soft-masked bases)."""
    path = tmp_path_factory.mktemp("fa") / "multi.fa"
    with FastaFile(ECOLI_SLICE) as fa, open(path, "w") as out:
        for i, (start, n) in enumerate(SLICES):
            seq = fa.fetch(ECOLI_ID, start, start + n).decode()
            if i == 1:
                seq = seq[:500] + "N" * 40 + seq[540:900].lower() + seq[900:]
            out.write(f">rec{i} E. coli {start}\n")
            out.write("".join(seq[k : k + 60] + "\n" for k in range(0, len(seq), 60)))
    return path


def _args(fasta: Path, model: Path) -> list[str]:
    return [
        "embed",
        str(fasta),
        "-o",
        "out.h5",
        "--model",
        str(model),
        "--strand",
        "both",
        "--rc-average",
        "--layers",
        "0",
        "--chunk",
        "512",
        "--batch-size",
        "2",
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nproc: int = 2) -> list[str]:
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
        "-m",
        "dnastream",
    ]


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", **extra)


def _dump(path: Path) -> dict[str, object]:
    """Every dataset (bytes, dtype, shape, chunks, filters) and attribute (value and type) of
    an HDF5 file, minus the run times."""
    out: dict[str, object] = {}

    def attrs(prefix: str, obj: h5py.HLObject) -> None:
        for k, v in obj.attrs.items():
            if prefix or k not in ("started", "finished"):
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


@pytest.fixture(scope="module")
def single(tmp_path_factory, multi_fasta, hyenadna_fixtures) -> Path:
    """The reference: one process, ``python -m dnastream embed``."""
    cwd = tmp_path_factory.mktemp("single")
    cmd = [sys.executable, "-m", "dnastream", *_args(multi_fasta, hyenadna_fixtures / "hf_tiny")]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return cwd / "out.h5"


def test_assign_is_longest_first_and_balanced():
    assert assign([5, 1, 9, 3, 3, 2], 2) == [1, 0, 0, 1, 1, 0]  # 9 + 2 + 1 and 5 + 3 + 3
    assert assign([4, 4, 4], 2) == [0, 1, 0]
    assert assign([7], 3) == [0] and assign([], 2) == []
    regions = [Region(f"r{i}", "chr", 0, n) for i, n in enumerate((10, 30, 30, 20))]
    batches = [[0], [1, 2], [3]]
    shares = [Shard(k, 2).select(batches, regions) for k in range(2)]
    assert shares == [[[1, 2]], [[0], [3]]]


def test_two_processes_equal_a_single_run(tmp_path, multi_fasta, hyenadna_fixtures, single):
    cwd = tmp_path / "dist"
    cwd.mkdir()
    cmd = [*_torchrun(2), *_args(multi_fasta, hyenadna_fixtures / "hf_tiny")]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("5 regions") == 1 and "2 processes" in proc.stdout  # rank 0 only
    assert sorted(p.name for p in cwd.iterdir()) == ["out.h5"]  # shards merged and removed
    got, want = _dump(cwd / "out.h5"), _dump(single)
    assert got.keys() == want.keys()
    assert [k for k in want if got[k] != want[k]] == []
    with h5py.File(cwd / "out.h5", "r") as f:
        assert list(f["regions"]) == [f"rec{i}" for i in range(5)]
        assert f.attrs["command"].startswith("dnastream embed ")


def _shard_progress(cwd: Path) -> list[int]:
    """Bases committed (+ pass) per shard file, read while the run writes them."""
    return [
        sum(plus for plus, _ in done_counters(cwd / f"out.h5.rank{k}.part").values())
        for k in range(2)
    ]


def test_killed_run_resumes_each_shard(tmp_path, multi_fasta, hyenadna_fixtures, single):
    """SIGTERM to torchrun (it kills its workers) mid-run; the same command then resumes
    both shards and merges a file equal to the single run."""
    cwd = tmp_path / "killed"
    cwd.mkdir()
    args = _args(multi_fasta, hyenadna_fixtures / "hf_tiny")
    proc = subprocess.Popen(
        [*_torchrun(2), *args],
        cwd=cwd,
        env=_env(DNASTREAM_TEST_SLEEP_PER_CHUNK="0.2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while min(_shard_progress(cwd)) < 512:
            assert proc.poll() is None, "finished before the kill"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
    finally:
        proc.wait(timeout=60)
    assert not (cwd / "out.h5").exists()
    assert min(_shard_progress(cwd)) >= 512
    for k in range(2):
        with h5py.File(cwd / f"out.h5.rank{k}.part", "r") as f:
            assert not f.attrs["complete"]  # killed mid-shard
    cmd = [*_torchrun(2), *args]
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "(resumed)" in done.stdout
    assert sorted(p.name for p in cwd.iterdir()) == ["out.h5"]
    got, want = _dump(cwd / "out.h5"), _dump(single)
    assert [k for k in want if got.get(k) != want[k]] == [] and got.keys() == want.keys()

    # a finished output is refused by every process, exit code 3 (torchrun reports failure)
    again = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "already complete" in again.stderr
    assert sorted(p.name for p in cwd.iterdir()) == ["out.h5"]
