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

__all__ = ["WORKSPACE_BYTES", "fftconv_backward_ref", "fftconv_ref"]

#: Above this size of one complex spectrum of all channels, the convolution runs over groups of
#: channels so its transient memory stays bounded (what keeps a 1 Mbp forward lean).
WORKSPACE_BYTES = 512 * 2**20


def fftconv_ref(
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
        freq_keep: frequency-sparse convolution: the filter keeps only its lowest frequencies,
            ``min(f, N - f) < freq_cutoff(N, freq_keep)`` on the FFT size ``N`` of
            :func:`~dnastream.kernels.monarch.sparse_fft_size` (a power of two, what the Triton
            plans use); the ``D`` term is not filtered. Not with ``context``.

    Returns:
        y (..., H, L) in the dtype of ``u``.
    """
    if freq_keep is not None:
        if context is not None:
            raise ValueError("fftconv_ref: freq_keep (frequency-sparse) does not stream (context)")
        k_t = k.k if isinstance(k, FFTConv) else k
        return _sparse_conv(u, k_t, D, pregate, postgate, causal, freq_keep)
    spec = k if isinstance(k, FFTConv) else FFTConv(k)
    dtype = compute_dtype(u.dtype, spec.k.dtype)
    seq_len = u.shape[-1]
    ext_len = seq_len + (0 if context is None else context.shape[-1])
    taps = min(spec.filter_len, ext_len) if causal else spec.filter_len
    n = fft_size(ext_len, taps, causal=causal)
    rows = u[..., 0, 0].numel()
    channels = u.shape[-2]
    per_channel = rows * (n // 2 + 1) * 2 * torch.finfo(dtype).bits // 8
    if channels > 1 and per_channel * channels > WORKSPACE_BYTES:
        # Long sequences: convolve a group of channels at a time so the complex
        # intermediates stay within WORKSPACE_BYTES (the spectrum is then not cached).
        group = max(1, WORKSPACE_BYTES // per_channel)
        return torch.cat(
            [
                fftconv_ref(
                    u[..., c : c + group, :],
                    spec.k[c : c + group],
                    None if D is None else D[c : c + group],
                    pregate=None if pregate is None else pregate[..., c : c + group, :],
                    postgate=None if postgate is None else postgate[..., c : c + group, :],
                    causal=causal,
                    context=None if context is None else context[..., c : c + group, :],
                )
                for c in range(0, channels, group)
            ],
            dim=-2,
        )

    g = u.to(dtype)
    if pregate is not None:
        g = g * pregate.to(dtype)
    ext = g if context is None else torch.cat([context.to(dtype), g], dim=-1)
    ctx_len = ext_len - seq_len
    k_f = spec.spectrum(n, taps, dtype)
    y = torch.fft.irfft(torch.fft.rfft(ext, n=n) * k_f, n=n)[..., ctx_len : ctx_len + seq_len]

    if D is not None:
        y = y + D.to(dtype).unsqueeze(-1) * g
    if postgate is not None:
        y = y * postgate.to(dtype)
    return y.to(u.dtype)


def _sparse_spectrum(k: Tensor, n: int, taps: int, freq_keep: float, dtype) -> Tensor:
    """rfft of the filter (H, n // 2 + 1) with the bins f >= cut-off zeroed."""
    from dnastream.kernels.monarch import freq_cutoff

    k_f = torch.fft.rfft(k[:, :taps].to(dtype), n=n)
    cut = freq_cutoff(n, freq_keep)
    return k_f * (torch.arange(n // 2 + 1, device=k.device) < cut)


def _kept_bins(n: int, freq_keep: float, device) -> Tensor:
    from dnastream.kernels.monarch import freq_cutoff

    return torch.arange(n // 2 + 1, device=device) < freq_cutoff(n, freq_keep)


def _sparse_conv(u, k, D, pregate, postgate, causal, freq_keep) -> Tensor:
    from dnastream.kernels.monarch import sparse_fft_size

    dtype = compute_dtype(u.dtype, k.dtype)
    seq_len = u.shape[-1]
    taps = min(k.shape[-1], seq_len) if causal else k.shape[-1]
    n = sparse_fft_size(seq_len, k.shape[-1], causal)
    g = u.to(dtype)
    if pregate is not None:
        g = g * pregate.to(dtype)
    k_f = _sparse_spectrum(k, n, taps, freq_keep, dtype)
    y = torch.fft.irfft(torch.fft.rfft(g, n=n) * k_f, n=n)[..., :seq_len]
    if D is not None:
        y = y + D.to(dtype).unsqueeze(-1) * g
    if postgate is not None:
        y = y * postgate.to(dtype)
    return y.to(u.dtype)


def fftconv_backward_ref(
    dy: Tensor,
    u: Tensor,
    k: Tensor,
    D: Tensor | None = None,
    *,
    pregate: Tensor | None = None,
    postgate: Tensor | None = None,
    causal: bool = True,
    needs: tuple[bool, bool, bool, bool, bool] = (True, True, True, True, True),
    freq_keep: float | None = None,
) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """Explicit gradients of :func:`fftconv_ref` (no autograd graph), for dy like u (..., H, L).

    With ``x = pregate * u`` and ``z = postgate * dy``:

    * ``dx = corr(z, k) + D * z`` (``corr(z, k)[t] = sum_s z[t + s] k[s]``), ``du = pregate * dx``,
      ``dpregate = u * dx``;
    * ``dpostgate = dy * (x conv k + D * x)``;
    * ``dk[s] = sum_{rows, t} z[t] x[t - s]`` (taps beyond ``min(Lk, L)`` get 0 when causal),
      ``dD = sum_{rows, t} z * x``.

    ``needs`` = which of (du, dk, dD, dpregate, dpostgate) to compute. Returns them in the
    dtypes of u, k, D, pregate, postgate (None where not needed or the input is None).
    ``freq_keep``: gradients of the frequency-sparse convolution (see :func:`fftconv_ref`).
    """
    need_u, need_k, need_d, need_g1, need_g2 = needs
    need_g1 = need_g1 and pregate is not None
    need_g2 = need_g2 and postgate is not None
    need_d = need_d and D is not None
    dtype = compute_dtype(u.dtype, k.dtype)
    seq_len, channels = u.shape[-1], u.shape[-2]
    taps = min(k.shape[-1], seq_len) if causal else k.shape[-1]
    if freq_keep is None:
        n = fft_size(seq_len, taps, causal=causal)
    else:
        from dnastream.kernels.monarch import sparse_fft_size

        n = sparse_fft_size(seq_len, k.shape[-1], causal)
    x = u.to(dtype)
    if pregate is not None:
        x = x * pregate.to(dtype)
    z = dy.to(dtype)
    if postgate is not None:
        z = z * postgate.to(dtype)
    if freq_keep is None:
        k_f = torch.fft.rfft(k[:, :taps].to(dtype), n=n)
    else:
        k_f = _sparse_spectrum(k, n, taps, freq_keep, dtype)
    z_f = torch.fft.rfft(z, n=n) if (need_u or need_g1 or need_k) else None
    x_f = torch.fft.rfft(x, n=n) if (need_k or need_g2) else None
    du = dk = dD = dg1 = dg2 = None
    if need_u or need_g1:
        dx = torch.fft.irfft(z_f * k_f.conj(), n=n)[..., :seq_len]
        if D is not None:
            dx = dx + D.to(dtype).unsqueeze(-1) * z
        if need_u:
            du = (dx if pregate is None else dx * pregate.to(dtype)).to(u.dtype)
        if need_g1:
            dg1 = (dx * u.to(dtype)).to(pregate.dtype)
    if need_g2:
        y0 = torch.fft.irfft(x_f * k_f, n=n)[..., :seq_len]
        if D is not None:
            y0 = y0 + D.to(dtype).unsqueeze(-1) * x
        dg2 = (dy.to(dtype) * y0).to(postgate.dtype)
    if need_k:
        cross = (z_f * x_f.conj()).reshape(-1, channels, n // 2 + 1).sum(0)
        if freq_keep is not None:  # the filter only has the kept frequencies
            cross = cross * _kept_bins(n, freq_keep, k.device)
        full = torch.fft.irfft(cross, n=n)
        dk = torch.zeros(k.shape, dtype=dtype, device=k.device)
        dk[:, :taps] = full[:, :taps]
        dk = dk.to(k.dtype)
    if need_d:
        dD = (z * x).reshape(-1, channels, seq_len).sum(dim=(0, 2)).to(D.dtype)
    return du, dk, dD, dg1, dg2
