"""The FFT long convolution as PyTorch custom operators (``torch.library``).

``torch.ops.dnastream.fftconv(u, k, D, pregate, postgate, k_spectrum, causal, freq_keep=None)``
computes ``postgate * ((pregate * u) conv k + D * (pregate * u))`` for u (B, H, L), k (H, Lk)
(``freq_keep``: frequency-sparse filter, see :func:`~dnastream.kernels.monarch.freq_cutoff`), and
``torch.ops.dnastream.fftconv_backward`` its gradients. Both have fake (meta) implementations
and the forward has an autograd registration, so ``torch.compile`` traces them as single nodes
and ``torch.library.opcheck`` passes.

Kernels: on CUDA, bf16/fp16/fp32 inputs whose length has a plan run the Triton Monarch-FFT
kernels (:mod:`dnastream.kernels.fftconv_triton`), forward and backward; everything else
(CPU, float64, lengths without a plan) runs the PyTorch reference twins
:func:`~dnastream.kernels.fftconv_ref.fftconv_ref` and
:func:`~dnastream.kernels.fftconv_ref.fftconv_backward_ref`.

``k_spectrum`` is an optional cached filter spectrum for the Triton plan
``plan_for(L, Lk, causal, u.dtype, batch=B)`` (``filter_spectrum(k, plan)``, shape (2, H, N));
the reference ignores it. Inputs are not validated here beyond what the kernels need: the public
:func:`dnastream.kernels.fftconv` validates them first.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from dnastream.kernels.fftconv_ref import fftconv_backward_ref, fftconv_ref

__all__ = ["backward_impl", "eager_fftconv", "forward_impl", "forward_with_plan", "triton_plan"]

_TRITON_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

#: Tests set this to run the Triton branch under ``TRITON_INTERPRET=1`` on the CPU.
INTERPRET_ON_CPU = False


def triton_plan(
    u: Tensor,
    k: Tensor,
    causal: bool,
    pregate: Tensor | None = None,
    postgate: Tensor | None = None,
    *,
    tuned: bool = False,
    freq_keep: float | None = None,
):
    """The Triton plan the op uses for these inputs, or None when it runs the reference.

    ``tuned``: apply the launch settings stored for this GPU by :mod:`dnastream.kernels.autotune`
    (and, with ``DNASTREAM_AUTOTUNE=1`` on CUDA, tune this shape once first). The plan structure
    (and so the filter spectrum's layout) is the same as ``plan_for``'s either way.
    """
    if u.dtype not in _TRITON_DTYPES or k.dtype == torch.float64:
        return None
    if not (u.is_cuda or (INTERPRET_ON_CPU and u.device.type == "cpu")):
        return None
    from dnastream.kernels.fftconv_triton import plan_for, uses_triton

    if not uses_triton(u.device):
        return None
    batch, _, seq_len = u.shape
    if not tuned or freq_keep is not None:
        return plan_for(seq_len, k.shape[1], causal, u.dtype, batch=batch, freq_keep=freq_keep)
    from dnastream.kernels import autotune

    gated = pregate is not None or postgate is not None
    autotune.maybe_tune(u, k, causal, pregate, postgate)  # no-op unless DNASTREAM_AUTOTUNE=1
    return autotune.tuned_plan(
        seq_len, k.shape[1], causal, u.dtype, batch=batch, gated=gated, device=u.device
    )


def _spectrum(plan, k: Tensor, k_spectrum: Tensor | None) -> Tensor:
    from dnastream.kernels.fftconv_triton import filter_spectrum

    if k_spectrum is None:
        return filter_spectrum(k, plan)
    if k_spectrum.shape != (2, k.shape[0], plan.n) or k_spectrum.dtype != torch.float32:
        raise ValueError(
            f"dnastream::fftconv: k_spectrum must be float32 (2, H={k.shape[0]}, N={plan.n}) "
            f"for plan {plan.describe()}, got {tuple(k_spectrum.shape)} {k_spectrum.dtype}"
        )
    return k_spectrum.contiguous()


def _opt(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.contiguous()


_WARNED: set[str] = set()


def _unless_out_of_resources(plan, launch, *args):
    """``launch(*args)``, or None after Triton's launch-time "out of resource" (a plan needing
    more shared memory or registers than this GPU has; warned about once per plan), when the
    caller runs the reference instead. Any other error propagates."""
    try:
        return launch(*args)
    except Exception as exc:
        if type(exc).__name__ != "OutOfResources":
            raise
        _warn_out_of_resources(plan, exc)
        return None


def _warn_out_of_resources(plan, exc: BaseException) -> None:
    key = plan.describe()
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(
            f"dnastream: the FFT-convolution plan {key} does not fit this GPU ({exc}); "
            "running the PyTorch reference for it instead (set DNASTREAM_FFTCONV=reference "
            "to skip the attempt)",
            RuntimeWarning,
            stacklevel=4,
        )


def forward_impl(
    u: Tensor,
    k: Tensor,
    D: Tensor | None,
    pregate: Tensor | None,
    postgate: Tensor | None,
    k_spectrum: Tensor | None,
    causal: bool,
    freq_keep: float | None = None,
) -> Tensor:
    """What ``torch.ops.dnastream.fftconv`` computes, without the operator around it: y (B, H,
    L), contiguous, in u's dtype. Not differentiable. Callers that need no gradient and are
    not being traced (inference) call it directly: the operator's wrapper imports
    ``torch._dynamo`` on its first call (1.5 s on a CPU here, more on a cold GPU host) and
    adds dispatch overhead to every call."""
    plan = triton_plan(u, k, causal, pregate, postgate, tuned=True, freq_keep=freq_keep)
    return forward_with_plan(plan, u, k, D, pregate, postgate, k_spectrum, causal, freq_keep)


def forward_with_plan(
    plan,
    u: Tensor,
    k: Tensor,
    D: Tensor | None,
    pregate: Tensor | None,
    postgate: Tensor | None,
    k_spectrum: Tensor | None,
    causal: bool,
    freq_keep: float | None = None,
    context: Tensor | None = None,
    pair_max: list[Tensor | None] | None = None,
) -> Tensor:
    """:func:`forward_impl` with the Triton plan given (None: the reference), e.g. a blocked
    (overlap-save) plan from :func:`~dnastream.kernels.monarch.block_plan_for`, which only
    inference uses. ``k_spectrum`` must be the plan's (or None). ``context`` (B, H, C):
    streaming, blocked plans only (the gated samples before u, as in ``fftconv_ref``).
    ``pair_max``: see :func:`~dnastream.kernels.fftconv_triton.conv_forward`."""
    if plan is not None:
        from dnastream.kernels.fftconv_triton import conv_forward

        spec = _spectrum(plan, k, k_spectrum)
        args = (plan, u.contiguous(), spec, _opt(D), _opt(pregate), _opt(postgate), _opt(context),
                pair_max)  # fmt: skip
        y = _unless_out_of_resources(plan, conv_forward, *args)
        if y is not None:
            return y
    y = fftconv_ref(
        u, k, D, pregate=pregate, postgate=postgate, causal=causal, context=context,
        freq_keep=freq_keep,
    )  # fmt: skip
    return y.contiguous()


# the operator runs forward_impl (which stays callable as a plain function)
_fftconv_op = torch.library.custom_op("dnastream::fftconv", mutates_args=())(forward_impl)


@_fftconv_op.register_fake
def _fftconv_fake(
    u: Tensor,
    k: Tensor,
    D: Tensor | None,
    pregate: Tensor | None,
    postgate: Tensor | None,
    k_spectrum: Tensor | None,
    causal: bool,
    freq_keep: float | None = None,
) -> Tensor:
    return u.new_empty(u.shape)


def _empty(like: Tensor) -> Tensor:
    return like.new_empty((0,))


def backward_impl(
    dy: Tensor,
    u: Tensor,
    k: Tensor,
    D: Tensor | None,
    pregate: Tensor | None,
    postgate: Tensor | None,
    k_spectrum: Tensor | None,
    causal: bool,
    need_u: bool,
    need_k: bool,
    need_d: bool,
    need_pregate: bool,
    need_postgate: bool,
    freq_keep: float | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """What ``torch.ops.dnastream.fftconv_backward`` computes, without the operator around it:
    (du, dk, dD, dpregate, dpostgate) in the dtypes of (u, k, D, pregate, postgate); a
    gradient that is not needed (or whose input is None) comes back as an empty (0,) tensor."""
    needs = (need_u, need_k, need_d, need_pregate, need_postgate)
    return _backward_body(dy, u, k, D, pregate, postgate, k_spectrum, causal, needs, freq_keep)


def _backward_body(
    dy: Tensor,
    u: Tensor,
    k: Tensor,
    D: Tensor | None,
    pregate: Tensor | None,
    postgate: Tensor | None,
    k_spectrum: Tensor | None,
    causal: bool,
    needs: tuple[bool, ...],
    freq_keep: float | None = None,
    u_max: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:func:`backward_impl`; ``u_max``: the forward's pair maxima of (u, pregate) where it
    kept them (eager training), else None (recomputed where the plan needs them)."""
    plan = triton_plan(u, k, causal, pregate, postgate, tuned=True, freq_keep=freq_keep)
    grads = None
    if plan is not None:
        from dnastream.kernels.fftconv_triton import conv_backward

        spec = _spectrum(plan, k, k_spectrum)
        args = (plan, dy, u.contiguous(), k, _opt(D), _opt(pregate), _opt(postgate), spec, needs,
                u_max)  # fmt: skip
        grads = _unless_out_of_resources(plan, conv_backward, *args)
    if grads is None:
        grads = fftconv_backward_ref(
            dy, u, k, D, pregate=pregate, postgate=postgate, causal=causal, needs=needs,
            freq_keep=freq_keep,
        )  # fmt: skip
    return tuple(_empty(dy) if g is None else g.contiguous() for g in grads)  # type: ignore[return-value]


