"""Spectra between natural frequency order and the Monarch kernels' storage order, in Triton.

The FFT convolution kernels keep a spectrum in *storage order*: position ``p`` holds frequency
``order[p]`` (:func:`dnastream.kernels.monarch.spectrum_order`), a mixed-radix digit reversal.
Two reorderings sit around them:

* :func:`storage_spectrum` -- the filter's spectrum from its real FFT ``r = rfft(k, n)``: the
  (2, H, n) fp32 planes (re, im) with ``out[:, h, p] = scale * keep[f] * X[h, f]``, ``f =
  order[p]``, ``X[f] = r[f]`` for ``f <= n/2`` and ``conj(r[n - f])`` above;
* :func:`natural_spectrum` -- the filter gradient's cross-spectrum back from storage order:
  ``(H * n / inner, 2, inner)`` fp32 blocks (each head's ``n / inner`` blocks of ``inner``
  positions, planes re, im) to (H, n) complex64 in natural order (times ``keep``);
* :func:`hermitian_spectrum` -- the same cross-spectrum's Hermitian part, frequencies 0 ... n/2
  only: ``(G[f] + conj(G[n - f])) / 2``, (H, n/2 + 1) complex64 for ``irfft``. The filter
  gradient is ``real(ifft(G))``, which is the inverse of that Hermitian part: a real inverse
  FFT of half the values, and half the bytes written by the reorder.

Both are permutations, and done element by element (a gather) one side of the copy is
scattered: on an H100 at H * n = 50M a gather took 0.9-1.6 ms for ~0.4 GB, far from the
bandwidth. The digit structure makes them tiled transposes instead
(:class:`StorageLayout`): with ``A`` the first digit of the frequency (the first outer radix,
or ``n1`` without outer levels), ``C = n2`` the last, and the middle digits reversed by a small
table ``mid``,

    p = a * (n / A) + m * C + c    holds    f = a + A * mid[m] + (n / C) * c,

so a tile of ``(a, c)`` for one ``m`` reads ``f`` contiguously along ``a`` and writes ``p``
contiguously along ``c`` (the tile is transposed through shared memory by Triton's layout
conversion). Complex values move as 64-bit words (re and im together). The mirrored half of
the real FFT is read through a flipped tile (ascending addresses again).

Frequency ``n - f`` of position ``(a, m, c)`` sits at ``((A - a) % A, m', (C - 1 - c + b) % C)``
with ``mid[m'] = (M - 1 - mid[m] + [a = 0]) % M`` and ``b = [a = 0 and mid[m] = 0]`` (the
borrows of the digit-wise negation), so the mirror of a tile is a tile again, flipped along ``c``.

Grid ``(H * M, A / TA, C / TC)`` with tiles ``TA = min(A, tile)``, ``TC = min(C, tile)``
(:func:`hermitian_spectrum`: the ``c <= C / 2`` half); all offsets of a head are int64. Each op
has a PyTorch twin (``*_ref``): gathers by the order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from dnastream.kernels.backend import interpret_requested

__all__ = [
    "StorageLayout",
    "hermitian_spectrum",
    "hermitian_spectrum_ref",
    "natural_spectrum",
    "natural_spectrum_ref",
    "storage_layout",
    "storage_spectrum",
    "storage_spectrum_ref",
]

#: Largest tile edge (positions along ``a`` and along ``c``) and warps per program, per pass.
#: H100, bf16 workload shapes at N = 64K-4M (results/bench_spectrum_reorder_h100_stop19.log):
#: storage order on 32-position tiles 1.77-2.00x faster than on 64 (1.39-1.61x its floor);
#: natural order on 16-position tiles of 2 warps 1.17-1.36x faster than 64 x 4 warps.
STORAGE_TILE, STORAGE_WARPS = 32, 4
NATURAL_TILE, NATURAL_WARPS = 16, 2
#: Hermitian half (two reads per value written): 32 x 4 warps 1.06-1.29x faster than 16 x 2
#: (results/bench_spectrum_reorder_hermitian_h100_stop19.log).
HERMITIAN_TILE, HERMITIAN_WARPS = 32, 4


@dataclass(frozen=True)
class StorageLayout:
    """Digits of a storage order: ``order[a * (n / A) + m * C + c] = a + A * mid[m] + (n / C) *
    c``. ``order`` (n,) int64, ``mid`` (n / (A * C),) int32, both on one device; ``inner``:
    positions per block of the kernels' (H * n / inner, 2, inner) spectra."""

    order: Tensor
    mid: Tensor
    a: int
    c: int
    inner: int
    #: (M,) int32 inverse of ``mid``: ``mid[mid_inv[q]] = q``
    mid_inv: Tensor

    @property
    def n(self) -> int:
        return int(self.order.shape[0])


