"""Reference FFT long convolution in plain PyTorch (any device, differentiable).

Computes, per batch row b and channel h,

    g = pregate * u
    y = postgate * (g conv k + D * g)

where ``g conv k`` is the causal (linear, zero-padded) convolution
``(g conv k)[t] = sum_{j < Lk, j <= t} k[j] g[t - j]``, or the circular convolution of
length L when ``causal=False``. The FFT runs in float32 (float64 if an operand is float64).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dnastream.kernels.spectrum import FFTConv, compute_dtype, fft_size

__all__ = ["fftconv_ref"]


def fftconv_ref(
    u: Tensor,
    k: Tensor | FFTConv,
    D: Tensor | None = None,
    *,
    pregate: Tensor | None = None,
    postgate: Tensor | None = None,
    causal: bool = True,
    context: Tensor | None = None,
) -> Tensor:
    """Long convolution of ``u`` (..., H, L) with the filter ``k`` (H, Lk) via real FFTs.

    Args:
        u: input (..., H, L).
        k: filter (H, Lk) or an :class:`FFTConv` holding it (reuses cached spectra).
            Causal: taps beyond the input length cannot reach an output and are ignored.
            Circular: Lk <= L.
        D: optional skip term (H,), added as ``D * g``.
        pregate, postgate: optional gates shaped like ``u``.
        causal: linear convolution (True) or circular convolution of length L (False).
        context: causal only; the previous ``g`` values (..., H, C) that precede ``u`` in
            time (streaming). Outputs are returned for the L new positions only.

    Returns:
        y (..., H, L) in the dtype of ``u``.
    """
    spec = k if isinstance(k, FFTConv) else FFTConv(k)
    dtype = compute_dtype(u.dtype, spec.k.dtype)
    seq_len = u.shape[-1]

    g = u.to(dtype)
    if pregate is not None:
        g = g * pregate.to(dtype)
    ext = g if context is None else torch.cat([context.to(dtype), g], dim=-1)
    ctx_len = ext.shape[-1] - seq_len
    ext_len = ext.shape[-1]

    taps = min(spec.filter_len, ext_len) if causal else spec.filter_len
    n = fft_size(ext_len, taps, causal=causal)
    k_f = spec.spectrum(n, taps, dtype)
    y = torch.fft.irfft(torch.fft.rfft(ext, n=n) * k_f, n=n)[..., ctx_len : ctx_len + seq_len]

    if D is not None:
        y = y + D.to(dtype).unsqueeze(-1) * g
    if postgate is not None:
        y = y * postgate.to(dtype)
    return y.to(u.dtype)