_fftconv_backward_op = torch.library.custom_op("dnastream::fftconv_backward", mutates_args=())(
    backward_impl
)


def _grad_shapes(
    dy: Tensor,
    u: Tensor,
    k: Tensor,
    D: Tensor | None,
    pregate: Tensor | None,
    postgate: Tensor | None,
    needs: tuple[bool, ...],
) -> tuple[Tensor, ...]:
    out = []
    for need, like in zip(needs, (u, k, D, pregate, postgate), strict=True):
        out.append(like.new_empty(like.shape) if need and like is not None else _empty(dy))
    return tuple(out)


@_fftconv_backward_op.register_fake
def _fftconv_backward_fake(
    dy: Tensor,
    u: Tensor,
    k: Tensor,
    D: Tensor | None,
    pregate: Tensor | None,
    postgate: Tensor | None,
    k_spectrum: Tensor | None,
    causal: bool,
    need_u: bool,
    need_k: bool,
    need_d: bool,
    need_pregate: bool,
    need_postgate: bool,
    freq_keep: float | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    needs = (need_u, need_k, need_d, need_pregate, need_postgate)
    return _grad_shapes(dy, u, k, D, pregate, postgate, needs)  # type: ignore[return-value]


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: Tensor) -> None:
    u, k, D, pregate, postgate, k_spectrum, causal, freq_keep = inputs
    ctx.save_for_backward(u, k, D, pregate, postgate, k_spectrum)
    ctx.causal = causal
    ctx.freq_keep = freq_keep


