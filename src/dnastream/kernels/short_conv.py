"""Public causal depthwise short convolution with validation and a streaming form.

On CUDA (with Triton installed) :func:`short_conv` runs the Triton kernels of
:mod:`dnastream.kernels.short_conv_triton` through the PyTorch custom operator
``torch.ops.dnastream.short_conv`` (with a fake/meta implementation and a registered backward,
``torch.ops.dnastream.short_conv_backward``), so ``torch.compile`` traces it as one opaque op.
Elsewhere (CPU, float64, or no Triton) it calls the PyTorch reference directly; the custom
operator itself also works on CPU, where both of its halves run the reference formulas.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from dnastream.kernels.backend import eager_ops_enabled, interpret_requested, triton_available
from dnastream.kernels.short_conv_ref import short_conv_ref, short_conv_state_ref

__all__ = [
    "MAX_SHORT_CONV_WIDTH",
    "short_conv",
    "short_conv_backward_ref",
    "short_conv_streaming",
]

MAX_SHORT_CONV_WIDTH = 7
_TRITON_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
# read once, like Triton reads TRITON_INTERPRET when its kernels are defined (and so that
# torch.compile sees a constant)
_TRITON_COMPILES = triton_available() and not interpret_requested()


def _validate(x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor | None) -> None:
    if x.dim() != 3:
        raise ValueError(f"short_conv: x must be (B, C, L), got shape {tuple(x.shape)}")
    batch, channels, _ = x.shape
    for name, t in (("x", x), ("weight", weight), ("bias", bias), ("state", state)):
        if t is None:
            continue
        if not t.dtype.is_floating_point:
            raise TypeError(f"short_conv: {name} must be floating point, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"short_conv: {name} is on {t.device} but x is on {x.device}")
    if weight.dim() != 2 or weight.shape[0] != channels:
        raise ValueError(
            f"short_conv: weight must be (C={channels}, W), got shape {tuple(weight.shape)}"
        )
    width = weight.shape[1]
    if not 1 <= width <= MAX_SHORT_CONV_WIDTH:
        raise ValueError(f"short_conv: width W must be in 1..{MAX_SHORT_CONV_WIDTH}, got {width}")
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"short_conv: bias must be (C={channels},), got {tuple(bias.shape)}")
    if state is not None and tuple(state.shape) != (batch, channels, width - 1):
        raise ValueError(
            f"short_conv: state must be (B={batch}, C={channels}, W-1={width - 1}), "
            f"got {tuple(state.shape)}"
        )


def short_conv(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, *, state: Tensor | None = None
) -> Tensor:
    """Causal depthwise conv: x (B, C, L), weight (C, W), bias (C,) -> y (B, C, L).

    ``state`` (B, C, W - 1) is the left context (the W - 1 inputs before ``x``; zeros if None).
    CUDA bf16/fp16/fp32 inputs run the Triton kernels (custom op ``dnastream::short_conv``,
    differentiable, ``torch.compile``-traceable); other inputs run :func:`short_conv_ref`.
    """
    _validate(x, weight, bias, state)
    return _dispatch(x, weight, bias, state)


def _acc_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    """Accumulation dtype of the reference: float64 if x or weight is, else float32."""
    return torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32


def _use_triton(x: Tensor, weight: Tensor) -> bool:
    """Whether the Triton kernels run for these tensors (CUDA, Triton compiled, fp32 math).

    Default on CUDA since the model ran through it on an H100 (GPU model parity tests passed;
    HyenaDNA-large forward at 1 Mbp 729 -> 521 ms, benchmarks/results/profile_model_h100.log;
    the op at 1.0x its memory floor, benchmarks/results/bench_short_conv_h100_fp16.log).
    ``DNASTREAM_SHORT_CONV=reference`` keeps the PyTorch reference.
    """
    return (
        os.environ.get("DNASTREAM_SHORT_CONV", "auto") != "reference"
        and _TRITON_COMPILES
        and x.is_cuda
        and x.dtype in _TRITON_DTYPES
        and _acc_dtype(x, weight) == torch.float32
    )


def _dispatch(x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor | None) -> Tensor:
    """Triton custom op on CUDA (bf16/fp16/fp32); the PyTorch reference otherwise."""
    if _use_triton(x, weight):
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, weight, bias, state)
        )
        if not torch.compiler.is_compiling():
            # outside torch.compile the op's bodies run without its wrapper (which imports
            # torch._dynamo on its first call, seconds in a fresh process, and adds dispatch
            # work to every call): directly in inference, through an autograd.Function in
            # training (unless DNASTREAM_EAGER_OPS=off)
            if not needs_grad:
                from dnastream.kernels.short_conv_triton import short_conv_fwd_triton

                return short_conv_fwd_triton(x, weight, bias, state)
            if eager_ops_enabled():
                return _EagerShortConv.apply(x, weight, bias, state)
        return torch.ops.dnastream.short_conv(x, weight, bias, state)
    return short_conv_ref(x, weight, bias, state=state)


def short_conv_backward_ref(
    dy: Tensor, x: Tensor, weight: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Explicit gradients of :func:`short_conv_ref` for dy (B, C, L).

    Returns dx (B, C, L) in x's dtype, and dweight (C, W), dbias (C,), dstate (B, C, W - 1) in
    the accumulation dtype (float32, or float64 when x or weight is float64); all contiguous.
    """
    width = weight.shape[1]
    seq_len = x.shape[-1]
    acc = _acc_dtype(x, weight)
    if state is None:
        state = x.new_zeros((*x.shape[:-1], width - 1))
    e = torch.cat([state.to(x.dtype), x], dim=-1).to(acc)  # (B, C, L + W - 1)
    g = dy.to(acc)
    w = weight.to(acc)
    dweight = torch.stack([(g * e[..., j : j + seq_len]).sum((0, 2)) for j in range(width)], 1)
    de = torch.zeros_like(e)
    for j in range(width):
        de[..., j : j + seq_len] += w[:, j : j + 1] * g
    fmt = torch.contiguous_format
    dx = de[..., width - 1 :].to(x.dtype).clone(memory_format=fmt)
    return dx, dweight.clone(memory_format=fmt), g.sum((0, 2)), de[..., : width - 1].clone()


