"""FFT long convolution in Triton: Monarch (dense DFT matrix) FFTs on tensor cores, fused.

Computes, for u (B, H, L) and a real filter k (H, Lk),

    x = pregate * u
    y = postgate * (x conv k + D * x)

with causal (linear, zero-padded) or circular convolution, like the PyTorch reference
``fftconv_ref``. See :mod:`dnastream.kernels.monarch` for the FFT factorisation and plans.

How it works
------------
* **Pairs of rows.** Two batch rows ``b, b+1`` of the same channel are packed into one complex
  sequence ``x_b + i x_(b+1)``. The filter is real, so the inverse transform of
  ``FFT(x_b + i x_(b+1)) * K`` is ``(x_b conv k) + i (x_(b+1) conv k)``: both outputs at the
  cost of one complex FFT pair. An odd last row is paired with zeros.
* **Fused kernels** (``N <= 8192``; fp32 ``<= 4096``): one program computes FFT, filter product
  and inverse FFT of a complex row without touching HBM in between. Two shapes:

  - ``_conv_kernel`` (small FFTs, ``rows > 1``): ``rows`` pairs of one channel per tile, loaded
    straight into the transposed step-1 layout (the transpose is in the load addressing), so
    every dot has ``rows * n2 >= 128`` rows; one in-register transpose between the steps.
  - ``_conv_nat_kernel`` (``rows == 1``, 2048-8192 points and the inner FFT of the outer
    path): the row as its ``(n1, n2)`` matrix, step 1 a left product with the DFT matrix,
    step 2 a right product, so nothing is transposed; the spectrum rows are processed
    ``chunk`` at a time and the last (left) product accumulates over chunks, which bounds the
    live registers.

  The spectrum stays in the order the forward steps produce (``k1 + n1 * k2``), the inverse is
  the mirror image. ``D * x`` is folded into the spectrum (``K + D``), so ``x`` need not stay
  live. The zero half of a causal input is never loaded (the step-1 DFT matrix only has its
  first ``io_rows`` columns), and the last inverse step only computes the stored outputs.
  Each program is persistent and walks a contiguous run of tiles (same channel: the spectrum
  stays in cache).
* **Outer levels** (``N > 8192``): a first kernel does a length-``P`` DFT over strided columns
  plus twiddles (reading the real input with gates and skipping its zero rows), writing
  complex intermediates (one more level, in place, above 1M; causal bf16/fp16 above 2M):
  scaled float16 for bf16/fp16 plans (``FFTPlan.outer_fp16``: per pair and channel by
  max|gate * x|, per level by the radix, per channel by a bound on sum |k| + |D|, see
  :func:`_channel_scale`), fp32 otherwise or with ``DNASTREAM_FFTCONV_FP16_BUFFERS=off``; the
  fused kernel runs in complex mode in place (FFT, filter, inverse); the mirrored outer kernels
  undo the levels and
  the last one applies the epilogue (post-gate, first L outputs only).
* **Precision.** For bf16/fp16 I/O the tensor-core operands are fp16, each data row (or column,
  for left products) scaled by its own maximum before rounding (no overflow, ~11-bit operands:
  bf16 operands would cost ~2x the error budget), with fp32 accumulation; for
  fp32 I/O the dots use 3xTF32. Twiddles, the spectrum product and all accumulations are fp32.
  Because two batch rows share one complex FFT, the rounding error of a row is relative to the
  pair's magnitude (rows of very different scale in one pair lose relative accuracy).
* **Backward** (autograd): ``du``/``dpregate`` are a convolution of ``postgate * dy`` with the
  conjugate spectrum (a correlation) and the same epilogue machinery; ``dpostgate`` re-runs the
  forward convolution with ``dy`` as post-gate; ``dk`` is ``ifft(sum_b FFT(dz_b) conj FFT(x_b))``
  accumulated in fp32 by a Triton kernel (the pair packing gives exactly this in the real part,
  and :mod:`~dnastream.kernels.spectrum_reorder` brings it, or up to 64K its Hermitian half, to
  natural order for the inverse FFT) and ``dD = sum(dz * x)`` (in the fused kernels, else
  :func:`~dnastream.kernels.skip_gradient.skip_gradient`). Under outer levels and at 16K the
  backward is one fused pass for du and the filter gradient (``fused_bwd``).

Fallbacks (plain PyTorch, documented): circular convolution whose length is not a power of two
``>= 256``; float64 inputs; CPU tensors when the Triton interpreter is off.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import weakref
from collections.abc import Callable

import torch
import triton
import triton.language as tl
from torch import Tensor

from dnastream.kernels.monarch import (
    FFTPlan,
    dft_table,
    filter_spectrum,
    filter_sum_bound,
    gemm_dtype,
    gradient_table,
    inner_twiddles,
    keep_mask,
    layout_for,
    plan_for,
    uses_gemm_spectrum,
)
from dnastream.kernels.pair_max import pair_max
from dnastream.kernels.skip_gradient import skip_gradient
from dnastream.kernels.spectrum_reorder import hermitian_spectrum, natural_spectrum

__all__ = ["FFTPlan", "fftconv_triton", "filter_spectrum", "plan_for", "uses_triton"]

_SUPPORTED = (torch.bfloat16, torch.float16, torch.float32)


# ============================================================================================
# Triton building blocks
# ============================================================================================


@triton.jit
def _imag_parts(bi, CONJ_B: tl.constexpr):
    """(im, -im) of the right operand B, or of conj(B) when CONJ_B."""
    if CONJ_B:
        return -bi, bi
    else:
        return bi, -bi


@triton.jit
def _mma(a, b, acc, MMA_FP16: tl.constexpr):
    """acc + a @ b with fp32 accumulation: fp16 / bf16 operands as they are, fp32 ones in
    3xTF32 (the precision every complex product of these kernels takes)."""
    if MMA_FP16:
        return tl.dot(a, b, acc)
    else:
        return tl.dot(a, b, acc, input_precision="tf32x3")


@triton.jit
def _rmatmul(xr, xi, br, bi, CONJ_B: tl.constexpr, MMA_FP16: tl.constexpr):
    """(xr + i xi) @ (br + i bi), or @ conj(.) when CONJ_B, fp32 result; both operands already
    in the dot dtype (fp16 operands scaled by the caller, who undoes it; fp32 ones use
    3xTF32). Only B's imaginary part is negated (no pass over x or the result)."""
    zero = tl.zeros((xr.shape[0], br.shape[1]), dtype=tl.float32)
    return _rmatmul_acc(xr, xi, br, bi, zero, zero, CONJ_B, MMA_FP16)


@triton.jit
def _rmatmul_acc(xr, xi, br, bi, cr, ci, CONJ_B: tl.constexpr, MMA_FP16: tl.constexpr):
    """(cr + i ci) + (xr + i xi) @ (br + i bi) (or @ conj(.)): :func:`_rmatmul` accumulated
    in the dots themselves (a loop-carried accumulator needs no product temporaries)."""
    b_im, b_imn = _imag_parts(bi, CONJ_B)
    cr = _mma(xi, b_imn, _mma(xr, br, cr, MMA_FP16), MMA_FP16)
    ci = _mma(xi, br, _mma(xr, b_im, ci, MMA_FP16), MMA_FP16)
    return cr, ci


@triton.jit
def _cmatmul(
    xr, xi, br, bi, CONJ_B: tl.constexpr, MMA_FP16: tl.constexpr, s=1.0,
    STATIC: tl.constexpr = False,
):  # fmt: skip
    """(xr + i xi) @ (br + i bi), or @ conj(br + i bi) when CONJ_B, with an fp32 result.

    fp16 mode: every row of the left operand is scaled by its own max |.| before rounding to
    fp16 (row scaling commutes with a right product), then scaled back after the fp32 dot;
    ``STATIC``: by the scalar ``s``, a bound on |x| known beforehand (no reductions).
    fp32 mode: 3xTF32 dots on the fp32 values.
    """
    if MMA_FP16 and STATIC:
        inv = 1.0 / s
        cr, ci = _cmatmul_unscaled(xr * inv, xi * inv, br, bi, CONJ_B)
        cr = cr * s
        ci = ci * s
    elif MMA_FP16:
        m = tl.maximum(tl.max(tl.abs(xr), axis=1), tl.max(tl.abs(xi), axis=1))
        m = tl.where(m > 0.0, m, 1.0)
        inv = 1.0 / m
        cr, ci = _cmatmul_unscaled(xr * inv[:, None], xi * inv[:, None], br, bi, CONJ_B)
        cr = cr * m[:, None]
        ci = ci * m[:, None]
    else:
        cr, ci = _rmatmul(xr, xi, br, bi, CONJ_B, False)
    return cr, ci


@triton.jit
def _lmatmul(fr, fi, ar, ai, CONJ_F: tl.constexpr, MMA_FP16: tl.constexpr):
    """(fr + i fi) @ (ar + i ai), or conj(F) @ (.) when CONJ_F; F on the left, fp32 result.

    The right operand must already be in the dot dtype (fp16 operands pre-scaled per column by
    the caller, who also undoes the scaling; fp32 operands use 3xTF32).
    """
    zero = tl.zeros((fr.shape[0], ar.shape[1]), dtype=tl.float32)
    return _lmatmul_acc(fr, fi, ar, ai, zero, zero, CONJ_F, MMA_FP16)


@triton.jit
def _lmatmul_acc(fr, fi, ar, ai, cr, ci, CONJ_F: tl.constexpr, MMA_FP16: tl.constexpr):
    """(cr + i ci) + (fr + i fi) @ (ar + i ai) (or conj(F) @ (.)): :func:`_lmatmul`
    accumulated in the dots themselves (a loop-carried accumulator needs no product
    temporaries)."""
    if CONJ_F:
        f_im = -fi
    else:
        f_im = fi
    f_imn = -f_im
    cr = _mma(f_imn, ai, _mma(fr, ar, cr, MMA_FP16), MMA_FP16)
    ci = _mma(f_im, ar, _mma(fr, ai, ci, MMA_FP16), MMA_FP16)
    return cr, ci


@triton.jit
def _cmatmul_unscaled(xr, xi, br, bi, CONJ_B: tl.constexpr):
    """(xr + i xi) @ (br + i bi) (or @ conj(.) when CONJ_B) with the left operand rounded to
    fp16 as it is (no scaling: its magnitude is known to stay within fp16's normal range, or
    the caller scaled it, :func:`_cmatmul`), fp32 accumulation."""
    return _rmatmul(xr.to(tl.float16), xi.to(tl.float16), br, bi, CONJ_B, True)


@triton.jit
def _col_scaled(xr, xi, MMA_FP16: tl.constexpr):
    """Right dot operand: fp16 with every column scaled by its max |.| (returns the scales)."""
    if MMA_FP16:
        m = tl.maximum(tl.max(tl.abs(xr), axis=0), tl.max(tl.abs(xi), axis=0))
        m = tl.where(m > 0.0, m, 1.0)
        inv = 1.0 / m
        return (xr * inv[None, :]).to(tl.float16), (xi * inv[None, :]).to(tl.float16), m
    else:
        return xr, xi, 1.0


@triton.jit
def _row_scaled(xr, xi, MMA_FP16: tl.constexpr):
    """Left dot operand: fp16 with every row scaled by its max |.| (returns the scales)."""
    if MMA_FP16:
        m = tl.maximum(tl.max(tl.abs(xr), axis=1), tl.max(tl.abs(xi), axis=1))
        m = tl.where(m > 0.0, m, 1.0)
        inv = 1.0 / m
        return (xr * inv[:, None]).to(tl.float16), (xi * inv[:, None]).to(tl.float16), m
    else:
        return xr, xi, 1.0


@triton.jit
def _nat_chunk_twiddled(
    ar,
    ai,
    scale,
    f1_ptr,
    tw_ptr,
    k1,
    N1: tl.constexpr,
    N2: tl.constexpr,
    N1_IO: tl.constexpr,
    MMA_FP16: tl.constexpr,
):
    """Step 1 (left product with the k1 rows of F1) and the twiddles of the forward inner
    FFT, natural orientation: the (KC, N2) rows [k1, b] that step 2 (a right product with F2)
    turns into spectrum rows. ar, ai: the (N1_IO, N2) input [a, b] = x[a * N2 + b] as dot
    operands (column-scaled by ``scale`` in fp16 mode)."""
    a = tl.arange(0, N1_IO)
    b = tl.arange(0, N2)
    foffs = k1[:, None] * N1 + a[None, :]
    fr = tl.load(f1_ptr + foffs)
    fi = tl.load(f1_ptr + N1 * N1 + foffs)
    br, bi = _lmatmul(fr, fi, ar, ai, False, MMA_FP16)  # [k1, b]
    if MMA_FP16:
        br = br * scale[None, :]
        bi = bi * scale[None, :]
    toffs = b[None, :] * N1 + k1[:, None]
    wr = tl.load(tw_ptr + toffs)
    wi = tl.load(tw_ptr + N1 * N2 + toffs)
    return br * wr - bi * wi, br * wi + bi * wr


@triton.jit
def _nat_chunk_fwd(
    ar,
    ai,
    scale,
    f1_ptr,
    f2_ptr,
    tw_ptr,
    k1,
    N1: tl.constexpr,
    N2: tl.constexpr,
    N1_IO: tl.constexpr,
    MMA_FP16: tl.constexpr,
    N2K: tl.constexpr = 0,
    s=1.0,
    STATIC: tl.constexpr = False,
):
    """Rows k1 (KC of them) of the forward inner FFT, natural orientation.

    ar, ai: the (N1_IO, N2) input [a, b] = x[a * N2 + b] as dot operands (column-scaled by
    ``scale`` in fp16 mode). Returns the (KC, N2) spectrum rows [k1, k2] = X[k1 + N1 * k2],
    or with ``N2K`` (frequency-sparse) only the kept columns: ``f2_ptr`` is then the (2, N2,
    N2K) table of the kept columns of F2 and the result is (KC, N2K).
    """
    cr, ci = _nat_chunk_twiddled(ar, ai, scale, f1_ptr, tw_ptr, k1, N1, N2, N1_IO, MMA_FP16)
    if N2K == 0:
        f2r, f2i = _load_planes(f2_ptr, N2, N2, N2, N2 * N2)
    else:
        f2r, f2i = _load_planes(f2_ptr, N2, N2K, N2K, N2 * N2K)
    return _cmatmul(cr, ci, f2r, f2i, False, MMA_FP16, s, STATIC)


@triton.jit
def _nat_chunk_spectrum(
    ar,
    ai,
    scale,
    f1_ptr,
    f2_ptr,
    f2c_ptr,
    tw_ptr,
    hf2r,
    hf2i,
    k1,
    N1: tl.constexpr,
    N2: tl.constexpr,
    N1_IO: tl.constexpr,
    MMA_FP16: tl.constexpr,
    N2K: tl.constexpr,
    HOIST_F2: tl.constexpr,
    s=1.0,
    STATIC: tl.constexpr = False,
):
    """Spectrum rows k1 of the one-row kernel: (KC, N2K) columns (all N2 when dense), with
    the step-2 table preloaded (``HOIST_F2``: hf2r, hf2i), compacted (sparse) or loaded.
    ``STATIC``: the step-2 operand is scaled by the bound ``s`` instead of its row maxima."""
    if HOIST_F2:
        cr, ci = _nat_chunk_twiddled(ar, ai, scale, f1_ptr, tw_ptr, k1, N1, N2, N1_IO, MMA_FP16)
        dr, di = _cmatmul(cr, ci, hf2r, hf2i, False, MMA_FP16, s, STATIC)
    elif N2K < N2:
        dr, di = _nat_chunk_fwd(
            ar, ai, scale, f1_ptr, f2c_ptr, tw_ptr, k1, N1, N2, N1_IO, MMA_FP16, N2K, s, STATIC
        )
    else:
        dr, di = _nat_chunk_fwd(
            ar, ai, scale, f1_ptr, f2_ptr, tw_ptr, k1, N1, N2, N1_IO, MMA_FP16, N2, s, STATIC
        )
    return dr, di


@triton.jit
def _load_planes(
    ptr, ROWS: tl.constexpr, COLS: tl.constexpr, LD: tl.constexpr, PLANE: tl.constexpr
):
    """Top-left (ROWS, COLS) block of a (2, *, LD) table of (re, im) planes PLANE apart."""
    offs = tl.arange(0, ROWS)[:, None] * LD + tl.arange(0, COLS)[None, :]
    return tl.load(ptr + offs), tl.load(ptr + PLANE + offs)


