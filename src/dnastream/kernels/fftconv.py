"""Public FFT long convolution: validates its arguments, then dispatches to a backend.

Only the reference backend (:func:`fftconv_ref`) exists today; a fast path (e.g. Triton) will
be selected in :func:`_select_backend` behind the same signature.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dnastream.kernels.fftconv_ref import fftconv_ref
from dnastream.kernels.spectrum import FFTConv

__all__ = ["fftconv"]

_Backend = Callable[..., Tensor]


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_float(name: str, t: Tensor) -> None:
    if not t.dtype.is_floating_point:
        raise TypeError(f"fftconv: {name} must be a real floating tensor, got dtype {t.dtype}")


def _check_device(name: str, t: Tensor, device: torch.device) -> None:
    if t.device != device:
        raise ValueError(f"fftconv: {name} is on {t.device} but u is on {device}")


def _validate(
    u: Tensor,
    k: Tensor,
    D: Tensor | None,
    pregate: Tensor | None,
    postgate: Tensor | None,
    causal: bool,
    context: Tensor | None,
) -> None:
    if u.dim() != 3:
        raise ValueError(f"fftconv: u must be (B, H, L), got shape {_shape(u)}")
    batch, channels, seq_len = u.shape
    if seq_len < 1:
        raise ValueError("fftconv: u has length 0")
    _check_float("u", u)
    _check_float("k", k)
    if k.dim() != 2 or k.shape[0] != channels or k.shape[1] < 1:
        raise ValueError(f"fftconv: k must be (H={channels}, Lk>=1), got shape {_shape(k)}")
    if not causal and k.shape[1] > seq_len:
        raise ValueError(
            f"fftconv: circular convolution needs Lk <= L, got Lk={k.shape[1]} > L={seq_len}"
        )
    _check_device("k", k, u.device)
    if D is not None:
        _check_float("D", D)
        if _shape(D) != (channels,):
            raise ValueError(f"fftconv: D must be (H={channels},), got shape {_shape(D)}")
        _check_device("D", D, u.device)
    for name, gate in (("pregate", pregate), ("postgate", postgate)):
        if gate is None:
            continue
        _check_float(name, gate)
        if gate.shape != u.shape:
            raise ValueError(f"fftconv: {name} must have u's shape {_shape(u)}, got {_shape(gate)}")
        _check_device(name, gate, u.device)
    if context is not None:
        if not causal:
            raise ValueError("fftconv: context (left inputs) only makes sense with causal=True")
        _check_float("context", context)
        if context.dim() != 3 or context.shape[:2] != (batch, channels):
            raise ValueError(
                f"fftconv: context must be (B={batch}, H={channels}, C), got {_shape(context)}"
            )
        _check_device("context", context, u.device)


def _select_backend(u: Tensor) -> _Backend:
    """Pick the implementation for these inputs. Fast paths register here later."""
    return fftconv_ref


def fftconv(
    u: Tensor,
    k: Tensor | FFTConv,
    D: Tensor | None = None,
    *,
    pregate: Tensor | None = None,
    postgate: Tensor | None = None,
    causal: bool = True,
    context: Tensor | None = None,
) -> Tensor:
    """``postgate * ((pregate * u) conv k + D * (pregate * u))`` for u (B, H, L), k (H, Lk).

    ``k`` may be an :class:`FFTConv` so the filter spectrum is computed once and reused.
    ``context`` (B, H, C) holds the gated inputs preceding ``u`` (causal streaming).
    Returns y (B, H, L) in the dtype of ``u``. See :func:`fftconv_ref` for the exact maths.
    """
    k_tensor = k.k if isinstance(k, FFTConv) else k
    if not isinstance(u, Tensor) or not isinstance(k_tensor, Tensor):
        raise TypeError("fftconv: u and k must be tensors (k may be an FFTConv)")
    _validate(u, k_tensor, D, pregate, postgate, causal, context)
    backend = _select_backend(u)
    return backend(u, k, D, pregate=pregate, postgate=postgate, causal=causal, context=context)
