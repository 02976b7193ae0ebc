"""HyenaDNA implicit long filter, materialised once per length and cached.

For tap positions p = 0..K-1 with stored positional features z_p (emb_dim) and times t_p:

    h_p = W_last sin(f * (W_2 sin(f * (W_1 sin(f * (W_0 z_p + b_0)) + b_1)) + b_2))
    k[c, p] = h_p[c] * (exp(-t_p |delta_c|) + shift)          (if ``modulate``)

with one Sin frequency vector f shared by all Sin activations and no bias on W_last.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dnastream.kernels import FFTConv
from dnastream.models.config import HyenaLayerConfig

__all__ = ["FilterLengthError", "HyenaFilter", "decay_rates", "positional_features"]


#: Largest materialised filter (bytes, per layer) kept between calls. At 1M taps over 256
#: channels a filter is 1 GiB per layer; it is then recomputed per call (a small MLP over the
#: positions), which keeps a long forward lean instead of pinning gigabytes for the whole run.
FILTER_CACHE_BYTES = 256 * 2**20


class FilterLengthError(ValueError):
    """An input is longer than the long filters can cover."""


def positional_features(seq_len: int, emb_dim: int) -> tuple[Tensor, Tensor]:
    """Default positional features z (seq_len, emb_dim) and times t (seq_len, 1).

    z = [t, Re exp(-i f w), Im exp(-i f w)] with t in [0, 1], w = 2 pi p / seq_len and
    (emb_dim - 1) / 2 frequency bands f. Checkpoints store z and t; these are only defaults.
    """
    bands = (emb_dim - 1) // 2
    t = torch.linspace(0, 1, seq_len)[:, None]
    w = 2 * math.pi * torch.linspace(0, seq_len - 1, seq_len)[:, None] / seq_len
    f = torch.linspace(1e-4, bands - 1, bands)[None, :]
    z = torch.exp(-1j * f * w)
    return torch.cat([t, z.real, z.imag], dim=-1), t


def decay_rates(channels: int, cfg: HyenaLayerConfig) -> Tensor:
    """Per-channel decay rates delta (channels,) spanning slow to fast decay."""
    max_decay = math.log(cfg.target) / cfg.fast_decay_pct
    min_decay = math.log(cfg.target) / cfg.slow_decay_pct
    return torch.linspace(min_decay, max_decay, channels)


@dataclass(frozen=True)
class _KernelCache:
    stamp: tuple[object, ...]
    tensors: tuple[Tensor, ...]
    filters: list[FFTConv]


class HyenaFilter(nn.Module):
    """Implicit long filters for ``groups`` x ``channels`` channels plus the skip term D.

    Buffers: ``z`` (l_max, emb_dim), ``t`` (l_max, 1), ``deltas`` (groups * channels,).
    Parameters: ``mlp`` Linear stack, ``freq`` (filter_order,), ``bias`` = D
    (groups * channels,).
    """

    def __init__(
        self,
        channels: int,
        groups: int,
        cfg: HyenaLayerConfig,
        *,
        modulation_shift: float,
        filter_len: int | None = None,
    ) -> None:
        super().__init__()
        width = channels * groups
        self.channels = channels
        self.groups = groups
        self.l_max = cfg.l_max
        self.filter_len = filter_len
        self.modulate = cfg.modulate
        self.normalized = cfg.normalized
        self._shift = float(modulation_shift)

        z, t = positional_features(cfg.l_max, cfg.emb_dim)
        self.register_buffer("z", z)
        self.register_buffer("t", t)
        self.register_buffer("deltas", decay_rates(width, cfg))
        order = cfg.filter_order
        dims = [cfg.emb_dim] + [order] * (cfg.num_inner_mlps + 1)
        layers = [nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        self.mlp = nn.ModuleList([*layers, nn.Linear(order, width, bias=False)])
        self.freq = nn.Parameter(torch.full((order,), float(cfg.w)), requires_grad=cfg.train_freq)
        self.bias = nn.Parameter(torch.randn(width))
        self._cache: _KernelCache | None = None

    # -- configuration ----------------------------------------------------------------------

    @property
    def modulation_shift(self) -> float:
        """Constant added to the exponential decay (0.05 inference code, 0.0 training code)."""
        return self._shift

    @modulation_shift.setter
    def modulation_shift(self, value: float) -> None:
        self._shift = float(value)
        self.clear_cache()

    def set_filter_len(self, filter_len: int | None) -> None:
        """Truncate the filters to ``filter_len`` taps (None: full l_max)."""
        if filter_len is not None and not 1 <= filter_len <= self.l_max:
            raise ValueError(f"filter_len must be in 1..l_max={self.l_max}, got {filter_len}")
        self.filter_len = filter_len
        self.clear_cache()

    def taps_for(self, seq_len: int) -> int:
        """Number of taps used for a causal convolution over ``seq_len`` positions."""
        if self.filter_len is None:
            if seq_len > self.l_max:
                raise FilterLengthError(
                    f"input length {seq_len} exceeds the model's l_max={self.l_max}: the long "
                    f"filters only have {self.l_max} taps. Set filter_len=K (K <= {self.l_max}) "
                    "to truncate every long filter to its first K taps, which allows any length "
                    "(load_model(..., filter_len=K) or model.set_filter_len(K))."
                )
            return seq_len
        return min(seq_len, self.filter_len)

    # -- materialisation --------------------------------------------------------------------

    def compute_kernel(self, taps: int) -> Tensor:
        """Materialise the filters for tap positions 0..taps-1: (groups * channels, taps).

        Computed in float32 at least (float64 for a float64 model).
        """
        if not 1 <= taps <= self.l_max:
            raise ValueError(f"taps must be in 1..{self.l_max}, got {taps}")
        dtype = torch.float64 if self.z.dtype == torch.float64 else torch.float32
        freq = self.freq.to(dtype)
        h = self.z[:taps].to(dtype)
        last = len(self.mlp) - 1
        for i, linear in enumerate(self.mlp):
            bias = linear.bias.to(dtype) if linear.bias is not None else None
            h = nn.functional.linear(h, linear.weight.to(dtype), bias)
            if i < last:
                h = torch.sin(freq * h)
        if self.modulate:
            decay = torch.exp(-self.t[:taps].to(dtype) * self.deltas.to(dtype).abs())
            h = h * (decay + self._shift)
        if self.normalized:
            h = h / h.abs().sum(dim=-1, keepdim=True)
        return h.transpose(0, 1)

    def _kernel_tensors(self) -> list[Tensor]:
        tensors = [self.z, self.t, self.deltas, self.freq]
        for linear in self.mlp:
            tensors.extend(p for p in (linear.weight, linear.bias) if p is not None)
        return tensors

    def _cache_stamp(self, taps: int) -> tuple[object, ...]:
        """What the materialised filters depend on: length, shift, mode and tensor versions."""
        versions = tuple(
            (t.data_ptr(), t._version, t.dtype, t.device) for t in self._kernel_tensors()
        )
        return (taps, self._shift, torch.is_inference_mode_enabled(), versions)

    def fft_filters(self, taps: int) -> list[FFTConv]:
        """The long filters as ``groups`` :class:`FFTConv` objects of (channels, taps) each.

        Cached (filters and their spectra) across calls in eval mode while no gradient is
        needed and the filters take at most :data:`FILTER_CACHE_BYTES`; recomputed when any
        filter parameter or buffer changes (in-place updates bump the tensor version, replacing
        ``.data`` changes the address), when the shift or filter_len changes, or in training.
        """
        needs_grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in self._kernel_tensors()
        )
        nbytes = self.channels * self.groups * taps * self.z.element_size()
        cacheable = not self.training and not needs_grad and nbytes <= FILTER_CACHE_BYTES
        stamp = self._cache_stamp(taps)
        if cacheable and self._cache is not None and self._cache.stamp == stamp:
            return self._cache.filters
        kernel = self.compute_kernel(taps)
        filters = [FFTConv(k) for k in kernel.split(self.channels, dim=0)]
        # holding the tensors keeps their memory from being reused under the same address
        keep = tuple(t.detach() for t in self._kernel_tensors())
        self._cache = _KernelCache(stamp, keep, filters) if cacheable else None
        return filters

    def clear_cache(self) -> None:
        """Forget the materialised filters (they are recomputed on the next call)."""
        self._cache = None

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> HyenaFilter:
        """Moving or casting the module (``.to``, ``.double()``...) drops the cache."""
        self.clear_cache()
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, groups={self.groups}, l_max={self.l_max}, "
            f"filter_len={self.filter_len}, modulation_shift={self._shift}"
        )