@triton.jit
def _twiddle(idx, NT):
    """exp(-2 pi i idx / NT) for integer idx in [0, NT) (centred first for accuracy)."""
    idx = tl.where(idx > NT // 2, idx - NT, idx)
    ang = idx.to(tl.float32) * (-6.283185307179586 / NT)
    return tl.cos(ang), tl.sin(ang)


@triton.jit
def _tile_twiddles(s, kk, s0, hwr, hwi, NT, TW_SPLIT: tl.constexpr):
    """(BS, P) twiddles exp(-2 pi i s * kp / NT) of an outer tile whose columns s start at s0:
    computed directly, or (``TW_SPLIT``) as W^(s0 * kp) times the per-program block
    (hwr, hwi) = W^((s - s0) * kp)."""
    if TW_SPLIT:
        rr, ri = _twiddle(s0 * kk, NT)
        return hwr * rr[None, :] - hwi * ri[None, :], hwr * ri[None, :] + hwi * rr[None, :]
    else:
        return _twiddle(s[:, None] * kk[None, :], NT)


@triton.jit
def _inner_fwd(
    xr,
    xi,
    f1_ptr,
    f2_ptr,
    tw_ptr,
    h_f1r,
    h_f1i,
    h_f2r,
    h_f2i,
    h_wr,
    h_wi,
    R: tl.constexpr,
    N1: tl.constexpr,
    N2: tl.constexpr,
    N1_IO: tl.constexpr,
    HOIST: tl.constexpr,
    MMA_FP16: tl.constexpr,
    DERIVED: tl.constexpr = False,
    BOUNDED: tl.constexpr = False,
    L1_OUT: tl.constexpr = False,
):
    """Forward inner FFT of R complex rows.

    In:  (R * N2, N1_IO) with element [r, b, a] = x_r[a * N2 + b] (rows a >= N1_IO are zero).
    Out: (R * N1, N2) with element [r, k1, k2] = X_r[k1 + N1 * k2].
    HOIST: the DFT matrices and twiddles come preloaded (h_*), else they are loaded here.
    DERIVED (fp16): each row of the first step is scaled by its L1 norm (sum of |re| + |im|)
    instead of its maximum, and the second step's rows by the row pair's largest such norm (a
    bound on every first-step output of the pair) instead of their own maxima: one row
    reduction less per transform. A spike keeps the bounds as tight as the maxima would be.
    BOUNDED (fp16; ``FFTPlan.bounded_fwd``): the inputs are the scaled float16 outer buffers,
    at most 1 in magnitude, so neither step scales its operands: the first step's are at most
    1, the second step's at most N1_IO (both within fp16's range), and no row reductions run.
    Returns (re, im, l1): with L1_OUT, l1 (R,) is each row's input L1 norm (sum of |re| +
    |im|, a bound on every |X_r|, for ``static_inv``); otherwise ones.
    """
    if HOIST:
        f1r, f1i = h_f1r, h_f1i
    else:
        f1r, f1i = _load_planes(f1_ptr, N1_IO, N1, N1, N1 * N1)
    if L1_OUT:
        m = tl.sum(tl.abs(xr) + tl.abs(xi), axis=1)  # [r, b]: L1 norms of the rows
        l1 = tl.sum(tl.reshape(m, (R, N2)), axis=1)
        m = tl.where(m > 0.0, m, 1.0)
    else:
        l1 = tl.full((R,), 1.0, tl.float32)
    if BOUNDED:
        br, bi = _cmatmul_unscaled(xr, xi, f1r, f1i, False)  # [r, b, k1]
    elif DERIVED and MMA_FP16:
        if not L1_OUT:
            m = tl.sum(tl.abs(xr) + tl.abs(xi), axis=1)  # [r, b]: L1 norms of the rows
            m = tl.where(m > 0.0, m, 1.0)
        br, bi = _cmatmul(xr, xi, f1r, f1i, False, MMA_FP16, m[:, None], True)  # [r, b, k1]
    else:
        br, bi = _cmatmul(xr, xi, f1r, f1i, False, MMA_FP16)  # [r, b, k1]
    if HOIST:
        wr, wi = h_wr, h_wi
    else:
        wr, wi = _load_planes(tw_ptr, N2, N1, N1, N1 * N2)
    br3 = tl.reshape(br, (R, N2, N1))
    bi3 = tl.reshape(bi, (R, N2, N1))
    cr3 = br3 * wr[None, :, :] - bi3 * wi[None, :, :]
    ci3 = br3 * wi[None, :, :] + bi3 * wr[None, :, :]
    cr = tl.reshape(tl.permute(cr3, (0, 2, 1)), (R * N1, N2))  # [r, k1, b]
    ci = tl.reshape(tl.permute(ci3, (0, 2, 1)), (R * N1, N2))
    if HOIST:
        f2r, f2i = h_f2r, h_f2i
    else:
        f2r, f2i = _load_planes(f2_ptr, N2, N2, N2, N2 * N2)
    if BOUNDED:  # |c[r, k1, b]| <= N1_IO
        dr, di = _cmatmul_unscaled(cr, ci, f2r, f2i, False)
    elif DERIVED and MMA_FP16:  # |c[r, k1, b]| <= sum_a |x[r, b, a]| <= max_b m[r, b]
        mp = tl.max(tl.reshape(m, (R, N2)), axis=1)
        s2 = tl.reshape(tl.broadcast_to(mp[:, None], (R, N1)), (R * N1,))
        dr, di = _cmatmul(cr, ci, f2r, f2i, False, MMA_FP16, s2[:, None], True)
    else:
        dr, di = _cmatmul(cr, ci, f2r, f2i, False, MMA_FP16)
    return dr, di, l1


@triton.jit
def _inner_inv(
    yr,
    yi,
    f1_ptr,
    f2_ptr,
    tw_ptr,
    h_g1r,
    h_g1i,
    h_f2r,
    h_f2i,
    h_wr,
    h_wi,
    R: tl.constexpr,
    N1: tl.constexpr,
    N2: tl.constexpr,
    N1_IO: tl.constexpr,
    HOIST: tl.constexpr,
    MMA_FP16: tl.constexpr,
    DERIVED: tl.constexpr = False,
    STATIC_INV: tl.constexpr = False,
    sinv=1.0,
):
    """Inverse (unnormalised) inner FFT, the mirror image of :func:`_inner_fwd`.

    In:  (R * N1, N2) spectrum [r, k1, k2]. Out: (R * N2, N1_IO) [r, b, a] = y_r[a * N2 + b].
    DERIVED: as in :func:`_inner_fwd` (first-step rows scaled by their L1 norms, the second
    step's by the row pair's largest one).
    STATIC_INV (fp16; ``FFTPlan.static_inv``): ``sinv`` (R * N1, 1) is the inverse of a bound
    on |y| known beforehand (the forward's L1 norm times the spectrum's maximum): the first
    step's operand is y * sinv (at most 1), the second step's rounds as it is (at most N2),
    and the output stays multiplied by sinv (the caller undoes it); no row reductions.
    """
    if HOIST:
        f2r, f2i = h_f2r, h_f2i
    else:
        f2r, f2i = _load_planes(f2_ptr, N2, N2, N2, N2 * N2)
    if STATIC_INV:
        er, ei = _cmatmul_unscaled(yr * sinv, yi * sinv, f2r, f2i, True)  # [r, k1, b]
    elif DERIVED and MMA_FP16:
        m = tl.sum(tl.abs(yr) + tl.abs(yi), axis=1)  # [r, k1]: L1 norms of the rows
        m = tl.where(m > 0.0, m, 1.0)
        er, ei = _cmatmul(yr, yi, f2r, f2i, True, MMA_FP16, m[:, None], True)  # [r, k1, b]
    else:
        er, ei = _cmatmul(yr, yi, f2r, f2i, True, MMA_FP16)  # [r, k1, b]
    er3 = tl.permute(tl.reshape(er, (R, N1, N2)), (0, 2, 1))  # [r, b, k1]
    ei3 = tl.permute(tl.reshape(ei, (R, N1, N2)), (0, 2, 1))
    if HOIST:
        wr, wi = h_wr, h_wi
    else:
        wr, wi = _load_planes(tw_ptr, N2, N1, N1, N1 * N2)
    cr = tl.reshape(er3 * wr[None, :, :] + ei3 * wi[None, :, :], (R * N2, N1))
    ci = tl.reshape(ei3 * wr[None, :, :] - er3 * wi[None, :, :], (R * N2, N1))
    if HOIST:
        g1r, g1i = h_g1r, h_g1i
    else:
        g1r, g1i = _load_planes(f1_ptr, N1, N1_IO, N1, N1 * N1)
    if STATIC_INV:  # |c[r, b, k1]| <= N2
        outr, outi = _cmatmul_unscaled(cr, ci, g1r, g1i, True)
    elif DERIVED and MMA_FP16:  # |c[r, b, k1]| <= sum_k2 |y[r, k1, k2]| <= max_k1 m[r, k1]
        mp = tl.max(tl.reshape(m, (R, N1)), axis=1)
        s2 = tl.reshape(tl.broadcast_to(mp[:, None], (R, N2)), (R * N2,))
        outr, outi = _cmatmul(cr, ci, g1r, g1i, True, MMA_FP16, s2[:, None], True)
    else:
        outr, outi = _cmatmul(cr, ci, g1r, g1i, True, MMA_FP16)
    return outr, outi


@triton.jit
def _gload(ptr, gptr, offs, mask, HAS_G: tl.constexpr):
    """fp32 load of ptr[offs], times gptr[offs] when HAS_G."""
    x = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_G:
        x = x * tl.load(gptr + offs, mask=mask, other=0.0).to(tl.float32)
    return x


@triton.jit
def _store(ptr, offs, val, mask, EMU_RNE: tl.constexpr):
    """Store fp32 ``val`` cast to ptr's dtype.

    EMU_RNE (set only under TRITON_INTERPRET for bfloat16 outputs): the CPU interpreter
    truncates fp32 -> bf16 while GPUs round to nearest even, so round explicitly there.
    """
    if EMU_RNE:
        bits = val.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        tl.store(ptr + offs, (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True), mask=mask)
    else:
        tl.store(ptr + offs, val.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _blk_row(r, h, B, H, L, NB, SOUT, T0):
    """Overlap-save window of virtual row ``r = b * NB + j`` (blocked plans): the element offset
    of its first sample ``j * SOUT - T0`` in a (B / NB, H, L) tensor (negative for the first
    block), and the valid window samples ``[lo, hi)`` (none when ``r >= B``, the virtual rows)."""
    b = r // NB
    w0 = tl.cast(r - b * NB, tl.int64) * SOUT - T0
    base = (tl.cast(b, tl.int64) * H + h) * L + w0
    lo = tl.maximum(-w0, 0)
    hi = tl.where(r < B, L - w0, 0)
    return base, lo, hi


@triton.jit
def _blk_ctx(r, h, B, H, NB, SOUT, T0, C):
    """Streaming context of virtual row ``r`` (blocked plans): window samples before the
    sequence's start come from ``context`` (B / NB, H, C), the C samples that precede it.
    Returns the element offset of window sample 0 in ``context`` and the window samples
    ``[clo, chi)`` that lie in it (none once the window starts inside the sequence)."""
    b = r // NB
    w0 = tl.cast(r - b * NB, tl.int64) * SOUT - T0
    cbase = (tl.cast(b, tl.int64) * H + h) * C + C + w0
    clo = tl.maximum(-C - w0, 0)
    chi = tl.where(r < B, -w0, 0)
    return cbase, clo, chi


@triton.jit
def _ctx_load(ctx_ptr, r, h, n, valid, B, H, NB, SOUT, T0, C):
    """fp32 context samples of window positions ``n`` of virtual row(s) ``r`` (0 elsewhere);
    ``r``, ``h`` and ``valid`` broadcast against ``n`` (scalars, or (rows, 1) columns)."""
    cbase, clo, chi = _blk_ctx(r, h, B, H, NB, SOUT, T0, C)
    mask = valid & (n >= clo) & (n < chi)
    return tl.load(ctx_ptr + cbase + n, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _row_offsets(
    p,
    h,
    kp,
    valid,
    b_idx,
    B,
    H,
    L,
    NTOT,
    M: tl.constexpr,
    COLS: tl.constexpr,
    N2: tl.constexpr,
    COMPLEX_IO: tl.constexpr,
    BLOCKED: tl.constexpr = False,
    NB=1,
    SOUT=0,
    T0=0,
):
    """Offsets, load masks and store masks of a (rows, COLS) tile whose row i holds column
    b_idx[i] of the view.

    Element [i, a] is sample ``a * N2 + b_idx[i]`` of pair p[i] of channel h[i] (inner row kp).
    Real I/O: offs0/offs1 index batch rows 2p and 2p+1 of a (B, H, L) tensor.
    Complex I/O: offs0/offs1 index the re/im planes of a (pairs, H, 2, NTOT) fp32 buffer.
    ``BLOCKED`` (overlap-save): rows 2p and 2p+1 are virtual rows (see :func:`_blk_row`) of B
    in all; samples before ``T0`` of a window are loaded but not stored.
    """
    a = tl.arange(0, COLS)
    n = a[None, :] * N2 + b_idx[:, None]
    if COMPLEX_IO:
        base = ((tl.cast(p, tl.int64) * H + h) * 2) * NTOT + tl.cast(kp, tl.int64) * M
        offs0 = base[:, None] + n
        offs1 = offs0 + NTOT
        m0 = valid[:, None] & (n >= 0)
        m1 = m0
        s0, s1 = m0, m1
    elif BLOCKED:
        base0, lo0, hi0 = _blk_row(2 * p, h, B, H, L, NB, SOUT, T0)
        base1, lo1, hi1 = _blk_row(2 * p + 1, h, B, H, L, NB, SOUT, T0)
        offs0 = base0[:, None] + n
        offs1 = base1[:, None] + n
        m0 = valid[:, None] & (n >= lo0[:, None]) & (n < hi0[:, None])
        m1 = valid[:, None] & (n >= lo1[:, None]) & (n < hi1[:, None])
        s0 = m0 & (n >= T0)
        s1 = m1 & (n >= T0)
    else:
        base = (tl.cast(2 * p, tl.int64) * H + h) * L
        offs0 = base[:, None] + n
        offs1 = offs0 + tl.cast(H, tl.int64) * L  # (H * L may pass 2^31)
        inb = n < L
        m0 = valid[:, None] & inb
        m1 = (valid & (2 * p + 1 < B))[:, None] & inb
        s0, s1 = m0, m1
    return offs0, offs1, m0, m1, s0, s1


# ============================================================================================
# Kernels
# ============================================================================================


@triton.jit
def _conv_kernel(
    src_ptr,
    g1_ptr,
    g2_ptr,
    aux_ptr,
    d_ptr,
    y_ptr,
    y2_ptr,
    spec_ptr,
    f1_ptr,
    f2_ptr,
    tw_ptr,
    B,
    H,
    L,
    NPAIRS,
    NTOT,
    n_pblk,
    n_tiles,
    tiles_per_prog,
    N1: tl.constexpr,
    N2: tl.constexpr,
    N1_IO: tl.constexpr,
    R: tl.constexpr,
    NR: tl.constexpr,
    COMPLEX_IO: tl.constexpr,
    CONJ_SPEC: tl.constexpr,
    HAS_G1: tl.constexpr,
    HAS_G2: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Y2: tl.constexpr,
    MMA_FP16: tl.constexpr,
    HOIST: tl.constexpr = True,
    RNE_Y: tl.constexpr = False,
    RNE_Y2: tl.constexpr = False,
    BLOCKED: tl.constexpr = False,
    NB=1,
    SOUT=0,
    T0=0,
    ctx_ptr=None,
    C=0,
    HAS_CTX: tl.constexpr = False,
    cs_ptr=None,
    SCALE_NR: tl.constexpr = False,
    xa_ptr=None,
    part_ptr=None,
    xw_ptr=None,
    SLOTS=1,
    XCORR: tl.constexpr = False,
    HAS_XW: tl.constexpr = False,
    DERIVED: tl.constexpr = False,
    BOUNDED: tl.constexpr = False,
    kmax_ptr=None,
    STATIC_INV: tl.constexpr = False,
):
    """Fused FFT -> spectrum product -> inverse FFT over tiles of R complex rows.

    Tile t is pair block j = t % n_pblk (pairs j*R .. j*R+R-1) of c = t // n_pblk = h * NR + kp,
    so all rows of a tile share the filter spectrum row c. Each program takes a contiguous run
    of tiles_per_prog tiles (consecutive tiles share c: the spectrum stays in L1/L2).
    Real I/O (NR == 1): y = g2 * (conv(g1 * src) + D * g1 * src), y2 = aux * (same before g2).
    Complex I/O: row kp (length N1 * N2) of the (pairs, H, 2, NTOT) buffer, updated in place.
    HOIST: DFT matrices and twiddles are loaded once per program instead of once per tile.
    BLOCKED (overlap-save, real I/O): the rows are B virtual rows, windows of N samples of
    the (B / NB, H, L) tensors (see :func:`_blk_row`), circularly convolved; a window's
    samples from T0 on are stored. ``HAS_CTX`` (streaming): window samples before the start
    come from ``ctx`` (B / NB, H, C) (see :func:`_blk_ctx`), not gated.
    XCORR (complex I/O, the fused backward under outer levels): also the filter-gradient
    spectra: each tile's FFT times conj(FFT of the same tile of the ``xa`` buffer), weighted per
    pair by ``xw`` (HAS_XW), summed per channel c over the program's run of tiles and stored in
    slot ``c - c_first`` of the program's ``SLOTS`` (2, M) slots in ``part`` (the launcher sums
    the slots per channel).
    DERIVED: each transform's first step scales its fp16 operand rows by their L1 norms and the
    second step by a bound derived from them (see :func:`_inner_fwd`), not by row maxima.
    BOUNDED (complex I/O from scaled float16 buffers): the forward transforms scale nothing
    (see :func:`_inner_fwd`). STATIC_INV: the inverse transform's operands are scaled by the
    forward input's L1 norm times ``kmax[c]`` (max |K| + |D| / N of the spectrum block), not
    by row maxima (see :func:`_inner_inv`); the output takes that factor back.
    """
    M: tl.constexpr = N1 * N2
    pid = tl.program_id(0)
    i = tl.arange(0, R * N2)
    b_idx = i % N2
    r = i // N2
    soffs = (tl.arange(0, R * N1) % N1 * N2)[:, None] + tl.arange(0, N2)[None, :]
    if HOIST:
        h_f1r, h_f1i = _load_planes(f1_ptr, N1_IO, N1, N1, N1 * N1)
        h_g1r, h_g1i = _load_planes(f1_ptr, N1, N1_IO, N1, N1 * N1)
        h_f2r, h_f2i = _load_planes(f2_ptr, N2, N2, N2, N2 * N2)
        h_wr, h_wi = _load_planes(tw_ptr, N2, N1, N1, N1 * N2)
    else:
        h_f1r, h_f1i, h_g1r, h_g1i, h_f2r, h_f2i, h_wr, h_wi = 0, 0, 0, 0, 0, 0, 0, 0
    t0 = pid * tiles_per_prog
    t_end = tl.minimum(t0 + tiles_per_prog, n_tiles)
    accr = tl.zeros((R * N1, N2), dtype=tl.float32)
    acci = tl.zeros((R * N1, N2), dtype=tl.float32)
    for t in range(t0, t_end):
        c = t // n_pblk
        j = t % n_pblk
        h = c // NR
        kp = c % NR
        p = j * R + r
        valid = p < NPAIRS
        p = tl.where(valid, p, 0)
        hv = h + 0 * p
        offs0, offs1, m0, m1, s0, s1 = _row_offsets(
            p, hv, kp + 0 * p, valid, b_idx, B, H, L, NTOT, M, N1_IO, N2, COMPLEX_IO,
            BLOCKED, NB, SOUT, T0,
        )  # fmt: skip
        xr = _gload(src_ptr, g1_ptr, offs0, m0, HAS_G1)
        xi = _gload(src_ptr, g1_ptr, offs1, m1, HAS_G1)
        if HAS_CTX:
            nn = tl.arange(0, N1_IO)[None, :] * N2 + b_idx[:, None]
            r0, hc, vc = (2 * p)[:, None], hv[:, None], valid[:, None]
            xr += _ctx_load(ctx_ptr, r0, hc, nn, vc, B, H, NB, SOUT, T0, C)
            xi += _ctx_load(ctx_ptr, r0 + 1, hc, nn, vc, B, H, NB, SOUT, T0, C)

        dr, di, l1x = _inner_fwd(
            xr,
            xi,
            f1_ptr,
            f2_ptr,
            tw_ptr,
            h_f1r,
            h_f1i,
            h_f2r,
            h_f2i,
            h_wr,
            h_wi,
            R,
            N1,
            N2,
            N1_IO,
            HOIST,
            MMA_FP16,
            DERIVED,
            BOUNDED,
            STATIC_INV,
        )

        if XCORR:  # the filter-gradient spectra: FFT(this tile) * conj(FFT(xa's tile))
            ar = _gload(xa_ptr, xa_ptr, offs0, m0, False)
            ai = _gload(xa_ptr, xa_ptr, offs1, m1, False)
            pr, pi, _ = _inner_fwd(
                ar, ai, f1_ptr, f2_ptr, tw_ptr, h_f1r, h_f1i, h_f2r, h_f2i, h_wr, h_wi,
                R, N1, N2, N1_IO, HOIST, MMA_FP16, DERIVED, BOUNDED,
            )  # fmt: skip
            if HAS_XW:  # one weight per pair: rows r * N1 .. r * N1 + N1 - 1 of the tile
                pw = j * R + tl.arange(0, R * N1) // N1
                w = tl.load(xw_ptr + pw * H + h, mask=pw < NPAIRS, other=0.0)[:, None]
                accr += w * (dr * pr + di * pi)
                acci += w * (di * pr - dr * pi)
            else:
                accr += dr * pr + di * pi
                acci += di * pr - dr * pi
            if (t + 1 == t_end) | ((t + 1) // n_pblk != c):  # the run leaves channel c
                xoffs = tl.arange(0, N1)[:, None] * N2 + tl.arange(0, N2)[None, :]
                slot = tl.cast(pid, tl.int64) * SLOTS + (c - t0 // n_pblk)
                tl.store(part_ptr + slot * (2 * M) + xoffs,
                         tl.sum(tl.reshape(accr, (R, N1, N2)), axis=0))  # fmt: skip
                tl.store(part_ptr + slot * (2 * M) + M + xoffs,
                         tl.sum(tl.reshape(acci, (R, N1, N2)), axis=0))  # fmt: skip
                accr = tl.zeros((R * N1, N2), dtype=tl.float32)
                acci = tl.zeros((R * N1, N2), dtype=tl.float32)

        sbase = spec_ptr + tl.cast(c, tl.int64) * M
        kr = tl.load(sbase + soffs)
        ki = tl.load(sbase + tl.cast(H, tl.int64) * NTOT + soffs)  # (H * NTOT may pass 2^31)
        if CONJ_SPEC:
            ki = -ki
        if HAS_D:  # D * x folded into the spectrum: K + D
            kr = kr + tl.load(d_ptr + h).to(tl.float32) / NTOT
        yr = dr * kr - di * ki
        yi = dr * ki + di * kr

        sx = 1.0
        sinv = 1.0
        if STATIC_INV:  # |y| <= ||x_r||_1 * kmax[c] (the spectrum block's max, D included)
            km = tl.load(kmax_ptr + c)
            sx = tl.where(l1x > 0.0, l1x, 1.0) * tl.where(km > 0.0, km, 1.0)  # (R,)
            sinv = tl.reshape(tl.broadcast_to((1.0 / sx)[:, None], (R, N1)), (R * N1,))[:, None]
        outr, outi = _inner_inv(
            yr, yi, f1_ptr, f2_ptr, tw_ptr, h_g1r, h_g1i, h_f2r, h_f2i, h_wr, h_wi,
            R, N1, N2, N1_IO, HOIST, MMA_FP16, DERIVED, STATIC_INV, sinv,
        )  # fmt: skip
        if STATIC_INV:  # the bound back (with the scaled buffers' factor cs: one multiply)
            srow = tl.reshape(tl.broadcast_to(sx[:, None], (R, N2)), (R * N2,))
            if COMPLEX_IO and SCALE_NR:
                srow = srow * tl.load(cs_ptr + h)
            outr = outr * srow[:, None]
            outi = outi * srow[:, None]

        if COMPLEX_IO:  # the outer levels' buffer (fp32, bf16 or scaled fp16)
            if SCALE_NR and not STATIC_INV:  # scaled fp16 buffers: the inverse levels'
                cs = tl.load(cs_ptr + h)  # inputs at the output's scale (NR, less for a
                # channel whose norm is large)
                outr = outr * cs
                outi = outi * cs
            _store(y_ptr, offs0, outr, m0, RNE_Y)
            _store(y_ptr, offs1, outi, m1, RNE_Y)
        else:
            if HAS_Y2:
                a0 = tl.load(aux_ptr + offs0, mask=s0, other=0.0).to(tl.float32)
                a1 = tl.load(aux_ptr + offs1, mask=s1, other=0.0).to(tl.float32)
                _store(y2_ptr, offs0, a0 * outr, s0, RNE_Y2)
                _store(y2_ptr, offs1, a1 * outi, s1, RNE_Y2)
            if HAS_G2:
                outr = outr * tl.load(g2_ptr + offs0, mask=s0, other=0.0).to(tl.float32)
                outi = outi * tl.load(g2_ptr + offs1, mask=s1, other=0.0).to(tl.float32)
            _store(y_ptr, offs0, outr, s0, RNE_Y)
            _store(y_ptr, offs1, outi, s1, RNE_Y)


@triton.jit
def _xcorr_kernel(
    a_ptr,
    ga_ptr,
    b_ptr,
    gb_ptr,
    s_ptr,
    dd_ptr,
    f1_ptr,
    f2_ptr,
    tw_ptr,
    B,
    H,
    L,
    NPAIRS,
    NTOT,
    n_pblk,
    blk_per_prog,
    N1: tl.constexpr,
    N2: tl.constexpr,
    N1_IO: tl.constexpr,
    R: tl.constexpr,
    NR: tl.constexpr,
    COMPLEX_IO: tl.constexpr,
    HAS_GA: tl.constexpr,
    HAS_GB: tl.constexpr,
    HAS_DD: tl.constexpr,
    MMA_FP16: tl.constexpr,
    HOIST: tl.constexpr = True,
    xw_ptr=None,
    HAS_XW: tl.constexpr = False,
    DERIVED: tl.constexpr = False,
    BOUNDED: tl.constexpr = False,
):
    """Partial cross-spectrum S[c, g] = sum over pairs of FFT(b) * conj(FFT(a)) (fp32).

    Program (c, g) with c = h * NR + kp handles pair blocks [g * blk_per_prog, ...) of row c.
    With a = x (gated input) and b = dz (gated dy), Re(ifft(sum S)) is dk (all lags) because
    the packed pair's imaginary cross terms only reach the imaginary part.
    HAS_DD: also the partial dot product sum(a * b) (= dD's contribution) for real I/O.
    HAS_XW: each pair's product is weighted by ``xw[pair, h]`` (scaled float16 buffers: the
    product of both signals' scales, undone before the pairs are summed).
    """
    M: tl.constexpr = N1 * N2
    c = tl.program_id(0)
    g = tl.program_id(1)
    G = tl.num_programs(1)
    h = c // NR
    kp = c % NR
    i = tl.arange(0, R * N2)
    b_idx = i % N2
    r = i // N2
    accr = tl.zeros((R * N1, N2), dtype=tl.float32)
    acci = tl.zeros((R * N1, N2), dtype=tl.float32)
    dd = tl.sum(tl.zeros((16,), dtype=tl.float32), axis=0)
    if HOIST:
        h_f1r, h_f1i = _load_planes(f1_ptr, N1_IO, N1, N1, N1 * N1)
        h_f2r, h_f2i = _load_planes(f2_ptr, N2, N2, N2, N2 * N2)
        h_wr, h_wi = _load_planes(tw_ptr, N2, N1, N1, N1 * N2)
    else:
        h_f1r, h_f1i, h_f2r, h_f2i, h_wr, h_wi = 0, 0, 0, 0, 0, 0
    start = g * blk_per_prog
    stop = tl.minimum(start + blk_per_prog, n_pblk)
    for j in range(start, stop):
        p = j * R + r
        valid = p < NPAIRS
        p = tl.where(valid, p, 0)
        hv = h + 0 * p
        kv = kp + 0 * p
        offs0, offs1, m0, m1, _, _ = _row_offsets(
            p, hv, kv, valid, b_idx, B, H, L, NTOT, M, N1_IO, N2, COMPLEX_IO
        )
        xr = _gload(a_ptr, ga_ptr, offs0, m0, HAS_GA)
        xi = _gload(a_ptr, ga_ptr, offs1, m1, HAS_GA)
        zr = _gload(b_ptr, gb_ptr, offs0, m0, HAS_GB)
        zi = _gload(b_ptr, gb_ptr, offs1, m1, HAS_GB)
        if HAS_DD:
            dd += tl.sum(tl.sum(xr * zr + xi * zi, axis=1), axis=0)
        pr, pi, _ = _inner_fwd(
            xr,
            xi,
            f1_ptr,
            f2_ptr,
            tw_ptr,
            h_f1r,
            h_f1i,
            h_f2r,
            h_f2i,
            h_wr,
            h_wi,
            R,
            N1,
            N2,
            N1_IO,
            HOIST,
            MMA_FP16,
            DERIVED,
            BOUNDED,
        )
        qr, qi, _ = _inner_fwd(
            zr,
            zi,
            f1_ptr,
            f2_ptr,
            tw_ptr,
            h_f1r,
            h_f1i,
            h_f2r,
            h_f2i,
            h_wr,
            h_wi,
            R,
            N1,
            N2,
            N1_IO,
            HOIST,
            MMA_FP16,
            DERIVED,
            BOUNDED,
        )
        if HAS_XW:  # one weight per pair: rows r * N1 .. r * N1 + N1 - 1 of the tile
            pw = j * R + tl.arange(0, R * N1) // N1
            w = tl.load(xw_ptr + pw * H + h, mask=pw < NPAIRS, other=0.0)[:, None]
            accr += w * (qr * pr + qi * pi)
            acci += w * (qi * pr - qr * pi)
        else:
            accr += qr * pr + qi * pi
            acci += qi * pr - qr * pi
    sr = tl.sum(tl.reshape(accr, (R, N1, N2)), axis=0)
    si = tl.sum(tl.reshape(acci, (R, N1, N2)), axis=0)
    offs = tl.arange(0, N1)[:, None] * N2 + tl.arange(0, N2)[None, :]
    base = tl.cast(c * G + g, tl.int64) * (2 * M)
    tl.store(s_ptr + base + offs, sr)
    tl.store(s_ptr + base + M + offs, si)
    if HAS_DD:
        tl.store(dd_ptr + c * G + g, dd)


@triton.jit
def _nat_bases(
    p,
    h,
    kp,
    B,
    H,
    L,
    NTOT,
    M: tl.constexpr,
    COMPLEX_IO: tl.constexpr,
    BLOCKED: tl.constexpr = False,
    NB=1,
    SOUT=0,
    T0=0,
):
    """Scalar element offsets of the two real rows (or re/im planes) of pair p, and the
    valid samples ``[lo, hi)`` of each (see :func:`_in_rows`; ``BLOCKED``: :func:`_blk_row`)."""
    lo0 = 0
    lo1 = 0
    if COMPLEX_IO:
        base0 = ((tl.cast(p, tl.int64) * H + h) * 2) * NTOT + tl.cast(kp, tl.int64) * M
        base1 = base0 + NTOT
        hi0 = M
        hi1 = M
    elif BLOCKED:
        base0, lo0, hi0 = _blk_row(2 * p, h, B, H, L, NB, SOUT, T0)
        base1, lo1, hi1 = _blk_row(2 * p + 1, h, B, H, L, NB, SOUT, T0)
    else:
        base0 = (tl.cast(2 * p, tl.int64) * H + h) * L
        base1 = base0 + tl.cast(H, tl.int64) * L
        hi0 = L
        hi1 = tl.where(2 * p + 1 < B, L, 0)  # odd B: the last pair's second row is zero
    return base0, base1, lo0, hi0, lo1, hi1


@triton.jit
def _in_rows(n, lo, hi, BLOCKED: tl.constexpr):
    """Mask of the samples ``lo <= n < hi`` (``lo`` is 0 unless ``BLOCKED``)."""
    if BLOCKED:
        return (n >= lo) & (n < hi)
    else:
        return n < hi


@triton.jit
def _static_bounds(xr, xi, kmax_at, N2: tl.constexpr):
    """Bounds of |.| in a one-row kernel's transform of x (``static_scale``): at step 2 (the
    partial DFTs of x), at its inverse (the spectrum times the filter, ``kmax`` the channel's
    max |K| + |D| / N) and at the last step (N2 terms more). |any DFT sum of x| <= ||x||_1,
    so every bound follows from it."""
    l1 = tl.sum(tl.sum(tl.abs(xr) + tl.abs(xi), axis=1), axis=0)
    l1 = tl.where(l1 > 0.0, l1, 1.0)
    km = tl.load(kmax_at)
    km = tl.where(km > 0.0, km, 1.0)
    return l1, l1 * km, N2 * l1 * km


@triton.jit
def _nat_store(
    accr, acci, n, m0, m1, base0, base1, h, y_ptr, y2_ptr, aux_ptr, g2_ptr, cs_ptr,
    COMPLEX_IO: tl.constexpr, SCALE_NR: tl.constexpr, HAS_Y2: tl.constexpr,
    HAS_G2: tl.constexpr, RNE_Y: tl.constexpr, RNE_Y2: tl.constexpr,
):  # fmt: skip
    """Epilogue of the one-row kernels: the two rows (re, im planes) of a pair at element
    offsets ``n`` of ``base0`` / ``base1``. Complex I/O (the outer levels' buffer): times the
    channel's factor ``cs[h]`` (scaled fp16 buffers, ``SCALE_NR``); real I/O: ``y2 = aux * y``
    (``HAS_Y2``), then ``y`` times the post-gate (``HAS_G2``)."""
    if COMPLEX_IO:
        if SCALE_NR:  # scaled fp16 buffers: the inverse levels' inputs at the output's
            cs = tl.load(cs_ptr + h)  # scale (NR, less where a channel's norm is large)
            accr = accr * cs
            acci = acci * cs
        _store(y_ptr + base0, n, accr, m0, RNE_Y)
        _store(y_ptr + base1, n, acci, m1, RNE_Y)
    else:
        _pair_epilogue(
            accr, acci, n, m0, m1, base0, base1, y_ptr, y2_ptr, aux_ptr, g2_ptr,
            HAS_Y2, HAS_G2, RNE_Y, RNE_Y2,
        )  # fmt: skip


@triton.jit
def _pair_epilogue(
    yr, yi, n, m0, m1, base0, base1, y_ptr, y2_ptr, aux_ptr, g2_ptr,
    HAS_Y2: tl.constexpr, HAS_G2: tl.constexpr, RNE_Y: tl.constexpr, RNE_Y2: tl.constexpr,
):  # fmt: skip
    """Real output rows of a batch-row pair (re plane row 2p at ``base0``, im plane row 2p + 1
    at ``base1``, element offsets ``n``): ``y2 = aux * y`` (``HAS_Y2``), then ``y`` times the
    post-gate (``HAS_G2``), stored."""
    if HAS_Y2:
        a0 = tl.load(aux_ptr + base0 + n, mask=m0, other=0.0).to(tl.float32)
        a1 = tl.load(aux_ptr + base1 + n, mask=m1, other=0.0).to(tl.float32)
        _store(y2_ptr + base0, n, a0 * yr, m0, RNE_Y2)
        _store(y2_ptr + base1, n, a1 * yi, m1, RNE_Y2)
    if HAS_G2:
        yr = yr * tl.load(g2_ptr + base0 + n, mask=m0, other=0.0).to(tl.float32)
        yi = yi * tl.load(g2_ptr + base1 + n, mask=m1, other=0.0).to(tl.float32)
    _store(y_ptr + base0, n, yr, m0, RNE_Y)
    _store(y_ptr + base1, n, yi, m1, RNE_Y)


@triton.jit
def _part_add(pbase, poffs, acc_lim, M, xw, dr, di, qr, qi):
    """The fused backward's filter-gradient slot: ``part[poffs] += xw * FFT(src) *
    conj(FFT(x))`` (planes re at ``pbase``, im at ``pbase + M``); offsets from ``acc_lim`` on
    are stored without reading (a slot's first tile)."""
    pm = poffs < acc_lim
    sr = tl.load(pbase + poffs, mask=pm, other=0.0) + xw * (dr * qr + di * qi)
    si = tl.load(pbase + M + poffs, mask=pm, other=0.0) + xw * (di * qr - dr * qi)
    tl.store(pbase + poffs, sr)
    tl.store(pbase + M + poffs, si)


@triton.jit
def _conv_nat_kernel(
    src_ptr,
    g1_ptr,
    g2_ptr,
    aux_ptr,
    d_ptr,
    y_ptr,
    y2_ptr,
    spec_ptr,
    f1_ptr,
    f2_ptr,
    tw_ptr,
    f2c_ptr,
    f2r_ptr,
    xa_ptr,
    xg_ptr,
    part_ptr,
    ddp_ptr,
    kmax_ptr,
    B,
    H,
    L,
    NPAIRS,
    NTOT,
    n_tiles,
    tiles_per_prog,
    N1: tl.constexpr,
    N2: tl.constexpr,
    N1_IO: tl.constexpr,
    KC: tl.constexpr,
    N2K: tl.constexpr,
    HOIST_F2: tl.constexpr,
    XCORR: tl.constexpr,
    HAS_XG: tl.constexpr,
    X_DD: tl.constexpr,
    SLOTS: tl.constexpr,
    NR: tl.constexpr,
    COMPLEX_IO: tl.constexpr,
    CONJ_SPEC: tl.constexpr,
    HAS_G1: tl.constexpr,
    HAS_G2: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Y2: tl.constexpr,
    MMA_FP16: tl.constexpr,
    RNE_Y: tl.constexpr = False,
    RNE_Y2: tl.constexpr = False,
    STATIC: tl.constexpr = False,
    BLOCKED: tl.constexpr = False,
    NB=1,
    SOUT=0,
    T0=0,
    ctx_ptr=None,
    C=0,
    HAS_CTX: tl.constexpr = False,
    xw_ptr=None,
    HAS_XW: tl.constexpr = False,
    cs_ptr=None,
    SCALE_NR: tl.constexpr = False,
    ACC_DOT: tl.constexpr = False,
    scr_ptr=None,
    TWO_PHASE: tl.constexpr = False,
):
    """Fused convolution of one complex row per tile, transpose-free ("natural" orientation).

    The row is held as its (N1_IO, N2) matrix [a, b] = x[a * N2 + b]. Step 1 is a left product
    F1[k1, a] @ x, step 2 a right product with F2, so nothing is transposed; the spectrum rows
    k1 are produced in chunks of KC rows, each chunk is multiplied by the filter, inverted back
    through step 2 and accumulated into the output through its share of the last (left)
    product conj(F1)[a, k1] -- only KC x N2 intermediate values are live at a time.
    Tile t is pair p = t % NPAIRS of c = t // NPAIRS = h * NR + kp (see ``_conv_kernel``).
    ``D * x`` is folded into the spectrum (K + D), so x need not stay in registers.

    Frequency-sparse plans (``N2K < N2``): only the ``N2K`` kept spectrum columns (low
    ``[0, N2K/2)`` and high ``[N2 - N2K/2, N2)``; the filter is zero elsewhere) go through step 2
    and its inverse, with the compacted tables ``f2c`` (2, N2, N2K) = F2[:, kept] and ``f2r``
    (2, N2K, N2) = F2[kept, :]; ``D * x`` is then added in the time domain (it is not sparse).

    ``STATIC`` (fp16 operands; with ``XCORR`` in du's transform only, ``static_bwd``): the
    per-chunk operands are scaled by bounds
    known per tile -- from the tile's L1 norm and ``kmax`` (per channel, max |K| + |D| / N) --
    instead of their row / column maxima, so a chunk needs no reductions across threads.

    ``XCORR`` (the fused backward, one pass for du and the filter gradient): the kernel also
    transforms the second signal ``xg * xa`` of the same pair (the forward's gated input),
    and adds ``FFT(src) * conj(FFT(x))`` chunk by chunk into its own slot of ``part``
    (program, channel - first channel of the program, 2, M), plus ``sum(src * x)`` into
    ``ddp`` (``X_DD``); the launcher sums the slots per channel. ``HAS_XW`` (``outer_fp16``
    buffers): each pair's product is multiplied by ``xw[p, h]``, undoing both signals' scales.

    ``TWO_PHASE`` (with ``STATIC``; dense, not ``XCORR`` or ``BLOCKED``): the chunk loop stores
    each chunk's last-step operand G (fp16, in units of the tile's bound, as the product would
    take it) into the program's scratch rows ``scr`` (2, N1, N2) instead of adding its product
    to the output; a second loop then forms y = conj(F1)[a, :] @ G chunk by chunk. The output
    accumulator is then live only in the second loop, not across the whole transform.

    ``BLOCKED`` (overlap-save, real I/O, not with ``XCORR``): the rows are B virtual rows,
    windows of N samples of the (B / NB, H, L) tensors (see :func:`_blk_row`), circularly
    convolved; a window's samples from T0 on are stored. ``HAS_CTX`` (streaming): window samples
    before the start come from ``ctx`` (B / NB, H, C) (see :func:`_blk_ctx`), not gated.
    """
    M: tl.constexpr = N1 * N2
    SPARSE: tl.constexpr = N2K < N2
    pid = tl.program_id(0)
    a = tl.arange(0, N1_IO)
    kc = tl.arange(0, KC)
    n = a[:, None] * N2 + tl.arange(0, N2)[None, :]
    jk = tl.arange(0, N2K)
    kept = tl.where(jk < N2K // 2, jk, jk + (N2 - N2K))
    soffs0 = kc[:, None] * N2 + kept[None, :]
    hf2r, hf2i, hg2r, hg2i = 0.0, 0.0, 0.0, 0.0  # (unused unless HOIST_F2)
    if HOIST_F2:  # step-2 tables loaded once per program (loop invariants), not per chunk
        if SPARSE:
            hf2r, hf2i = _load_planes(f2c_ptr, N2, N2K, N2K, N2 * N2K)
            hg2r, hg2i = _load_planes(f2r_ptr, N2K, N2, N2, N2K * N2)
        else:
            hf2r, hf2i = _load_planes(f2_ptr, N2, N2, N2, N2 * N2)
            hg2r, hg2i = hf2r, hf2i
    t0 = pid * tiles_per_prog
    c_first = t0 // NPAIRS
    if TWO_PHASE:  # this program's scratch rows (2, N1, N2), and G's offsets per chunk
        scr = scr_ptr + tl.cast(pid, tl.int64) * (2 * N1 * N2)
        goffs0 = kc[:, None] * N2 + tl.arange(0, N2)[None, :]
    for t in range(t0, tl.minimum(t0 + tiles_per_prog, n_tiles)):
        c = t // NPAIRS
        p = t % NPAIRS
        h = c // NR
        kp = c % NR
        base0, base1, lo0, hi0, lo1, hi1 = _nat_bases(
            p, h, kp, B, H, L, NTOT, M, COMPLEX_IO, BLOCKED, NB, SOUT, T0
        )
        m0 = _in_rows(n, lo0, hi0, BLOCKED)
        m1 = _in_rows(n, lo1, hi1, BLOCKED)
        xr = _gload(src_ptr + base0, g1_ptr + base0, n, m0, HAS_G1)
        xi = _gload(src_ptr + base1, g1_ptr + base1, n, m1, HAS_G1)
        if HAS_CTX:
            xr += _ctx_load(ctx_ptr, 2 * p, h, n, True, B, H, NB, SOUT, T0, C)
            xi += _ctx_load(ctx_ptr, 2 * p + 1, h, n, True, B, H, NB, SOUT, T0, C)
        if XCORR:
            vr = _gload(xa_ptr + base0, xg_ptr + base0, n, m0, HAS_XG)
            vi = _gload(xa_ptr + base1, xg_ptr + base1, n, m1, HAS_XG)
            if X_DD:
                tl.atomic_add(ddp_ptr + c, tl.sum(tl.sum(xr * vr + xi * vi, axis=1), axis=0))
            var, vai, vscale = _col_scaled(vr, vi, MMA_FP16)
            pbase = part_ptr + (tl.cast(pid, tl.int64) * SLOTS + (c - c_first)) * (2 * M)
            # the slot's first tile stores its product (no read: slots need no zero fill)
            acc_lim = tl.minimum(p, 1) * tl.minimum(t - t0, 1) * M  # M, or 0 on a first tile
            xw = 1.0
            if HAS_XW:
                xw = tl.load(xw_ptr + p * H + h)
        ar, ai, scale = _col_scaled(xr, xi, MMA_FP16)
        s1, s2, s3 = 1.0, 1.0, 1.0  # bounds of |.| at step 2, its inverse, the last step
        if STATIC:
            s1, s2, s3 = _static_bounds(xr, xi, kmax_ptr + c, N2)
        accr = tl.zeros((N1_IO, N2), dtype=tl.float32)
        acci = tl.zeros((N1_IO, N2), dtype=tl.float32)
        sbase = spec_ptr + tl.cast(c, tl.int64) * M
        if HAS_D:
            dv = tl.load(d_ptr + h).to(tl.float32) / NTOT
        for ch in range(N1 // KC):
            k1 = ch * KC + kc
            dr, di = _nat_chunk_spectrum(
                ar, ai, scale, f1_ptr, f2_ptr, f2c_ptr, tw_ptr, hf2r, hf2i, k1,
                N1, N2, N1_IO, MMA_FP16, N2K, HOIST_F2, s1, STATIC,
            )  # fmt: skip
            if XCORR:  # filter gradient: FFT(src) * conj(FFT(x)), accumulated per slot
                qr, qi = _nat_chunk_spectrum(
                    var, vai, vscale, f1_ptr, f2_ptr, f2c_ptr, tw_ptr, hf2r, hf2i, k1,
                    N1, N2, N1_IO, MMA_FP16, N2K, HOIST_F2,
                )  # fmt: skip
                _part_add(pbase, ch * KC * N2 + soffs0, acc_lim, M, xw, dr, di, qr, qi)
            kr = tl.load(sbase + ch * KC * N2 + soffs0)
            ki = tl.load(sbase + tl.cast(H, tl.int64) * NTOT + ch * KC * N2 + soffs0)
            if CONJ_SPEC:
                ki = -ki
            if HAS_D and not SPARSE:
                kr = kr + dv
            yr = dr * kr - di * ki
            yi = dr * ki + di * kr
            if HOIST_F2:
                er, ei = _cmatmul(yr, yi, hg2r, hg2i, True, MMA_FP16, s2, STATIC)  # [k1, b]
            else:
                if SPARSE:
                    f2r, f2i = _load_planes(f2r_ptr, N2K, N2, N2, N2K * N2)
                else:
                    f2r, f2i = _load_planes(f2_ptr, N2, N2, N2, N2 * N2)
                er, ei = _cmatmul(yr, yi, f2r, f2i, True, MMA_FP16, s2, STATIC)  # [k1, b]
            toffs = tl.arange(0, N2)[None, :] * N1 + k1[:, None]
            wr = tl.load(tw_ptr + toffs)
            wi = tl.load(tw_ptr + N1 * N2 + toffs)
            gr = er * wr + ei * wi
            gi = ei * wr - er * wi
            goffs = a[:, None] * N1 + k1[None, :]
            if STATIC and TWO_PHASE:  # G's rows k1, in units of s3: the second loop's operand
                tl.store(scr + ch * KC * N2 + goffs0, (gr * (1.0 / s3)).to(tl.float16))
                tl.store(scr + N1 * N2 + ch * KC * N2 + goffs0, (gi * (1.0 / s3)).to(tl.float16))
            else:
                hr = tl.load(f1_ptr + goffs)
                hi = tl.load(f1_ptr + N1 * N1 + goffs)
                if STATIC:  # in units of s3 (one bound per tile)
                    gr = (gr * (1.0 / s3)).to(tl.float16)
                    gi = (gi * (1.0 / s3)).to(tl.float16)
                    if ACC_DOT:  # accumulated in the dots, scaled once after the loop
                        accr, acci = _lmatmul_acc(hr, hi, gr, gi, accr, acci, True, MMA_FP16)
                    else:
                        pr, pi = _lmatmul(hr, hi, gr, gi, True, MMA_FP16)  # [a, b]
                        accr += pr * s3
                        acci += pi * s3
                else:
                    gr, gi, gs = _col_scaled(gr, gi, MMA_FP16)
                    pr, pi = _lmatmul(hr, hi, gr, gi, True, MMA_FP16)  # [a, b]
                    if MMA_FP16:
                        pr = pr * gs[None, :]
                        pi = pi * gs[None, :]
                    accr += pr
                    acci += pi
        if STATIC and TWO_PHASE:  # y[a, b] = sum_k1 conj(F1)[a, k1] G[k1, b], K chunk by chunk
            tl.debug_barrier()  # every thread's G rows stored before any is read
            for ch in range(N1 // KC):
                k1 = ch * KC + kc
                goffs = a[:, None] * N1 + k1[None, :]
                hr = tl.load(f1_ptr + goffs)
                hi = tl.load(f1_ptr + N1 * N1 + goffs)
                g16r = tl.load(scr + ch * KC * N2 + goffs0)
                g16i = tl.load(scr + N1 * N2 + ch * KC * N2 + goffs0)
                accr, acci = _lmatmul_acc(hr, hi, g16r, g16i, accr, acci, True, MMA_FP16)
            tl.debug_barrier()  # read before the next tile's first loop writes them again
        if STATIC and (ACC_DOT or TWO_PHASE):
            accr = accr * s3
            acci = acci * s3
        if BLOCKED:  # a window's first T0 samples only feed the later ones
            m0 = m0 & (n >= T0)
            m1 = m1 & (n >= T0)
        if HAS_D and SPARSE:  # D * x in the time domain (x reloaded from cache)
            dt = tl.load(d_ptr + h).to(tl.float32)
            accr += dt * _gload(src_ptr + base0, g1_ptr + base0, n, m0, HAS_G1)
            acci += dt * _gload(src_ptr + base1, g1_ptr + base1, n, m1, HAS_G1)
        _nat_store(
            accr, acci, n, m0, m1, base0, base1, h, y_ptr, y2_ptr, aux_ptr, g2_ptr, cs_ptr,
            COMPLEX_IO, SCALE_NR, HAS_Y2, HAS_G2, RNE_Y, RNE_Y2,
        )  # fmt: skip


@triton.jit
def _f2_product(f2r, f2i, xr, xi, CONJ_F: tl.constexpr, MMA_FP16: tl.constexpr, s, STATIC):
    """F2 @ X (or conj(F2) @ X) for the fp32 right operand X of the transposed one-row kernel:
    in fp16 mode X is rounded per column scaled by its max |.| (per k1, the natural kernel's
    rows), or by the bound ``s`` (``STATIC``), and the scale undone after the fp32 dot."""
    if MMA_FP16 and STATIC:
        inv = 1.0 / s
        pr, pi = _lmatmul(
            f2r, f2i, (xr * inv).to(tl.float16), (xi * inv).to(tl.float16), CONJ_F, True
        )
        pr = pr * s
        pi = pi * s
    else:
        xr, xi, m = _col_scaled(xr, xi, MMA_FP16)
        pr, pi = _lmatmul(f2r, f2i, xr, xi, CONJ_F, MMA_FP16)
        if MMA_FP16:
            pr = pr * m[None, :]
            pi = pi * m[None, :]
    return pr, pi


@triton.jit
def _nat_t_chunk(
    ar,
    ai,
    scale,
    f1_ptr,
    f2r,
    f2i,
    wr,
    wi,
    a,
    k1,
    N1: tl.constexpr,
    MMA_FP16: tl.constexpr,
    s=1.0,
    STATIC: tl.constexpr = False,
):
    """Spectrum chunk of the transposed one-row kernel: D^T[k2, k1] = F2 @ (tw * (x^T @
    F1[:, k1])) for the (N2, N1_IO) operand x^T (fp16: rows scaled by ``scale``); ``wr``, ``wi``
    the chunk's (N2, KC) twiddles. Step 2's operand is scaled per k1, or by the bound ``s``
    (``STATIC``)."""
    foffs = a[:, None] * N1 + k1[None, :]  # (N1_IO, KC): F1[a, k1] (F1 is symmetric)
    fr = tl.load(f1_ptr + foffs)
    fi = tl.load(f1_ptr + N1 * N1 + foffs)
    cr, ci = _rmatmul(ar, ai, fr, fi, False, MMA_FP16)
    if MMA_FP16:
        cr = cr * scale[:, None]
        ci = ci * scale[:, None]
    tr = cr * wr - ci * wi
    ti = cr * wi + ci * wr
    return _f2_product(f2r, f2i, tr, ti, False, MMA_FP16, s, STATIC)


@triton.jit
def _conv_nat_t_kernel(
    src_ptr,
    g1_ptr,
    g2_ptr,
    aux_ptr,
    d_ptr,
    y_ptr,
    y2_ptr,
    spec_ptr,
    f1_ptr,
    f2_ptr,
    tw_ptr,
    kmax_ptr,
    B,
    H,
    L,
    NPAIRS,
    NTOT,
    n_tiles,
    tiles_per_prog,
    N1: tl.constexpr,
    N2: tl.constexpr,
    N1_IO: tl.constexpr,
    KC: tl.constexpr,
    HOIST_F2: tl.constexpr,
    NR: tl.constexpr,
    COMPLEX_IO: tl.constexpr,
    CONJ_SPEC: tl.constexpr,
    HAS_G1: tl.constexpr,
    HAS_G2: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Y2: tl.constexpr,
    MMA_FP16: tl.constexpr,
    RNE_Y: tl.constexpr = False,
    RNE_Y2: tl.constexpr = False,
    STATIC: tl.constexpr = False,
    cs_ptr=None,
    SCALE_NR: tl.constexpr = False,
    xa_ptr=None,
    xg_ptr=None,
    part_ptr=None,
    ddp_ptr=None,
    xw_ptr=None,
    XCORR: tl.constexpr = False,
    HAS_XG: tl.constexpr = False,
    X_DD: tl.constexpr = False,
    HAS_XW: tl.constexpr = False,
    SLOTS: tl.constexpr = 1,
    ACC_DOT: tl.constexpr = False,
):
    """:func:`_conv_nat_kernel` (dense; no windows) in the transposed orientation: every
    product has the ``N2`` rows of b or k2 as its M dimension.

    The row is held as x^T, the (N2, N1_IO) matrix [b, a] = x[a * N2 + b]. Per chunk of KC
    spectrum rows k1: step 1 C^T = x^T @ F1[:, k1] (F1 is symmetric), twiddles, step 2
    D^T = F2 @ C^T, the filter, the inverse step 2 conj(F2) @ Y^T, twiddles, and the last step
    accumulates G^T @ conj(F1)[k1, :] into y^T. With KC = 32 the natural kernel's first four
    products have M = KC = 32 rows, which sm_90 runs as mma.sync; here M = N2 >= 64, which
    Triton can issue as wgmma. The operands are scaled in the same groups (per b, per k1) as
    there, so the rounding is the same kind. ``XCORR`` (the fused backward: du and the filter
    gradient's spectra in one pass), ``HAS_XG``, ``X_DD``, ``HAS_XW``, ``SLOTS``: as in the
    natural kernel; the spectra land in the same [k1, k2] layout.
    """
    M: tl.constexpr = N1 * N2
    pid = tl.program_id(0)
    a = tl.arange(0, N1_IO)
    b = tl.arange(0, N2)
    kc = tl.arange(0, KC)
    n = a[None, :] * N2 + b[:, None]  # (N2, N1_IO): x^T[b, a] = x[a * N2 + b]
    soffs0 = kc[None, :] * N2 + b[:, None]  # (N2, KC): spectrum [k1, k2] at k1 * N2 + k2
    hf2r, hf2i = 0.0, 0.0
    if HOIST_F2:  # step-2 tables loaded once per program
        hf2r, hf2i = _load_planes(f2_ptr, N2, N2, N2, N2 * N2)
    t0 = pid * tiles_per_prog
    c_first = t0 // NPAIRS
    for t in range(t0, tl.minimum(t0 + tiles_per_prog, n_tiles)):
        c = t // NPAIRS
        p = t % NPAIRS
        h = c // NR
        kp = c % NR
        base0, base1, lo0, hi0, lo1, hi1 = _nat_bases(p, h, kp, B, H, L, NTOT, M, COMPLEX_IO)
        m0 = n < hi0
        m1 = n < hi1
        xr = _gload(src_ptr + base0, g1_ptr + base0, n, m0, HAS_G1)
        xi = _gload(src_ptr + base1, g1_ptr + base1, n, m1, HAS_G1)
        if XCORR:
            vr = _gload(xa_ptr + base0, xg_ptr + base0, n, m0, HAS_XG)
            vi = _gload(xa_ptr + base1, xg_ptr + base1, n, m1, HAS_XG)
            if X_DD:
                tl.atomic_add(ddp_ptr + c, tl.sum(tl.sum(xr * vr + xi * vi, axis=1), axis=0))
            var, vai, vscale = _row_scaled(vr, vi, MMA_FP16)
            pbase = part_ptr + (tl.cast(pid, tl.int64) * SLOTS + (c - c_first)) * (2 * M)
            # the slot's first tile stores its product (no read: slots need no zero fill)
            acc_lim = tl.minimum(p, 1) * tl.minimum(t - t0, 1) * M  # M, or 0 on a first tile
            xw = 1.0
            if HAS_XW:
                xw = tl.load(xw_ptr + p * H + h)
        ar, ai, scale = _row_scaled(xr, xi, MMA_FP16)  # per b (the natural kernel's columns)
        s1, s2, s3 = 1.0, 1.0, 1.0  # bounds of |.| at step 2, its inverse, the last step
        if STATIC:
            s1, s2, s3 = _static_bounds(xr, xi, kmax_ptr + c, N2)
        accr = tl.zeros((N2, N1_IO), dtype=tl.float32)
        acci = tl.zeros((N2, N1_IO), dtype=tl.float32)
        sbase = spec_ptr + tl.cast(c, tl.int64) * M
        if HAS_D:
            dv = tl.load(d_ptr + h).to(tl.float32) / NTOT
        for ch in range(N1 // KC):
            k1 = ch * KC + kc
            if HOIST_F2:
                f2r, f2i = hf2r, hf2i
            else:
                f2r, f2i = _load_planes(f2_ptr, N2, N2, N2, N2 * N2)
            toffs = b[:, None] * N1 + k1[None, :]  # (N2, KC)
            wr = tl.load(tw_ptr + toffs)
            wi = tl.load(tw_ptr + N1 * N2 + toffs)
            dr, di = _nat_t_chunk(
                ar, ai, scale, f1_ptr, f2r, f2i, wr, wi, a, k1, N1, MMA_FP16, s1, STATIC
            )
            if XCORR:  # filter gradient: FFT(src) * conj(FFT(x)), accumulated per slot
                qr, qi = _nat_t_chunk(
                    var, vai, vscale, f1_ptr, f2r, f2i, wr, wi, a, k1, N1, MMA_FP16
                )
                _part_add(pbase, ch * KC * N2 + soffs0, acc_lim, M, xw, dr, di, qr, qi)
            # the filter (K + D / N), then the inverse step 2: E^T = conj(F2) @ Y^T
            kr = tl.load(sbase + ch * KC * N2 + soffs0)
            ki = tl.load(sbase + tl.cast(H, tl.int64) * NTOT + ch * KC * N2 + soffs0)
            if CONJ_SPEC:
                ki = -ki
            if HAS_D:
                kr = kr + dv
            yr = dr * kr - di * ki
            yi = dr * ki + di * kr
            er, ei = _f2_product(f2r, f2i, yr, yi, True, MMA_FP16, s2, STATIC)
            gr = er * wr + ei * wi
            gi = ei * wr - er * wi
            # last step: y^T[b, a] += sum_k1 G^T[b, k1] conj(F1)[k1, a] (operand scaled per b)
            goffs = k1[:, None] * N1 + a[None, :]  # (KC, N1_IO)
            hr = tl.load(f1_ptr + goffs)
            hi = tl.load(f1_ptr + N1 * N1 + goffs)
            if MMA_FP16 and STATIC and ACC_DOT:  # in units of s3 (one bound per tile)
                inv3 = 1.0 / s3
                g16r = (gr * inv3).to(tl.float16)
                g16i = (gi * inv3).to(tl.float16)
                accr, acci = _rmatmul_acc(g16r, g16i, hr, hi, accr, acci, True, True)
            elif MMA_FP16 and STATIC:
                inv3 = 1.0 / s3
                g16r = (gr * inv3).to(tl.float16)
                g16i = (gi * inv3).to(tl.float16)
                pr, pi = _rmatmul(g16r, g16i, hr, hi, True, True)
                accr += pr * s3
                acci += pi * s3
            else:
                g16r, g16i, gs = _row_scaled(gr, gi, MMA_FP16)
                pr, pi = _rmatmul(g16r, g16i, hr, hi, True, MMA_FP16)
                if MMA_FP16:
                    pr = pr * gs[:, None]
                    pi = pi * gs[:, None]
                accr += pr
                acci += pi
        if MMA_FP16 and STATIC and ACC_DOT:
            accr = accr * s3
            acci = acci * s3
        _nat_store(
            accr, acci, n, m0, m1, base0, base1, h, y_ptr, y2_ptr, aux_ptr, g2_ptr, cs_ptr,
            COMPLEX_IO, SCALE_NR, HAS_Y2, HAS_G2, RNE_Y, RNE_Y2,
        )  # fmt: skip


@triton.jit
def _xc_chunk(
    xr, xi, f1_ptr, f2_ptr, tw_ptr, f2r, f2i, wr, wi, a, k1, N1: tl.constexpr, N2: tl.constexpr,
    N1_IO: tl.constexpr, MMA_FP16: tl.constexpr, TRANSPOSED: tl.constexpr,
):  # fmt: skip
    """Spectrum rows k1 of one signal of a pair in the one-row filter-gradient kernel, its
    operand scaled per row (transposed orientation) or per column (natural)."""
    if TRANSPOSED:
        ar, ai, sa = _row_scaled(xr, xi, MMA_FP16)
        return _nat_t_chunk(ar, ai, sa, f1_ptr, f2r, f2i, wr, wi, a, k1, N1, MMA_FP16)
    else:
        ar, ai, sa = _col_scaled(xr, xi, MMA_FP16)
        return _nat_chunk_fwd(ar, ai, sa, f1_ptr, f2_ptr, tw_ptr, k1, N1, N2, N1_IO, MMA_FP16)


@triton.jit
def _xcorr_nat_kernel(
    a_ptr,
    ga_ptr,
    b_ptr,
    gb_ptr,
    s_ptr,
    dd_ptr,
    f1_ptr,
    f2_ptr,
    tw_ptr,
    B,
    H,
    L,
    NPAIRS,
    NTOT,
    pairs_per_prog,
    G,
    NCH,
    N1: tl.constexpr,
    N2: tl.constexpr,
    N1_IO: tl.constexpr,
    KC: tl.constexpr,
    NR: tl.constexpr,
    COMPLEX_IO: tl.constexpr,
    HAS_GA: tl.constexpr,
    HAS_GB: tl.constexpr,
    HAS_DD: tl.constexpr,
    MMA_FP16: tl.constexpr,
    xw_ptr=None,
    HAS_XW: tl.constexpr = False,
    TRANSPOSED: tl.constexpr = False,
):
    """Natural-orientation twin of ``_xcorr_kernel``: program (c, g, ch) accumulates spectrum
    rows k1 in chunk ch of sum over its pairs of FFT(b) * conj(FFT(a)) (and sum(a * b)),
    each pair's product weighted by ``xw[pair, h]`` when HAS_XW. ``TRANSPOSED``
    (``nat_transposed_bwd``): the rows as (N2, N1_IO) matrices x^T and every product with N2
    rows, as :func:`_conv_nat_t_kernel` (the spectra land in the same [k1, k2] layout).

    The grid is flat with the chunk fastest: the NCH programs of one channel, which all load
    the same rows, run side by side and share them through L2 (with the chunk slowest each
    chunk re-read them from HBM: 17.6 of 43 ms forward+backward at 128K on an H100)."""
    M: tl.constexpr = N1 * N2
    pid = tl.program_id(0)
    ch = pid % NCH
    g = (pid // NCH) % G
    c = pid // (NCH * G)
    h = c // NR
    kp = c % NR
    a = tl.arange(0, N1_IO)
    b = tl.arange(0, N2)
    k1 = ch * KC + tl.arange(0, KC)
    if TRANSPOSED:
        n = a[None, :] * N2 + b[:, None]  # (N2, N1_IO)
        f2r, f2i = _load_planes(f2_ptr, N2, N2, N2, N2 * N2)
        toffs = b[:, None] * N1 + k1[None, :]  # (N2, KC)
        wr = tl.load(tw_ptr + toffs)
        wi = tl.load(tw_ptr + N1 * N2 + toffs)
        offs = k1[None, :] * N2 + b[:, None]  # (N2, KC): [k1, k2] at k1 * N2 + k2
        accr = tl.zeros((N2, KC), dtype=tl.float32)
        acci = tl.zeros((N2, KC), dtype=tl.float32)
    else:
        f2r, f2i, wr, wi = 0.0, 0.0, 0.0, 0.0  # (the transposed orientation's tables only)
        n = a[:, None] * N2 + b[None, :]
        offs = k1[:, None] * N2 + b[None, :]
        accr = tl.zeros((KC, N2), dtype=tl.float32)
        acci = tl.zeros((KC, N2), dtype=tl.float32)
    dd = tl.sum(tl.zeros((16,), dtype=tl.float32), axis=0)
    start = g * pairs_per_prog
    for p in range(start, tl.minimum(start + pairs_per_prog, NPAIRS)):
        base0, base1, _, lim0, _, lim1 = _nat_bases(p, h, kp, B, H, L, NTOT, M, COMPLEX_IO)
        m0 = n < lim0
        m1 = n < lim1
        xr = _gload(a_ptr + base0, ga_ptr + base0, n, m0, HAS_GA)
        xi = _gload(a_ptr + base1, ga_ptr + base1, n, m1, HAS_GA)
        if HAS_DD:
            zr = _gload(b_ptr + base0, gb_ptr + base0, n, m0, HAS_GB)
            zi = _gload(b_ptr + base1, gb_ptr + base1, n, m1, HAS_GB)
            dd += tl.sum(tl.sum(xr * zr + xi * zi, axis=1), axis=0)
        pr, pi = _xc_chunk(
            xr, xi, f1_ptr, f2_ptr, tw_ptr, f2r, f2i, wr, wi, a, k1, N1, N2, N1_IO, MMA_FP16,
            TRANSPOSED,
        )  # fmt: skip
        if not HAS_DD:  # load the second row only now (fewer live registers)
            zr = _gload(b_ptr + base0, gb_ptr + base0, n, m0, HAS_GB)
            zi = _gload(b_ptr + base1, gb_ptr + base1, n, m1, HAS_GB)
        qr, qi = _xc_chunk(
            zr, zi, f1_ptr, f2_ptr, tw_ptr, f2r, f2i, wr, wi, a, k1, N1, N2, N1_IO, MMA_FP16,
            TRANSPOSED,
        )  # fmt: skip
        if HAS_XW:
            w = tl.load(xw_ptr + p * H + h)
            accr += w * (qr * pr + qi * pi)
            acci += w * (qi * pr - qr * pi)
        else:
            accr += qr * pr + qi * pi
            acci += qi * pr - qr * pi
    base = tl.cast(c * G + g, tl.int64) * (2 * M)
    tl.store(s_ptr + base + offs, accr)
    tl.store(s_ptr + base + M + offs, acci)
    if HAS_DD:
        tl.store(dd_ptr + (c * G + g) * NCH + ch, dd)


@triton.jit
def _outer_fwd_kernel(
    src_ptr,
    g_ptr,
    dst_ptr,
    f_ptr,
    B,
    H,
    L,
    NTOT,
    S,
    GIN,
    n_sblk,
    n_tiles,
    P: tl.constexpr,
    P_IO: tl.constexpr,
    BS: tl.constexpr,
    FIRST: tl.constexpr,
    HAS_G: tl.constexpr,
    MMA_FP16: tl.constexpr,
    TW_SPLIT: tl.constexpr = False,
    RNE_BUF: tl.constexpr = False,
    sig_ptr=None,
    HAS_SIG: tl.constexpr = False,
    SCALED: tl.constexpr = False,
):
    """One outer level, forward: T[kp, s] = W_(P*S)^(s*kp) * sum_p W_P^(p*kp) x[p*S + s].

    Tile = columns s in [s0, s0 + BS) of group gi of pair p of channel h, held transposed as
    (BS, P): the strided DFT is then a right product with the (P_IO, P) DFT matrix.
    FIRST: x comes from the real (B, H, L) input (times the gate), rows p >= P_IO are zero.
    Otherwise x is row-group gi of the (pairs, H, 2, NTOT) buffer, updated in place.
    TW_SPLIT: the twiddles of a tile are W^(s0*kp) (P values) times the (BS, P) block
    W^(sl*kp) computed once per program, instead of BS * P cosines and sines per tile.
    SCALED (``outer_fp16``): the outputs are divided by P; HAS_SIG (FIRST): the inputs of
    pair p, channel h are multiplied by ``sig[p, h]`` (1 / their maximum), so that no stored
    value exceeds 1 in magnitude.
    """
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    sl = tl.arange(0, BS)
    a = tl.arange(0, P_IO)
    kk = tl.arange(0, P)
    fr, fi = _load_planes(f_ptr, P_IO, P, P, P * P)
    hwr, hwi = 0.0, 0.0
    if TW_SPLIT:
        hwr, hwi = _twiddle(sl[:, None] * kk[None, :], P * S)
    for t in range(pid, n_tiles, nprog):
        sb = t % n_sblk
        rest = t // n_sblk
        gi = rest % GIN
        rest = rest // GIN
        h = rest % H
        p = rest // H
        s = sb * BS + sl
        n = a[None, :] * S + s[:, None]
        dbase = ((tl.cast(p, tl.int64) * H + h) * 2) * NTOT + tl.cast(gi, tl.int64) * (P * S)
        # (per-element offsets stay int32 from a per-tile int64 base pointer: int64 offsets
        # cost several integer instructions per element and access)
        if FIRST:
            base0 = (tl.cast(2 * p, tl.int64) * H + h) * L
            base1 = base0 + tl.cast(H, tl.int64) * L
            inb = n < L
            xr = _gload(src_ptr + base0, g_ptr + base0, n, inb, HAS_G)
            lim1 = tl.where(2 * p + 1 < B, L, 0)  # odd B: the last pair's second row is zero
            xi = _gload(src_ptr + base1, g_ptr + base1, n, n < lim1, HAS_G)
        else:
            xr = tl.load(src_ptr + dbase + n).to(tl.float32)
            xi = tl.load(src_ptr + dbase + NTOT + n).to(tl.float32)
        if HAS_SIG:
            sg = tl.load(sig_ptr + p * H + h)
            xr = xr * sg
            xi = xi * sg
        tr, ti = _cmatmul(xr, xi, fr, fi, False, MMA_FP16)  # [s, kp]
        wr, wi = _tile_twiddles(s, kk, sb * BS, hwr, hwi, P * S, TW_SPLIT)
        outr = tr * wr - ti * wi
        outi = tr * wi + ti * wr
        if SCALED:
            outr = outr * (1.0 / P)
            outi = outi * (1.0 / P)
        o = kk[None, :] * S + s[:, None]
        _store(dst_ptr + dbase, o, outr, None, RNE_BUF)
        _store(dst_ptr + dbase + NTOT, o, outi, None, RNE_BUF)


@triton.jit
def _outer_inv_kernel(
    src_ptr,
    dst_ptr,
    g2_ptr,
    aux_ptr,
    y2_ptr,
    f_ptr,
    B,
    H,
    L,
    NTOT,
    S,
    GIN,
    n_sblk,
    n_tiles,
    P: tl.constexpr,
    P_IO: tl.constexpr,
    BS: tl.constexpr,
    LAST: tl.constexpr,
    HAS_G2: tl.constexpr,
    HAS_Y2: tl.constexpr,
    MMA_FP16: tl.constexpr,
    RNE_Y: tl.constexpr = False,
    RNE_Y2: tl.constexpr = False,
    TW_SPLIT: tl.constexpr = False,
    RNE_BUF: tl.constexpr = False,
    sig_ptr=None,
    HAS_SIG: tl.constexpr = False,
):
    """One outer level, inverse: y[p*S + s] = sum_kp W_P^(-p*kp) W_(P*S)^(-s*kp) U[kp, s].

    LAST: writes the real outputs (rows 2p, 2p+1 of (B, H, L)) with the epilogue
    ``g2 * z`` (and ``y2 = aux * z``), z = conv + D * x (D is in the inner spectrum), only
    rows p < P_IO and samples < L. Otherwise writes back into the buffer (in place).
    TW_SPLIT: twiddles as in ``_outer_fwd_kernel``. HAS_SIG (LAST, ``outer_fp16``): the
    results of pair p, channel h are multiplied by ``sig[p, h]`` (undoing the forward scaling).
    """
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    sl = tl.arange(0, BS)
    a = tl.arange(0, P_IO)
    kk = tl.arange(0, P)
    fr, fi = _load_planes(f_ptr, P, P_IO, P, P * P)
    hwr, hwi = 0.0, 0.0
    if TW_SPLIT:
        hwr, hwi = _twiddle(sl[:, None] * kk[None, :], P * S)
    for t in range(pid, n_tiles, nprog):
        sb = t % n_sblk
        rest = t // n_sblk
        gi = rest % GIN
        rest = rest // GIN
        h = rest % H
        p = rest // H
        s = sb * BS + sl
        sbase = ((tl.cast(p, tl.int64) * H + h) * 2) * NTOT + tl.cast(gi, tl.int64) * (P * S)
        o = kk[None, :] * S + s[:, None]  # (int32 offsets from the tile's base pointer)
        ur = tl.load(src_ptr + sbase + o).to(tl.float32)
        ui = tl.load(src_ptr + sbase + NTOT + o).to(tl.float32)
        wr, wi = _tile_twiddles(s, kk, sb * BS, hwr, hwi, P * S, TW_SPLIT)
        cr = ur * wr + ui * wi
        ci = ui * wr - ur * wi
        outr, outi = _cmatmul(cr, ci, fr, fi, True, MMA_FP16)  # [s, p]
        n = a[None, :] * S + s[:, None]
        if LAST:
            base0 = (tl.cast(2 * p, tl.int64) * H + h) * L
            base1 = base0 + tl.cast(H, tl.int64) * L
            m0 = n < L
            m1 = n < tl.where(2 * p + 1 < B, L, 0)
            if HAS_SIG:
                sg = tl.load(sig_ptr + p * H + h)
                outr = outr * sg
                outi = outi * sg
            _pair_epilogue(
                outr, outi, n, m0, m1, base0, base1, dst_ptr, y2_ptr, aux_ptr, g2_ptr,
                HAS_Y2, HAS_G2, RNE_Y, RNE_Y2,
            )  # fmt: skip
        else:
            _store(dst_ptr + sbase, n, outr, None, RNE_BUF)
            _store(dst_ptr + sbase + NTOT, n, outi, None, RNE_BUF)


# ============================================================================================
# Launchers
# ============================================================================================


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "yes", "on"}


def uses_triton(device: torch.device | str) -> bool:
    """True when tensors on ``device`` run the Triton kernels (CUDA, or the CPU interpreter)."""
    dev = torch.device(device)
    return dev.type == "cuda" or (dev.type == "cpu" and _interpreting())


def _emu_rne(t: Tensor) -> bool:
    """bf16 output under the interpreter: round to nearest even by hand (see ``_store``)."""
    return t.dtype == torch.bfloat16 and t.device.type == "cpu" and _interpreting()


_SM_COUNT: dict[int, int] = {}


def _programs(n_tiles: int, ctas_per_sm: int, device: torch.device) -> int:
    if device.type != "cuda":
        return max(1, min(n_tiles, 3))
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return max(1, min(n_tiles, _SM_COUNT[idx] * ctas_per_sm))


_SPARSE_TABLES: dict[tuple, tuple[Tensor, Tensor]] = {}


def _sparse_tables(plan: FFTPlan, device: torch.device) -> tuple[Tensor, Tensor]:
    """Kept columns F2[:, kept] (2, n2, n2_kept) and rows F2[kept, :] (2, n2_kept, n2) of a
    frequency-sparse plan (kept = low half then high half); the full F2 twice when dense."""
    f2 = dft_table(plan.n2, _mma_dtype(plan), device)
    nk = plan.n2_kept
    if nk == plan.n2:
        return f2, f2
    key = (plan.n2, nk, f2.dtype, f2.device)
    if key not in _SPARSE_TABLES:
        j = torch.arange(nk, device=f2.device)
        kept = torch.where(j < nk // 2, j, j + plan.n2 - nk)
        _SPARSE_TABLES[key] = (f2[:, :, kept].contiguous(), f2[:, kept, :].contiguous())
    return _SPARSE_TABLES[key]


def _outer_ctas(plan: FFTPlan) -> int:
    return plan.outer_ctas_per_sm or plan.ctas_per_sm


def _regcap(maxnreg: int | None) -> dict:
    """Launch option capping registers per thread (only passed when set; 0: no cap)."""
    return {} if not maxnreg or _interpreting() else {"maxnreg": maxnreg}


def _mma_dtype(plan: FFTPlan) -> torch.dtype:
    return torch.float16 if plan.mma == "fp16" else torch.float32


def _consts(plan: FFTPlan, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    dt = _mma_dtype(plan)
    return (
        dft_table(plan.n1, dt, device),
        dft_table(plan.n2, dt, device),
        inner_twiddles(plan.n1, plan.n2, device),
    )


_BOUND_MEMO: list[tuple | None] = [None]
_SCALE_MEMO: list[tuple | None] = [None]


def _version(t: Tensor | None) -> int | None:
    """``t``'s version counter (None: no tensor, or an inference tensor, which has none)."""
    if t is None or t.is_inference():
        return None
    return t._version


def _spec_memo(
    slot: list[tuple | None],
    spec: Tensor,
    D: Tensor | None,
    key: tuple,
    compute: Callable[[], Tensor],
) -> Tensor:
    """``compute()``, memoised in ``slot`` (one entry) for the same ``spec`` and ``D`` objects
    at the same versions and the same ``key`` (weak references, so a freed tensor's memory is
    never mistaken for it): a training step's forward and its backward, or inference with a
    cached spectrum, compute it once. Inference tensors (no version counter) are not memoised."""
    sver, dver = _version(spec), _version(D)
    memoisable = sver is not None and (D is None or dver is not None)
    memo = slot[0]
    if memo is not None and memoisable:
        sref, s_v, dref, d_v, k, value = memo
        same_d = dref() is D if dref is not None else D is None
        if sref() is spec and s_v == sver and same_d and d_v == dver and k == key:
            return value
    value = compute()
    if memoisable:
        dref = weakref.ref(D) if D is not None else None
        slot[0] = (weakref.ref(spec), sver, dref, dver, key, value)
    return value


def _spectrum_bound(spec: Tensor, D: Tensor | None, n: int, inner: int) -> Tensor:
    """(H * N / inner,) fp32 bound on |K + D / N| per inner row block c = h * NR + kp of the
    spectrum (``static_scale``): max (|Re| + |Im|) over the block, plus |D_h| / N (memoised,
    :func:`_spec_memo`)."""

    def compute() -> Tensor:
        heads = spec.shape[1]
        nr = n // inner
        bound = spec.abs().sum(dim=0).view(heads * nr, inner).amax(dim=-1)
        if D is not None:
            bound = (bound.view(heads, nr) + D.float().abs()[:, None] / n).reshape(-1)
        return bound

    return _spec_memo(_BOUND_MEMO, spec, D, (n, inner), compute)


# Largest magnitude the scaled float16 outer buffers may hold (float16's largest is 65504):
# every channel is scaled in the inner pass so that its bound is this (down when it exceeds
# it, up when it is smaller, so that a small filter's outputs do not sink into float16's
# subnormals) and back at the last inverse level (see _channel_scale).
FP16_BUFFER_LIMIT = 2.0**14


def _channel_scale(spec: Tensor, D: Tensor | None, n: int, inner: int) -> Tensor:
    """(H,) fp32 factor of the inner pass's output in scaled float16 outer buffers.

    With each pair's input scaled to max 1, every value the inverse levels hold is bounded by
    the channel's sum |k_h| + |D_h|, and sum |k_h| <= sqrt(N) ||k_h||_2 = N sqrt(sum |spec_h|^2)
    (Parseval; ``spec`` is K / N, so the bound covers frequency-sparse spectra too; for a
    spectrum whose largest value is under 1e-15, whose squares underflow float32, the looser
    N sqrt(2N) max|spec|; :func:`filter_spectrum` attaches the same bound computed from the
    filter, ``filter_sum_bound``, which is used when present). The factor
    is NR (putting the inner output at the inverse levels' scale) times
    FP16_BUFFER_LIMIT / bound: channels whose bound is too large for float16 are scaled down,
    small ones up (a filter 1e-5 as large otherwise left its outputs in float16's subnormals:
    4e-3 relative error), and the last inverse level multiplies by NR / factor. A zero
    channel keeps NR. Memoised (:func:`_spec_memo`)."""

    def compute() -> Tensor:
        # the bound filter_spectrum attached from the filter itself (a quarter of the bytes)
        bound = filter_sum_bound(spec)
        if bound is None:
            bound = torch.linalg.vector_norm(spec, ord=2, dim=(0, 2)).double().mul_(n)
            # a tiny filter's squares underflow float32 (a zero or too small norm): there the
            # looser bound N sqrt(2N) max|spec| (each of the 2N planes' values is at most it)
            top = torch.linalg.vector_norm(spec, ord=float("inf"), dim=(0, 2)).double()
            bound = torch.where(top < 1e-15, top * (n * (2.0 * n) ** 0.5), bound)
        if D is not None:
            bound = bound + D.double().abs()
        # (bounds under 1e-30 are raised only to 1.6e34: the factor and its inverse stay
        # finite float32 normals)
        ratio = FP16_BUFFER_LIMIT / bound.clamp_min(1e-30)
        ratio = torch.where(bound > 0, ratio, torch.ones_like(bound))
        return ratio.mul_(n // inner).float()

    return _spec_memo(_SCALE_MEMO, spec, D, (n, inner, FP16_BUFFER_LIMIT), compute)


def fp16_buffers_allowed() -> bool:
    """Scaled float16 outer buffers (``FFTPlan.outer_fp16``) may be used, unless the
    environment says ``DNASTREAM_FFTCONV_FP16_BUFFERS=off`` (then fp32 buffers: twice the
    bytes, for comparisons or if a workload's precision is in doubt)."""
    flag = os.environ.get("DNASTREAM_FFTCONV_FP16_BUFFERS", "on")
    return flag.strip().lower() not in {"off", "0", "false", "no"}


def _buf_dtype(plan: FFTPlan) -> torch.dtype:
    """dtype of the outer levels' intermediate buffer (``outer_fp16`` / ``outer_bf16``: half
    the bytes)."""
    if plan.mma == "fp16" and plan.outer_fp16 and fp16_buffers_allowed():
        return torch.float16
    return torch.bfloat16 if plan.outer_bf16 and plan.mma == "fp16" else torch.float32


def _bounded_fwd(plan: FFTPlan) -> bool:
    """Whether the R-row kernels' forward transforms of the outer buffers skip operand
    scaling (``bounded_fwd``: only for scaled float16 buffers, whose values are at most 1)."""
    return plan.bounded_fwd and plan.mma == "fp16" and _scaled(plan)


def _scaled(plan: FFTPlan) -> bool:
    """Whether the outer buffers are scaled float16 (``outer_fp16``)."""
    return bool(plan.outer) and _buf_dtype(plan) == torch.float16


def _pair_max(src: Tensor, gate: Tensor | None) -> Tensor:
    """(pairs, H) float32: max |gate * src| over both rows of each row pair and all samples
    (at least the smallest normal float32, so its inverse is finite), in one Triton pass with
    the product in registers (:func:`dnastream.kernels.pair_max.pair_max`). The looser
    max|src| * max|gate| (no product at all) lost the signal to float16 underflow where the
    two peak apart (0.89 relative error,
    ``test_scaled_fp16_outer_buffers_gate_and_input_peak_apart``)."""
    return pair_max(src, gate)


def _outer_level(
    plan: FFTPlan, level: int, shape: tuple[int, int, int], npairs: int, dev: torch.device
) -> tuple[tuple[int], tuple, dict]:
    """Launch of outer level ``level`` shared by the forward and inverse kernels: (grid, the
    DFT table and scalar arguments, the tile constants and launch settings)."""
    batch, heads, seq_len = shape
    p = plan.outer[level]
    s = plan.strides[level]
    gin = plan.n // (p * s)
    bs = min(plan.outer_block, s)
    n_sblk = s // bs
    n_tiles = npairs * heads * gin * n_sblk
    grid = (_programs(n_tiles, _outer_ctas(plan), dev),)
    args = (dft_table(p, _mma_dtype(plan), dev), batch, heads, seq_len, plan.n, s, gin, n_sblk,
            n_tiles)  # fmt: skip
    kwargs = dict(
        P=p,
        P_IO=plan.outer_io if level == 0 else p,
        BS=bs,
        MMA_FP16=plan.mma == "fp16",
        TW_SPLIT=plan.outer_tw_split,
        num_warps=plan.outer_warps,
        num_stages=plan.outer_stages,
        **_regcap(plan.outer_maxnreg),
    )
    return grid, args, kwargs


def _outer_forward(
    plan: FFTPlan, src: Tensor, gate: Tensor | None, buf: Tensor, sig: Tensor | None = None
) -> None:
    """Run all outer forward levels: real (B, H, L) input -> buffer (pairs, H, 2, N).
    ``sig`` (pairs, H) fp32 (scaled float16 buffers): 1 / the max of each pair's input; every
    level then also divides by its radix."""
    for level in range(len(plan.outer)):
        grid, args, kwargs = _outer_level(plan, level, src.shape, buf.shape[0], src.device)
        first = level == 0
        _outer_fwd_kernel[grid](
            src if first else buf,
            gate if gate is not None else src,
            buf,
            *args,
            FIRST=first,
            HAS_G=first and gate is not None,
            RNE_BUF=_emu_rne(buf),
            sig_ptr=sig if sig is not None else buf,
            HAS_SIG=first and sig is not None,
            SCALED=sig is not None,
            **kwargs,
        )


def _outer_inverse(
    plan: FFTPlan,
    buf: Tensor,
    y: Tensor,
    g2: Tensor | None,
    aux: Tensor | None,
    y2: Tensor | None,
    sig: Tensor | None = None,
) -> None:
    """Run all outer inverse levels: buffer (pairs, H, 2, N) -> y = g2 * z (B, H, L) and
    y2 = aux * z, z the real rows of the inverse transform (in place in ``buf`` until the
    last level), times ``sig`` (pairs, H) when given (undoing a scaled forward)."""
    for level in reversed(range(len(plan.outer))):
        grid, args, kwargs = _outer_level(plan, level, y.shape, buf.shape[0], buf.device)
        last = level == 0
        _outer_inv_kernel[grid](
            buf,
            y if last else buf,
            g2 if g2 is not None else y,  # (unused pointers: any tensor)
            aux if aux is not None else y,
            y2 if y2 is not None else y,
            *args,
            LAST=last,
            HAS_G2=last and g2 is not None,
            HAS_Y2=last and aux is not None,
            RNE_BUF=_emu_rne(buf),
            RNE_Y=last and _emu_rne(y),
            RNE_Y2=last and y2 is not None and _emu_rne(y2),
            sig_ptr=sig if sig is not None else buf,
            HAS_SIG=last and sig is not None,
            **kwargs,
        )


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _launch_inner_conv(
    plan: FFTPlan,
    src: Tensor,
    g1: Tensor | None,
    g2: Tensor | None,
    aux: Tensor | None,
    D: Tensor | None,
    y: Tensor,
    y2: Tensor | None,
    spec: Tensor,
    conj: bool,
    batch: int,
    heads: int,
    seq_len: int,
    complex_io: bool,
    xcorr: tuple[Tensor, Tensor | None, bool] | None = None,
    ctx: Tensor | None = None,
    xw: Tensor | None = None,
    cs: Tensor | None = None,
) -> tuple[Tensor, Tensor, int, int] | None:
    """Launch the inner (fused) convolution kernel. ``xcorr = (x, x_gate, want_dd)`` (one-row
    plans only) also accumulates the filter-gradient spectra: returns (part, ddp, slots,
    tiles_per_program, aligned) for :func:`_fused_du_dk` (``aligned``: runs of whole channels,
    ``part`` (H * NR, 2, inner) is the summed spectra) (with ``complex_io``, ``x`` is the outer
    levels' buffer of the second signal; ``xw`` (pairs, H): weights of each pair's product).
    ``cs`` (H,), scaled float16 buffers (complex I/O): factors of the stored output per
    channel (:func:`_channel_scale`)."""
    dev = src.device
    blocked = dict(BLOCKED=False, ctx_ptr=src)  # (a pointer is always passed: ctx or a dummy)
    if plan.block:  # overlap-save: the rows are the windows, `batch` of them in all
        if complex_io or xcorr is not None:
            raise ValueError("a blocked (overlap-save) plan runs the forward kernels only")
        nb = plan.blocks()
        batch = batch * nb
        blocked.update(BLOCKED=True, NB=nb, SOUT=plan.block_out, T0=plan.taps - 1)
        if ctx is not None:  # streaming: the samples before the sequence (not gated)
            blocked.update(ctx_ptr=ctx, C=ctx.shape[-1], HAS_CTX=True)
    elif ctx is not None:
        raise ValueError("a streaming context needs a blocked (overlap-save) plan")
    npairs = (batch + 1) // 2
    nr = plan.n // plan.inner
    rows = max(1, min(plan.rows, _pow2_at_least(npairs)))
    n_pblk = triton.cdiv(npairs, rows)
    n_tiles = heads * nr * n_pblk
    nprog = _programs(n_tiles, plan.ctas_per_sm, dev)
    per = triton.cdiv(n_tiles, nprog)
    aligned = False
    if xcorr is not None and rows == 1:
        # runs of whole channels (at most 1/8 more tiles per program): every channel's
        # filter-gradient sum is then formed in one program and stored straight into its row
        per_al = triton.cdiv(per, npairs) * npairs
        aligned = per_al * 8 <= per * 9
        per = per_al if aligned else per
    nprog = triton.cdiv(n_tiles, per)
    f1, f2, tw = _consts(plan, dev)
    dummy = src
    ptrs = (
        src,
        g1 if g1 is not None else dummy,
        g2 if g2 is not None else dummy,
        aux if aux is not None else dummy,
        D if D is not None else dummy,
        y,
        y2 if y2 is not None else y,
        spec,
        f1,
        f2,
        tw,
    )
    flags = dict(
        N1=plan.n1,
        N2=plan.n2,
        N1_IO=plan.n1 if complex_io else plan.io_rows,
        NR=nr,
        COMPLEX_IO=complex_io,
        SCALE_NR=cs is not None,
        cs_ptr=cs if cs is not None else spec,
        CONJ_SPEC=conj,
        HAS_G1=g1 is not None,
        HAS_G2=g2 is not None,
        HAS_D=D is not None,
        HAS_Y2=aux is not None,
        MMA_FP16=plan.mma == "fp16",
        RNE_Y=_emu_rne(y),
        RNE_Y2=y2 is not None and _emu_rne(y2),
        num_warps=plan.num_warps,
        num_stages=plan.num_stages,
        **_regcap(plan.maxnreg),
    )
    if rows == 1:
        f2c, f2r = _sparse_tables(plan, dev)
        slots, out = 1, None
        xa, xg, part, ddp = src, src, spec, spec
        if xcorr is not None:
            xa, xg_t, want_dd = xcorr
            xg = xg_t if xg_t is not None else xa
            if aligned:  # program p's slot j is channel p * slots + j: ``part`` is the sum
                slots = per // npairs
                # (frequency-sparse: the dropped frequencies are never stored, so zeros)
                alloc = torch.zeros if plan.n2_kept < plan.n2 else torch.empty
                part = alloc((heads * nr, 2, plan.inner), dtype=torch.float32, device=dev)
            else:  # slots past a run's last channel stay untouched: zeros for the launcher's sum
                slots = (per - 1) // npairs + 2  # channels one run of `per` tiles can touch
                shape = (nprog, slots, 2, plan.inner)
                part = torch.zeros(shape, dtype=torch.float32, device=dev)
            ddp = torch.zeros((heads * nr,), dtype=torch.float32, device=dev)
            out = (part, ddp, slots, per, aligned)
        static = plan.mma == "fp16" and (plan.static_bwd if xcorr else plan.static_scale)
        if xcorr is not None and plan.bwd_warps:  # the fused backward's own launch settings
            flags.update(num_warps=plan.bwd_warps)
            if plan.bwd_maxnreg is not None:
                flags.update(_regcap(plan.bwd_maxnreg))
        kmax = _spectrum_bound(spec, D, plan.n, plan.inner) if static else spec
        transposed = plan.nat_transposed_bwd if xcorr is not None else plan.nat_transposed
        if transposed and not plan.block and not plan.freq_cut:
            _conv_nat_t_kernel[(nprog,)](
                *ptrs, kmax, batch, heads, seq_len, npairs, plan.n, n_tiles, per,
                KC=plan.chunk, HOIST_F2=plan.hoist_f2, STATIC=static, ACC_DOT=plan.acc_dot,
                xa_ptr=xa, xg_ptr=xg,
                part_ptr=part, ddp_ptr=ddp, xw_ptr=xw if xw is not None else spec,
                XCORR=xcorr is not None, HAS_XG=xcorr is not None and xcorr[1] is not None,
                X_DD=xcorr is not None and xcorr[2], HAS_XW=xw is not None, SLOTS=slots,
                **flags,
            )  # fmt: skip
            return out
        two_phase = (
            plan.two_phase and static and xcorr is None and not plan.block and not plan.freq_cut
        )
        scr = spec  # (a dummy unless two_phase: every program's G rows, (2, N1, N2) fp16)
        if two_phase:
            scr = torch.empty((nprog, 2, plan.n1, plan.n2), dtype=torch.float16, device=dev)
        _conv_nat_kernel[(nprog,)](
            *ptrs, f2c, f2r, xa, xg, part, ddp, kmax, batch, heads, seq_len, npairs, plan.n,
            n_tiles, per, KC=plan.chunk, N2K=plan.n2_kept, HOIST_F2=plan.hoist_f2, STATIC=static,
            ACC_DOT=plan.acc_dot, scr_ptr=scr, TWO_PHASE=two_phase,
            XCORR=xcorr is not None, HAS_XG=xcorr is not None and xcorr[1] is not None,
            X_DD=xcorr is not None and xcorr[2], SLOTS=slots, **blocked, **flags,
            xw_ptr=xw if xw is not None else spec, HAS_XW=xw is not None,
        )  # fmt: skip
        return out
    # (pointers are always passed: the buffers of a fused backward, else dummies)
    fused = dict(xa_ptr=src, part_ptr=spec, xw_ptr=spec)
    static_inv = plan.static_inv and plan.static_scale and plan.mma == "fp16"
    out = None
    if xcorr is not None:  # the fused backward on R-row tiles: under outer levels only
        if not complex_io or xcorr[1] is not None or xcorr[2]:
            raise ValueError("a fused backward on R-row tiles runs under outer levels only")
        slots = (per - 1) // n_pblk + 2  # channels one run of `per` tiles can touch
        # slots past a run's last channel stay untouched: zeros for the launcher's sum
        part = torch.zeros((nprog, slots, 2, plan.inner), dtype=torch.float32, device=dev)
        fused.update(xa_ptr=xcorr[0], part_ptr=part, SLOTS=slots, XCORR=True)
        if xw is not None:
            fused.update(xw_ptr=xw, HAS_XW=True)
        if plan.bwd_warps:  # the fused backward's own launch settings (bwd_maxnreg 0: no cap)
            flags.update(num_warps=plan.bwd_warps)
        if plan.bwd_maxnreg is not None:
            flags.pop("maxnreg", None)
            flags.update(_regcap(plan.bwd_maxnreg))
        out = (part, None, slots, per, False)
    _conv_kernel[(nprog,)](
        *ptrs,
        batch,
        heads,
        seq_len,
        npairs,
        plan.n,
        n_pblk,
        n_tiles,
        per,
        R=rows,
        HOIST=plan.hoist,
        DERIVED=plan.static_scale,
        BOUNDED=complex_io and _bounded_fwd(plan),
        kmax_ptr=_spectrum_bound(spec, D, plan.n, plan.inner) if static_inv else spec,
        STATIC_INV=static_inv,
        **blocked,
        **flags,
        **fused,
    )
    return out


def _conv(
    plan: FFTPlan,
    src: Tensor,
    g1: Tensor | None,
    spec: Tensor,
    conj: bool,
    D: Tensor | None,
    g2: Tensor | None,
    aux: Tensor | None,
    y2_dtype: torch.dtype | None = None,
    ctx: Tensor | None = None,
    pair_max: list[Tensor | None] | None = None,
    filled: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """y = g2 * (conv(g1 * src) + D * g1 * src); y2 = aux * (conv(g1 * src) + D * g1 * src).

    ``conv`` uses the spectrum ``spec`` (conjugated when ``conj``: a correlation).
    All tensors (B, H, L) contiguous except D (H,) and spec (2, H, N); ``ctx`` (B, H, C)
    (blocked plans): the C samples before ``src``, already gated. ``pair_max`` (scaled float16
    buffers), a one-item list: a tensor there is :func:`_pair_max` of (src, g1) computed before;
    None is replaced by the one computed here (the autograd forward keeps it for the backward).
    ``filled`` (plans with outer levels): the outer forward levels of g1 * src already run into
    this buffer (scaled by ``1 / pair_max[0]`` under scaled float16 buffers); it is reused
    in place.
    """
    batch, heads, seq_len = src.shape
    npairs = (batch + 1) // 2
    dev = src.device
    y = torch.empty_like(src)
    y2 = None
    if aux is not None:
        y2 = torch.empty(src.shape, dtype=y2_dtype or src.dtype, device=dev)
    if not plan.outer:
        _launch_inner_conv(
            plan, src, g1, g2, aux, D, y, y2, spec, conj, batch, heads, seq_len, False, ctx=ctx
        )
        return y, y2

    sig = cs = None
    if _scaled(plan):  # inputs to max 1, the inner output per channel by cs, undone at the end
        sig = pair_max[0] if pair_max is not None else None
        if sig is None:
            if filled is not None:
                raise ValueError("_conv: a filled scaled buffer needs its pair maxima")
            sig = _pair_max(src, g1)
            if pair_max is not None:
                pair_max[0] = sig
        cs = _channel_scale(spec, D, plan.n, plan.inner)
    if filled is not None:
        buf = filled
    else:
        buf = torch.empty((npairs, heads, 2, plan.n), dtype=_buf_dtype(plan), device=dev)
        _outer_forward(plan, src, g1, buf, None if sig is None else 1.0 / sig)
    _launch_inner_conv(
        plan, buf, None, None, None, D, buf, None, spec, conj, batch, heads, seq_len, True, cs=cs
    )
    if sig is not None:
        sig = sig * (plan.n // plan.inner / cs)  # (pairs, H): the input's max, cs undone
    _outer_inverse(plan, buf, y, g2, aux, y2, sig)
    return y, y2


def _xcorr(
    plan: FFTPlan,
    a: Tensor,
    ga: Tensor | None,
    b: Tensor,
    gb: Tensor | None,
    want_dd: bool,
    pre: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Cross-correlation spectrum summed over the batch and the dot products sum(x * dz).

    Returns (S (H * NR, 2, inner) fp32 planes in storage order, dd (H,) fp32 or None), where
    S = sum_b FFT(gb * b)_b * conj(FFT(ga * a)_b) and dd = sum_(b, t) (ga * a) (gb * b)
    (:func:`_filter_gradient` turns S into the filter gradient).
    ``pre`` (plans with outer levels and scaled float16 buffers, ``shared_bwd_outer``): the
    outer forward levels of ga * a and gb * b, already run into scaled buffers, and the
    weights (pairs, H) that undo both scales in each pair's product; else this pass runs
    them itself into unscaled fp32 buffers (its sums mix the pairs).
    """
    batch, heads, seq_len = a.shape
    npairs = (batch + 1) // 2
    dev = a.device
    if _scaled(plan) and pre is None:
        plan = _with_fp32_buffers(plan)
    f1, f2, tw = _consts(plan, dev)
    rows = max(1, min(plan.rows, _pow2_at_least(npairs)))
    n_pblk = triton.cdiv(npairs, rows)
    nr = plan.n // plan.inner
    n_c = heads * nr
    # enough programs to fill the GPU, each with at least one pair block
    want = max(1, triton.cdiv(_programs(1 << 30, plan.ctas_per_sm, dev), n_c))
    groups = max(1, min(n_pblk, want))
    blk_per_prog = triton.cdiv(n_pblk, groups)
    groups = triton.cdiv(n_pblk, blk_per_prog)
    # spectrum rows per program: 64 for the fused bf16/fp16 one-row plans up to 8192 points
    # (measured on an H100: forward+backward 1.38-1.41x over 16 at 2048-4096,
    # results/tune_backward_h100.log), else half the forward's chunk (two transforms live)
    big = plan.mma == "fp16" and not plan.outer and plan.inner <= 8192
    default = 64 if big else max(16, plan.chunk // 2)
    xchunk = min(plan.n1, plan.bwd_chunk or default)
    nch = plan.n1 // xchunk if rows == 1 else 1
    part = torch.empty((n_c, groups, 2, plan.inner), dtype=torch.float32, device=dev)
    # every program stores its partial sums (when HAS_DD): no fill needed
    dd_part = torch.empty((n_c, groups, nch), dtype=torch.float32, device=dev)
    if not plan.outer:
        srcs = (a, ga if ga is not None else a, b, gb if gb is not None else b)
        complex_io, has_ga, has_gb, has_dd = False, ga is not None, gb is not None, want_dd
        n1_io = plan.io_rows
    elif pre is not None:
        bufa, bufb, _ = pre
        srcs = (bufa, bufa, bufb, bufb)
        complex_io, has_ga, has_gb, has_dd, n1_io = True, False, False, False, plan.n1
    else:
        bufa = torch.empty((npairs, heads, 2, plan.n), dtype=_buf_dtype(plan), device=dev)
        bufb = torch.empty_like(bufa)
        _outer_forward(plan, a, ga, bufa)
        _outer_forward(plan, b, gb, bufb)
        srcs = (bufa, bufa, bufb, bufb)
        complex_io, has_ga, has_gb, has_dd, n1_io = True, False, False, False, plan.n1
    flags = dict(
        N1=plan.n1,
        N2=plan.n2,
        N1_IO=n1_io,
        NR=nr,
        COMPLEX_IO=complex_io,
        HAS_GA=has_ga,
        HAS_GB=has_gb,
        HAS_DD=has_dd,
        MMA_FP16=plan.mma == "fp16",
        num_warps=plan.bwd_warps or plan.num_warps,
        num_stages=plan.num_stages,
        **_regcap(plan.bwd_maxnreg if plan.bwd_maxnreg is not None else plan.maxnreg),
    )
    common = (*srcs, part, dd_part, f1, f2, tw, batch, heads, seq_len, npairs, plan.n)
    # (without weights a placeholder pointer: the kernels never read it)
    weights = dict(xw_ptr=pre[2] if pre is not None else dd_part, HAS_XW=pre is not None)
    if rows == 1:
        _xcorr_nat_kernel[(n_c * groups * nch,)](
            *common, blk_per_prog, groups, nch, KC=xchunk, TRANSPOSED=plan.nat_transposed_bwd,
            **flags, **weights,
        )  # fmt: skip
    else:
        _xcorr_kernel[(n_c, groups)](
            *common, n_pblk, blk_per_prog, R=rows, HOIST=plan.hoist, DERIVED=plan.static_scale,
            BOUNDED=complex_io and _bounded_fwd(plan), **flags, **weights,
        )  # fmt: skip
    summed = part[:, 0] if part.shape[1] == 1 else part.sum(dim=1)
    dd = None
    if want_dd:
        if has_dd:
            dd = dd_part[:, :, 0].sum(dim=1)
        else:  # under outer levels: the one-pass reduction (no fp32 temporaries)
            dd = skip_gradient(a, ga, b, gb)
    return summed, dd


def _fused_du_dk(
    plan: FFTPlan,
    dy: Tensor,
    u: Tensor,
    g1: Tensor | None,
    g2: Tensor | None,
    spec: Tensor,
    D: Tensor | None,
    need_g1: bool,
    need_d: bool,
    u_max: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
    """One pass for du (and dpregate) and the filter-gradient spectrum (one-row plans; under
    outer levels also R-row tiles):
    returns (du, dg1, S (H * NR, 2, inner) planes in storage order, dD sums or None).
    Under outer levels the pass is the inner one: postgate * dy and pregate * u go through the
    outer forward levels first, du's inner convolution is written back in place and the outer
    inverse levels finish it. ``u_max``: :func:`_pair_max` of (u, g1) from the forward."""
    batch, heads, seq_len = dy.shape
    dev = dy.device
    du = torch.empty_like(dy)
    dg1 = torch.empty(dy.shape, dtype=g1.dtype, device=dev) if need_g1 and g1 is not None else None
    npairs = (batch + 1) // 2
    nr = plan.n // plan.inner
    if plan.outer:
        # both signals through the outer levels, then one inner pass for du's inner
        # convolution (in place) and the cross-correlation, then the outer inverse -> du
        bufz = torch.empty((npairs, heads, 2, plan.n), dtype=_buf_dtype(plan), device=dev)
        bufx = torch.empty_like(bufz)
        sz = sx = xw = cs = None
        if _scaled(plan):  # scaled float16 buffers: undo both scales in each pair's product
            sx = u_max if u_max is not None else _pair_max(u, g1)  # the forward's, if kept
            sz = _pair_max(dy, g2)
            xw = sz * sx * float(nr * nr)
            cs = _channel_scale(spec, D, plan.n, plan.inner)
        _outer_forward(plan, dy, g2, bufz, None if sz is None else 1.0 / sz)
        _outer_forward(plan, u, g1, bufx, None if sx is None else 1.0 / sx)
        out = _launch_inner_conv(
            plan, bufz, None, None, None, D, bufz, None, spec, True,
            batch, heads, seq_len, True, (bufx, None, False), xw=xw, cs=cs,
        )  # fmt: skip
        del bufx
        sdu = None if sz is None else sz * (nr / cs)
        _outer_inverse(plan, bufz, du, g1, u if dg1 is not None else None, dg1, sdu)
        # dD in the time domain: by Parseval the buffers would give it too, but through their
        # fp16 tensor-core rounding (H=2 interpreter test: 1.7e-4 - 4.3e-4 against 1e-7)
        dd = skip_gradient(u, g1, dy, g2) if need_d else None
    else:
        out = _launch_inner_conv(
            plan, dy, g2, g1, u if dg1 is not None else None, D, du, dg1, spec, True,
            batch, heads, seq_len, False, (u, g1, need_d),
        )  # fmt: skip
    assert out is not None
    part, ddp, slots, per, aligned = out
    n_c = heads * nr
    if not plan.outer:
        dd = ddp if need_d else None
    if aligned:
        return du, dg1, part, dd
    # program p's slot j holds channel first_p + j; slots past the last channel hold zeros
    # (never written), so they are added to the last channel: no boolean indexing, which would
    # wait for the GPU (and break CUDA-graph capture)
    rows = max(1, min(plan.rows, _pow2_at_least(npairs)))  # tiles per channel: n_pblk
    first = torch.arange(part.shape[0], device=dev) * per // triton.cdiv(npairs, rows)
    idx = (first[:, None] + torch.arange(slots, device=dev)[None, :]).clamp_(max=n_c - 1)
    s = torch.zeros((n_c, 2, plan.inner), dtype=torch.float32, device=dev)
    s.index_add_(0, idx.reshape(-1), part.reshape(-1, 2, plan.inner))
    return du, dg1, s, dd


def _shared_du_dk(
    plan: FFTPlan,
    xplan: FFTPlan,
    dy: Tensor,
    u: Tensor,
    g1: Tensor | None,
    g2: Tensor | None,
    spec: Tensor,
    D: Tensor | None,
    need_g1: bool,
    need_d: bool,
    u_max: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
    """The separate backward passes of a plan with outer levels and scaled float16 buffers
    (``shared_bwd_outer``), sharing the outer forward levels of postgate * dy: returns
    (du, dg1, S (H * NR, 2, inner) planes in storage order, dD or None).

    Both signals go through the outer forward levels once, into scaled float16 buffers; the
    filter-gradient pass (``xplan``'s tiles) reads both and undoes the scales per pair; then
    du's inner convolution runs in place on the dy buffer and the outer inverse levels finish
    it. ``u_max``: :func:`_pair_max` of (u, g1) from the forward."""
    batch, heads, seq_len = dy.shape
    npairs = (batch + 1) // 2
    nr = plan.n // plan.inner
    bufz = torch.empty((npairs, heads, 2, plan.n), dtype=_buf_dtype(plan), device=dy.device)
    bufx = torch.empty_like(bufz)
    sx = u_max if u_max is not None else _pair_max(u, g1)
    sz = _pair_max(dy, g2)
    _outer_forward(plan, dy, g2, bufz, 1.0 / sz)
    _outer_forward(plan, u, g1, bufx, 1.0 / sx)
    s_sto, dd = _xcorr(xplan, u, g1, dy, g2, need_d, pre=(bufx, bufz, sz * sx * float(nr * nr)))
    del bufx
    du, dg1 = _conv(
        plan, dy, g2, spec, True, D, g1, u if need_g1 else None,
        y2_dtype=g1.dtype if g1 is not None else None, pair_max=[sz], filled=bufz,
    )  # fmt: skip
    return du, dg1, s_sto, dd


#: Largest N whose filter gradient takes the Hermitian half of the cross-spectrum and a real
#: inverse FFT (half the bytes out of the reorder, half the transform). Above it cuFFT's c2r is
#: no faster than the complex ifft (several kernels, and torch copies its input first), so the
#: whole spectrum and ifft win. H100, the two passes per step: 64K 0.81 ms against 0.93;
#: 128K-4M 1.00-1.33 against 0.91-1.30 ms
#: (results/bench_spectrum_reorder_hermitian_h100_stop19.log).
HERMITIAN_MAX_N = 1 << 16


def _filter_gradient(plan: FFTPlan, s: Tensor, k: Tensor) -> Tensor:
    """dk (H, Lk) in k's dtype from the summed cross-correlation spectra ``s`` (storage
    order, see :func:`_xcorr`): the first taps of its inverse FFT (one product with a DFT table
    for small fused plans, :func:`~dnastream.kernels.monarch.gradient_table`; else a tiled pass
    to natural order and an inverse FFT); taps beyond the plan's (causal, Lk > L) get no
    gradient."""
    heads = k.shape[0]
    taps = min(plan.taps, k.shape[1])
    if uses_gemm_spectrum(plan):
        dt = gemm_dtype(torch.float32, s.device)
        w = gradient_table(plan, taps, dt, s.device)
        full = torch.matmul(s.reshape(heads, 2 * plan.n).to(dt), w)  # (H, taps), fresh
        part = full.to(k.dtype)
    else:
        # dk = real(ifft(G)), G brought to natural order in one tiled pass (frequency-sparse:
        # only the kept frequencies; 1 / N in the pass). Up to HERMITIAN_MAX_N G's Hermitian
        # half and irfft, above it all of G and ifft
        keep = keep_mask(plan.n, plan.freq_cut, s.device) if plan.freq_cut else None
        layout = layout_for(plan, s.device)
        if plan.n <= HERMITIAN_MAX_N:
            s_half = hermitian_spectrum(s, layout, keep, scale=1.0 / plan.n)
            full = torch.fft.irfft(s_half, n=plan.n, dim=-1, norm="forward")
        else:
            s_nat = natural_spectrum(s, layout, keep, scale=1.0 / plan.n)
            full = torch.fft.ifft(s_nat, dim=-1, norm="forward").real
        part = full[:, :taps].to(k.dtype, copy=True, memory_format=torch.contiguous_format)
    if taps == k.shape[1]:
        return part
    dk = torch.zeros(k.shape, dtype=k.dtype, device=k.device)
    dk[:, :taps] = part
    return dk


# ============================================================================================
# Autograd + public API
# ============================================================================================


class _FFTConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, k, D, pregate, postgate, plan, spec):  # type: ignore[override]
        maxima: list[Tensor | None] = [None]  # (scaled float16 buffers: kept for backward)
        y, _ = _conv(plan, u, pregate, spec, False, D, postgate, None, pair_max=maxima)
        ctx.save_for_backward(u, k, D, pregate, postgate, spec)
        ctx.plan = plan
        ctx.u_max = maxima[0]
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        u, k, D, g1, g2, spec = ctx.saved_tensors
        plan = ctx.plan
        if plan.block:  # forward-only overlap-save: the gradients take the full-length plan
            batch, _, seq_len = u.shape
            plan = plan_for(seq_len, k.shape[1], True, u.dtype, batch=batch)
            if plan is None:
                raise ValueError(f"fftconv_triton: no plan for the backward of L={seq_len}")
            spec = filter_spectrum(k, plan)
        u_max = None if plan is not ctx.plan else ctx.u_max
        grads = conv_backward(plan, dy, u, k, D, g1, g2, spec, ctx.needs_input_grad[:5], u_max)
        return (*grads, None, None)


def conv_forward(
    plan: FFTPlan,
    u: Tensor,
    k_spectrum: Tensor,
    D: Tensor | None,
    pregate: Tensor | None,
    postgate: Tensor | None,
    context: Tensor | None = None,
    pair_max: list[Tensor | None] | None = None,
) -> Tensor:
    """The forward kernels for contiguous inputs (no autograd): y (B, H, L) in u's dtype.
    ``context`` (B, H, C), blocked plans only: the C gated samples that precede u (streaming;
    ``plan`` from ``block_plan_for(L, Lk, dtype, context=C)``). ``pair_max``: a one-item list
    that receives :func:`_pair_max` of (u, pregate) where the plan computes it (scaled float16
    buffers), for :func:`conv_backward`'s ``u_max``."""
    y, _ = _conv(
        plan, u, pregate, k_spectrum, False, D, postgate, None, ctx=context, pair_max=pair_max
    )
    return y


@functools.lru_cache(maxsize=64)
def _with_fp32_buffers(plan: FFTPlan) -> FFTPlan:
    """``plan`` with unscaled fp32 outer buffers (built once per plan)."""
    return dataclasses.replace(plan, outer_fp16=False, outer_bf16=False)


@functools.lru_cache(maxsize=256)
def _with_rows(plan: FFTPlan, rows: int) -> FFTPlan:
    """``plan`` with other row tiles (built once per plan: the backward runs every step)."""
    return dataclasses.replace(plan, rows=rows)


def conv_backward(
    plan: FFTPlan,
    dy: Tensor,
    u: Tensor,
    k: Tensor,
    D: Tensor | None,
    g1: Tensor | None,
    g2: Tensor | None,
    spec: Tensor,
    needs: tuple[bool, ...],
    u_max: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """Gradients (du, dk, dD, dpregate, dpostgate) by the Triton kernels; ``needs`` says which
    (entries for inputs that are None are None). dk is accumulated in fp32. ``u_max``: the
    forward's :func:`_pair_max` of (u, g1) under scaled float16 buffers, if it kept it."""
    if plan.block:
        raise ValueError("conv_backward: a blocked (overlap-save) plan is forward-only")
    # the filter-gradient kernel may use other row tiles (same spectrum order); du does not
    xplan = plan
    if plan.bwd_rows and plan.bwd_rows != plan.rows:
        xplan = _with_rows(plan, plan.bwd_rows)
    need_u, need_k, need_d, need_g1, need_g2 = needs
    need_g1 = need_g1 and g1 is not None
    need_d = need_d and D is not None
    dy = dy.contiguous()
    du = dk = dD = dg1 = dg2 = None
    # (the fused pass computes du; for the filter gradient alone the separate pass is less work)
    # (on R-row tiles only under outer levels, where du and the filter gradient share tiles)
    fused = (
        plan.fused_bwd and (xplan.rows == 1 or (bool(plan.outer) and xplan.rows == plan.rows))
        and need_k and (need_u or need_g1)
    )  # fmt: skip
    # separate passes that share the outer forward levels of postgate * dy (and take pregate
    # * u's into a scaled float16 buffer too, not fp32)
    shared = (
        not fused and plan.shared_bwd_outer and bool(plan.outer) and _scaled(plan)
        and need_k and (need_u or need_g1)
    )  # fmt: skip
    s_sto = dd = None
    if shared:
        du, dg1, s_sto, dd = _shared_du_dk(plan, xplan, dy, u, g1, g2, spec, D, need_g1,
                                           need_d, u_max)  # fmt: skip
        if not need_u:
            du = None
    elif fused:
        # one pass: du / dpregate and the filter-gradient spectrum share FFT(postgate * dy)
        du, dg1, s_sto, dd = _fused_du_dk(xplan, dy, u, g1, g2, spec, D, need_g1, need_d, u_max)
        if not need_u:
            du = None
    elif need_u or need_g1:
        # dz = g2 * dy; dxz = corr(dz, k) + D * dz; du = g1 * dxz; dg1 = u * dxz
        du, dg1 = _conv(
            plan,
            dy,
            g2,
            spec,
            True,
            D,
            g1,
            u if need_g1 else None,
            y2_dtype=g1.dtype if g1 is not None else None,
        )
        if not need_u:
            du = None
    if need_g2 and g2 is not None:
        # dg2 = dy * (conv(g1 * u, k) + D * g1 * u)
        z, _ = _conv(plan, u, g1, spec, False, D, dy, None, pair_max=[u_max])
        dg2 = z.to(g2.dtype)
    if need_k or need_d:
        if need_k:
            if not (fused or shared):
                s_sto, dd = _xcorr(xplan, u, g1, dy, g2, want_dd=need_d)
            dk = _filter_gradient(plan, s_sto, k)
        else:
            dd = skip_gradient(u, g1, dy, g2)
        if need_d:
            dD = dd.to(D.dtype)
    return du, dk, dD, dg1, dg2


def _torch_fftconv(
    u: Tensor,
    k: Tensor,
    D: Tensor | None,
    pregate: Tensor | None,
    postgate: Tensor | None,
    causal: bool,
    freq_keep: float | None = None,
) -> Tensor:
    """Plain PyTorch fallback (differentiable): the reference twin ``fftconv_ref``."""
    from dnastream.kernels.fftconv_ref import fftconv_ref

    return fftconv_ref(
        u, k, D, pregate=pregate, postgate=postgate, causal=causal, freq_keep=freq_keep
    )


def _validate(
    u: Tensor,
    k: Tensor,
    D: Tensor | None,
    pregate: Tensor | None,
    postgate: Tensor | None,
    causal: bool,
) -> None:
    if not isinstance(u, Tensor) or not isinstance(k, Tensor):
        raise TypeError("fftconv_triton: u and k must be tensors")
    if u.dim() != 3:
        raise ValueError(f"fftconv_triton: u must be (B, H, L), got shape {tuple(u.shape)}")
    batch, heads, seq_len = u.shape
    if batch < 1 or heads < 1 or seq_len < 1:
        raise ValueError(f"fftconv_triton: u has an empty dimension: {tuple(u.shape)}")
    if not u.dtype.is_floating_point:
        raise TypeError(f"fftconv_triton: u must be floating point, got {u.dtype}")
    if not k.dtype.is_floating_point:
        raise TypeError(f"fftconv_triton: k must be floating point, got {k.dtype}")
    if k.dim() != 2 or k.shape[0] != heads or k.shape[1] < 1:
        raise ValueError(
            f"fftconv_triton: k must be (H={heads}, Lk>=1), got shape {tuple(k.shape)}"
        )
    if not causal and k.shape[1] > seq_len:
        raise ValueError(
            f"fftconv_triton: circular convolution needs Lk <= L, got Lk={k.shape[1]} > L={seq_len}"
        )
    if k.device != u.device:
        raise ValueError(f"fftconv_triton: k is on {k.device} but u is on {u.device}")
    if D is not None:
        if not isinstance(D, Tensor) or not D.dtype.is_floating_point:
            raise TypeError("fftconv_triton: D must be a floating-point tensor")
        if tuple(D.shape) != (heads,):
            raise ValueError(f"fftconv_triton: D must be (H={heads},), got {tuple(D.shape)}")
        if D.device != u.device:
            raise ValueError(f"fftconv_triton: D is on {D.device} but u is on {u.device}")
    for name, g in (("pregate", pregate), ("postgate", postgate)):
        if g is None:
            continue
        if not isinstance(g, Tensor) or not g.dtype.is_floating_point:
            raise TypeError(f"fftconv_triton: {name} must be a floating-point tensor")
        if g.shape != u.shape:
            raise ValueError(
                f"fftconv_triton: {name} must have u's shape {tuple(u.shape)}, got {tuple(g.shape)}"
            )
        if g.device != u.device:
            raise ValueError(f"fftconv_triton: {name} is on {g.device} but u is on {u.device}")


def fftconv_triton(
    u: Tensor,
    k: Tensor,
    *,
    D: Tensor | None = None,
    pregate: Tensor | None = None,
    postgate: Tensor | None = None,
    causal: bool = True,
    k_spectrum: Tensor | None = None,
    plan: FFTPlan | None = None,
    freq_keep: float | None = None,
) -> Tensor:
    """FFT long convolution ``postgate * ((pregate * u) conv k + D * (pregate * u))``.

    Args:
        u: input (B, H, L), bfloat16 / float16 / float32 (float64 runs the PyTorch fallback).
        k: real filter (H, Lk). Causal: taps beyond L are ignored; circular: Lk <= L.
        D: optional skip weights (H,).
        pregate, postgate: optional gates with u's shape (any float dtype).
        causal: linear convolution with zero padding (any L) or circular convolution of
            length L (Triton for power-of-two L >= 256; other L use the PyTorch fallback).
        k_spectrum: optional ``filter_spectrum(k, plan)`` (2, H, N) computed once and reused
            (must match the plan in use: pass ``plan`` too or use ``plan_for(L, Lk, causal,
            u.dtype, batch=B)``). ``k`` is still needed for its gradient.
        plan: optional :class:`FFTPlan` (see :func:`plan_for`), e.g. to force the outer path.
        freq_keep: frequency-sparse convolution (see :func:`~dnastream.kernels.monarch.
            freq_cutoff`): only the lowest fraction of the filter's frequencies is used, and
            the fused kernels skip the zero blocks. Ignored when ``plan`` is given (its
            ``freq_cut`` decides).

    Returns:
        y (B, H, L) in u's dtype. Differentiable w.r.t. u, k, D, pregate and postgate
        (gradients computed by the Triton kernels).
    """
    _validate(u, k, D, pregate, postgate, causal)
    batch, heads, seq_len = u.shape
    if u.dtype not in _SUPPORTED or not uses_triton(u.device):
        return _torch_fftconv(u, k, D, pregate, postgate, causal, freq_keep)
    if plan is None:
        plan = plan_for(seq_len, k.shape[1], causal, u.dtype, batch=batch, freq_keep=freq_keep)
    if plan is None:
        # No Triton plan (circular convolution of a length that is not a power of two >= 256,
        # or an FFT longer than MAX_FFT_SIZE): PyTorch fallback, documented behaviour.
        return _torch_fftconv(u, k, D, pregate, postgate, causal, freq_keep)
    if plan.seq_len != seq_len or plan.causal != causal:
        raise ValueError(f"fftconv_triton: plan ({plan.describe()}) is for another L or mode")
    taps = min(k.shape[1], seq_len) if causal else k.shape[1]
    if taps > plan.taps:
        raise ValueError(
            f"fftconv_triton: plan ({plan.describe()}) is for {plan.taps} filter taps, "
            f"k uses {taps}"
        )
    expect_mma = "tf32x3" if u.dtype == torch.float32 else "fp16"
    if plan.mma != expect_mma:
        raise ValueError(
            f"fftconv_triton: plan ({plan.describe()}) was made for another dtype than {u.dtype};"
            " use plan_for(L, Lk, causal, u.dtype)"
        )
    if k_spectrum is None:
        k_spectrum = filter_spectrum(k, plan)
    elif (
        k_spectrum.shape != (2, heads, plan.n)
        or k_spectrum.dtype != torch.float32
        or k_spectrum.device != u.device
    ):
        raise ValueError(
            f"fftconv_triton: k_spectrum must be float32 (2, H={heads}, N={plan.n}) on {u.device}"
            f" (from filter_spectrum(k, plan)), got {tuple(k_spectrum.shape)} {k_spectrum.dtype}"
        )
    k_spectrum = k_spectrum.contiguous()
    u = u.contiguous()
    pregate = pregate.contiguous() if pregate is not None else None
    postgate = postgate.contiguous() if postgate is not None else None
    D = D.contiguous() if D is not None else None
    return _FFTConvFn.apply(u, k, D, pregate, postgate, plan, k_spectrum)
