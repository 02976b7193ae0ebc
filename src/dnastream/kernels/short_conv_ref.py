"""Reference causal depthwise short convolution (the HyenaDNA ``short_filter``).

For x (..., C, L), weight (C, W) and left context s (..., C, W - 1) (zeros by default):

    e = concat(s, x)                                   # (..., C, L + W - 1)
    y[..., c, t] = bias[c] + sum_j weight[c, j] * e[..., c, t + j]

which is ``Conv1d(C, C, W, padding=W - 1, groups=C)`` truncated to the first L outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["short_conv_ref", "short_conv_state_ref"]


def _extend(x: Tensor, width: int, state: Tensor | None) -> Tensor:
    """Prepend the W - 1 left-context columns: (..., C, L) -> (..., C, L + W - 1)."""
    if state is None:
        state = x.new_zeros((*x.shape[:-1], width - 1))
    return torch.cat([state.to(x.dtype), x], dim=-1)


def short_conv_ref(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, *, state: Tensor | None = None
) -> Tensor:
    """Causal depthwise convolution y (..., C, L) of x (..., C, L) with weight (C, W).

    ``state`` (..., C, W - 1) holds the inputs that precede ``x`` (zeros if None).
    Accumulates in float32 at least (float64 for float64 inputs); returns x's dtype.
    """
    width = weight.shape[-1]
    seq_len = x.shape[-1]
    acc_dtype = torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32
    e = _extend(x, width, state).to(acc_dtype)
    w = weight.to(acc_dtype)
    y = w[:, 0:1] * e[..., 0:seq_len]
    for j in range(1, width):
        y = y + w[:, j : j + 1] * e[..., j : j + seq_len]
    if bias is not None:
        y = y + bias.to(acc_dtype).unsqueeze(-1)
    return y.to(x.dtype)


def short_conv_state_ref(x: Tensor, width: int, state: Tensor | None = None) -> Tensor:
    """Left context for the next chunk: the last W - 1 inputs of concat(state, x)."""
    e = _extend(x, width, state)
    return e[..., e.shape[-1] - (width - 1) :]
