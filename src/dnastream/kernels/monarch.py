"""FFT plans for the Monarch (matrix-product) FFT convolution kernels.

An FFT of length ``N`` is computed as a product of small dense DFT matrices ("Monarch"
factorisation, FlashFFTConv, arXiv 2311.05908) so that the work runs on tensor cores:

* **Inner (fused) FFT**, ``M = n1 * n2`` points, done inside one Triton program. The sequence
  is viewed as an ``(n1, n2)`` matrix ``A[a, b] = x[a * n2 + b]``. Step 1 is a DFT of length
  ``n1`` over ``a`` (the strided sub-sequences), step 2 multiplies by twiddles
  ``W_M^(b * k1)``, step 3 is a DFT of length ``n2`` over ``b``. The result is left in the
  "transposed" order ``D[k1, k2] = X[k1 + n1 * k2]``; we never permute it to natural order.
  The filter spectrum is stored in that same order and the inverse transform runs the three
  steps mirrored (conjugate DFTs, conjugate twiddles), which lands back in natural order.
* **Outer radix steps** (``N > M``), each a pass through HBM. A level of radix ``P`` and
  stride ``S`` (``P * S`` points) does, for every column ``s < S``, a length-``P`` DFT over
  ``x[p * S + s]`` and multiplies by ``W_(P*S)^(s * kp)``; row ``kp`` (length ``S``) then
  needs an ``S``-point FFT, which is the next level or the inner FFT. The inverse runs the
  levels in reverse with conjugates.

The storage order of a spectrum is therefore ``freq = kp1 + P1 * (kp2 + P2 * (... +
(k1 + n1 * k2)))`` at position ``((kp1 * P2 + kp2) ...) * M + k1 * n2 + k2``;
:func:`spectrum_order` returns that map and :func:`filter_spectrum` uses it.

All sizes are powers of two: Triton block shapes must be, and every dot needs each dimension
``>= 16``. Causal (linear) convolution pads to ``N >= L + Lk - 1`` (and at least 256) so any
``L >= 1`` works. Circular convolution needs ``N == L``: only powers of two ``>= 256`` have a
plan; :func:`plan_for` returns ``None`` for the others and the caller falls back to PyTorch.

This module only builds plans and small constant tables (DFT matrices, twiddles, filter
spectra); the kernels live in :mod:`dnastream.kernels.fftconv_triton`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from dnastream.kernels.spectrum_reorder import StorageLayout, storage_layout, storage_spectrum

__all__ = [
    "MAX_FFT_SIZE",
    "MAX_FUSED_SIZE",
    "MAX_OUTER_RADIX",
    "MIN_FFT_SIZE",
    "FFTPlan",
    "block_plan_for",
    "dft_table",
    "filter_spectrum",
    "filter_sum_bound",
    "freq_cutoff",
    "freq_mask",
    "keep_mask",
    "layout_for",
    "gemm_dtype",
    "gradient_table",
    "inner_twiddles",
    "plan_for",
    "sparse_fft_size",
    "spectrum_order",
    "spectrum_table",
    "uses_gemm_spectrum",
]

MIN_RADIX = 16  # smallest dot dimension Triton accepts
MIN_FFT_SIZE = MIN_RADIX * MIN_RADIX  # 256: smallest fused FFT (16 x 16)
MAX_FUSED_SIZE = 8192  # largest FFT done inside one program (128 x 64)
MAX_FUSED_CAUSAL = 32768  # ... for causal bf16/fp16 convolutions, which load half of it (256 x 128)
#: Largest causal bf16/fp16 FFT that :func:`plan_for` fuses by default. The 32768-point fused
#: kernel (256 x 128) stays available (``plan_for(..., max_fused=32768)``), but since the outer
#: buffers became scaled float16 an outer radix 16 over 2048 points beats it at N = 32768 on an
#: H100 (B=16, H=768, bf16; same run): padded forward 5.07 vs 5.85 ms, gated 5.72 vs 6.41 ms,
#: forward+backward 18.24 vs 22.27 ms, gated forward+backward 30.36 vs 34.95 ms; at 16384 the
#: fused kernel still wins (outer: 0.83-0.87x) (benchmarks/results/*_32k_outer_h100_stop14.log).
#: Used at B >= 3 (or B unknown); B <= 2 keeps the fused 32768-point kernel (see plan_for).
FUSED_CAUSAL_DEFAULT = 16384
MAX_OUTER_RADIX = 128  # largest dense DFT of one outer (HBM) level
MAX_FFT_SIZE = 1 << 27  # two outer levels of 128 on an 8192-point inner FFT

MmaKind = Literal["fp16", "tf32x3"]


def _is_pow2(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _log2(n: int) -> int:
    return n.bit_length() - 1


@dataclass(frozen=True)
class FFTPlan:
    """How one FFT convolution is cut into kernels. All sizes are powers of two.

    Attributes:
        n: FFT length N.
        seq_len: sequence length L.
        taps: filter taps actually used (``min(Lk, L)`` causal, ``Lk`` circular).
        causal: linear (zero-padded) or circular convolution.
        n1: inner strided factor (step-1 DFT length; the zero half is skipped there).
        n2: inner contiguous factor (step-2 DFT length).
        outer: outer radices through HBM, outermost first; ``()`` = one fused kernel.
        io_rows: step-1 input rows (of length ``n2``) that can hold data, and output rows
            computed by the last step, in the fused kernel (``n1`` when there are outer levels).
        outer_io: the same for the first outer level (its length-``outer[0]`` DFT), if any.
        rows: complex rows (batch-row pairs) per program tile in the inner kernel.
        num_warps: warps of the inner kernel.
        outer_block: columns per program tile of the outer kernels.
        outer_warps: warps of the outer kernels.
        mma: ``"fp16"`` (bf16/fp16 I/O: fp16 operands scaled per row, fp32 accumulate) or
            ``"tf32x3"`` (fp32 I/O).
        ctas_per_sm: persistent programs per SM.
        chunk: spectrum rows (of ``n1``) processed at a time by the one-row ("natural",
            transpose-free) kernels, used when ``rows == 1``.
        num_stages, outer_stages: Triton software-pipelining depth of the inner and outer
            kernels (1 = off: prefetching the next tile's constants costs too much shared
            memory in the fused kernels).
        hoist: keep the inner DFT matrices and twiddles in registers for the whole program
            (loaded once) instead of reloading them (from L1/L2) for every tile.
        maxnreg, outer_maxnreg: register cap per thread (PTX ``.maxnreg``) of the inner and
            outer kernels, ``None`` = the compiler's choice. A cap lets more programs share an
            SM (the fused kernels otherwise use ~250 registers, one 8-warp program per SM).
        outer_ctas_per_sm: persistent programs per SM of the outer kernels (0: ctas_per_sm).
        hoist_f2: one-row ("natural") kernel: load the step-2 DFT tables once per program
            instead of once per spectrum chunk (loop invariants the compiler can keep in
            shared memory). Default with ``fused_bwd`` for the fused 16K plan on GPUs with
            H100-class shared memory (tuned there), else a tuning option.
        fused_bwd: one-row plans: compute du (and dpregate) and the filter-gradient
            spectrum in one pass that shares FFT(postgate * dy). Default for the fused 16K
            plan on GPUs with H100-class shared memory (1.21x forward+backward on an H100)
            and for bf16/fp16 plans with outer levels (1.16-1.17x with 8 warps, ``bwd_warps``);
            slower at 2048 (3.58 vs 2.09 ms), so the separate passes stay the default there.
            Under outer levels R-row tiles (``rows > 1`` with ``bwd_rows`` 0 or ``rows``) take
            it too, in the transposed kernel (a tuning option until measured on a GPU;
            ``bwd_maxnreg=0`` lifts the inner kernel's register cap for it).
        bwd_chunk, bwd_warps, bwd_maxnreg: launch settings of the filter-gradient kernels
            (cross-correlation spectra summed over the batch; warps and registers also of the
            fused backward pass, ``fused_bwd``): spectrum rows per program
            (0: 64 for fused bf16/fp16 plans up to 8192 points, else ``max(16, chunk // 2)``;
            the fused 32K plan sets 64 on GPUs with H100-class shared memory),
            warps (0: ``num_warps``), register cap (None: ``maxnreg``; 0: none). Tuned for
            forward+backward by ``benchmarks/tune_conv.py --backward``.
        freq_cut: frequency-sparse convolution: only frequencies ``f`` with
            ``min(f, N - f) < freq_cut`` of the filter are kept (0: all). The fused one-row
            kernel then skips the spectrum columns that are all zero (:attr:`n2_kept`).
        bwd_rows: complex rows per tile of the filter-gradient kernel (0: ``rows``; du runs
            on the forward's tiles); the spectrum order does not depend on it.
        outer_bf16: bf16/fp16 plans with outer levels keep their intermediate spectra in
            bfloat16 (half the HBM traffic of the passes, one more rounding per pass). Off: on
            an H100 forward+backward ran 1.07-1.14x faster at 1M-4M but at 2.9-3.8e-3 relative
            error against the 3e-3 bar (results/ab_outer_bf16_h100_stop11.log).
        outer_fp16: bf16/fp16 plans with outer levels keep their intermediate spectra in
            float16, scaled: the input of each (row pair, channel) by 1 / max|gate * x| over
            both rows and every outer forward level by 1 / radix (every stored value is at
            most 1); the inner pass stores its output times NR, i.e. the outer forward
            transform of the output z divided by max|gate * x| and by NR (at most
            ``sum|k| + |D|`` in magnitude; a channel whose bound, from the spectrum, exceeds
            2^14 is scaled down by the ratio, so float16 never overflows); the last inverse
            level multiplies by the max and undoes that ratio (and the fused backward undoes
            both signals' scales in each pair's filter-gradient product). Half the bytes of
            fp32 at about its error. The separate filter-gradient pass keeps fp32 buffers.
            Default for bf16/fp16 plans with outer levels (H100: 1.01-1.08x forward+backward
            at 128K-4M, results/ab_fp16buf_h100_stop12.log). Takes precedence over
            ``outer_bf16``.
        static_scale: one-row fused bf16/fp16 kernel: scale the fp16 operands of each spectrum
            chunk by bounds known per tile (the tile's L1 norm, max |K| per spectrum block)
            instead of their row and column maxima (no cross-thread reductions per chunk).
            R-row (transposed) kernels (the default there since stop 16): the first step of
            each transform scales its rows by their L1 norms and the second step by the row
            pair's largest one (a bound on its inputs), one row reduction less per transform
            (in SASS, row maxima and their shuffles are ~18% of the 1024-2048-point R-row
            kernels' instructions, results/sass_mix_*_stop15.log).
        bounded_fwd: R-row (transposed) inner kernels under outer levels with scaled float16
            buffers (``outer_fp16``): the forward transforms of the buffers' tiles, whose
            values are at most 1, round their fp16 operands as they are (the second step's
            are at most N1), with no scaling and no row reductions; the inverse transform
            keeps its scaling (its input's magnitude follows the filter). In sm_90 SASS,
            operand scaling is about a third of the R-row kernels' instructions
            (results/sass_scaling_sm90_triton39_stop16.log); this option removes 12-16% of
            the inner kernels' at 128K / 256K and 30% of the filter-gradient kernel's
            (results/sass_bounded_fwd_sm90_triton39_stop16.log). Default for the R-row
            plans with outer levels since stop 17 (H100: forward+backward 1.02-1.08x,
            results/ab_bounded_*_h100_stop17.log).
        static_inv: R-row kernels with ``static_scale`` (fp16): the inverse transform's
            operands scaled by a bound known before it, the forward input's L1 norm times the
            spectrum block's max |K| + |D| / N (as the one-row kernels' ``static_scale``
            does), not by row L1 norms: no row reductions in the inverse (SASS:
            results/sass_static_inv_*_stop16.log). Off: its SASS is 17-20% shorter, yet on an
            H100 it ran slower, forward 0.77-0.96x, forward+backward 0.87-1.02x
            (results/ab_static_inv_small_h100_stop17.log, ab_bounded_*_h100_stop17.log).
        static_bwd: the fused backward's du transform scales its fp16 operands like
            ``static_scale`` (independently of it; the second signal's transform keeps its
            column maxima).
        shared_bwd_outer: plans with outer levels, scaled float16 buffers and the separate
            backward passes (not ``fused_bwd``): postgate * dy and pregate * u go through the
            outer forward levels once, into scaled float16 buffers; the filter-gradient pass
            reads both (undoing the scales per pair) and du's inner convolution then runs in
            place on the dy buffer. One outer forward pass less than the separate passes, and
            half the bytes in the filter-gradient pass (which otherwise runs its own outer
            levels into fp32 buffers). Default for the 2-row plans over 1024-point inner FFTs
            (128K and 4M at B >= 3) since stop 16.
        nat_transposed: one-row inner kernels (forward, and du where the backward is not
            fused; windows and frequency-sparse plans keep the natural kernel) in the
            transposed orientation, where every product has ``n2`` rows (sm_90 can issue them
            as wgmma; with 32-row spectrum chunks the natural orientation's first four
            products have 32 rows and run as mma.sync). Off by default until measured.
        nat_transposed_bwd: the same for the one-row filter-gradient passes: the fused
            backward's (du and the filter gradient's spectra, ``fused_bwd``) or the separate
            one (du then follows ``nat_transposed``).
        acc_dot: the one-row kernels with per-tile static bounds (``static_scale`` /
            ``static_bwd``) accumulate their last product in the dots themselves, in units of
            the tile's bound, scaled once after the chunk loop, instead of adding each chunk's
            product (a register temporary the size of the output). sm_90 compile (Triton 3.9),
            fused 8K: spills 712 -> 484 B per thread (592 -> 364 with ``hoist_f2``). Off until
            measured.
        two_phase: the natural one-row kernel with static bounds (forward and du when the
            backward is not fused; dense, no windows) in two loops: the first stores each
            chunk's last-step operand (fp16, in units of the tile's bound) to scratch rows in
            global memory (2 x N1 x N2 per program, L2 resident) instead of adding its
            product to the output, the second forms the output from them chunk by chunk. The
            output accumulator is then not live across the transform. Off until measured.
        outer_tw_split: outer kernels compute a tile's twiddles as a per-tile vector times a
            per-program block (P cosines and sines per tile instead of BS * P).
        block: overlap-save ("partial convolution" of a short filter, forward only): the
            causal convolution of the whole length-``seq_len`` sequence is cut into windows
            of ``n`` samples starting every :attr:`block_out` samples, each circularly
            convolved in one fused program; the first ``taps - 1`` outputs of a window are
            dropped (they wrap around), the others are exact. Made by :func:`block_plan_for`.
    """

    n: int
    seq_len: int
    taps: int
    causal: bool
    n1: int
    n2: int
    outer: tuple[int, ...] = ()
    io_rows: int = 0
    outer_io: int = 0
    rows: int = 1
    num_warps: int = 4
    outer_block: int = 64
    outer_warps: int = 4
    mma: MmaKind = "fp16"
    ctas_per_sm: int = 2
    hoist: bool = True
    chunk: int = 64
    num_stages: int = 1
    outer_stages: int = 2
    maxnreg: int | None = None
    outer_maxnreg: int | None = None
    outer_ctas_per_sm: int = 0
    hoist_f2: bool = False
    fused_bwd: bool = False
    bwd_chunk: int = 0
    bwd_warps: int = 0
    bwd_maxnreg: int | None = None
    freq_cut: int = 0
    outer_tw_split: bool = False
    bwd_rows: int = 0
    outer_bf16: bool = False
    static_scale: bool = False
    bounded_fwd: bool = False
    static_inv: bool = False
    outer_fp16: bool = False
    block: bool = False
    static_bwd: bool = False
    shared_bwd_outer: bool = False
    nat_transposed: bool = False
    nat_transposed_bwd: bool = False
    acc_dot: bool = False
    two_phase: bool = False
    _strides: tuple[int, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("n", "n1", "n2", "rows", "outer_block"):
            if not _is_pow2(getattr(self, name)):
                raise ValueError(f"FFTPlan.{name} must be a power of two")
        if self.n1 < MIN_RADIX or self.n2 < MIN_RADIX:
            raise ValueError(f"FFTPlan: inner factors must be >= {MIN_RADIX}")
        if any((not _is_pow2(p)) or p < MIN_RADIX for p in self.outer):
            raise ValueError(f"FFTPlan: outer radices must be powers of two >= {MIN_RADIX}")
        if self.inner * math.prod(self.outer) != self.n:
            raise ValueError("FFTPlan: n != n1 * n2 * prod(outer)")
        if not self.causal and self.n != self.seq_len:
            raise ValueError("FFTPlan: circular convolution needs n == seq_len")
        if self.block:
            if not self.causal or self.outer or self.freq_cut or 2 * (self.taps - 1) > self.n:
                raise ValueError(
                    "FFTPlan: a blocked (overlap-save) plan is causal, fused, dense and needs "
                    "taps - 1 <= n / 2"
                )
        elif self.causal and self.n < self.seq_len + self.taps - 1:
            raise ValueError("FFTPlan: causal convolution needs n >= seq_len + taps - 1")
        if self.nat_transposed and self.rows == 1 and self.n2 < 128 and self.num_warps > 4:
            # the transposed forward kernel with 64-row products over 8 warps made an illegal
            # memory access on an H200 (Triton 3.6; stop 20, 4096-point 64 x 64 inner FFT):
            # refused here, before it can poison the CUDA context
            raise ValueError(
                "FFTPlan: nat_transposed with n2 < 128 runs on at most 4 warps "
                f"(got num_warps={self.num_warps}, n2={self.n2})"
            )
        strides = []
        s = self.n
        for p in self.outer:
            s //= p
            strides.append(s)
        object.__setattr__(self, "_strides", tuple(strides))
        if self.io_rows == 0:
            object.__setattr__(self, "io_rows", self._default_io_rows())
        if self.outer and self.outer_io == 0:
            object.__setattr__(self, "outer_io", _io_rows(self.seq_len, self.outer[0], strides[0]))

    def _default_io_rows(self) -> int:
        if self.outer or self.block:
            return self.n1
        return _io_rows(self.seq_len, self.n1, self.n2)

    @property
    def inner(self) -> int:
        """Length of the inner (in-program) FFT, ``n1 * n2``."""
        return self.n1 * self.n2

    @property
    def block_out(self) -> int:
        """Outputs per window of a blocked plan, ``n - taps + 1`` (its window stride)."""
        return self.n - self.taps + 1

    def blocks(self) -> int:
        """Windows per sequence of a blocked plan (``ceil(seq_len / block_out)``)."""
        return -(-self.seq_len // self.block_out)

    @property
    def strides(self) -> tuple[int, ...]:
        """Stride ``S`` of each outer level (``N / (P1 ... Pl)``)."""
        return self._strides

    @property
    def kind(self) -> str:
        """``"fused"`` (one kernel) or ``"outerK"`` (K outer levels through HBM)."""
        return "fused" if not self.outer else f"outer{len(self.outer)}"

    @property
    def n2_kept(self) -> int:
        """Step-2 spectrum columns the one-row fused kernel computes: ``n2`` (dense) or, for a
        frequency-sparse plan, the power of two >= 16 covering the kept low columns
        ``[0, n2_kept / 2)`` and high columns ``[n2 - n2_kept / 2, n2)``."""
        if not self.freq_cut or self.outer or self.rows != 1:
            return self.n2
        low = -(-self.freq_cut // self.n1)
        high = self.n2 - (self.n - self.freq_cut + 1) // self.n1
        return min(self.n2, max(MIN_RADIX, _next_pow2(2 * max(low, high, 1))))

    def describe(self) -> str:
        """Short human-readable summary, e.g. ``N=4096 fused 64x64 R=1``."""
        levels = "x".join(str(p) for p in self.outer)
        head = f"N={self.n} " + ("fused" if not self.outer else f"outer[{levels}]")
        sparse = f" freq<{self.freq_cut} cols={self.n2_kept}" if self.freq_cut else ""
        tiles = f"inner {self.n1}x{self.n2} io={self.io_rows} R={self.rows} {self.mma}"
        blocked = f" blocked x{self.blocks()} out={self.block_out}" if self.block else ""
        buf = ""
        if self.outer and self.mma == "fp16" and (self.outer_fp16 or self.outer_bf16):
            buf = " buf=fp16" if self.outer_fp16 else " buf=bf16"
        return f"{head} {tiles}{sparse}{blocked}{buf}"


def _io_rows(seq_len: int, radix: int, stride: int) -> int:
    """Rows of a ``(radix, stride)`` view that hold the first ``seq_len`` samples (pow2, >=16)."""
    rows = -(-seq_len // stride)
    return min(radix, max(MIN_RADIX, _next_pow2(rows)))


def _split_inner(m: int) -> tuple[int, int]:
    e = _log2(m)
    a = (e + 1) // 2
    return 1 << a, 1 << (e - a)


def _outer_levels(e: int, max_exp: int) -> tuple[int, ...] | None:
    """Split ``2**e`` into levels, each a power of two between 16 and ``2**max_exp``."""
    if e == 0:
        return ()
    min_exp = _log2(MIN_RADIX)
    levels = -(-e // max_exp)
    if e < min_exp * levels:
        return None
    exps = [e // levels + (1 if i < e % levels else 0) for i in range(levels)]
    return tuple(1 << x for x in exps)


_FUSED_CAUSAL_LIMIT: dict[int, int] = {}


#: Inner FFT size of the default dense bf16/fp16 plans at these FFT sizes (see plan_for), keyed
#: by (causal, two batch-row pairs or more: B >= 3 or B unknown). Measured on an H100 with
#: benchmarks/ab_backward_plans.py (B = 8, or B = 2 for the one-pair rows; same run per size):
#: causal, B >= 3: results/ab_outer_radix*_h100_stop14.log; causal B = 2 and circular B = 8:
#: results/ab_structures_{b2,circular}_h100_stop15.log; the 1024- and 2048-point entries of
#: stops 17-18 (R-row tiles): results/ab_structures_*_h100_stop17.log, ab_circ_mid_h100_stop18.log
#: (circular 128K over 2048: 1.39x forward+backward, 1.26x forward; 256K: 1.10x / 0.99x).
_DEFAULT_INNER: dict[tuple[bool, bool], dict[int, int]] = {
    (True, True): {
        1 << 16: 1024, 1 << 17: 1024, 1 << 18: 2048, 1 << 19: 4096, 1 << 20: 1024,
        1 << 21: 1024, 1 << 22: 1024,
    },
    (True, False): {1 << 18: 4096, 1 << 19: 4096, 1 << 22: 4096},
    (False, True): {1 << 16: 1024, 1 << 17: 2048, 1 << 18: 2048, 1 << 19: 1024, 1 << 20: 1024,
                    1 << 21: 1024, 1 << 22: 1024},
}  # fmt: skip


def _fused_causal_limit_uncached() -> int:
    """Largest causal bf16/fp16 FFT one program holds on the current CUDA device. The 16K and
    32K kernels need 147 / 180 KB of shared memory per block (compiled for sm_90): H100/H200
    and B200 (227 KB opt-in) take both, A100 (163 KB) the 16K one, GPUs with ~99 KB neither.
    Without CUDA (CPU, Triton interpreter) the largest."""
    if not torch.cuda.is_available():
        return MAX_FUSED_CAUSAL
    index = torch.cuda.current_device()
    limit = _FUSED_CAUSAL_LIMIT.get(index)
    if limit is None:
        cap = torch.cuda.get_device_capability(index)
        if cap[0] in (9, 10):
            limit = MAX_FUSED_CAUSAL
        elif cap in ((8, 0), (8, 7)):
            limit = MAX_FUSED_CAUSAL // 2
        else:
            limit = MAX_FUSED_SIZE
        _FUSED_CAUSAL_LIMIT[index] = limit
    return limit


def _assume_constant_result(fn):
    """``torch._dynamo.assume_constant_result`` without importing ``torch._dynamo`` (1.5 s,
    which inference never needs): that decorator only sets this mark, which dynamo reads when
    it traces (``tests/test_fftconv_triton.py`` checks the installed torch still does so)."""
    fn._dynamo_marked_constant = True
    return fn


# a constant for torch.compile (the dispatch in ``fftconv`` calls plan_for while tracing)
_fused_causal_limit = _assume_constant_result(_fused_causal_limit_uncached)


def _mma_for(dtype: torch.dtype) -> MmaKind:
    if dtype in (torch.float16, torch.bfloat16):
        return "fp16"
    return "tf32x3"


def plan_for(
    seq_len: int,
    filter_len: int,
    causal: bool,
    dtype: torch.dtype,
    *,
    batch: int | None = None,
    max_fused: int = MAX_FUSED_SIZE,
    max_radix: int = MAX_OUTER_RADIX,
    rows: int | None = None,
    freq_keep: float | None = None,
) -> FFTPlan | None:
    """Pick an :class:`FFTPlan` for a convolution of ``seq_len`` samples with ``filter_len`` taps.

    Args:
        seq_len: L >= 1.
        filter_len: Lk >= 1 (causal: taps beyond L are ignored; circular: Lk <= L).
        causal: linear convolution (any L, zero-padded to a power of two >= L + Lk - 1, at
            least 256) or circular convolution of length L.
        dtype: the I/O dtype of ``u`` (bf16/fp16 use fp16 tensor-core operands, fp32 uses
            3xTF32).
        batch: B, to size the row tiles and, for bf16/fp16 at N = 32K-1M and 4M, to pick the
            structure (B >= 3 or None fills 2-row tiles; B <= 2 runs one-row tiles, which
            favour other inner FFT sizes: see ``_DEFAULT_INNER``).
        max_fused: largest FFT done in one fused kernel (tests lower it to reach the outer
            path at small N).
        max_radix: largest radix of one outer level.
        rows: force the number of complex rows per tile.
        freq_keep: frequency-sparse convolution: keep this fraction (0, 1] of the filter's
            spectrum, the lowest frequencies (see :func:`freq_cutoff`); None = dense.

    Returns:
        The plan, or ``None`` when no Triton plan exists (circular L that is not a power of
        two >= 256, or N beyond :data:`MAX_FFT_SIZE`); callers then use the PyTorch fallback.
    """
    if seq_len < 1 or filter_len < 1:
        raise ValueError(f"plan_for: need L >= 1 and Lk >= 1, got L={seq_len}, Lk={filter_len}")
    if not _is_pow2(max_fused) or max_fused < MIN_FFT_SIZE:
        raise ValueError(f"plan_for: max_fused must be a power of two >= {MIN_FFT_SIZE}")
    if not _is_pow2(max_radix) or max_radix < MIN_RADIX:
        raise ValueError(f"plan_for: max_radix must be a power of two >= {MIN_RADIX}")
    if causal:
        taps = min(filter_len, seq_len)
        n = max(MIN_FFT_SIZE, _next_pow2(seq_len + taps - 1))
    else:
        if filter_len > seq_len:
            raise ValueError(
                f"plan_for: circular convolution needs Lk <= L ({filter_len} > {seq_len})"
            )
        taps = filter_len
        n = seq_len
        if not _is_pow2(n) or n < MIN_FFT_SIZE:
            return None
    if n > MAX_FFT_SIZE:
        return None

    mma = _mma_for(dtype)
    if mma == "tf32x3":
        # fp32 operands (3xTF32) need twice the shared memory: an 8192-point inner FFT would
        # not fit in an H100's 227 KB, so fp32 stays at <= 4096 points per program.
        max_fused = min(max_fused, MAX_FUSED_SIZE // 2)
        # and a radix-128 outer level needs 240 KB in fp32 (seen on an H100, Triton 3.6)
        max_radix = min(max_radix, MAX_OUTER_RADIX // 2)
    # Causal bf16/fp16 convolutions up to 16384 points run in one program (the zero half of
    # the input is never loaded); measured on an H100 against an outer radix-16 pass through
    # HBM (benchmarks/results/explore_plans_h100.log): 16384 padded 5.57 vs 6.48 ms. 32768 was
    # fused too (8.19 vs 8.64 ms) until the float16 outer buffers made the outer path faster
    # (see FUSED_CAUSAL_DEFAULT). Circular 16384 stays split (7.39 fused vs 6.52 ms), and an
    # inner FFT of 16384 under outer levels lost (13.9 vs 9.9 ms at 1M), so inner FFTs stay
    # <= 8192.
    # Causal bf16/fp16 at N = 128K-512K: one outer level of radix 128 over a 1024-4096-point
    # inner FFT instead of radix 16-64 over 8192 points (that one-row inner kernel is latency
    # bound; the 2-row kernels of 1024-4096 points are not). H100, B = 8, bench_conv in one run:
    # forward 1.64x / 1.77x / 1.48x, forward+backward 1.33x / 1.32x / 1.27x at 128K / 256K /
    # 512K (benchmarks/results/bench_conv_radix128_{before,after}_h100_stop14.log; plan A/Bs:
    # ab_outer_radix_h100_stop14.log; 64K tied, 1M already is 128 x 8192). At 4M two levels of
    # 64 over 1024 points instead of 32 x 16 over 8192: forward 1.39x, forward+backward 1.22x
    # (ab_outer_radix_2m_4m_h100_stop14.log; 2M keeps its one level over 16384). Only with
    # two batch-row pairs or more (B >= 3, or B unknown), which fill the 2-row tiles: at B = 2
    # (one-row tiles) the HyenaDNA-large training step at 2 x 64K ran 0.97x of the 8192-point
    # plan (135.0 vs 131.2 ms, results/bench_train_step_b2_*_h100_stop14.log).
    # One row pair (B <= 2, one-row tiles): at 256K / 512K causal an outer radix 64 / 128 over a
    # 4096-point inner FFT instead of 32 / 64 over 8192: forward+backward 1.05x / 1.15x, forward
    # 1.04x / 1.19x (128K tied, 0.99-1.00x; 32K keeps the fused kernel: the outer plans ran
    # 0.82-0.87x forward+backward; 1M / 2M keep theirs: 0.83-0.88x). At 4M 32 x 32 over 4096
    # points instead of 32 x 16 over 8192: forward+backward 1.12x (1.09x torch.fft's speed),
    # forward 1.16x. Circular (B = 8): 4096-point inner FFTs at 256K (radix 64) and 1M
    # (16 x 16) instead of 8192 points: forward+backward 1.15x / 1.10x, forward 1.17x / 1.14x;
    # at 4M 64 x 64 over 1024 points (as causal): 1.18x / 1.34x; 64K / 128K tied (1.01x /
    # 1.02x); 512K and 2M lost with every smaller inner FFT (0.86-0.94x)
    # (results/ab_structures_*_h100_stop15.log).
    # Stop 17, after the R-row kernels took static_scale, bounded_fwd, shared_bwd_outer and the
    # 2-row filter gradient (B = 8, same call, forward+backward / forward): causal 64K radix 64
    # over 1024 points instead of 16 over 4096, 1.31x / 1.14x; causal 2M 64 x 32 over 1024
    # instead of 128 over 16384, 1.09x / 1.03x; circular 64K over 1024 points 1.23x / 1.07x,
    # circular 512K 16 x 16 over 2048 instead of 128 over 4096, 1.17x / 1.10x, circular 2M
    # over 1024 points 1.18x / 1.10x. Causal 512K / 1M and circular 1M keep theirs (causal
    # 0.67-0.90x; circular 1M 1.04x / 0.97x) (results/ab_structures_*_h100_stop17.log).
    # Stop 18: circular 128K over 2048 points (radix 64) instead of 16 over 8192, 1.39x /
    # 1.26x; circular 256K radix 128 over 2048 instead of 64 over 4096, 1.10x / 0.99x
    # (results/ab_circ_mid_h100_stop18.log). Causal 16K / 32K over 1024 points (0.99x / 0.90x)
    # and causal 128K over 2048 (0.78x) lost (results/ab_*_h100_stop18.log).
    # Stop 19: causal 1M 32 x 32 over 1024 points (with the radix-32 launch below) instead of
    # 128 over 8192, 1.34x / 1.31x; at 512K 32 x 16 over 1024 1.02x / 0.91x, not taken
    # (results/ab_two_level_mid_h100_stop19.log). Circular 1M the same, instead of 16 x 16
    # over 4096: 1.60x / 1.50x (results/ab_circ_1m_h100_stop19.log).
    # Stop 20 (H200): circular 512K 32 x 16 over 1024 points (the radix-32 launch) instead of
    # 16 x 16 over 2048, forward+backward 1.13x, forward 1.14x
    # (results/ab_circ_256k_512k_h200_stop20.log).
    pairs = batch is None or batch >= 3
    small_inner = _DEFAULT_INNER.get((causal, pairs), {}).get(n)
    if (
        small_inner is not None
        and mma == "fp16"
        and freq_keep is None
        and max_fused == MAX_FUSED_SIZE
        and max_radix == MAX_OUTER_RADIX
    ):
        max_fused = small_inner
    fused_limit = max_fused
    if mma == "fp16" and causal and max_fused == MAX_FUSED_SIZE:
        # (B <= 2 keeps the fused 32768 kernel: the outer plan was measured at B = 16, where its
        # 2-row tiles fill; at B = 2 they would be one-row tiles, which lost at 128K (see
        # the radix-128 rule above), and at B = 1 the dispatch sends outer plans to torch.fft)
        default = FUSED_CAUSAL_DEFAULT if batch is None or batch >= 3 else MAX_FUSED_CAUSAL
        fused_limit = min(_fused_causal_limit(), default)
    elif mma == "fp16" and causal and max_fused > MAX_FUSED_SIZE:  # asked for: if it launches
        fused_limit = min(max_fused, _fused_causal_limit())
    if n <= fused_limit:
        inner, outer = n, ()
    else:
        outer = None
        inner = min(max_fused, fused_limit)
        while inner >= MIN_FFT_SIZE:
            outer = _outer_levels(_log2(n // inner), _log2(max_radix))
            if outer is not None:
                break
            inner //= 2
        if outer is None:
            return None
        # one outer level over a 16384-point inner FFT instead of two over 8192 (N = 2M):
        # H100, bf16, forward 1.07x, forward+backward 1.06x. At 1M the 16384-point inner under
        # one level lost to 8192 under one (0.74x); at 4M both take two levels (1.00x)
        # (results/ab_structure_h100_stop12.log)
        if mma == "fp16" and causal and max_fused == MAX_FUSED_SIZE and len(outer) == 2:
            wide = _outer_levels(_log2(n // (2 * inner)), _log2(max_radix))
            if wide is not None and len(wide) == 1 and 2 * inner <= MAX_FUSED_CAUSAL // 2:
                inner, outer = 2 * inner, wide
    n1, n2 = _split_inner(inner)

    # Tile sizing (measured with benchmarks/tune_conv.py on an H200, bf16, FlashFFTConv's
    # workload; benchmarks/results/tune_conv_h200.log). Small inner FFTs (<= 1024) batch `rows`
    # complex rows (batch-row pairs) per program tile, about 2048 complex values, laid out
    # transposed (two in-register transposes); 4 warps capped at 128 registers so 4 programs
    # share an SM (1.5-1.6x over 8 uncapped warps). Larger inner FFTs take one row per tile in
    # the transpose-free "natural" kernel, `chunk` = 32 spectrum rows at a time, 4 warps (one
    # warpgroup: 1.5-1.7x over 8 warps at 4096-8192 points; since stop 21 the 4096-point
    # plans below take 2-row tiles of 8 warps). Outer kernels: registers capped at 168 and 4
    # programs per SM (1.3-1.7x end to end with the inner changes).
    # The 256-point FFT too, with 8 rows: 1.45-1.62x over its former 16 rows of 8 uncapped
    # warps on an H100 (benchmarks/results/tune_forward_256_h100.log; 16 capped rows spilled:
    # 0.46 vs 0.14 ms gated, benchmarks/results/bench_conv_h100.log).
    fp16 = mma == "fp16"
    capped = fp16 and 256 <= inner <= 1024
    if rows is None:
        rows = (2048 if capped else 4096) // inner if inner <= 1024 else 1
        # 2 rows of 4 uncapped warps: 1.44-1.51x over one row (H100, benchmarks/results/
        # explore_plans_small_h100.log). Frequency-sparse plans too: the one-row kernel that
        # skips the zero spectrum blocks lost to them at 2048 (keep 1/4, H100: 0.71 vs 0.51 ms
        # forward, 1.92 vs 1.50 ms forward+backward; results/bench_conv_sparse_h100_stop10.log)
        if fp16 and inner == 2048:
            rows = 2
        # the fused 4096-point plan (64 x 64) on 2-row tiles of 8 warps (every product a wgmma
        # in the sm_90 compile), its filter gradient on one-row tiles of 4 warps. H200, bf16,
        # B = 64, H = 768, against the one-row kernel: forward 1.14x causal, 1.09x circular,
        # 1.12x gated; forward+backward 1.09x / 1.05x / 1.03x (the filter gradient on the
        # 2-row tiles too: 1.02x / 0.96x / 0.97x). At 8192 points (128 x 64) the 2-row tiles
        # lost, 0.64-0.76x; a 128-register cap (two programs per SM) lost at 4096, forward 0.74x,
        # forward+backward 0.62x (results/ab_fused_4k_h200_stop21.log, ab_r2_4k*_h200_stop21.log,
        # ab_gated_*). (The H200's shipped entry for the causal key repeats these settings: the
        # H100's entry there, tuned on the one-row kernel, would otherwise apply to it.)
        if fp16 and inner == 4096 and not outer and freq_keep is None:
            rows = 2
        # ... and under causal 512K's radix-128 outer level (B >= 3), with the separate backward
        # passes sharing the outer forward of postgate * dy (shared_bwd_outer). H200, bf16,
        # B = 8, H = 96, against the one-row kernel with its fused backward: forward+backward
        # 1.30x (13.57 vs 17.66 ms), forward 1.18x; the fused R-row backward 1.09x, separate
        # passes 1.02x (results/ab_512k_r2_h200_stop21.log)
        if fp16 and causal and outer == (MAX_OUTER_RADIX,) and inner == 4096 == small_inner:
            rows = 2
        if batch is not None:
            rows = min(rows, _next_pow2(max(1, (batch + 1) // 2)))
    # the filter-gradient kernel runs on the forward's R-row tiles at every inner size. At 2048
    # points it took one-row tiles until stop 17: with static_scale's derived bounds the 2-row
    # kernel won, H100, bf16, forward+backward 1.04x fused 2K, 1.15x / 1.13x at 32K / 256K
    # (results/ab_xc_rows_h100_stop17.log)
    # fused one-row fp16 plans scale their fp16 operands by per-tile bounds instead of row and
    # column maxima: 1.07-1.18x at 4096-32768 on an H100, same error (benchmarks/results/
    # explore_plans_h100_stop9.log); under outer levels it gained nothing (0.99-1.00x at
    # 64K-1M, explore_plans run 1 of stop 9)
    # R-row (transposed) kernels too, at every inner size they serve (256-2048 points, fused or
    # under outer levels): L1-norm / derived scales instead of row maxima. H100, bf16, same
    # call: forward 1.05x at 256 and 1024, 1.07x gated 1024, 1.46x at 2048; under outer levels
    # forward 1.05-1.10x and forward+backward 1.05-1.12x at 32K / 128K / 256K / 4M, circular
    # 4M 1.05x / 1.06x; error unchanged (results/ab_static_rows_h100_stop16.log,
    # explore_static_rows_h100_stop16.log)
    static_scale = fp16 and (
        (not outer and (inner == 4096 or (rows == 1 and inner > 4096)))
        or (rows > 1 and inner <= 2048)
    )
    # backward of the fused 16K / 32K plans, as tuned on an H100 (forward+backward 1.21x and
    # 1.32x over 16-row filter-gradient chunks; benchmarks/results/tune_backward_h100_stop9.log):
    # 16K shares FFT(postgate * dy) between du and the filter gradient with the step-2 tables
    # hoisted, 32K takes 64-row chunks. Kept to GPUs with an H100's shared memory (227 KB).
    fused_bwd = hoist_f2 = False
    bwd_chunk = bwd_warps = bwd_rows = 0
    if fp16 and not outer and inner == 4096 and rows > 1:  # (see the 2-row tiles above)
        bwd_rows, bwd_warps = 1, 4
    if fp16 and not outer and inner > MAX_FUSED_SIZE and _fused_causal_limit() >= MAX_FUSED_CAUSAL:
        if inner == 2 * MAX_FUSED_SIZE:
            fused_bwd = hoist_f2 = True
        else:
            bwd_chunk = 64
    # under outer levels too: du's inner pass also accumulates the filter-gradient spectrum
    # (no separate cross-correlation pass, one outer forward pass less), 8 warps for that
    # kernel (4: 1,676 B of spills for sm_90). H100, forward+backward at 128K / 1M / 2M:
    # 1.16-1.17x over the separate passes (results/ab_backward_plans_h100_stop11.log)
    if fp16 and outer and rows == 1:
        fused_bwd, bwd_warps = True, 8
    # the separate passes of the 2-row plans over 1024-point inner FFTs (128K and 4M at B >= 3)
    # share the outer forward of postgate * dy, and the filter-gradient pass reads the scaled
    # float16 buffers. H100, bf16, forward+backward with static_scale: 1.27x at 128K, 1.23x at
    # 4M, gated 128K 1.17x; over 2048 points (32K, 256K) it lost to the separate passes
    # (0.97-0.98x alone, 1.04x / 1.02x with static_scale against its 1.06x / 1.05x)
    # (results/ab_shared_static_h100_stop16.log) while its filter gradient ran on one-row
    # tiles there; on the 2-row tiles it won: 1.32x / 1.28x at 32K / 256K against the stop-16
    # defaults (1.15x / 1.13x for the 2-row filter gradient alone; ab_xc_rows_h100_stop17.log)
    shared_bwd_outer = (
        fp16 and bool(outer) and rows > 1 and inner in (1024, 2048, 4096) and not fused_bwd
    )
    # the forward transforms of the scaled float16 buffers (values at most 1) round their fp16
    # operands unscaled, no row reductions (R-row inner kernels under outer levels): H100,
    # bf16, forward+backward 1.04x / 1.08x / 1.02x / 1.04x at 32K / 128K / 256K / 4M, circular
    # 4M 1.04x; forward 1.03-1.05x; error unchanged (results/ab_bounded_*_h100_stop17.log).
    # (static_inv, the inverse scaled by known bounds, lost: forward 0.77-0.96x.)
    bounded_fwd = fp16 and bool(outer) and rows > 1
    # the fused 16K plan (128 x 128) runs its forward (and du) in the transposed orientation,
    # every product 128 rows (wgmma on sm_90): H200, bf16, forward 1.21x, forward+backward
    # 1.07x; gated 1.16x / 1.09x. At 4K / 8K (n2 = 64) it lost, 0.92-0.96x forward; the
    # fused backward's pass transposed too lost at 16K (1.04x against 1.07x)
    # (results/ab_nat_t_*_h200_stop20.log)
    nat_transposed = fp16 and not outer and rows == 1 and inner == 2 * MAX_FUSED_SIZE
    maxnreg = None
    ctas_per_sm = 2
    if rows > 1:
        num_warps = 4 if capped else (8 if rows * n2 >= 128 else 4)
        if capped:
            maxnreg, ctas_per_sm = 128, 4
    else:
        num_warps = 4 if fp16 else (8 if inner >= 4096 else 4)
        if inner > MAX_FUSED_SIZE:  # 128 x 128 and 256 x 128: 8 warps
            num_warps = 8
    radix_max = max(outer) if outer else MIN_RADIX
    if fp16 and radix_max >= 128:
        outer_block = 16
    else:
        outer_block = max(MIN_RADIX, min(128, 4096 // radix_max))
    outer_warps = 4 if outer_block * radix_max <= 2048 else 8
    outer_maxnreg = 168 if fp16 else None
    # 8 outer programs per SM slot with float16 buffers and 3 stages: H100, forward+backward
    # 1.02x / 1.04x / 1.00x at 128K / 1M / 4M (results/ab_launch2_h100_stop12.log)
    outer_ctas = 8 if fp16 else 0
    if fp16 and outer == (MAX_OUTER_RADIX,) and rows > 1 and inner <= 2048:
        # (over 4096 points, causal 512K, the A/B above kept the one-row plan's outer launch:
        # this one with the 2-row tiles gave forward 1.22x against 1.18x, forward+backward
        # with separate passes 1.07x against 1.02x, and has not run with shared_bwd_outer)
        # radix 128 over 2-row inner tiles (128K / 256K at B >= 3): uncapped registers and 3
        # programs per SM slot (found by the launch tuner, results/tune_conv_near_misses_*).
        # bench_conv on an H100, one call: forward 1.04-1.06x, gated 1.06x, forward+backward
        # 1.03-1.04x at 128K / 256K (results/ab_tuned_launch_bench_*_h100_stop15.log)
        outer_maxnreg, outer_ctas = None, 3
        if not causal:
            # circular 256K: 32-column tiles. H200, bf16, forward+backward 1.10x, forward
            # 1.07x (results/ab_circ_256k_512k_h200_stop20.log); the shipped H100 tuning of
            # this plan (16 columns, 8 warps, 2 per SM), which an H200 would take, lost to it,
            # 0.97x / 0.98x, and was dropped (ab_circ_256k_h200_stop20.log). Causal 256K
            # (the same structure) lost with it: 0.93x (ab_causal_256k_512k_h200_stop20.log)
            outer_block = 32
    if fp16 and radix_max == 64 and rows > 1:
        # largest radix 64 over 2-row inner tiles (B >= 3: causal 64K / 2M / 4M, circular 64K /
        # 128K / 2M / 4M): 32-column tiles, 4 warps, 3 programs per SM slot. The launch tuner
        # found it for all four single-level cases it ran (forward 1.47-1.52x,
        # results/tune_*_h100_stop18.log); on the two-level plans, H100, bf16: forward+backward
        # 1.30x / 1.40x at 2M / 4M, circular 1.31x / 1.41x, forward 1.28-1.40x
        # (results/ab_r64_*_h100_stop18.log). On radix 128 over one-row tiles (512K, 1M) it lost:
        # 0.97-0.98x.
        outer_block, outer_warps, outer_ctas = 32, 4, 3
    if fp16 and radix_max == 32 and rows > 1:
        # largest radix 32 over 2-row inner tiles (causal and circular 1M at B >= 3: 32 x 32
        # over 1024 points): 64-column tiles, 4 warps, 3 per SM slot. H100, bf16, causal,
        # forward+backward 1.34x, forward 1.31x against 128 over 8192; the radix-64 launch
        # (32 columns) gave 1.07x / 1.04x (results/ab_two_level_mid_h100_stop19.log); circular
        # 1.60x / 1.50x against 1.22x / 1.13x (ab_circ_1m_h100_stop19.log). Radix 16 at 32K
        # lost with both (0.92-0.97x, ab_launch_32k_h100_stop19.log).
        outer_block, outer_warps, outer_ctas = 64, 4, 3
    # 3-stage software pipelining of the outer kernels' tile loop with float16 buffers: H100,
    # bf16, 1.08x / 1.03x / 1.03x forward+backward at 128K / 1M / 4M, forward 1.08x / 1.03x /
    # 1.04x (results/ab_launch_h100_stop12.log)
    outer_stages = 3 if fp16 else 2
    return FFTPlan(
        n=n,
        seq_len=seq_len,
        taps=taps,
        causal=causal,
        n1=n1,
        n2=n2,
        outer=outer,
        rows=rows,
        num_warps=num_warps,
        outer_block=outer_block,
        outer_warps=outer_warps,
        mma=mma,
        ctas_per_sm=ctas_per_sm,
        maxnreg=maxnreg,
        outer_maxnreg=outer_maxnreg,
        outer_ctas_per_sm=outer_ctas,
        outer_stages=outer_stages,
        hoist=True,
        # 32 spectrum rows per step; 16 in the fused 32K kernel. The fused 16K kernel took 16
        # until the launch tuner found 32 (results/tune_conv_near_misses_*); bench_conv on an
        # H100, one call: gated forward 1.08x (results/ab_tuned_launch_bench_*_h100_stop15.log);
        # padded, against the former tuning entry's 16: forward 1.06x, forward+backward 1.20x
        # (results/bench_16k_*_h100_stop16.log)
        chunk=min(16 if inner > 2 * MAX_FUSED_SIZE else 32, n1),
        outer_tw_split=True,
        static_scale=static_scale,
        bounded_fwd=bounded_fwd,
        shared_bwd_outer=shared_bwd_outer,
        fused_bwd=fused_bwd,
        hoist_f2=hoist_f2,
        bwd_chunk=bwd_chunk,
        bwd_warps=bwd_warps,
        bwd_rows=bwd_rows,
        freq_cut=0 if freq_keep is None else _sparse_cut(n, freq_keep),
        # scaled float16 outer buffers (half the bytes of fp32; same error): H100, bf16,
        # forward+backward 1.07x at 128K and 1M, 1.01x at 2M, 1.08x at 4M; forward 1.06-1.08x
        # except 2M (1.00x); error 1.77e-3 vs 1.75e-3 (results/ab_fp16buf_h100_stop12.log)
        outer_fp16=fp16 and bool(outer),
        # per-tile operand bounds in the fused backward's du transform: H100, bf16,
        # forward+backward 1.08x at 16K (results/ab_static_h100_stop13.log); under outer
        # levels 1.03x / 1.05x at 128K / 1M (measured with the forward's bounds on too, which
        # alone gained nothing there: 0.99-1.01x)
        static_bwd=fp16 and fused_bwd and rows == 1,
        nat_transposed=nat_transposed,
    )


# Forward cost per sample on an H100 (bf16, ps; benchmarks/results/bench_conv_h100_stop9.log,
# B=64 H=768): a fused circular FFT of n points (what one overlap-save window costs; 256 with
# the stop-9 tiles, 1.5x over that run), and the padded causal plan of FFT size n per output.
_WINDOW_PS = {256: 6.7, 512: 5.3, 1024: 5.3, 2048: 5.9, 4096: 5.9, 8192: 9.1}
_PADDED_PS = {256: 12.9, 512: 9.1, 1024: 9.6, 2048: 10.1, 4096: 10.0, 8192: 10.3, 16384: 20.0}
_PADDED_PS_LARGE = {32768: 28.8, 65536: 35.6}  # beyond: 44 (multi-pass, 128K-1M)


def _padded_cost(n: int) -> float:
    return _PADDED_PS.get(n) or _PADDED_PS_LARGE.get(n) or 44.0


@functools.lru_cache(maxsize=1024)
def block_plan_for(
    seq_len: int,
    filter_len: int,
    dtype: torch.dtype,
    *,
    batch: int | None = None,
    max_window: int = MAX_FUSED_SIZE,
    window: int | None = None,
    context: int = 0,
) -> FFTPlan | None:
    """An overlap-save plan (:attr:`FFTPlan.block`) for the causal convolution of ``seq_len``
    samples with a short filter, when it is cheaper than :func:`plan_for`'s plan, else None.

    The window size ``n`` (a power of two, ``256 <= n <= max_window``, fp32: <= 4096) must hold
    ``taps - 1 <= n / 2``; among those, the one with the least estimated time per output
    (``cost(n) * n * windows``, H100 measurements) is taken if it beats the full plan by 10% or
    more. Forward only (inference): the backward kernels take :func:`plan_for`'s plans.
    A window of ``n`` samples gives ``n - taps + 1`` outputs; windows of one sequence pair up in
    the complex rows, so ``batch = 1`` wastes nothing. ``window`` forces ``n`` (tests,
    benchmarks): the plan is then returned whatever the estimates say (ValueError if ``n`` is
    not a power of two in ``[256, max_window]`` with ``taps - 1 <= n / 2``).
    ``context``: streaming, C samples precede the sequence (taps ``min(Lk, L + C)``; the
    kernels read the windows' start from the context, and the full FFT it is weighed against
    spans C + L). Cached per arguments: every inference call on CUDA asks.
    """
    if seq_len < 1 or filter_len < 1:
        raise ValueError(f"block_plan_for: need L >= 1 and Lk >= 1, got {seq_len}, {filter_len}")
    taps = min(filter_len, seq_len + context)
    mma = _mma_for(dtype)
    if mma == "tf32x3":
        max_window = min(max_window, MAX_FUSED_SIZE // 2)
    if window is not None:
        if not _is_pow2(window) or not MIN_FFT_SIZE <= window <= max_window:
            raise ValueError(f"block_plan_for: window {window} not a power of two in [256, "
                             f"{max_window}]")  # fmt: skip
        if 2 * (taps - 1) > window:
            raise ValueError(f"block_plan_for: {taps} taps need a window >= {2 * (taps - 1)}")
        return _block_plan(seq_len, taps, dtype, window, batch)
    full_n = max(MIN_FFT_SIZE, _next_pow2(seq_len + context + taps - 1))
    full_cost = _padded_cost(full_n) * (seq_len + context)
    best = None
    n = MIN_FFT_SIZE
    while n <= max_window:
        if 2 * (taps - 1) <= n:
            cost = _WINDOW_PS[n] * n * -(-seq_len // (n - taps + 1))
            if best is None or cost < best[0]:
                best = (cost, n)
        n *= 2
    if best is None or best[0] > 0.9 * full_cost:
        return None
    n = best[1]
    if not context and seq_len <= n - taps + 1:  # one window is the padded plan itself
        return None
    return _block_plan(seq_len, taps, dtype, n, batch)


def _block_plan(seq_len: int, taps: int, dtype: torch.dtype, n: int, batch: int | None) -> FFTPlan:
    windows = -(-seq_len // (n - taps + 1))
    circ = plan_for(n, n, False, dtype, batch=batch * windows if batch else windows)
    assert circ is not None and not circ.outer
    return dataclasses.replace(circ, seq_len=seq_len, taps=taps, causal=True, block=True)


def freq_cutoff(n: int, freq_keep: float) -> int:
    """Cut-off ``c`` of a frequency-sparse convolution of FFT size ``n``: the filter keeps the
    frequencies ``f`` with ``min(f, n - f) < c`` (a real, symmetric low-pass band), where
    ``c = ceil(freq_keep * n / 2)``; ``freq_keep = 1`` keeps everything (``c = n / 2 + 1``).
    Fractions 1/2, 1/4, ... line up with the Monarch blocks, so the kernel skips the rest."""
    if not 0.0 < freq_keep <= 1.0:
        raise ValueError(f"freq_keep must be in (0, 1], got {freq_keep}")
    if freq_keep == 1.0:
        return n // 2 + 1
    return max(1, min(n // 2 + 1, math.ceil(freq_keep * n / 2)))


def _sparse_cut(n: int, freq_keep: float) -> int:
    cut = freq_cutoff(n, freq_keep)
    return 0 if cut >= n // 2 + 1 else cut


def sparse_fft_size(seq_len: int, filter_len: int, causal: bool) -> int:
    """The FFT size that defines a frequency-sparse convolution (the Triton plans' ``n``):
    causal ``max(256, next_pow2(L + min(Lk, L) - 1))``, circular ``L``."""
    if not causal:
        return seq_len
    return max(MIN_FFT_SIZE, _next_pow2(seq_len + min(filter_len, seq_len) - 1))


def freq_mask(n: int, cut: int, device: torch.device | str = "cpu") -> Tensor:
    """(n,) bool, natural frequency order: ``min(f, n - f) < cut`` (all True for cut 0)."""
    f = torch.arange(n, device=device)
    if cut <= 0:
        return torch.ones(n, dtype=torch.bool, device=device)
    return torch.minimum(f, n - f) < cut


# --------------------------------------------------------------------------------------------
# Constant tables (computed in float64, cached per device and dtype)
# --------------------------------------------------------------------------------------------

_TABLES: dict[tuple, Tensor] = {}


def dft_table(size: int, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """DFT matrix ``F[j, k] = exp(-2 pi i j k / size)`` as planes (re, im): (2, size, size).

    ``dtype`` is the tensor-core operand dtype (float16 or float32). Cached.
    """
    device = torch.device(device)
    key = ("dft", size, dtype, device)
    t = _TABLES.get(key)
    if t is None:
        j = torch.arange(size, dtype=torch.int64)
        idx = (j[:, None] * j[None, :]) % size
        ang = idx.to(torch.float64) * (-2.0 * math.pi / size)
        re, im = torch.cos(ang), torch.sin(ang)
        t = torch.stack([re, im]).to(dtype).contiguous().to(device)
        _TABLES[key] = t
    return t


def inner_twiddles(n1: int, n2: int, device: torch.device | str) -> Tensor:
    """Inner twiddles ``W_M^(b * k1)`` laid out ``[b, k1]`` as planes (re, im): (2, n2, n1) fp32."""
    device = torch.device(device)
    key = ("tw", n1, n2, device)
    t = _TABLES.get(key)
    if t is None:
        m = n1 * n2
        b = torch.arange(n2, dtype=torch.int64)
        k1 = torch.arange(n1, dtype=torch.int64)
        ang = (b[:, None] * k1[None, :]).to(torch.float64) * (-2.0 * math.pi / m)
        t = torch.stack([torch.cos(ang), torch.sin(ang)]).to(torch.float32).contiguous()
        t = t.to(device)
        _TABLES[key] = t
    return t


def spectrum_order(plan: FFTPlan, device: torch.device | str = "cpu") -> Tensor:
    """Frequency index stored at each position of a spectrum in ``plan``'s order: (N,) int64."""
    device = torch.device(device)
    key = ("order", plan.n1, plan.n2, plan.outer, device)
    t = _TABLES.get(key)
    if t is None:
        k1 = torch.arange(plan.n1, dtype=torch.int64)
        k2 = torch.arange(plan.n2, dtype=torch.int64)
        f = (k1[:, None] + plan.n1 * k2[None, :]).reshape(-1)  # position k1 * n2 + k2
        for p in reversed(plan.outer):
            kp = torch.arange(p, dtype=torch.int64)
            f = (kp[:, None] + p * f[None, :]).reshape(-1)
        t = f.to(device)
        _TABLES[key] = t
    return t


#: FFT sizes (fused plans) whose filter spectrum, and whose filter gradient in the backward, is
#: one matrix product with a cached DFT table instead of an FFT and a reordering gather: fewer
#: host operations per training step at the sizes where the host, not the GPU, bounds the step
#: (the tables are at most 2N x N fp32 = 8 MB).
GEMM_SPECTRUM_MAX = 1024


def uses_gemm_spectrum(plan: FFTPlan) -> bool:
    """True when :func:`filter_spectrum` and the filter gradient use DFT-table products."""
    return not plan.outer and plan.n <= GEMM_SPECTRUM_MAX


def gemm_dtype(work: torch.dtype, device: torch.device) -> torch.dtype:
    """``work``, or float64 where a float32 CUDA product may run in TF32
    (``torch.get_float32_matmul_precision() != "highest"``): the spectrum stays exact fp32."""
    if work == torch.float32 and device.type == "cuda":
        if torch.get_float32_matmul_precision() != "highest":
            return torch.float64
    return work


def _angles(plan: FFTPlan, taps: int) -> tuple[Tensor, Tensor]:
    """(taps, N) float64 angles 2 pi f(p) t / N for storage position p, and the (N,) keep mask
    of a frequency-sparse plan in storage order (all ones when dense)."""
    order = spectrum_order(plan, "cpu")
    t = torch.arange(taps, dtype=torch.int64)
    phase = (t[:, None] * order[None, :]) % plan.n
    keep = freq_mask(plan.n, plan.freq_cut)[order].to(torch.float64)
    return phase.to(torch.float64) * (2 * math.pi / plan.n), keep


def spectrum_table(plan: FFTPlan, taps: int, dtype: torch.dtype, device) -> Tensor:
    """(2, taps, N): ``filter_spectrum(k, plan) == k[:, :taps] @ table`` (planes re, im, storage
    order, scaled by 1 / N, frequency-sparse mask folded in). Cached."""
    device = torch.device(device)
    key = ("spec_gemm", plan.n1, plan.n2, plan.n, taps, plan.freq_cut, dtype, device)
    if key not in _TABLES:
        ang, keep = _angles(plan, taps)
        w = torch.stack([torch.cos(ang), -torch.sin(ang)]) * (keep / plan.n)
        _TABLES[key] = w.to(dtype=dtype, device=device).contiguous()
    return _TABLES[key]


def gradient_table(plan: FFTPlan, taps: int, dtype: torch.dtype, device) -> Tensor:
    """(2N, taps): taps ``t < taps`` of ``ifft(S).real`` for a spectrum ``S`` given as (re, im)
    planes in storage order, flattened (row ``c * N + p``): ``dk = S_planes @ table``, with the
    frequency-sparse mask folded in. Cached."""
    device = torch.device(device)
    key = ("grad_gemm", plan.n1, plan.n2, plan.n, taps, plan.freq_cut, dtype, device)
    if key not in _TABLES:
        ang, keep = _angles(plan, taps)
        w = torch.cat([torch.cos(ang).T, -torch.sin(ang).T]) * (keep.repeat(2)[:, None] / plan.n)
        _TABLES[key] = w.to(dtype=dtype, device=device).contiguous()
    return _TABLES[key]


def filter_spectrum(k: Tensor, plan: FFTPlan) -> Tensor:
    """Spectrum of the filter in the kernel's storage order, scaled by ``1 / N``.

    Args:
        k: filter (H, Lk), any float dtype; taps beyond ``plan.taps`` are ignored.
        plan: the plan the spectrum is for (N and storage order).

    Returns:
        (2, H, N) float32 (planes re, im), contiguous, on ``k``'s device. Compute it once per
        filter and pass it as ``k_spectrum`` to reuse it. Not differentiable (the convolution's
        backward computes the filter gradient from ``k`` itself).
    """
    if k.dim() != 2:
        raise ValueError(f"filter_spectrum: k must be (H, Lk), got shape {tuple(k.shape)}")
    n = plan.n
    with torch.no_grad():
        work = torch.float64 if (k.dtype == torch.float64 or k.device.type == "cpu") else None
        work = work or torch.float32
        if uses_gemm_spectrum(plan):  # products, already in storage order (no FFT, gather)
            dt = gemm_dtype(work, k.device)
            taps = min(plan.taps, k.shape[1])
            table = spectrum_table(plan, taps, dt, k.device)
            kt = k[:, :taps].to(dt)
            # one product per plane straight into it: a broadcast matmul of (H, taps) with
            # (2, taps, N) would copy k twice and the result once (~0.1 ms of host time per
            # training step on an H200 host at N = 256)
            out = torch.empty((2, k.shape[0], n), dtype=dt, device=k.device)
            torch.mm(kt, table[0], out=out[0])
            torch.mm(kt, table[1], out=out[1])
            return out if out.dtype == torch.float32 else out.to(torch.float32)
        # a real FFT, then one pass (a Triton gather on the GPU) to the full spectrum in storage
        # order, scaled by 1 / N and masked (H100, H = 48, N = 1M: a full complex FFT, its
        # normalisation and an index_select cost ~2 ms)
        kt = k[:, : plan.taps]
        r = torch.fft.rfft(kt.to(work), n=n, dim=-1)
        keep = keep_mask(n, plan.freq_cut, k.device) if plan.freq_cut else None
        spec = storage_spectrum(r, layout_for(plan, k.device), 1.0 / n, keep)
        if plan.outer_fp16 and not plan.freq_cut and not spec.is_inference():
            _remember_sum_bound(spec, kt, n)
        return spec


_SUM_BOUND_ATTR = "_dnastream_sum_bound"


def _remember_sum_bound(spec: Tensor, k: Tensor, n: int) -> None:
    """Attach to ``spec`` a (H,) float64 bound on sum_t |k_h[t]|, from the filter itself: two
    reductions over k (a quarter of the spectrum's bytes) instead of two over the spectrum in
    the scaled float16 buffers' channel factor. sqrt(N) ||k_h||_2 (Cauchy-Schwarz; by Parseval
    the spectrum's N ||spec_h||_2, the bound it replaces); where the filter's squares underflow
    float32 (max |k_h| < 1e-15), taps * max |k_h|."""
    top = torch.linalg.vector_norm(k, ord=float("inf"), dim=1).double()
    bound = torch.linalg.vector_norm(k, ord=2, dim=1).double().mul_(math.sqrt(n))
    bound = torch.where(top < 1e-15, top * k.shape[1], bound)
    setattr(spec, _SUM_BOUND_ATTR, (spec._version, bound))


def filter_sum_bound(spec: Tensor) -> Tensor | None:
    """(H,) float64 bound on each channel's sum |k_h| that :func:`filter_spectrum` attached
    to ``spec`` (dense plans with scaled float16 outer buffers, the only ones that use it),
    or ``None``: none attached, an inference tensor, or ``spec`` changed in place since (its
    version counter moved)."""
    entry = getattr(spec, _SUM_BOUND_ATTR, None)
    if entry is None or spec.is_inference() or entry[0] != spec._version:
        return None
    return entry[1]


def layout_for(plan: FFTPlan, device: torch.device | str = "cpu") -> StorageLayout:
    """The digits of ``plan``'s spectrum order (:class:`StorageLayout`): the first frequency
    digit is the first outer radix (``n1`` without outer levels), the last ``n2``. Cached."""
    device = torch.device(device)
    key = ("layout", plan.n1, plan.n2, plan.outer, device)
    t = _TABLES.get(key)
    if t is None:
        first = plan.outer[0] if plan.outer else plan.n1
        order = spectrum_order(plan, device)
        t = _TABLES[key] = storage_layout(order, first, plan.n2, plan.inner)
    return t


def keep_mask(n: int, cut: int, device: torch.device) -> Tensor:
    """:func:`freq_mask` as float32 (n,), cached per device."""
    key = ("keep", n, cut, device)
    t = _TABLES.get(key)
    if t is None:
        t = _TABLES[key] = freq_mask(n, cut, device).to(torch.float32)
    return t
