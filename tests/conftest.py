"""Test set-up: interpret Triton kernels without a GPU, the ``gpu`` marker, data paths."""

from __future__ import annotations

import os
from pathlib import Path

# Triton reads TRITON_INTERPRET when a kernel is decorated, so this must run before any
# dnastream.kernels module is imported. Without a GPU every Triton kernel then runs in the
# CPU interpreter, which is how CI (2 cores, no GPU) tests every kernel code path.
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist each worker would start one intra-op thread per core (2 workers x 2
# threads on CI's 2 cores), and oversubscribed OpenMP threads spin against each other: share
# the cores out instead, in this worker and in the processes its tests start (measured on a
# 2-core machine, 3 test files, two runs each: 70-72 s against 73-75 s).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _workers > 1:
    _threads = max(1, (os.cpu_count() or 1) // _workers)
    torch.set_num_threads(_threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
FIXTURES = SHARED / "fixtures" / "hyenadna"
TEST_DATA = REPO_ROOT / "tests" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    # `pytest -m gpu` on a machine without a GPU must not report a green run.
    if "gpu" in (config.getoption("-m") or "") and "not gpu" not in config.getoption("-m"):
        raise pytest.UsageError("`-m gpu` selected but no CUDA GPU is visible on this machine")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (real genomes and annotations)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def hyenadna_fixtures() -> Path:
    """``../shared/fixtures/hyenadna`` (official-format checkpoints and reference outputs)."""
    if not FIXTURES.is_dir():
        pytest.skip(f"HyenaDNA fixtures folder {FIXTURES} is absent")
    return FIXTURES
