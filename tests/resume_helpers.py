"""Shared by the kill-and-resume tests: dump an HDF5 file, read progress, kill at a point."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import h5py
import numpy as np


def dump_h5(path: Path, chunks: bool = False) -> dict[str, object]:
    """Every dataset (bytes) and attribute of an HDF5 file, minus the run times; ``chunks``:
    also every chunk's stored bytes and filter mask."""
    out: dict[str, object] = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            out[name] = (obj.dtype.str, obj.shape, obj[()].tobytes())
            if chunks and obj.chunks is not None:
                out[f"{name}#chunks"] = [
                    (info.chunk_offset, *obj.id.read_direct_chunk(info.chunk_offset))
                    for info in map(obj.id.get_chunk_info, range(obj.id.get_num_chunks()))
                ]
        for k, v in obj.attrs.items():  # type: ignore[attr-defined]
            out[f"{name}@{k}"] = np.asarray(v).tolist()

    with h5py.File(path, "r") as f:
        for k, v in f.attrs.items():
            if k not in ("started", "finished"):
                out[f"@{k}"] = np.asarray(v).tolist()
        f.visititems(visit)
    return out


def done_counters(part: Path) -> dict[str, tuple[int, int]]:
    """Progress counters of a file another process is writing ({} while unreadable: a read
    racing the writer can fail to open, miss the group, or see a half-made group as None)."""
    try:
        with h5py.File(part, "r", locking=False) as f:
            return {
                k: (int(g.attrs.get("done_plus", 0)), int(g.attrs.get("done_minus", 0)))
                for k, g in f["regions"].items()
            }
    except (OSError, KeyError, AttributeError):
        return {}


def run_until_killed(
    cmd: list[str],
    cwd: Path,
    part: Path,
    ready: Callable[[dict[str, tuple[int, int]]], bool],
    sleep: str,
    *,
    env: Mapping[str, str] | None = None,
    poll: float = 0.05,
) -> None:
    """Run ``cmd`` (sleeping ``sleep`` s per chunk) and SIGKILL it once ``ready(progress)``."""
    env = dict(os.environ if env is None else env, DNASTREAM_TEST_SLEEP_PER_CHUNK=sleep)
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not ready(done_counters(part)):
            assert proc.poll() is None, f"finished before the kill: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no progress"
            time.sleep(poll)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
