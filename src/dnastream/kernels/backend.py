"""Which execution path the Triton kernels take on this machine: compiled, interpreted or none."""

from __future__ import annotations

import importlib.util
import os
from typing import Literal

import torch

KernelMode = Literal["compiled", "interpreted", "reference"]


_TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    """True when the ``triton`` package can be imported (looked up once, at import: the
    dispatch runs inside ``torch.compile`` graphs, where ``importlib`` cannot be traced)."""
    return _TRITON_AVAILABLE


def interpret_requested() -> bool:
    """True when ``TRITON_INTERPRET=1`` asks Triton to run kernels in its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "yes", "on"}


def kernel_mode(device: torch.device | str | None = None) -> KernelMode:
    """How a kernel launched for ``device`` would run.

    ``compiled``: Triton is installed and the device is a CUDA GPU; ``interpreted``: Triton's CPU
    interpreter is on (``TRITON_INTERPRET=1``, used by the test suite); ``reference``: the pure
    PyTorch twins run instead (no Triton, or a CPU tensor without the interpreter).
    """
    if not triton_available():
        return "reference"
    if interpret_requested():
        return "interpreted"
    dev = torch.device(device) if device is not None else None
    if dev is None:
        return "compiled" if torch.cuda.is_available() else "reference"
    return "compiled" if dev.type == "cuda" else "reference"


def eager_ops_enabled() -> bool:
    """Eager training (outside ``torch.compile``) runs the custom operators' bodies through
    plain ``autograd.Function`` s, unless ``DNASTREAM_EAGER_OPS=off`` (then through the
    ``dnastream::`` operators themselves, as under ``torch.compile``)."""
    return os.environ.get("DNASTREAM_EAGER_OPS", "on").strip().lower() not in {"off", "0"}