def _backward(ctx: torch.autograd.function.FunctionCtx, dy: Tensor) -> tuple:
    u, k, D, pregate, postgate, k_spectrum = ctx.saved_tensors
    needs = tuple(bool(n) for n in ctx.needs_input_grad[:5])
    grads = torch.ops.dnastream.fftconv_backward(
        dy, u, k, D, pregate, postgate, k_spectrum, ctx.causal, *needs, ctx.freq_keep
    )
    out = tuple(g if need else None for g, need in zip(grads, needs, strict=True))
    return (*out, None, None, None)


_fftconv_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerFFTConv(torch.autograd.Function):
    """The operator's autograd formula around its bodies, without the operators (eager
    training): the same kernels and results, less dispatch per step (a CPU here: 375 vs 252 us
    per forward+backward of a small convolution, 139 us of it the work itself) and no
    ``torch._dynamo`` import; the forward's pair maxima (scaled float16 buffers) reach the
    backward, which the operators recompute. Like the operators, not for ``torch.func``
    transforms."""

    @staticmethod
    def forward(ctx, u, k, D, pregate, postgate, k_spectrum, causal, freq_keep, plan):  # type: ignore[override]
        if plan is not None and k_spectrum is None:
            # computed once and kept for the backward (the operators compute it in each pass)
            k_spectrum = _spectrum(plan, k, None)
        maxima: list[Tensor | None] = [None]  # scaled float16 buffers: kept for the backward
        y = forward_with_plan(
            plan, u, k, D, pregate, postgate, k_spectrum, causal, freq_keep, pair_max=maxima
        )
        ctx.save_for_backward(u, k, D, pregate, postgate, k_spectrum)
        ctx.causal, ctx.freq_keep, ctx.u_max = causal, freq_keep, maxima[0]
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        u, k, D, pregate, postgate, k_spectrum = ctx.saved_tensors
        needs = tuple(bool(n) for n in ctx.needs_input_grad[:5])
        grads = _backward_body(
            dy, u, k, D, pregate, postgate, k_spectrum, ctx.causal, needs, ctx.freq_keep,
            ctx.u_max,
        )  # fmt: skip
        out = tuple(g if need else None for g, need in zip(grads, needs, strict=True))
        return (*out, None, None, None, None)


def eager_fftconv(
    u: Tensor,
    k: Tensor,
    D: Tensor | None,
    pregate: Tensor | None,
    postgate: Tensor | None,
    k_spectrum: Tensor | None,
    causal: bool,
    freq_keep: float | None = None,
) -> Tensor:
    """``torch.ops.dnastream.fftconv`` with its gradients, for eager mode: y (B, H, L) from
    the same forward and backward bodies through a plain ``autograd.Function`` (no operator
    dispatch). Under ``torch.compile`` call the operator, which traces as one node. Without a
    cached ``k_spectrum`` the filter spectrum is computed once, in the forward, and kept for the
    backward (the operators compute it in both passes)."""
    plan = triton_plan(u, k, causal, pregate, postgate, tuned=True, freq_keep=freq_keep)
    return _EagerFFTConv.apply(u, k, D, pregate, postgate, k_spectrum, causal, freq_keep, plan)
