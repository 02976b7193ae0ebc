"""Environment report for ``dnastream doctor``: versions, GPUs and the kernels' execution path."""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass, field

import torch

from dnastream import __version__
from dnastream.kernels.backend import kernel_mode, triton_available

_PACKAGES = ("torch", "triton", "numpy", "h5py", "pyfaidx", "biopython", "safetensors", "typer")


@dataclass(frozen=True)
class GpuInfo:
    """One visible CUDA device."""

    index: int
    name: str
    capability: str
    memory_gib: float


@dataclass(frozen=True)
class EnvironmentReport:
    """What ``dnastream doctor`` prints."""

    dnastream: str
    python: str
    platform: str
    packages: dict[str, str | None]
    cuda_runtime: str | None
    cuda_available: bool
    gpus: list[GpuInfo] = field(default_factory=list)
    kernel_mode: str = "reference"
    kernel_mode_reason: str = ""
    plan_tuning: str = ""


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect_environment() -> EnvironmentReport:
    """Gather versions, visible GPUs and how the Triton kernels will run here."""
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append(GpuInfo(i, p.name, f"{p.major}.{p.minor}", p.total_memory / 2**30))
    mode = kernel_mode()
    if mode == "compiled":
        reason = "Triton compiles the kernels for the CUDA GPU"
    elif mode == "interpreted":
        reason = "TRITON_INTERPRET=1: Triton kernels run in the CPU interpreter (slow; for tests)"
    elif not triton_available():
        reason = "Triton is not installed: the PyTorch reference ops run instead"
    else:
        reason = "no CUDA GPU: the PyTorch reference ops run (set TRITON_INTERPRET=1 to interpret)"
    from dnastream.kernels import autotune

    tuned = []
    for g in gpus:
        user, shipped = autotune.stored_counts(autotune.device_id(f"cuda:{g.index}"))
        tuned.append(f"GPU {g.index}: {user} tuned here, {shipped} shipped for this card")
    tuning = f"{'; '.join(tuned) or 'per GPU (none visible)'} (cache {autotune.cache_path()})"
    return EnvironmentReport(
        dnastream=__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        packages={name: _package_version(name) for name in _PACKAGES},
        cuda_runtime=torch.version.cuda,
        cuda_available=torch.cuda.is_available(),
        gpus=gpus,
        kernel_mode=mode,
        kernel_mode_reason=reason,
        plan_tuning=tuning,
    )
