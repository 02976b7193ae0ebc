"""Public FFT long convolution: validates its arguments, then dispatches to a backend.

CUDA tensors in bf16/fp16/fp32 run the Triton Monarch-FFT kernels
(:mod:`dnastream.kernels.fftconv_triton`) whenever a plan exists for the length; everything
else (CPU, float64, streaming ``context``, lengths without a plan) runs the PyTorch reference
:func:`fftconv_ref`. Both compute the same function (tested against each other).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import Tensor

from dnastream.kernels import fftconv_op  # also registers torch.ops.dnastream.fftconv
from dnastream.kernels.backend import eager_ops_enabled, kernel_mode
from dnastream.kernels.fftconv_ref import fftconv_ref
from dnastream.kernels.monarch import MAX_FUSED_SIZE, MIN_FFT_SIZE, FFTPlan
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


_TRITON_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def triton_is_faster(plan: FFTPlan, batch: int, dtype: torch.dtype, needs_grad: bool) -> bool:
    """Whether the Triton kernels beat torch.fft for this plan (the default dispatch).

    Measured on an H100 (``benchmarks/bench_conv.py``, FlashFFTConv's workload, bf16):
    * fused plans (N <= 8192; causal bf16/fp16 to 32768) forward: 1.6-5.4x
      (``results/bench_conv_h100_stop10.log``);
    * forward+backward (``results/bench_conv_h100_stop12.log``): 1.08-3.9x from 256 to 8192
      (256 eager: 0.77-1.15x over four runs, bound by the host's Python, so it stays on
      torch.fft), 1.69x at 16K, 1.17x at 32K (1.48x with stop 14's outer plan at B >= 3,
      ``results/bench_conv_32k_outer_h100_stop14.log``), and with the fused backward under
      outer levels and float16 buffers 1.30-1.48x from 64K to 1M, 1.12x at 2M (1.19x with
      its one-level plan, ``results/ab_structure_h100_stop12.log``), 0.94x at 4M then;
      stop 14's plans with smaller inner FFTs under larger outer radices (B >= 3):
      2.0-2.25x at 128K-512K (``results/bench_conv_radix128_after_h100_stop14.log``), 1.28x
      at 4M (``results/ab_outer_radix_2m_4m_h100_stop14.log``), so 4M takes Triton with
      gradients too; stop 15's 4M plans: circular (B >= 3) 1.20x, causal B = 2 over 4096-point
      inner FFTs 1.09x (``results/ab_structures_*_h100_stop15.log``);
    * the multi-pass plans forward at B = 8: 1.4-2.4x from 64K to 1M, 1.09-1.65x at 2M-4M. At
      B = 1 half of each packed row pair is zeros: inside the model they lost (1 Mbp slower and
      heavier), so they need B >= 2.
    fp32 (tf32x3) is only taken on fused plans; above 8192, and for the multi-pass plans, only
    bf16/fp16 with B >= 2, FFT sizes to 4M (with gradients too). Inside a HyenaDNA-large
    training step (B = 2-4, L = 16K-128K, ``benchmarks/bench_train_step.py``, H100) this policy
    against torch.fft everywhere: 0.98-1.01x the step time (the projections dominate) at 30-36%
    less peak memory (``results/bench_train_step_h100_stop11.log``); with float16 buffers and a
    looser pair scale than the shipped one, 1.03-1.04x at 2 x 64K / 2 x 128K
    (``results/bench_train_step_pairmax_h100_stop12.log``).
    """
    half = dtype in (torch.bfloat16, torch.float16)
    if plan.outer:  # measured to 4M
        if not (half and batch >= 2) or plan.n > (1 << 22):
            return False
        # with gradients 4M wins on the two-level plans over 1024 points (B >= 3: causal 1.28x,
        # circular 1.20x) and 4096 points (causal B = 2: 1.09x); 32 x 16 over 8192 points lost
        # (0.94-0.97x)
        return not needs_grad or plan.n <= (1 << 21) or plan.inner <= 4096
    if not needs_grad:
        return True
    if plan.n < 2 * MIN_FFT_SIZE:
        return False
    if plan.n <= MAX_FUSED_SIZE:
        return True
    return half and batch >= 2


def _triton_backend(
    u: Tensor,
    k: Tensor | FFTConv,
    D: Tensor | None = None,
    *,
    pregate: Tensor | None = None,
    postgate: Tensor | None = None,
    causal: bool = True,
    context: Tensor | None = None,
    freq_keep: float | None = None,
) -> Tensor:
    """Triton path through the ``dnastream::fftconv`` custom op (forward and backward kernels);
    the filter spectrum for the chosen plan is cached on an :class:`FFTConv`. Inference of a
    short filter (and streaming with ``context``) runs blocked overlap-save plans where they
    are cheaper (:func:`_blocked_inference`)."""
    from dnastream.kernels.monarch import filter_spectrum, plan_for

    k_tensor = k.k if isinstance(k, FFTConv) else k
    batch, heads, seq_len = u.shape
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, k_tensor, D, pregate, postgate, context)
    )
    inference = not needs_grad and not torch.compiler.is_compiling()
    if inference and causal and freq_keep is None and _blocks_enabled():
        y = _blocked_inference(u, k, D, pregate, postgate, context)
        if y is not None:
            return y
    if context is not None:
        return fftconv_ref(
            u, k, D, pregate=pregate, postgate=postgate, causal=causal, context=context
        )
    plan = plan_for(seq_len, k_tensor.shape[1], causal, u.dtype, batch=batch, freq_keep=freq_keep)
    forced = os.environ.get("DNASTREAM_FFTCONV", "auto") == "triton"
    if plan is None or not (forced or triton_is_faster(plan, batch, u.dtype, needs_grad)):
        return fftconv_ref(
            u, k, D, pregate=pregate, postgate=postgate, causal=causal, freq_keep=freq_keep
        )
    spectrum = None
    if isinstance(k, FFTConv):
        spectrum = k.cached(
            ("triton", plan), 2 * heads * plan.n * 4, lambda: filter_spectrum(k_tensor, plan)
        )
    # The op derives the same plan (plan_for with batch=B) from the shapes. Outside
    # torch.compile its bodies run without the operator wrapper (see forward_impl): directly
    # without gradients, through a plain autograd.Function with them (eager_fftconv).
    if inference:
        return fftconv_op.forward_impl(
            u, k_tensor, D, pregate, postgate, spectrum, causal, freq_keep
        )
    if not torch.compiler.is_compiling() and eager_ops_enabled():
        return fftconv_op.eager_fftconv(
            u, k_tensor, D, pregate, postgate, spectrum, causal, freq_keep
        )
    return torch.ops.dnastream.fftconv(
        u, k_tensor, D, pregate, postgate, spectrum, causal, freq_keep
    )


def _blocks_enabled() -> bool:
    """Blocked (overlap-save) inference plans, unless ``DNASTREAM_FFTCONV_BLOCKS=off``."""
    return os.environ.get("DNASTREAM_FFTCONV_BLOCKS", "on").strip().lower() not in {"off", "0"}


def _blocked_inference(
    u: Tensor,
    k: Tensor | FFTConv,
    D: Tensor | None,
    pregate: Tensor | None,
    postgate: Tensor | None,
    context: Tensor | None,
) -> Tensor | None:
    """The convolution by a blocked overlap-save plan (no gradients), or None when
    :func:`~dnastream.kernels.monarch.block_plan_for` finds none cheaper than the full FFT.

    With ``context`` (B, H, C) (streaming), the kernels read the first windows' start from the
    context itself (its last ``taps - 1`` samples, the only ones that reach an output): no copy.
    """
    from dnastream.kernels.monarch import block_plan_for, filter_spectrum

    k_tensor = k.k if isinstance(k, FFTConv) else k
    if u.dtype not in _TRITON_DTYPES:
        return None
    batch, heads, seq_len = u.shape
    ctx_len = 0
    if context is not None:
        keep = min(k_tensor.shape[1], seq_len + context.shape[-1]) - 1
        context = context[..., max(0, context.shape[-1] - keep) :]
        ctx_len = context.shape[-1]
    plan = block_plan_for(seq_len, k_tensor.shape[1], u.dtype, batch=batch, context=ctx_len)
    if plan is None:
        return None
    spectrum = None
    if isinstance(k, FFTConv):
        # the spectrum depends on the window, not on L: one per filter for a whole stream
        key = ("triton-window", plan.n, plan.taps, plan.n1, plan.n2, plan.outer)
        spectrum = k.cached(key, 2 * heads * plan.n * 4, lambda: filter_spectrum(k_tensor, plan))
    return fftconv_op.forward_with_plan(
        plan, u, k_tensor, D, pregate, postgate, spectrum, True, context=context
    )


def _select_backend(u: Tensor, context: Tensor | None) -> _Backend:
    """Triton for CUDA tensors of a supported dtype, else the reference (with a streaming
    ``context``, the Triton backend runs blocked plans or hands over to the reference).

    ``DNASTREAM_FFTCONV=reference`` forces the PyTorch reference, ``=triton`` forces the Triton
    kernels at every size (for comparisons); by default sizes where Triton is measured slower
    stay on torch.fft (see :func:`_triton_backend`).
    """
    if os.environ.get("DNASTREAM_FFTCONV", "auto") == "reference":
        return fftconv_ref
    if u.is_cuda and u.dtype in _TRITON_DTYPES and kernel_mode(u.device) == "compiled":
        return _triton_backend
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
    freq_keep: float | None = None,
) -> Tensor:
    """``postgate * ((pregate * u) conv k + D * (pregate * u))`` for u (B, H, L), k (H, Lk).

    ``k`` may be an :class:`FFTConv` so the filter spectrum is computed once and reused.
    ``context`` (B, H, C) holds the gated inputs preceding ``u`` (causal streaming).
    ``freq_keep`` in (0, 1]: frequency-sparse convolution, the filter keeps only the lowest
    fraction of its frequencies on the power-of-two FFT size of the Triton plans (see
    :func:`dnastream.kernels.monarch.freq_cutoff`; 1/2, 1/4, ... let the fused kernels skip the
    zero blocks); the ``D`` term is not filtered.
    On CUDA without gradients, a short filter (``Lk - 1 <= 4096``, a partial convolution) on a
    longer sequence runs overlap-save windows of one fused FFT each where that is cheaper
    (:func:`~dnastream.kernels.monarch.block_plan_for`), with or without ``context``.
    Returns y (B, H, L) in the dtype of ``u``. See :func:`fftconv_ref` for the exact maths.
    """
    k_tensor = k.k if isinstance(k, FFTConv) else k
    if not isinstance(u, Tensor) or not isinstance(k_tensor, Tensor):
        raise TypeError("fftconv: u and k must be tensors (k may be an FFTConv)")
    _validate(u, k_tensor, D, pregate, postgate, causal, context)
    if freq_keep is not None:
        if not 0.0 < float(freq_keep) <= 1.0:
            raise ValueError(f"fftconv: freq_keep must be in (0, 1], got {freq_keep}")
        if context is not None:
            raise ValueError("fftconv: freq_keep (frequency-sparse) cannot stream with context")
        freq_keep = float(freq_keep)
    backend = _select_backend(u, context)
    return backend(
        u, k, D, pregate=pregate, postgate=postgate, causal=causal, context=context,
        freq_keep=freq_keep,
    )  # fmt: skip
