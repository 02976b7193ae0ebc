"""Public causal depthwise short convolution with validation and a streaming form."""

from __future__ import annotations

from torch import Tensor

from dnastream.kernels.short_conv_ref import short_conv_ref, short_conv_state_ref

__all__ = ["MAX_SHORT_CONV_WIDTH", "short_conv", "short_conv_streaming"]

MAX_SHORT_CONV_WIDTH = 7


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
    """
    _validate(x, weight, bias, state)
    return short_conv_ref(x, weight, bias, state=state)


def short_conv_streaming(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One streaming step: returns (y (B, C, L), next state (B, C, W - 1)).

    Running chunks in order with the returned state gives exactly the whole-sequence result.
    """
    _validate(x, weight, bias, state)
    y = short_conv_ref(x, weight, bias, state=state)
    return y, short_conv_state_ref(x, weight.shape[1], state)