def storage_layout(order: Tensor, a: int, c: int, inner: int) -> StorageLayout:
    """The :class:`StorageLayout` of ``order`` (n,) with first frequency digit ``a`` and last
    ``c``; raises ``ValueError`` if ``order`` does not have that digit structure."""
    n = int(order.shape[0])
    if a < 1 or c < 1 or n % (a * c) or n % inner or inner % c:
        raise ValueError(f"storage_layout: digits a={a}, c={c}, inner={inner} do not fit n={n}")
    o = order.to(torch.int64)
    mid = o[0 : n // a : c] // a
    pos = torch.arange(n, device=o.device)
    aa, rest = pos // (n // a), pos % (n // a)
    want = aa + a * mid[rest // c] + (n // c) * (rest % c)
    if not torch.equal(o, want):
        raise ValueError(f"storage_layout: order is not a digit reversal with a={a}, c={c}")
    mid_inv = torch.empty_like(mid)
    mid_inv[mid] = torch.arange(mid.shape[0], device=mid.device)
    return StorageLayout(
        o.contiguous(), mid.to(torch.int32).contiguous(), a, c, inner,
        mid_inv.to(torch.int32).contiguous(),
    )  # fmt: skip


# ============================================================================================
# Triton kernels
# ============================================================================================


@triton.jit
def _as_pair(w):
    """int64 words (re | im << 32) -> (re, im) float32."""
    re = w.to(tl.int32).to(tl.float32, bitcast=True)
    im = (w >> 32).to(tl.int32).to(tl.float32, bitcast=True)
    return re, im


@triton.jit
def _tile(M, TA: tl.constexpr, TC: tl.constexpr):
    """This program's tile: head h (int64), middle digit m, first a (scalar), c (TC,)."""
    pid = tl.program_id(0)
    h = (pid // M).to(tl.int64)
    c = tl.program_id(2) * TC + tl.arange(0, TC)
    return h, pid % M, tl.program_id(1) * TA, c


@triton.jit
def _storage_spectrum_kernel(
    r_ptr,  # (H, n/2 + 1) int64 words: rfft(k) as (re, im) float32 pairs
    mid_ptr,  # (M,) int32
    keep_ptr,  # (n,) fp32 natural-order mask (read only when HAS_KEEP)
    out_ptr,  # (2, H, n) fp32
    n,
    half,  # n // 2
    M,
    plane,  # H * n
    scale,
    A: tl.constexpr,
    C: tl.constexpr,
    TA: tl.constexpr,
    TC: tl.constexpr,
    HAS_KEEP: tl.constexpr,
):
    h, m, a0, c = _tile(M, TA, TC)
    i = tl.arange(0, TA)
    base = A * tl.load(mid_ptr + m) + (n // C) * c  # (TC,) frequency of a = 0
    row = r_ptr + h * (half + 1)
    # f <= n/2: X[f] = r[f], ascending along a
    f = a0 + i[:, None] + base[None, :]
    w = tl.load(row + f, mask=f <= half, other=0)
    re, im = _as_pair(w)
    # f > n/2: X[f] = conj(r[n - f]); the tile is read flipped along a (ascending addresses)
    fr = a0 + (TA - 1 - i)[:, None] + base[None, :]  # the frequency whose mirror row i' holds
    g = n - a0 - (TA - 1) + i[:, None] - base[None, :]  # = n - fr
    wm = tl.load(row + g, mask=fr > half, other=0)
    mre, mim = _as_pair(tl.flip(wm, 0))
    mirror = f > half
    re = tl.where(mirror, mre, re) * scale
    im = tl.where(mirror, -mim, im) * scale
    if HAS_KEEP:
        kp = tl.load(keep_ptr + f)
        re = re * kp
        im = im * kp
    p = (a0 + i)[:, None] * (n // A) + m * C + c[None, :]
    dst = out_ptr + h * n + p
    tl.store(dst, re)
    tl.store(dst + plane, im)


@triton.jit
def _natural_spectrum_kernel(
    s_ptr,  # (H * n / inner, 2, inner) fp32
    mid_ptr,  # (M,) int32
    keep_ptr,  # (n,) fp32 natural-order mask (read only when HAS_KEEP)
    out_ptr,  # (H, n) int64 words: complex64 (re | im << 32)
    n,
    inner,
    M,
    scale,
    A: tl.constexpr,
    C: tl.constexpr,
    TA: tl.constexpr,
    TC: tl.constexpr,
    HAS_KEEP: tl.constexpr,
):
    h, m, a0, c = _tile(M, TA, TC)
    a = a0 + tl.arange(0, TA)
    p = a[:, None] * (n // A) + m * C + c[None, :]  # contiguous along c
    src = s_ptr + h * (2 * n) + (p // inner) * (2 * inner) + p % inner
    re = tl.load(src) * scale
    im = tl.load(src + inner) * scale
    f = a[:, None] + A * tl.load(mid_ptr + m) + (n // C) * c[None, :]  # contiguous along a
    if HAS_KEEP:
        kp = tl.load(keep_ptr + f)
        re = re * kp
        im = im * kp
    lo = re.to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF
    hi = im.to(tl.int32, bitcast=True).to(tl.int64) << 32
    tl.store(out_ptr + h * n + f, hi | lo)


@triton.jit
def _hermitian_spectrum_kernel(
    s_ptr,  # (H * n / inner, 2, inner) fp32
    mid_ptr,  # (M,) int32
    mid_inv_ptr,  # (M,) int32
    keep_ptr,  # (n,) fp32 natural-order mask (read only when HAS_KEEP)
    out_ptr,  # (H, n/2 + 1) int64 words: complex64 (re | im << 32)
    n,
    inner,
    M,
    scale,
    A: tl.constexpr,
    C: tl.constexpr,
    TA: tl.constexpr,
    TC: tl.constexpr,
    HAS_KEEP: tl.constexpr,
):
    h, m, a0, c = _tile(M, TA, TC)
    a = a0 + tl.arange(0, TA)
    q = tl.load(mid_ptr + m)
    f = a[:, None] + A * q + (n // C) * c[None, :]  # contiguous along a
    ok = (c[None, :] <= C // 2) & (f <= n // 2)
    head = s_ptr + h * (2 * n)
    # G[f]: this tile, contiguous along c
    p = a[:, None] * (n // A) + m * C + c[None, :]
    src = head + (p // inner) * (2 * inner) + p % inner
    re = tl.load(src, mask=ok, other=0.0) * scale
    im = tl.load(src + inner, mask=ok, other=0.0) * scale
    # G[n - f]: the digit-wise negation (borrows from a = 0 into the middle digits and c)
    wrap = (a == 0).to(tl.int32)  # (TA,)
    qm = (M - 1 - q + wrap) % M
    mm = tl.load(mid_inv_ptr + qm)  # (TA,) middle position of the mirror, per row
    borrow = ((a == 0) & (q == 0)).to(tl.int32)
    am = (A - a) % A
    cm = (C - 1 - c[None, :] + borrow[:, None]) % C
    pm = am[:, None] * (n // A) + mm[:, None] * C + cm  # contiguous along c, descending
    srcm = head + (pm // inner) * (2 * inner) + pm % inner
    mre = tl.load(srcm, mask=ok, other=0.0) * scale
    mim = tl.load(srcm + inner, mask=ok, other=0.0) * scale
    if HAS_KEEP:
        kp = tl.load(keep_ptr + f, mask=ok, other=0.0)
        re = re * kp
        im = im * kp
        mre = mre * kp
        mim = mim * kp
    re = (re + mre) * 0.5
    im = (im - mim) * 0.5
    lo = re.to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF
    hi = im.to(tl.int32, bitcast=True).to(tl.int64) << 32
    tl.store(out_ptr + h * (n // 2 + 1) + f, hi | lo, mask=ok)


# ============================================================================================
# PyTorch references
# ============================================================================================


def storage_spectrum_ref(
    r: Tensor, layout: StorageLayout, scale: float, keep: Tensor | None = None
) -> Tensor:
    """PyTorch twin of :func:`storage_spectrum` (a gather by the order; float64 input stays
    float64 until the last rounding to float32)."""
    n = layout.n
    _check_storage(r, layout, keep)
    re = torch.view_as_real(r.resolve_conj())  # (H, n/2 + 1, 2)
    tail = re[:, 1 : n // 2].flip(1) * re.new_tensor([1.0, -1.0])  # conj(r[n - f]), f > n/2
    full = torch.cat([re, tail], dim=1) * scale  # (H, n, 2), natural order
    if keep is not None:
        full = full * keep.to(full.dtype)[:, None]
    out = torch.index_select(full.permute(2, 0, 1), 2, layout.order)
    return out.to(torch.float32, memory_format=torch.contiguous_format)


def natural_spectrum_ref(
    s: Tensor, layout: StorageLayout, keep: Tensor | None = None, scale: float = 1.0
) -> Tensor:
    """PyTorch twin of :func:`natural_spectrum` (a scatter by the order)."""
    _check_natural(s, layout, keep)
    n, inner = layout.n, layout.inner
    heads = s.shape[0] * inner // n
    planes = s.reshape(heads, n // inner, 2, inner).permute(2, 0, 1, 3).reshape(2, heads, n)
    out = torch.empty((heads, n), dtype=torch.complex64, device=s.device)
    out[:, layout.order] = torch.complex(planes[0] * scale, planes[1] * scale)
    if keep is not None:
        out = out * keep.to(torch.float32)
    return out


def hermitian_spectrum_ref(
    s: Tensor, layout: StorageLayout, keep: Tensor | None = None, scale: float = 1.0
) -> Tensor:
    """PyTorch twin of :func:`hermitian_spectrum` (a gather by the inverse order; the same
    float32 operations in the same order)."""
    _check_natural(s, layout, keep, "hermitian_spectrum")
    n, inner = layout.n, layout.inner
    heads = s.shape[0] * inner // n
    planes = s.reshape(heads, n // inner, 2, inner).permute(2, 0, 1, 3).reshape(2, heads, n)
    pos = torch.empty_like(layout.order)
    pos[layout.order] = torch.arange(n, device=pos.device)  # storage position of frequency f
    f = torch.arange(n // 2 + 1, device=pos.device)
    own = planes[:, :, pos[f]] * scale
    mirror = planes[:, :, pos[(n - f) % n]] * scale
    if keep is not None:
        kp = keep.to(torch.float32)[f]
        own, mirror = own * kp, mirror * kp
    return torch.complex((own[0] + mirror[0]) * 0.5, (own[1] - mirror[1]) * 0.5)


# ============================================================================================
# Launchers
# ============================================================================================


def _uses_triton(device: torch.device) -> bool:
    """CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``."""
    return device.type == "cuda" or (device.type == "cpu" and interpret_requested())


def _check_keep(name: str, keep: Tensor | None, n: int, device: torch.device) -> None:
    if keep is None:
        return
    if keep.shape != (n,) or keep.dtype not in (torch.float32, torch.bool):
        raise ValueError(
            f"{name}: keep must be ({n},) float32 or bool, got {keep.shape} {keep.dtype}"
        )
    if keep.device != device:
        raise ValueError(f"{name}: keep is on {keep.device}, the spectrum on {device}")


def _check_layout(name: str, layout: StorageLayout, device: torch.device) -> None:
    if layout.order.device != device:
        raise ValueError(
            f"{name}: the layout is on {layout.order.device}, the spectrum on {device}"
        )


def _check_storage(r: Tensor, layout: StorageLayout, keep: Tensor | None) -> None:
    name, n = "storage_spectrum", layout.n
    if r.dim() != 2 or r.shape[1] != n // 2 + 1:
        raise ValueError(f"{name}: r must be (H, {n // 2 + 1}), got shape {tuple(r.shape)}")
    if r.dtype not in (torch.complex64, torch.complex128):
        raise ValueError(f"{name}: r must be complex64 (or complex128), got {r.dtype}")
    _check_layout(name, layout, r.device)
    _check_keep(name, keep, n, r.device)


def _check_natural(
    s: Tensor, layout: StorageLayout, keep: Tensor | None, name: str = "natural_spectrum"
) -> None:
    n, inner = layout.n, layout.inner
    if s.dim() != 3 or s.shape[1:] != (2, inner) or (s.shape[0] * inner) % n:
        raise ValueError(
            f"{name}: s must be (H * {n // inner}, 2, {inner}), got shape {tuple(s.shape)}"
        )
    if s.dtype != torch.float32:
        raise ValueError(f"{name}: s must be float32, got {s.dtype}")
    _check_layout(name, layout, s.device)
    _check_keep(name, keep, n, s.device)


def _tiles(layout: StorageLayout, tile: int) -> tuple[int, int, int, int]:
    """(TA, TC, M, n_programs_dim0_per_head) for tiles of at most ``tile`` positions a side."""
    if tile < 1 or tile & (tile - 1):
        raise ValueError(f"spectrum reorder: tile must be a power of two, got {tile}")
    ta, tc = min(layout.a, tile), min(layout.c, tile)
    return ta, tc, layout.n // (layout.a * layout.c), layout.a // ta


def storage_spectrum(
    r: Tensor,
    layout: StorageLayout,
    scale: float,
    keep: Tensor | None = None,
    *,
    tile: int = STORAGE_TILE,
    num_warps: int = STORAGE_WARPS,
) -> Tensor:
    """Full spectrum of a real filter in storage order, from its real FFT.

    Args:
        r: (H, n/2 + 1) complex64 (complex128 takes the reference), ``rfft(k, n=n)``.
        layout: the storage order's digits (:func:`storage_layout`), on ``r``'s device.
        scale: factor of every value (``1 / n`` for the kernels' ``norm="forward"``).
        keep: optional (n,) float32 (or bool) mask in natural frequency order.
        tile, num_warps: launch of the Triton kernel (tiles of at most ``tile`` x ``tile``
            positions; ``benchmarks/bench_spectrum_reorder.py`` compares them).

    Returns:
        (2, H, n) float32 planes (re, im): ``out[:, h, p] = scale * keep[f] * X[h, f]`` with
        ``f = layout.order[p]``, ``X[f] = r[f]`` (``f <= n/2``) or ``conj(r[n - f])``.
    """
    _check_storage(r, layout, keep)
    if not _uses_triton(r.device) or r.dtype != torch.complex64:
        return storage_spectrum_ref(r, layout, scale, keep)
    n, heads = layout.n, r.shape[0]
    out = torch.empty((2, heads, n), dtype=torch.float32, device=r.device)
    if heads == 0:
        return out
    words = torch.view_as_real(r.resolve_conj()).contiguous().view(torch.int64).view(heads, -1)
    kp = keep.to(torch.float32).contiguous() if keep is not None else out
    ta, tc, mids, _ = _tiles(layout, tile)
    grid = (heads * mids, layout.a // ta, layout.c // tc)
    _storage_spectrum_kernel[grid](
        words, layout.mid, kp, out, n, n // 2, mids, heads * n, float(scale),
        A=layout.a, C=layout.c, TA=ta, TC=tc, HAS_KEEP=keep is not None, num_warps=num_warps,
    )  # fmt: skip
    return out


def natural_spectrum(
    s: Tensor,
    layout: StorageLayout,
    keep: Tensor | None = None,
    scale: float = 1.0,
    *,
    tile: int = NATURAL_TILE,
    num_warps: int = NATURAL_WARPS,
) -> Tensor:
    """Per-head spectra from the kernels' storage order back to natural order.

    Args:
        s: (H * n / inner, 2, inner) float32, each head's ``n / inner`` blocks of ``inner``
            storage positions as planes (re, im).
        layout: the storage order's digits (:func:`storage_layout`), on ``s``'s device.
        keep: optional (n,) float32 (or bool) mask in natural frequency order.
        scale: factor of every value (``1 / n`` before an unnormalised inverse FFT).
        tile, num_warps: launch of the Triton kernel, as in :func:`storage_spectrum`.

    Returns:
        (H, n) complex64: ``out[h, layout.order[p]] = keep * scale * (s_re + 1j s_im)`` at
        storage position p.
    """
    _check_natural(s, layout, keep)
    if not _uses_triton(s.device):
        return natural_spectrum_ref(s, layout, keep, scale)
    n, inner = layout.n, layout.inner
    heads = s.shape[0] * inner // n
    words = torch.empty((heads, n), dtype=torch.int64, device=s.device)
    if heads:
        kp = keep.to(torch.float32).contiguous() if keep is not None else s
        ta, tc, mids, _ = _tiles(layout, tile)
        grid = (heads * mids, layout.a // ta, layout.c // tc)
        _natural_spectrum_kernel[grid](
            s.contiguous(), layout.mid, kp, words, n, inner, mids, float(scale),
            A=layout.a, C=layout.c, TA=ta, TC=tc, HAS_KEEP=keep is not None,
            num_warps=num_warps,
        )  # fmt: skip
    return words.view(torch.complex64)


def hermitian_spectrum(
    s: Tensor,
    layout: StorageLayout,
    keep: Tensor | None = None,
    scale: float = 1.0,
    *,
    tile: int = HERMITIAN_TILE,
    num_warps: int = HERMITIAN_WARPS,
) -> Tensor:
    """Hermitian part of per-head spectra in storage order, frequencies 0 ... n/2 in natural
    order: the input of ``torch.fft.irfft(out, n)``, which equals ``ifft(G).real``.

    Args:
        s: (H * n / inner, 2, inner) float32 planes of G in storage order (as
            :func:`natural_spectrum`).
        layout: the storage order's digits (:func:`storage_layout`), on ``s``'s device.
        keep: optional (n,) float32 (or bool) mask in natural frequency order, symmetric
            (``keep[f] = keep[n - f]``, as :func:`~dnastream.kernels.monarch.freq_mask`).
        scale: factor of every value (``1 / n`` before an unnormalised inverse FFT).
        tile, num_warps: launch of the Triton kernel, as in :func:`storage_spectrum`.

    Returns:
        (H, n/2 + 1) complex64: ``keep[f] * scale * (G[f] + conj(G[n - f])) / 2`` (imaginary
        parts of f = 0 and n/2 exactly zero).
    """
    _check_natural(s, layout, keep, "hermitian_spectrum")
    if not _uses_triton(s.device):
        return hermitian_spectrum_ref(s, layout, keep, scale)
    n, inner = layout.n, layout.inner
    heads = s.shape[0] * inner // n
    words = torch.empty((heads, n // 2 + 1), dtype=torch.int64, device=s.device)
    if heads:
        kp = keep.to(torch.float32).contiguous() if keep is not None else s
        ta, tc, mids, _ = _tiles(layout, tile)
        grid = (heads * mids, layout.a // ta, triton.cdiv(layout.c // 2 + 1, tc))
        _hermitian_spectrum_kernel[grid](
            s.contiguous(), layout.mid, layout.mid_inv, kp, words, n, inner, mids,
            float(scale), A=layout.a, C=layout.c, TA=ta, TC=tc, HAS_KEEP=keep is not None,
            num_warps=num_warps,
        )  # fmt: skip
    return words.view(torch.complex64)