# -- the custom operator (torch.compile-traceable; Triton on CUDA, reference elsewhere) -----


@torch.library.custom_op("dnastream::short_conv", mutates_args=())
def _short_conv_op(x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor | None) -> Tensor:
    """y (B, C, L), contiguous, in x's dtype."""
    if _use_triton(x, weight):
        from dnastream.kernels.short_conv_triton import short_conv_fwd_triton

        return short_conv_fwd_triton(x, weight, bias, state)
    return short_conv_ref(x, weight, bias, state=state).contiguous()


@_short_conv_op.register_fake
def _short_conv_fake(
    x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor | None
) -> Tensor:
    return x.new_empty(x.shape)


@torch.library.custom_op("dnastream::short_conv_backward", mutates_args=())
def _short_conv_backward_op(
    dy: Tensor, x: Tensor, weight: Tensor, state: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx in x's dtype, dweight (C, W), dbias (C,), dstate (B, C, W - 1) in the acc dtype)."""
    if _use_triton(x, weight):
        from dnastream.kernels.short_conv_triton import short_conv_bwd_triton

        return short_conv_bwd_triton(dy, x, weight, state)
    return short_conv_backward_ref(dy, x, weight, state)


@_short_conv_backward_op.register_fake
def _short_conv_backward_fake(
    dy: Tensor, x: Tensor, weight: Tensor, state: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    batch, channels, _ = x.shape
    width = weight.shape[1]
    acc = _acc_dtype(x, weight)
    return (
        x.new_empty(x.shape),
        weight.new_empty((channels, width), dtype=acc),
        weight.new_empty((channels,), dtype=acc),
        x.new_empty((batch, channels, width - 1), dtype=acc),
    )


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: Tensor) -> None:
    x, weight, bias, state = inputs
    ctx.save_for_backward(x, weight, state)
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.state_dtype = state.dtype if state is not None else None


def _input_grads(ctx: torch.autograd.function.FunctionCtx, grads: tuple) -> tuple:
    """The backward's (dx, dweight, dbias, dstate) as the inputs' gradients: the needed ones,
    in their inputs' dtypes."""
    dx, dweight, dbias, dstate = grads
    need_x, need_w, need_b, need_s = ctx.needs_input_grad
    return (
        dx if need_x else None,
        dweight.to(ctx.saved_tensors[1].dtype) if need_w else None,
        dbias.to(ctx.bias_dtype) if need_b and ctx.bias_dtype is not None else None,
        dstate.to(ctx.state_dtype) if need_s and ctx.state_dtype is not None else None,
    )


def _backward(ctx: torch.autograd.function.FunctionCtx, dy: Tensor) -> tuple:
    x, weight, state = ctx.saved_tensors
    return _input_grads(ctx, torch.ops.dnastream.short_conv_backward(dy, x, weight, state))


_short_conv_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerShortConv(torch.autograd.Function):
    """The operator's forward, setup and backward around the Triton kernels, without the
    operators (eager training; :func:`_dispatch`): the same kernels and gradients."""

    @staticmethod
    def forward(x, weight, bias, state):  # type: ignore[override]
        from dnastream.kernels.short_conv_triton import short_conv_fwd_triton

        return short_conv_fwd_triton(x, weight, bias, state)

    setup_context = staticmethod(_setup_context)

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        from dnastream.kernels.short_conv_triton import short_conv_bwd_triton

        x, weight, state = ctx.saved_tensors
        return _input_grads(ctx, short_conv_bwd_triton(dy, x, weight, state))


def short_conv_streaming(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One streaming step: returns (y (B, C, L), next state (B, C, W - 1)).

    Running chunks in order with the returned state gives exactly the whole-sequence result.
    """
    _validate(x, weight, bias, state)
    y = _dispatch(x, weight, bias, state)
    return y, short_conv_state_ref(x, weight.shape[1], state)
