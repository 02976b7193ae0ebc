"""Spectrum reorderings of the Monarch FFT convolution as single Triton gathers.

Two small memory-bound kernels that replace chains of PyTorch operations around the filter's
spectrum (see :mod:`dnastream.kernels.monarch` and :mod:`dnastream.kernels.fftconv_triton`):

* :func:`storage_spectrum`: the filter spectrum in the kernels' *storage order* from a real
  FFT. Given ``r = torch.fft.rfft(k, n=n)`` (H, n/2 + 1), it writes the (2, H, n) fp32 planes
  (re, im) with position ``p`` holding frequency ``f = order[p]`` of the full spectrum
  ``X[f] = r[f]`` (``f <= n/2``) or ``conj(r[n - f])`` (``f > n/2``), times ``scale`` (and the
  frequency-sparse mask ``keep[f]``). One pass instead of a full complex FFT, a normalisation
  and an ``index_select`` over the (H, N, 2) -> (2, H, N) permutation.
* :func:`hermitian_natural`: the Hermitian part, in natural order, of a per-head spectrum held
  in storage order (the filter gradient's cross-spectrum ``S``). For natural frequency ``f``
  ``out[f] = keep[f] (S[f] + conj(S[(n - f) % n])) / 2`` for ``f = 0 .. n/2``, so that
  ``torch.fft.irfft(out, n=n) == torch.fft.ifft(S * keep).real`` (the real part of an inverse
  FFT only sees the Hermitian part of the spectrum; ``keep`` is symmetric). One gather and a
  half-length real inverse FFT instead of a gather to (H, n) complex and a full complex one.

Kernel layout
-------------
* :func:`storage_spectrum`: grid ``(H, cdiv(n, BLOCK))``; program ``(h, b)`` owns storage
  positions ``p`` of block ``b`` of head ``h``. It reads ``order[p]`` (coalesced), gathers the
  (re, im) pair of the mirrored source bin as one (BLOCK, 2) tile (8-byte pairs), negates the
  imaginary part of mirrored bins, scales, and stores both planes (coalesced along ``p``).
* :func:`hermitian_natural`: grid ``(H, cdiv(n/2 + 1, BLOCK))``; program ``(h, b)`` owns natural
  frequencies ``f`` of block ``b``. It loads the gather offsets of ``f`` and of ``(n - f) % n``
  (both planes, (BLOCK, 2) tiles, coalesced), gathers the four values from head ``h``'s row of
  ``s``, combines them and stores the interleaved (re, im) output (one contiguous run).
* ``BLOCK`` is 1024 with 4 warps on CUDA (8 elements per thread; at H = 48, n = 2**20 that is
  ~49K programs, plenty for HBM). Under the CPU interpreter the block covers up to 8192
  elements (the interpreter's cost is per program). Row bases are int64 (``h * n``); the
  positions within a row are int32 (``n < 2**31``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from dnastream.kernels.backend import interpret_requested

__all__ = [
    "hermitian_natural",
    "hermitian_natural_ref",
    "storage_spectrum",
    "storage_spectrum_ref",
]

#: Elements per program on CUDA, and its warps.
BLOCK = 1024
NUM_WARPS = 4
#: Largest block under the CPU interpreter (few, wide programs: its cost is per program).
INTERPRETER_BLOCK = 8192


# ============================================================================================
# Triton kernels
# ============================================================================================


@triton.jit
def _storage_spectrum_kernel(
    r_ptr,  # (H, n/2 + 1, 2) fp32 (or fp64), contiguous: view_as_real(rfft(k))
    order_ptr,  # (n,) int32/int64: storage position -> natural frequency
    keep_ptr,  # (n,) fp32 natural-order mask (read only when HAS_KEEP)
    out_ptr,  # (2, H, n) fp32, contiguous
    n,
    half,  # n // 2
    plane,  # H * n: offset of the imaginary plane
    scale,
    HAS_KEEP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    h = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = p < n
    f = tl.load(order_ptr + p, mask=inside, other=0).to(tl.int32)
    mirror = f > half
    src = tl.where(mirror, n - f, f)
    c = tl.arange(0, 2)
    m2 = inside[:, None] & (c[None, :] < 2)
    row = r_ptr + h * (2 * (half + 1))
    v = tl.load(row + 2 * src[:, None] + c[None, :], mask=m2, other=0.0)
    v = tl.where(mirror[:, None] & (c[None, :] == 1), -v, v)
    v = v * scale
    if HAS_KEEP:
        keep = tl.load(keep_ptr + f, mask=inside, other=0.0)
        v = v * keep[:, None]
    dst = out_ptr + h * n + c[None, :].to(tl.int64) * plane + p[:, None]
    tl.store(dst, v, mask=m2)


@triton.jit
def _hermitian_natural_kernel(
    s_ptr,  # (H, 2n) fp32, contiguous: each head's spectrum planes in storage order
    idx_ptr,  # (2n,) int32/int64: offset of natural frequency f's plane c at idx[2f + c]
    keep_ptr,  # (n,) fp32 natural-order mask (read only when HAS_KEEP)
    out_ptr,  # (H, n/2 + 1, 2) fp32, contiguous
    n,
    nh,  # n // 2 + 1
    HAS_KEEP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    h = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = f < nh
    g = tl.where(f == 0, 0, n - f)  # (n - f) % n for 0 <= f <= n/2
    c = tl.arange(0, 2)
    m2 = inside[:, None] & (c[None, :] < 2)
    ia = tl.load(idx_ptr + 2 * f[:, None] + c[None, :], mask=m2, other=0)
    ib = tl.load(idx_ptr + 2 * g[:, None] + c[None, :], mask=m2, other=0)
    row = s_ptr + h * (2 * n)
    a = tl.load(row + ia, mask=m2, other=0.0)
    b = tl.load(row + ib, mask=m2, other=0.0)
    v = (a + tl.where(c[None, :] == 1, -b, b)) * 0.5
    if HAS_KEEP:
        keep = tl.load(keep_ptr + f, mask=inside, other=0.0)
        v = v * keep[:, None]
    tl.store(out_ptr + h * (2 * nh) + 2 * f[:, None] + c[None, :], v, mask=m2)


# ============================================================================================
# PyTorch references
# ============================================================================================


def storage_spectrum_ref(
    r: Tensor, order: Tensor, n: int, scale: float, keep: Tensor | None = None
) -> Tensor:
    """PyTorch twin of :func:`storage_spectrum` (same arguments, same result)."""
    _check_storage(r, order, n, keep)
    re = torch.view_as_real(r.resolve_conj())  # (H, n/2 + 1, 2)
    tail = re[:, 1 : n // 2].flip(1) * re.new_tensor([1.0, -1.0])  # conj(r[n - f]), f > n/2
    full = torch.cat([re, tail], dim=1)  # (H, n, 2), natural order
    full = full * scale
    if keep is not None:
        full = full * keep.to(torch.float32)[:, None]
    planes = full.permute(2, 0, 1)  # (2, H, n)
    out = torch.index_select(planes, 2, order.to(torch.int64))
    return out.to(torch.float32, memory_format=torch.contiguous_format)


def hermitian_natural_ref(s: Tensor, idx: Tensor, n: int, keep: Tensor | None = None) -> Tensor:
    """PyTorch twin of :func:`hermitian_natural` (same arguments, same result)."""
    _check_hermitian(s, idx, n, keep)
    heads, nh = s.shape[0], n // 2 + 1
    nat = torch.index_select(s, 1, idx.to(torch.int64)).view(heads, n, 2)
    f = torch.arange(nh, device=s.device)
    b = nat[:, (n - f) % n] * s.new_tensor([1.0, -1.0])  # conj(S[(n - f) % n])
    out = (nat[:, :nh] + b) * 0.5
    if keep is not None:
        out = out * keep.to(torch.float32)[:nh, None]
    return torch.view_as_complex(out.contiguous())


# ============================================================================================
# Launchers
# ============================================================================================


def _uses_triton(device: torch.device) -> bool:
    """CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``."""
    return device.type == "cuda" or (device.type == "cpu" and interpret_requested())


def _block(device: torch.device, size: int, block: int | None) -> int:
    if block is not None:
        if block < 2 or block & (block - 1):
            raise ValueError(f"block must be a power of two >= 2, got {block}")
        return block
    if device.type == "cuda":
        return BLOCK
    return min(INTERPRETER_BLOCK, 1 << max(1, (size - 1).bit_length()))


def _check_n(name: str, n: int) -> None:
    if not isinstance(n, int) or n < 2 or n % 2:
        raise ValueError(f"{name}: n must be an even integer >= 2, got {n!r}")


def _check_keep(name: str, keep: Tensor | None, n: int, device: torch.device) -> None:
    if keep is None:
        return
    if keep.shape != (n,):
        raise ValueError(f"{name}: keep must be ({n},), got shape {tuple(keep.shape)}")
    if keep.dtype not in (torch.float32, torch.bool):
        raise ValueError(f"{name}: keep must be float32 (or bool), got {keep.dtype}")
    if keep.device != device:
        raise ValueError(f"{name}: keep is on {keep.device}, the spectrum on {device}")


def _check_index(name: str, what: str, t: Tensor, size: int, device: torch.device) -> None:
    if t.shape != (size,):
        raise ValueError(f"{name}: {what} must be ({size},), got shape {tuple(t.shape)}")
    if t.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name}: {what} must be int64 or int32, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name}: {what} is on {t.device}, the spectrum on {device}")


def _check_storage(r: Tensor, order: Tensor, n: int, keep: Tensor | None) -> None:
    name = "storage_spectrum"
    _check_n(name, n)
    if r.dim() != 2 or r.shape[1] != n // 2 + 1:
        raise ValueError(f"{name}: r must be (H, {n // 2 + 1}), got shape {tuple(r.shape)}")
    if r.dtype not in (torch.complex64, torch.complex128):
        raise ValueError(f"{name}: r must be complex64 (or complex128), got {r.dtype}")
    _check_index(name, "order", order, n, r.device)
    _check_keep(name, keep, n, r.device)


def _check_hermitian(s: Tensor, idx: Tensor, n: int, keep: Tensor | None) -> None:
    name = "hermitian_natural"
    _check_n(name, n)
    if s.dim() != 2 or s.shape[1] != 2 * n:
        raise ValueError(f"{name}: s must be (H, {2 * n}), got shape {tuple(s.shape)}")
    if s.dtype != torch.float32:
        raise ValueError(f"{name}: s must be float32, got {s.dtype}")
    _check_index(name, "idx", idx, 2 * n, s.device)
    _check_keep(name, keep, n, s.device)


def storage_spectrum(
    r: Tensor,
    order: Tensor,
    n: int,
    scale: float,
    keep: Tensor | None = None,
    *,
    block: int | None = None,
) -> Tensor:
    """Full spectrum of a real filter in storage order, from its real FFT.

    ``out[0, h, p] + 1j * out[1, h, p] = scale * keep[f] * X[h, f]`` with ``f = order[p]`` and
    ``X[h, f] = r[h, f]`` for ``f <= n/2``, ``conj(r[h, n - f])`` above.

    Runs the Triton kernel on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``;
    otherwise :func:`storage_spectrum_ref`.

    Args:
        r: (H, n/2 + 1) complex64 (or complex128), ``torch.fft.rfft(k, n=n)`` of a real
            filter.
        order: (n,) int64 or int32, storage position -> natural frequency
            (:func:`dnastream.kernels.monarch.spectrum_order`).
        n: the FFT length, even, >= 2.
        scale: factor applied to every value (``1 / n`` for the kernels' ``norm="forward"``).
        keep: optional (n,) float32 (or bool) mask in natural frequency order
            (:func:`dnastream.kernels.monarch.freq_mask`).
        block: storage positions per program, a power of two (tests force it); None chooses.

    Returns:
        (2, H, n) float32 (planes re, im), contiguous, on ``r``'s device.

    Raises:
        ValueError: on a wrong shape, dtype or device, or an odd ``n``.
    """
    _check_storage(r, order, n, keep)
    if not _uses_triton(r.device):
        return storage_spectrum_ref(r, order, n, scale, keep)
    heads = r.shape[0]
    rr = torch.view_as_real(r.resolve_conj()).contiguous()
    order = order.contiguous()
    out = torch.empty((2, heads, n), dtype=torch.float32, device=r.device)
    if heads == 0:
        return out
    kp = keep.to(torch.float32).contiguous() if keep is not None else out
    blk = _block(r.device, n, block)
    grid = (heads, triton.cdiv(n, blk))
    _storage_spectrum_kernel[grid](
        rr,
        order,
        kp,
        out,
        n,
        n // 2,
        heads * n,
        float(scale),
        HAS_KEEP=keep is not None,
        BLOCK=blk,
        num_warps=NUM_WARPS,
    )
    return out


def hermitian_natural(
    s: Tensor,
    idx: Tensor,
    n: int,
    keep: Tensor | None = None,
    *,
    block: int | None = None,
) -> Tensor:
    """Hermitian part, natural order, of per-head spectra held in storage order.

    With ``S[h, f] = s[h, idx[2f]] + 1j * s[h, idx[2f + 1]]``:
    ``out[h, f] = keep[f] * (S[h, f] + conj(S[h, (n - f) % n])) / 2`` for ``f = 0 .. n/2``, so
    ``torch.fft.irfft(out, n=n)`` equals ``torch.fft.ifft(S * keep).real`` (``keep`` must be
    symmetric, ``keep[f] == keep[n - f]``, as :func:`~dnastream.kernels.monarch.freq_mask` is).

    Runs the Triton kernel on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``;
    otherwise :func:`hermitian_natural_ref`.

    Args:
        s: (H, 2n) float32, each head's flat block of 2n values (planes in storage order).
        idx: (2n,) int64 or int32, offset of natural frequency ``f``'s plane ``c`` (0 re, 1 im)
            at ``idx[2f + c]`` (``fftconv_triton._natural_gather``).
        n: the FFT length, even, >= 2.
        keep: optional (n,) float32 (or bool) symmetric mask in natural frequency order.
        block: frequencies per program, a power of two (tests force it); None chooses.

    Returns:
        (H, n/2 + 1) complex64 on ``s``'s device.

    Raises:
        ValueError: on a wrong shape, dtype or device, or an odd ``n``.
    """
    _check_hermitian(s, idx, n, keep)
    if not _uses_triton(s.device):
        return hermitian_natural_ref(s, idx, n, keep)
    heads, nh = s.shape[0], n // 2 + 1
    s = s.contiguous()
    idx = idx.contiguous()
    out = torch.empty((heads, nh, 2), dtype=torch.float32, device=s.device)
    if heads == 0:
        return torch.view_as_complex(out)
    kp = keep.to(torch.float32).contiguous() if keep is not None else out
    blk = _block(s.device, nh, block)
    grid = (heads, triton.cdiv(nh, blk))
    _hermitian_natural_kernel[grid](
        s,
        idx,
        kp,
        out,
        n,
        nh,
        HAS_KEEP=keep is not None,
        BLOCK=blk,
        num_warps=NUM_WARPS,
    )
    return torch.view_as_complex(out)
