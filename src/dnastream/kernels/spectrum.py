"""FFT sizes and filter spectra shared by the long-convolution kernels."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["SPECTRUM_CACHE_BYTES", "FFTConv", "compute_dtype", "fft_size", "next_fast_len"]

#: Largest spectrum (bytes) an :class:`FFTConv` keeps between calls. Bigger spectra (a 1 Mbp
#: convolution over 256 channels is 2 GiB) are recomputed per call: one rfft of the filter is
#: cheap next to holding gigabytes per layer for the whole run.
SPECTRUM_CACHE_BYTES = 256 * 2**20


def next_fast_len(n: int) -> int:
    """Smallest integer >= ``n`` whose only prime factors are 2, 3 and 5 (fast for any FFT)."""
    if n < 1:
        raise ValueError(f"FFT length must be >= 1, got {n}")
    best = 1 << (n - 1).bit_length()  # next power of two is always an upper bound
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            # smallest power of two that brings p35 up to n
            m = p35 if p35 >= n else p35 << ((-(-n // p35)) - 1).bit_length()
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def fft_size(seq_len: int, filter_len: int, *, causal: bool = True) -> int:
    """FFT length for a convolution of ``seq_len`` inputs with ``filter_len`` taps.

    Causal (linear) convolution needs ``n >= seq_len + filter_len - 1`` so that no output
    wraps around; circular convolution of length ``seq_len`` uses exactly ``n = seq_len``.
    """
    if causal:
        return next_fast_len(seq_len + filter_len - 1)
    return seq_len


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """FFT working precision: float64 if any operand is float64, else float32."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


class FFTConv:
    """A fixed long filter ``k`` (H, Lk) whose spectra are computed once and reused.

    ``spectrum(n, taps, dtype)`` returns ``rfft(k[:, :taps], n)`` (H, n // 2 + 1), cached per
    ``(n, taps, dtype)`` when it is at most :data:`SPECTRUM_CACHE_BYTES`. Nothing is cached
    while the result would carry an autograd graph
    (``k.requires_grad`` with grad mode on), so training never reuses a stale graph. Pass the
    object instead of a tensor as ``k`` to :func:`dnastream.kernels.fftconv`.
    """

    def __init__(self, k: Tensor) -> None:
        if k.dim() != 2:
            raise ValueError(f"FFTConv filter must be (H, Lk), got shape {tuple(k.shape)}")
        self.k = k
        self._spectra: dict[tuple[object, ...], Tensor] = {}

    @property
    def channels(self) -> int:
        """Number of channels H."""
        return self.k.shape[0]

    @property
    def filter_len(self) -> int:
        """Number of taps Lk."""
        return self.k.shape[1]

    def spectrum(self, n: int, taps: int, dtype: torch.dtype) -> Tensor:
        """``rfft`` of the first ``taps`` taps zero-padded to ``n``: complex (H, n // 2 + 1)."""
        if torch.compiler.is_compiling():  # a traced graph recomputes it; no Python cache
            return torch.fft.rfft(self.k[:, :taps].to(dtype), n=n)
        nbytes = self.channels * (n // 2 + 1) * 2 * torch.finfo(dtype).bits // 8
        cacheable = nbytes <= SPECTRUM_CACHE_BYTES and not (
            torch.is_grad_enabled() and self.k.requires_grad
        )
        key = (n, taps, dtype, torch.is_inference_mode_enabled())
        if cacheable and key in self._spectra:
            return self._spectra[key]
        k_f = torch.fft.rfft(self.k[:, :taps].to(dtype), n=n)
        assert k_f.dtype == _complex_of(dtype)
        if cacheable:
            self._spectra[key] = k_f
        return k_f

    def cached(self, key: tuple[object, ...], nbytes: int, compute: Callable[[], Tensor]) -> Tensor:
        """Any other per-filter derived tensor (e.g. a Triton plan's spectrum), cached by ``key``.

        Same rules as :meth:`spectrum`: nothing is kept above :data:`SPECTRUM_CACHE_BYTES` or
        while ``k`` needs gradients.
        """
        if torch.compiler.is_compiling():
            return compute()
        cacheable = nbytes <= SPECTRUM_CACHE_BYTES and not (
            torch.is_grad_enabled() and self.k.requires_grad
        )
        full_key = ("derived", *key, torch.is_inference_mode_enabled())
        if cacheable and full_key in self._spectra:
            return self._spectra[full_key]  # type: ignore[index]
        value = compute()
        if cacheable:
            self._spectra[full_key] = value  # type: ignore[index]
        return value

    def clear(self) -> None:
        """Drop all cached spectra."""
        self._spectra.clear()

    def __repr__(self) -> str:
        return (
            f"FFTConv(channels={self.channels}, filter_len={self.filter_len}, "
            f"dtype={self.k.dtype}, cached_spectra={len(self._spectra)})"
        )
