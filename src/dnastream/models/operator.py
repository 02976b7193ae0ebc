"""HyenaDNA mixer: the order-N Hyena operator, split into separately callable pieces.

For u (B, L, d) and order N (2 in all published checkpoints):

    z = short_conv(in_proj(u))                 # (B, (N + 1) d, L), causal width-W conv
    x_0, ..., x_{N-1}, v = split(z)            # each (B, d, L)
    for i = N-1 .. 1:  v = (x_i * v) conv k_i + D_i * (x_i * v)    # causal long conv
    y = out_proj(x_0 * v)

The pieces (:meth:`project_in`, :meth:`short_filter`, :meth:`split`, :meth:`long_conv`,
:meth:`project_out`) take explicit left context so a streaming engine can run the operator
chunk by chunk: per layer it carries the last W - 1 inputs of the short conv and, per long
conv, the last K - 1 gated inputs ``x_i * v``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dnastream.kernels import FFTConv, fftconv, short_conv
from dnastream.models.config import HyenaLayerConfig
from dnastream.models.filter import HyenaFilter

__all__ = ["HyenaOperator", "ShortConv"]


class ShortConv(nn.Module):
    """Causal depthwise convolution with ``weight`` (C, W) and ``bias`` (C,)."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        bound = 1.0 / width**0.5
        self.weight = nn.Parameter(torch.empty(channels, width).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(channels).uniform_(-bound, bound))

    @property
    def width(self) -> int:
        """Kernel width W."""
        return self.weight.shape[1]

    def forward(self, x: Tensor, state: Tensor | None = None) -> Tensor:
        """x (B, C, L), optional left context ``state`` (B, C, W - 1) -> (B, C, L)."""
        return short_conv(x, self.weight, self.bias, state=state)


class HyenaOperator(nn.Module):
    """Hyena operator of order ``cfg.order`` over ``d_model`` channels."""

    def __init__(
        self,
        d_model: int,
        cfg: HyenaLayerConfig,
        *,
        modulation_shift: float,
        filter_len: int | None = None,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.order = cfg.order
        width = d_model * (cfg.order + 1)
        self.in_proj = nn.Linear(d_model, width)
        self.short_conv = ShortConv(width, cfg.local_order)
        self.filter = HyenaFilter(
            d_model,
            cfg.order - 1,
            cfg,
            modulation_shift=modulation_shift,
            filter_len=filter_len,
        )
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    # -- pieces -----------------------------------------------------------------------------

    def project_in(self, u: Tensor) -> Tensor:
        """in_proj: u (B, L, d) -> (B, (N + 1) d, L)."""
        return self.in_proj(u).transpose(1, 2)

    def short_filter(self, z: Tensor, state: Tensor | None = None) -> Tensor:
        """Short causal conv of the projections (B, (N + 1) d, L); ``state`` (B, C, W - 1)."""
        return self.short_conv(z, state)

    def split(self, z: Tensor) -> tuple[list[Tensor], Tensor]:
        """(B, (N + 1) d, L) -> ([x_0, ..., x_{N-1}], v), each (B, d, L)."""
        *xs, v = z.split(self.d_model, dim=1)
        return xs, v

    def long_conv(
        self,
        xs: list[Tensor],
        v: Tensor,
        filters: list[FFTConv],
        contexts: list[Tensor | None] | None = None,
    ) -> Tensor:
        """Gated long convolutions, returning ``x_0 * v_final`` (B, d, L).

        ``filters[o]`` (from :meth:`HyenaFilter.fft_filters`) is the o-th long filter;
        ``contexts[o]`` (B, d, C) holds the gated inputs ``x_i * v`` preceding this chunk for
        step o (steps run i = N-1 down to 1).
        """
        n_steps = self.order - 1
        contexts = contexts if contexts is not None else [None] * n_steps
        d_skip = self.filter.bias.view(n_steps, self.d_model)
        fuse_gate = not (self.training and self.dropout.p > 0)
        for o, x_i in enumerate(reversed(xs[1:])):
            post = xs[0] if o == n_steps - 1 else None
            if fuse_gate:
                v = fftconv(
                    v, filters[o], d_skip[o], pregate=x_i, postgate=post, context=contexts[o]
                )
            else:
                g = self.dropout(v * x_i)
                v = fftconv(g, filters[o], d_skip[o], postgate=post, context=contexts[o])
        return v

    def project_out(self, y: Tensor) -> Tensor:
        """out_proj: y (B, d, L) -> (B, L, d)."""
        return self.out_proj(y.transpose(1, 2))

    # -- whole sequence ---------------------------------------------------------------------

    def forward(self, u: Tensor) -> Tensor:
        """u (B, L, d) -> (B, L, d) for a whole sequence (no left context)."""
        seq_len = u.shape[1]
        filters = self.filter.fft_filters(self.filter.taps_for(seq_len))
        z = self.short_filter(self.project_in(u))
        xs, v = self.split(z)
        return self.project_out(self.long_conv(xs, v, filters))
