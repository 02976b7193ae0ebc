"""Triton Monarch FFT convolution (``dnastream.kernels.fftconv_triton``) against float64.

On a machine without a GPU every kernel runs in Triton's CPU interpreter (conftest sets
``TRITON_INTERPRET=1`` before anything imports Triton), so only small sizes are used here; the
plan thresholds are lowered to reach the outer-radix (through HBM) path at small N. The
``gpu``-marked class covers every FFT size from 256 to 16M on a real GPU.

Error bars (relative L2 error against a float64 FFT convolution of the same rounded inputs):
bf16 3e-3, fp16 1e-3, fp32 1e-5, for outputs and all gradients.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch

from dnastream.kernels.fftconv_triton import fftconv_triton, filter_spectrum, plan_for
from dnastream.kernels.monarch import FFTPlan, spectrum_order

BARS = {torch.bfloat16: 3e-3, torch.float16: 1e-3, torch.float32: 1e-5}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ON_GPU = torch.cuda.is_available()
DEV = "cuda" if ON_GPU else "cpu"


# ---------------------------------------------------------------------------------------------
# float64 reference and helpers
# ---------------------------------------------------------------------------------------------


def ref64(u, k, D=None, pregate=None, postgate=None, causal=True):
    """float64 FFT convolution (differentiable) of the given (already rounded) tensors."""
    u, k = u.double(), k.double()
    seq_len = u.shape[-1]
    x = u * pregate.double() if pregate is not None else u
    if causal:
        taps = min(k.shape[1], seq_len)
        n = 2 * seq_len
    else:
        taps, n = k.shape[1], seq_len
    kf = torch.fft.rfft(k[:, :taps], n=n)
    y = torch.fft.irfft(torch.fft.rfft(x, n=n) * kf, n=n)[..., :seq_len]
    if D is not None:
        y = y + D.double()[:, None] * x
    if postgate is not None:
        y = y * postgate.double()
    return y


def rel_err(a, b) -> float:
    b = b.double()
    den = b.norm().item()
    return (a.double() - b).norm().item() / (den if den > 0 else 1.0)


def make_inputs(B, H, L, Lk, dtype, *, gates=True, D=True, decay=False, seed=0, device=DEV):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(B, H, L, generator=g).to(dtype)
    if decay:  # HyenaDNA-like implicit filter: k[h, t] = randn * exp(-alpha_h t)
        alpha = torch.logspace(-3, -0.5, H).unsqueeze(-1)
        k = torch.randn(H, Lk, generator=g) * torch.exp(-alpha * torch.arange(Lk))
    else:
        k = torch.randn(H, Lk, generator=g) / math.sqrt(Lk)
    d = torch.randn(H, generator=g) if D else None
    g1 = torch.randn(B, H, L, generator=g).to(dtype) if gates else None
    g2 = torch.randn(B, H, L, generator=g).to(dtype) if gates else None
    mv = lambda t: None if t is None else t.to(device)  # noqa: E731
    return mv(u), mv(k), mv(d), mv(g1), mv(g2)


def check_forward(B, H, L, Lk, dtype, causal=True, plan=None, **kw):
    u, k, d, g1, g2 = make_inputs(B, H, L, Lk, dtype, **kw)
    y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, causal=causal, plan=plan)
    assert y.shape == u.shape and y.dtype == u.dtype
    err = rel_err(y, ref64(u, k, d, g1, g2, causal))
    assert err <= BARS[dtype], f"forward rel. error {err:.2e} > {BARS[dtype]:.0e}"
    return err


def check_backward(B, H, L, Lk, dtype, causal=True, plan=None, **kw):
    inputs = make_inputs(B, H, L, Lk, dtype, **kw)
    g = torch.Generator().manual_seed(123)
    dy = torch.randn(B, H, L, generator=g).to(dtype).to(inputs[0].device)
    leaves = [None if t is None else t.clone().requires_grad_(True) for t in inputs]
    u, k, d, g1, g2 = leaves
    y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, causal=causal, plan=plan)
    y.backward(dy)
    l64 = [None if t is None else t.detach().double().requires_grad_(True) for t in inputs]
    y64 = ref64(*l64, causal=causal)
    y64.backward(dy.double())
    errs = {}
    for name, a, b in zip(("u", "k", "D", "pregate", "postgate"), leaves, l64, strict=True):
        if a is None:
            continue
        assert a.grad is not None and a.grad.dtype == a.dtype, name
        errs[name] = rel_err(a.grad, b.grad)
    bad = {n: e for n, e in errs.items() if e > BARS[dtype]}
    assert not bad, f"gradient rel. errors above {BARS[dtype]:.0e}: {bad} (all: {errs})"
    return errs


# ---------------------------------------------------------------------------------------------
# plans
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "L, Lk, causal, n, n1, n2, outer",
    [
        (1, 1, True, 256, 16, 16, ()),
        (128, 128, True, 256, 16, 16, ()),
        (129, 129, True, 512, 32, 16, ()),
        (512, 512, True, 1024, 32, 32, ()),
        (1000, 300, True, 2048, 64, 32, ()),
        (2048, 2048, True, 4096, 64, 64, ()),
        (4096, 4096, True, 8192, 128, 64, ()),
        (8192, 8192, True, 16384, 128, 128, ()),  # causal half precision: fused to 16384
        (16384, 16384, True, 32768, 64, 32, (16,)),  # (faster than the fused 32768 kernel)
        # causal 64K: radix 64 over 1024 points (stop 17); 128K-512K: radix 128 over 1024-4096
        (16385, 16385, True, 65536, 32, 32, (64,)),
        (65536, 65536, True, 131072, 32, 32, (128,)),
        (131072, 131072, True, 262144, 64, 32, (128,)),
        (262144, 262144, True, 524288, 64, 64, (128,)),
        (16384, 16384, False, 16384, 32, 32, (16,)),
        # circular 128K and 256K: one level over 2048 points (stop 18); 512K 32 x 16 over 1024
        # (stop 20); 1M: 32 x 32 over 1024 points (stop 19)
        (1 << 17, 1 << 17, False, 1 << 17, 64, 32, (64,)),
        (1 << 18, 1 << 18, False, 1 << 18, 64, 32, (128,)),
        (1 << 19, 1 << 19, False, 1 << 19, 32, 32, (32, 16)),
        (1 << 20, 1 << 20, False, 1 << 20, 32, 32, (32, 32)),
        (1 << 24, 1 << 24, False, 1 << 24, 128, 64, (64, 32)),
        # 1M causal: 32 x 32 over 1024 points (stop 19)
        (1 << 19, 1 << 19, True, 1 << 20, 32, 32, (32, 32)),
        # 2M, causal and circular: two levels over 1024 points (stop 17)
        (1 << 20, 1 << 20, True, 1 << 21, 32, 32, (64, 32)),
        (1 << 21, 1 << 21, False, 1 << 21, 32, 32, (64, 32)),
        (1 << 21, 1 << 21, True, 1 << 22, 32, 32, (64, 64)),  # 4M: two levels over 1024
    ],
)
def test_plan_sizes(L, Lk, causal, n, n1, n2, outer) -> None:
    plan = plan_for(L, Lk, causal, torch.bfloat16)
    assert (plan.n, plan.n1, plan.n2, plan.outer) == (n, n1, n2, outer)
    assert plan.mma == "fp16"
    assert plan.outer_fp16 == bool(outer)  # scaled float16 buffers under outer levels
    fp32 = plan_for(L, Lk, causal, torch.float32)
    assert fp32.mma == "tf32x3"
    assert fp32.inner <= 4096 and not fp32.outer_fp16


@pytest.mark.parametrize(
    "L, causal, outer",
    [(1 << 15, True, (64,)), (1 << 16, False, (64,)), (1 << 17, False, (64,)),
     (1 << 20, True, (64, 32)), (1 << 22, False, (64, 64))],
)  # fmt: skip
def test_radix64_outer_launch(L, causal, outer) -> None:
    """Plans whose largest outer radix is 64 over 2-row tiles launch their outer kernels on
    32-column tiles, 4 warps, 3 programs per SM slot (stop 18: 1.3-1.5x on an H100); radix
    128 keeps its own launch."""
    plan = plan_for(L, L, causal, torch.bfloat16, batch=8)
    assert plan.outer == outer and plan.rows == 2, plan.describe()
    assert (plan.outer_block, plan.outer_warps, plan.outer_ctas_per_sm) == (32, 4, 3)
    r128 = plan_for(1 << 16, 1 << 16, True, torch.bfloat16, batch=8)  # 128K: 128 over 1024
    assert r128.outer == (128,) and (r128.outer_block, r128.outer_ctas_per_sm) == (16, 3)


def test_radix32_outer_launch() -> None:
    """Causal 1M at B >= 3 (32 x 32 over 1024 points, 2-row tiles) launches its outer kernels
    on 64-column tiles, 4 warps, 3 per SM slot (stop 19: 1.34x on an H100); one row pair keeps
    one level of 128 over 8192 points."""
    for batch in (None, 3, 8):
        plan = plan_for(1 << 19, 1 << 19, True, torch.bfloat16, batch=batch)
        assert (plan.outer, plan.inner, plan.rows) == ((32, 32), 1024, 2), plan.describe()
        assert (plan.outer_block, plan.outer_warps, plan.outer_ctas_per_sm) == (64, 4, 3)
    one = plan_for(1 << 19, 1 << 19, True, torch.bfloat16, batch=2)
    assert (one.outer, one.inner, one.rows) == ((128,), 8192, 1), one.describe()
    assert one.outer_block == 16


def test_stop20_plan_defaults() -> None:
    """Stop 20 (H200): the fused 16K plan's forward runs transposed (not 4K / 8K, whose
    n2 = 64 lost, nor one pair's fused 32K); circular 512K takes 32 x 16 over 1024 points
    with the radix-32 launch; circular 256K (radix 128 over 2-row tiles) takes 32-column
    outer tiles while causal 256K keeps 16."""
    f16k = plan_for(8192, 8192, True, torch.bfloat16, batch=64)
    assert (f16k.n, f16k.outer, f16k.n2, f16k.rows) == (16384, (), 128, 1)
    assert f16k.nat_transposed and not f16k.nat_transposed_bwd
    for L, causal, b in ((2048, True, 64), (4096, False, 64), (4096, True, 64), (8192, False, 64),
                         (16384, True, 2), (1 << 18, True, 8)):  # fmt: skip
        assert not plan_for(L, L, causal, torch.bfloat16, batch=b).nat_transposed, (L, causal)
    assert not plan_for(8192, 8192, True, torch.float32, batch=64).nat_transposed
    c512 = plan_for(1 << 19, 1 << 19, False, torch.bfloat16, batch=8)
    assert (c512.outer, c512.inner, c512.rows) == ((32, 16), 1024, 2), c512.describe()
    assert (c512.outer_block, c512.outer_warps, c512.outer_ctas_per_sm) == (64, 4, 3)
    c256 = plan_for(1 << 18, 1 << 18, False, torch.bfloat16, batch=8)
    assert (c256.outer, c256.inner, c256.rows) == ((128,), 2048, 2), c256.describe()
    assert (c256.outer_block, c256.outer_warps, c256.outer_ctas_per_sm) == (32, 4, 3)
    assert c256.outer_maxnreg is None
    p256 = plan_for(1 << 17, 1 << 17, True, torch.bfloat16, batch=8)
    assert (p256.outer, p256.inner, p256.outer_block) == ((128,), 2048, 16), p256.describe()


@pytest.mark.parametrize("L, radix, block", [(8192, 64, 32), (4096, 32, 64)])
def test_radix64_outer_launch_agrees(L, radix, block) -> None:
    """The radix-64 and radix-32 launches (32- and 64-column tiles, 4 warps) on real kernels
    under the interpreter: one level of 64 or 32 over a 256-point inner FFT, forward with
    gates and D, and backward."""
    plan = plan_for(L, L, True, torch.bfloat16, batch=3, max_fused=256)
    assert plan.outer == (radix,) and plan.rows > 1, plan.describe()
    assert (plan.outer_block, plan.outer_warps) == (block, 4), plan.describe()
    check_forward(3, 1, L, L, torch.bfloat16, plan=plan, decay=True)
    check_backward(3, 1, L, L, torch.bfloat16, plan=plan)


def test_plan_causal_skips_zero_half_and_fallbacks() -> None:
    plan = plan_for(2048, 2048, True, torch.float16)
    assert plan.io_rows == plan.n1 // 2  # only the first half of the padded input is read
    outer = plan_for(1 << 19, 1 << 19, True, torch.float16)
    assert outer.outer_io == outer.outer[0] // 2
    assert plan_for(100, 10, False, torch.float32) is None  # circular, not a power of two
    assert plan_for(128, 10, False, torch.float32) is None  # circular, below 256
    small = plan_for(2000, 2000, True, torch.float32, max_fused=256, max_radix=16)
    assert small.kind == "outer1" and small.inner == 256
    two = plan_for(30000, 3000, True, torch.float32, max_fused=256, max_radix=16)
    assert two.kind == "outer2" and two.outer == (16, 16)
    with pytest.raises(ValueError):
        FFTPlan(n=512, seq_len=512, taps=1, causal=False, n1=16, n2=16)


@pytest.mark.parametrize(
    "L, Lk, kw",
    [
        (1500, 37, {}),
        (3000, 37, {"max_fused": 256}),
        (30000, 3000, {"max_fused": 256, "max_radix": 16}),
    ],
)
def test_spectrum_order_is_a_permutation_matching_fft(L, Lk, kw) -> None:
    plan = plan_for(L, Lk, True, torch.float32, **kw)
    order = spectrum_order(plan)
    assert torch.equal(torch.sort(order).values, torch.arange(plan.n))
    k = torch.randn(3, Lk, dtype=torch.float64)
    spec = filter_spectrum(k, plan)
    full = torch.fft.fft(k, n=plan.n) / plan.n
    torch.testing.assert_close(spec[0].double(), full.real[:, order], atol=1e-7, rtol=0)
    torch.testing.assert_close(spec[1].double(), full.imag[:, order], atol=1e-7, rtol=0)


# ---------------------------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("L", [1, 7, 97, 257])
def test_forward_odd_and_prime_lengths(dtype, L) -> None:
    check_forward(3, 2, L, L, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [256, 512, 1024, 2048, 4096, 8192])
def test_forward_each_fused_size(dtype, n) -> None:
    """Every fused FFT size at its smallest causal instance (L = N / 2, Lk = L)."""
    L = n // 2
    plan = plan_for(L, L, True, dtype, batch=2)
    # fp32 (3xTF32 operands) keeps at most 4096 points per program (shared memory)
    assert plan.n == n and plan.kind == (
        "outer1" if dtype == torch.float32 and n > 4096 else "fused"
    )
    check_forward(2, 1, L, L, dtype, plan=plan, gates=(n == 256), D=(n == 512))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [256, 512, 1024])
def test_forward_batched_row_tiles(dtype, n) -> None:
    """Small FFTs put several batch-row pairs in one tile (transposed layout, R > 1)."""
    plan = plan_for(n // 2, n // 2, True, dtype, batch=8, rows=4)
    assert plan.rows == 4 and plan.hoist
    assert plan_for(n // 2, n // 2, True, dtype, batch=8).rows >= 2  # the default tiles rows
    check_forward(8, 2, n // 2, n // 2, dtype, plan=plan)
    if n == 256:  # constants reloaded per tile instead of hoisted
        check_forward(7, 2, n // 2, 40, dtype, plan=dataclasses.replace(plan, hoist=False))


@pytest.mark.parametrize(
    "L, changes",
    [
        (1024, {"chunk": 16}),  # N = 2048, 4 spectrum chunks
        (1024, {"chunk": 64, "num_warps": 8}),  # N = 2048, one chunk
        (128, {"rows": 1}),  # N = 256 in the one-row (natural) kernel
    ],
)
def test_forward_natural_kernel_variants(L, changes) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        plan = dataclasses.replace(plan_for(L, L, True, dtype, batch=6), **changes)
        check_forward(6, 2, L, L, dtype, plan=plan)


def test_causal_half_plans_take_radix_128_with_two_pairs_or_more() -> None:
    """Causal bf16 at 128K-512K: radix 128 over 1024-4096 points where the 2-row tiles fill
    (B >= 3 or B unknown); at B <= 2 (one-row tiles) 8192 points at 128K and 4096 points at
    256K / 512K / 4M, as measured there. Circular 128K and 256K take 2048-point inner FFTs
    (stop 18), 1M 32 x 32 over 1024 points (stop 19), 4M 64 x 64 over 1024 points (B >= 3)."""
    for L, inner in ((65536, 1024), (131072, 2048), (262144, 4096)):
        for batch in (None, 3, 8):
            plan = plan_for(L, L, True, torch.bfloat16, batch=batch)
            assert (plan.outer, plan.inner) == ((128,), inner), (L, batch)
        # one row pair: 8192 points at 128K, a 4096-point inner FFT at 256K / 512K
        for batch in (1, 2):
            plan = plan_for(L, L, True, torch.bfloat16, batch=batch)
            want = ((16,), 8192) if L == 65536 else ((L // 2048,), 4096)
            assert (plan.outer, plan.inner, plan.rows) == (*want, 1), (L, batch)
    # circular with two row pairs or more: 2048 points at 128K / 256K, 1024 at 1M; at B <= 2
    # the former plans
    for n, outer, inner in ((1 << 17, (64,), 2048), (1 << 18, (128,), 2048),
                            (1 << 20, (32, 32), 1024), (1 << 22, (64, 64), 1024)):  # fmt: skip
        for batch in (None, 3, 8):
            plan = plan_for(n, n, False, torch.bfloat16, batch=batch)
            assert (plan.outer, plan.inner) == (outer, inner), (n, batch)
        assert plan_for(n, n, False, torch.bfloat16, batch=2).inner == 8192
    # causal 4M at one row pair: 32 x 32 over 4096 points
    plan = plan_for(1 << 21, 1 << 21, True, torch.bfloat16, batch=2)
    assert (plan.outer, plan.inner) == ((32, 32), 4096)
    # stop 17 (B >= 3): causal 64K and 2M, circular 64K and 2M over 1024 points; circular
    # 512K over 1024 (stop 20; 2048 since stop 17); one row pair keeps the one-row plans
    # (causal 2M: one level over 16384)
    for n, causal, outer, inner, one_pair in (
        (1 << 16, True, (64,), 1024, ((16,), 4096)),
        (1 << 21, True, (64, 32), 1024, ((128,), 16384)),
        (1 << 16, False, (64,), 1024, ((16,), 4096)),
        (1 << 19, False, (32, 16), 1024, ((64,), 8192)),
        (1 << 21, False, (64, 32), 1024, ((16, 16), 8192)),
    ):
        seq = n // 2 if causal else n
        for batch in (None, 3, 8):
            plan = plan_for(seq, seq, causal, torch.bfloat16, batch=batch)
            assert (plan.outer, plan.inner, plan.rows) == (outer, inner, 2), (n, causal, batch)
        plan = plan_for(seq, seq, causal, torch.bfloat16, batch=2)
        assert (plan.outer, plan.inner, plan.rows) == (*one_pair, 1), (n, causal)
    # the fp32 and frequency-sparse plans are untouched
    assert plan_for(65536, 65536, True, torch.float32, batch=8).inner != 1024
    assert plan_for(65536, 65536, True, torch.bfloat16, batch=8, freq_keep=0.25).inner == 8192


@pytest.mark.parametrize("L", [8192 - 5, 16384])  # N = 16384 (128 x 128), 32768 (256 x 128)
def test_forward_large_fused_causal_plans(L) -> None:
    """Causal bf16 convolutions up to N = 16384 run in one program by default, up to 32768
    on request (``max_fused``) (8 warps; 32-row spectrum chunks at 16384, 16 at 32768)."""
    if L > 8192:  # by default 32768 takes an outer level (faster on an H100), not at B <= 2
        assert plan_for(L, L, True, torch.bfloat16, batch=3).outer == (16,)
        assert plan_for(L, L, True, torch.bfloat16).outer == (16,)
        assert not plan_for(L, L, True, torch.bfloat16, batch=1).outer
        assert not plan_for(L, L, True, torch.bfloat16, batch=2).outer
    plan = plan_for(L, L, True, torch.bfloat16, batch=3, max_fused=32768 if L > 8192 else 8192)
    assert not plan.outer and plan.inner == 2 * 8192 * (1 + (L > 8192))
    assert (plan.num_warps, plan.chunk) == (8, 16 if L > 8192 else 32)
    check_forward(3, 1, L, L, torch.bfloat16, plan=plan, decay=True)
    # circular and fp32 stay split at these sizes
    assert plan_for(16384, 16384, False, torch.bfloat16).outer
    assert plan_for(L, L, True, torch.float32).outer


@pytest.mark.parametrize(
    "L, causal, dtype",
    [(1000, True, torch.bfloat16), (4000, True, torch.bfloat16), (4096, False, torch.float16)],
)
def test_static_scale_matches_dynamic_scaling(L, causal, dtype) -> None:
    """``static_scale`` (fp16 operands scaled by bounds from the tile's L1 norm and the
    filter's max, no per-chunk reductions) keeps the error of the row/column-max scaling."""
    base = plan_for(L, L, causal, dtype, batch=3, rows=1)
    plan = dataclasses.replace(base, static_scale=True, bwd_rows=0)
    e_dyn = check_forward(3, 2, L, L, dtype, causal=causal, plan=dataclasses.replace(plan,
                          static_scale=False), decay=True)  # fmt: skip
    e_st = check_forward(3, 2, L, L, dtype, causal=causal, plan=plan, decay=True)
    assert e_st <= 1.1 * e_dyn
    check_backward(3, 2, L, L, dtype, causal=causal, plan=plan)


@pytest.mark.parametrize(
    ("L", "B", "dtype", "extra"),
    [(100, 8, torch.bfloat16, {}),  # N = 256, 4-row tiles
     (500, 5, torch.float16, {}),  # N = 1024, 2-row tiles (3 pairs: one half empty)
     (1000, 4, torch.bfloat16, {}),  # N = 2048, 2-row tiles (one-row filter gradient)
     (2000, 4, torch.bfloat16, {"max_fused": 256})],  # outer levels over 2-row tiles
)  # fmt: skip
def test_static_scale_on_row_tiles(L, B, dtype, extra) -> None:
    """``static_scale`` in the R-row (transposed) kernels: L1-norm row scales in each
    transform's first step and a bound derived from them in its second (no row maxima).
    Forward error within 10% (fp16: 20%) of the row-max scaling's (HyenaDNA-like decaying
    filter, pairs at scales 1e-3 to 1e3 (bf16; fp16 to 30), a spike ten times the largest),
    gradients within the bars of float64."""
    static = plan_for(L, L, True, dtype, batch=B, **extra)
    assert static.rows > 1 and static.static_scale  # the default since stop 16
    plan = dataclasses.replace(static, static_scale=False)
    u, k, d, g1, g2 = make_inputs(B, 2, L, L, dtype, decay=True)
    big = 1e3 if dtype == torch.bfloat16 else 10.0  # (fp16 outputs overflow beyond)
    scale = torch.tensor([big, 1.0, 1e-3, 30.0, 0.5, 2.0, 7.0, 1e-2])[:B, None, None]
    u = (u.float() * scale).to(dtype)
    u[1, :, L // 3] = 10 * big  # a spike in the second pair
    ref = ref64(u, k, d, g1, g2)
    errs = [rel_err(fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=p), ref)
            for p in (plan, static)]  # fmt: skip
    # (interpreter: bf16 0.98-1.01x the row-max scaling's error, fp16 1.01-1.13x, 5.5e-4 at
    # most against the 1e-3 bar: L1-scaled first-step operands sit lower in fp16's range)
    slack = 1.2 if dtype == torch.float16 else 1.1
    assert errs[1] <= max(slack * errs[0], 5e-5 + errs[0]), errs
    assert errs[1] <= BARS[dtype], errs
    check_backward(B, 2, L, L, dtype, plan=static, decay=True)


def _assert_option_like_base(base, option, B, L, dtype, slack=1.05):
    """``option`` (a plan differing from ``base`` in its operand scaling) on HyenaDNA-like
    inputs (decaying filter, gates, D, pairs at scales 1e-3 to 30, a spike in the first pair):
    its forward error against float64 within ``slack`` (and 3e-5) of ``base``'s and within the
    bar, every gradient within the bar of ``base``'s and of float64 autograd. Returns the
    inputs (u, k, d, g1, g2)."""
    u, k, d, g1, g2 = make_inputs(B, 2, L, L, dtype, decay=True)
    scale = torch.tensor([30.0, 1.0, 1e-3, 5.0, 0.5, 2.0, 7.0, 1e-2])[:B, None, None]
    u = (u.float() * scale.to(u.device)).to(dtype)
    u[1, :, L // 3] = 300.0
    ref = ref64(u, k, d, g1, g2)
    dy = torch.randn(B, 2, L, generator=torch.Generator().manual_seed(9)).to(dtype).to(u.device)
    outs = []
    for p in (base, option):
        leaves = [t.clone().requires_grad_(True) for t in (u, k, d, g1, g2)]
        y = fftconv_triton(*leaves[:2], D=leaves[2], pregate=leaves[3], postgate=leaves[4], plan=p)
        outs.append([y, *torch.autograd.grad(y, leaves, dy)])
    errs = [rel_err(o[0], ref) for o in outs]
    assert errs[1] <= max(slack * errs[0], errs[0] + 3e-5) and errs[1] <= BARS[dtype], errs
    for a, b in zip(outs[0][1:], outs[1][1:], strict=True):  # the gradients
        assert rel_err(b, a.double()) < BARS[dtype]
    check_backward(B, 2, L, L, dtype, plan=option, decay=True)
    return u, k, d, g1, g2


@pytest.mark.parametrize(
    ("L", "B", "dtype", "max_fused", "bwd"),
    [(2000, 4, torch.bfloat16, 256, {}),  # 2-row tiles, separate backward passes
     (2000, 5, torch.float16, 512, {}),  # 4-row tiles (3 pairs: one half empty)
     (2000, 4, torch.bfloat16, 256, {"shared_bwd_outer": True}),  # weighted filter gradient
     (2000, 3, torch.float16, 256,  # the fused backward on 2-row tiles
      {"fused_bwd": True, "bwd_warps": 8, "bwd_maxnreg": 0})],
)  # fmt: skip
def test_bounded_fwd_matches_the_scaled_transforms(L, B, dtype, max_fused, bwd) -> None:
    """bounded_fwd: the R-row kernels' forward transforms of the scaled float16 outer buffers
    (values at most 1) round their operands unscaled: like the scaled transforms
    (:func:`_assert_option_like_base`). Only scaled float16 buffers take the unscaled path
    (fp32 buffers are not bounded)."""
    import dnastream.kernels.fftconv_triton as ft

    bounded = plan_for(L, L, True, dtype, batch=B, max_fused=max_fused)
    assert bounded.outer and bounded.rows > 1 and bounded.outer_fp16
    assert bounded.bounded_fwd  # the default since stop 17
    bounded = dataclasses.replace(bounded, **bwd)
    base = dataclasses.replace(bounded, bounded_fwd=False)
    assert ft._bounded_fwd(bounded) and not ft._bounded_fwd(base)
    assert not ft._bounded_fwd(dataclasses.replace(bounded, outer_fp16=False))
    _assert_option_like_base(base, bounded, B, L, dtype)


@pytest.mark.parametrize(
    ("L", "B", "dtype", "max_fused", "opts"),
    [(100, 8, torch.bfloat16, None, {}),  # fused 256, 4-row tiles
     (500, 5, torch.float16, None, {}),  # fused 1024, 2-row tiles (3 pairs: one half empty)
     (1000, 4, torch.bfloat16, None, {}),  # fused 2048
     (2000, 4, torch.bfloat16, 256, {"shared_bwd_outer": True}),  # outer, separate passes
     (2000, 3, torch.bfloat16, 256,  # the unscaled forward, the fused backward on 2-row tiles
      {"fused_bwd": True, "bwd_warps": 8, "bwd_maxnreg": 0, "bounded_fwd": True})],
)  # fmt: skip
def test_static_inv_matches_the_derived_scaling(L, B, dtype, max_fused, opts) -> None:
    """static_inv: the R-row kernels' inverse transforms scaled by the forward input's L1 norm
    times the spectrum block's maximum (no row reductions): like the derived scaling
    (:func:`_assert_option_like_base`, fp16 forward error within 20%; D folded into the bound,
    du's inverse with the conjugate spectrum), and a filter 1e-5 as large within the bar."""
    extra = {} if max_fused is None else {"max_fused": max_fused}
    base = plan_for(L, L, True, dtype, batch=B, **extra)
    assert base.rows > 1 and base.static_scale
    base = dataclasses.replace(base, **opts)
    sinv = dataclasses.replace(base, static_inv=True)
    # (fp16 I/O: one bound per row for the whole inverse rounds the small spectrum rows of a
    # decaying filter lower in fp16's range: 1024, fp16 in the interpreter 6.1e-4 against
    # 5.2e-4, the bar 1e-3; bf16 outputs round far coarser than that)
    slack = 1.2 if dtype == torch.float16 else 1.05
    u, k, _, g1, g2 = _assert_option_like_base(base, sinv, B, L, dtype, slack)
    # a filter 1e-5 as large (no D): the bound follows the spectrum, nothing underflows
    tiny = k * 1e-5
    y = fftconv_triton(u, tiny, pregate=g1, postgate=g2, plan=sinv)
    assert rel_err(y, ref64(u, tiny, None, g1, g2)) <= BARS[dtype]


@pytest.mark.parametrize(
    ("L", "B", "dtype", "static", "shared", "bounded"),
    [(100, 64, torch.bfloat16, True, False, False),  # fused 256, 8-row tiles
     (1000, 64, torch.float16, True, False, False),  # fused 2048, 2-row tiles
     (4000, 64, torch.bfloat16, True, False, False),  # fused 8192, one-row tiles (stop 9)
     (1 << 14, 16, torch.bfloat16, True, True, True),  # radix 16 over 2048-point 2-row tiles
     (1 << 16, 8, torch.bfloat16, True, True, True),  # radix 128 over 1024 points
     (1 << 17, 8, torch.bfloat16, True, True, True),  # radix 128 over 2048 points
     (1 << 21, 8, torch.bfloat16, True, True, True),  # 64 x 64 over 1024 points
     (1 << 21, 8, torch.float16, True, True, True),
     (1 << 19, 8, torch.bfloat16, True, True, True),  # 32 x 32 over 1024 points (stop 19)
     (1 << 18, 8, torch.bfloat16, False, True, True),  # 2-row 4096-point tiles (stop 21)
     (1 << 18, 2, torch.bfloat16, False, False, False),  # one-row tiles under outer levels
     (1 << 17, 8, torch.float32, False, False, False),  # fp32: no fp16 operands to scale
     (1000, 64, torch.float32, False, False, False)],
)  # fmt: skip
def test_default_scaling_and_shared_backward(L, B, dtype, static, shared, bounded) -> None:
    """The defaults measured on an H100: static_scale on every R-row kernel (and on the fused
    one-row ones from 4096 points; stop 16); since stop 17 shared_bwd_outer on the 2-row plans
    over 1024- and 2048-point inner FFTs, the filter gradient on the forward's 2-row tiles,
    and bounded_fwd on every R-row plan with outer levels; static_inv nowhere (it lost)."""
    plan = plan_for(L, L, True, dtype, batch=B)
    got = (plan.static_scale, plan.shared_bwd_outer, plan.bounded_fwd)
    assert got == (static, shared, bounded), plan.describe()
    assert plan.bwd_rows == 0 and not plan.static_inv, plan.describe()


def test_static_scale_survives_a_spike_and_extreme_magnitudes() -> None:
    """A bound from max |x| would push the rest of a tile with one huge value into fp16
    subnormals; the L1 bound does not (same error as the dynamic scaling)."""
    plan = plan_for(4000, 4000, True, torch.bfloat16, batch=3, rows=1)
    static = dataclasses.replace(plan, static_scale=True)
    for scale, spike in ((1.0, 1e4), (3e4, None), (1e-6, None)):
        u, k, d, g1, g2 = make_inputs(3, 2, 4000, 4000, torch.bfloat16, decay=True)
        u = (u.float() * scale).to(torch.bfloat16)
        if spike is not None:
            u[:, :, 100] = spike
        ref = ref64(u, k, d, g1, g2)
        errs = [rel_err(fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=p), ref)
                for p in (plan, static)]  # fmt: skip
        assert errs[1] <= max(1.1 * errs[0], 2e-3), (scale, spike, errs)


def test_outer_levels_with_a_bf16_buffer() -> None:
    """``outer_bf16`` (a measurement option): the outer passes keep their spectra in bf16; one
    more rounding per pass (forward about 2.3e-3 here against 1.7e-3, under the bf16 bar)."""
    plan = plan_for(4096, 4096, True, torch.bfloat16, batch=3, max_fused=512)
    assert plan.outer == (16,)
    bf = dataclasses.replace(plan, outer_bf16=True, outer_fp16=False)
    f32 = dataclasses.replace(plan, outer_fp16=False)
    e32 = check_forward(3, 2, 4096, 4096, torch.bfloat16, plan=f32, decay=True)
    e16 = check_forward(3, 2, 4096, 4096, torch.bfloat16, plan=bf, decay=True)
    assert e32 < e16 <= 3e-3  # the buffer really is bf16, and still within the bar


def test_backward_8192_default_plan() -> None:
    """The filter-gradient kernel's default 64-row spectrum chunks on the 128 x 64 plan."""
    plan = plan_for(4000, 4000, True, torch.bfloat16, batch=3)
    assert (plan.n, plan.n1, plan.rows) == (8192, 128, 1) and not plan.bwd_chunk
    check_backward(3, 2, 4000, 4000, torch.bfloat16, plan=plan)


@pytest.mark.parametrize(
    "cap, fused16k, fused32k", [((9, 0), True, True), ((8, 0), True, False), ((8, 9), False, False)]
)
def test_large_fused_plans_follow_the_gpu_shared_memory(monkeypatch, cap, fused16k, fused32k):
    """16K / 32K fused kernels need 147 / 180 KB of shared memory: only where the GPU has it
    (a consumer card's 99 KB would fail at launch), decided by the compute capability."""
    from dnastream.kernels import monarch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: cap)
    monkeypatch.setattr(monarch, "_FUSED_CAUSAL_LIMIT", {})
    p16 = plan_for(8000, 8000, True, torch.bfloat16)
    p32 = plan_for(16000, 16000, True, torch.bfloat16)
    assert (not p16.outer) == fused16k and p32.outer  # 32768: the outer path (faster) by default
    assert p16.n == 16384 and p32.n == 32768
    # the fused 32K kernel on request, only where the shared memory holds it
    p32 = plan_for(16000, 16000, True, torch.bfloat16, max_fused=32768)
    assert (not p32.outer) == fused32k
    # the backward settings tuned on an H100 follow only where its shared memory is
    assert (p16.fused_bwd, p16.hoist_f2) == ((True, True) if fused32k else (False, False))
    assert p32.bwd_chunk == (64 if fused32k else 0)


def test_backward_large_fused_causal_plan() -> None:
    plan = plan_for(8000, 8000, True, torch.bfloat16, batch=2)
    assert not plan.outer and plan.inner == 16384
    check_backward(2, 1, 8000, 8000, torch.bfloat16, plan=plan)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "B, H, L, Lk, gates, D",
    [
        (1, 1, 300, 5, False, False),  # one row, paired with zeros
        (5, 2, 300, 50, True, False),  # odd batch, short filter
        (4, 3, 200, 200, False, True),  # D only
        (2, 2, 100, 400, True, True),  # Lk > L: taps beyond L are ignored
    ],
)
def test_forward_partial_filters_gates_and_D(dtype, B, H, L, Lk, gates, D) -> None:
    check_forward(B, H, L, Lk, dtype, gates=gates, D=D)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("L, Lk", [(256, 256), (512, 100), (1024, 1024)])
def test_forward_circular(dtype, L, Lk) -> None:
    check_forward(3, 2, L, Lk, dtype, causal=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_forward_hyena_decaying_filter(dtype) -> None:
    check_forward(4, 4, 1000, 1000, dtype, decay=True)
    check_forward(2, 4, 256, 256, dtype, causal=False, decay=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "L, Lk, causal, radix, kind",
    [
        (2000, 2000, True, 128, "outer1"),  # N = 4096 = 16 x (16 x 16)
        (4096, 700, False, 128, "outer1"),
        (30000, 3000, True, 16, "outer2"),  # N = 65536 = 16 x 16 x (16 x 16)
    ],
)
def test_forward_outer_levels(dtype, L, Lk, causal, radix, kind) -> None:
    plan = plan_for(L, Lk, causal, dtype, batch=3, max_fused=256, max_radix=radix)
    assert plan.kind == kind
    check_forward(3, 1, L, Lk, dtype, causal=causal, plan=plan, gates=kind == "outer1")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_forward_outer_level_one_row_inner_kernel(dtype) -> None:
    """Outer path whose inner FFT runs in the one-row (natural) kernel, several chunks."""
    plan = plan_for(8000, 200, True, dtype, batch=2, max_fused=1024)  # N = 16 x (32 x 32)
    plan = dataclasses.replace(plan, chunk=16)
    assert plan.kind == "outer1" and plan.rows == 1 and plan.inner == 1024
    check_forward(2, 1, 8000, 200, dtype, plan=plan)


def test_forward_reuses_precomputed_spectrum() -> None:
    u, k, d, g1, g2 = make_inputs(2, 3, 500, 500, torch.float32)
    plan = plan_for(500, 500, True, torch.float32, batch=2)
    spec = filter_spectrum(k, plan)
    y1 = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, k_spectrum=spec, plan=plan)
    y2 = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2)
    torch.testing.assert_close(y1, y2, atol=0, rtol=0)
    with pytest.raises(ValueError, match="k_spectrum"):
        fftconv_triton(u, k, k_spectrum=spec[:, :, :100], plan=plan)


def test_fallbacks_match_reference(monkeypatch) -> None:
    # circular convolution of a length without a plan -> PyTorch fallback
    u, k, d, g1, g2 = make_inputs(3, 2, 100, 30, torch.float32)
    y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, causal=False)
    assert rel_err(y, ref64(u, k, d, g1, g2, False)) < 1e-5
    # float64 inputs -> fallback in float64
    u64 = u.double()
    y = fftconv_triton(u64, k, D=d, causal=True)
    assert y.dtype == torch.float64 and rel_err(y, ref64(u64, k, d)) < 1e-12
    if not ON_GPU:  # CPU tensors without the interpreter -> fallback
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2)
        assert rel_err(y, ref64(u, k, d, g1, g2)) < 1e-5


def test_validation_messages() -> None:
    u, k, d, g1, _ = make_inputs(2, 3, 64, 64, torch.float32, gates=True)
    with pytest.raises(ValueError, match=r"u must be \(B, H, L\)"):
        fftconv_triton(u[0], k)
    with pytest.raises(ValueError, match="k must be"):
        fftconv_triton(u, k[:2])
    with pytest.raises(ValueError, match="D must be"):
        fftconv_triton(u, k, D=d[:2])
    with pytest.raises(ValueError, match="pregate must have"):
        fftconv_triton(u, k, pregate=g1[:, :, :10])
    with pytest.raises(ValueError, match="circular convolution needs Lk <= L"):
        fftconv_triton(u, torch.randn(3, 65, device=u.device), causal=False)
    with pytest.raises(TypeError, match="floating point"):
        fftconv_triton(u.long(), k)
    with pytest.raises(ValueError, match="another L"):
        fftconv_triton(u, k, plan=plan_for(65, 64, True, torch.float32))
    with pytest.raises(ValueError, match="filter taps"):
        fftconv_triton(u, k, plan=plan_for(64, 10, True, torch.float32))
    with pytest.raises(ValueError, match="another dtype"):
        fftconv_triton(u, k, plan=plan_for(64, 64, True, torch.bfloat16))


# ---------------------------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "B, H, L, Lk, causal, gates, D",
    [
        (3, 2, 97, 50, True, True, True),  # odd B, prime L, partial filter, everything on
        (2, 2, 300, 300, True, False, False),  # plain convolution
        (4, 2, 256, 100, False, True, True),  # circular
        (2, 1, 2048, 2048, True, False, True),  # N = 4096 fused (64 x 64)
    ],
)
def test_backward_fused(dtype, B, H, L, Lk, causal, gates, D) -> None:
    check_backward(B, H, L, Lk, dtype, causal=causal, gates=gates, D=D)


def test_backward_many_pair_blocks() -> None:
    """dk / dD partial sums from several programs per channel (batched and natural kernels)."""
    for rows in (2, 1):
        plan = plan_for(120, 120, True, torch.float32, batch=12, rows=rows)
        check_backward(12, 2, 120, 120, torch.float32, plan=plan)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_hyena_decaying_filter(dtype) -> None:
    check_backward(3, 3, 500, 500, dtype, decay=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "circular"])
def test_backward_outer_level(dtype, causal) -> None:
    L = 2000 if causal else 4096
    plan = plan_for(L, 1000, causal, dtype, batch=3, max_fused=256)
    assert plan.kind == "outer1"
    check_backward(3, 1, L, 1000, dtype, causal=causal, plan=plan)


def test_backward_two_outer_levels() -> None:
    plan = plan_for(30000, 3000, True, torch.bfloat16, batch=2, max_fused=256, max_radix=16)
    assert plan.kind == "outer2"
    check_backward(2, 1, 30000, 3000, torch.bfloat16, plan=plan, gates=False)


def test_backward_only_some_inputs_need_grad() -> None:
    u, k, d, g1, g2 = make_inputs(3, 2, 200, 80, torch.float32)
    k.requires_grad_(True)
    y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2)
    (gk,) = torch.autograd.grad(y, k, torch.ones_like(y))
    k64 = k.detach().double().requires_grad_(True)
    y64 = ref64(u, k64, d, g1, g2)
    (gk64,) = torch.autograd.grad(y64, k64, torch.ones_like(y64))
    assert rel_err(gk, gk64) < 1e-5


def test_matches_project_reference_if_present() -> None:
    ref_mod = pytest.importorskip("dnastream.kernels.fftconv_ref")
    u, k, d, g1, g2 = make_inputs(3, 2, 300, 120, torch.float32)
    for causal in (True, False):
        L = 300 if causal else 256
        uu, gg1, gg2 = u[..., :L], g1[..., :L], g2[..., :L]
        kk = k if causal else k[:, :100]
        ours = fftconv_triton(uu, kk, D=d, pregate=gg1, postgate=gg2, causal=causal)
        theirs = ref_mod.fftconv_ref(uu, kk, d, pregate=gg1, postgate=gg2, causal=causal)
        assert rel_err(ours, theirs.double()) < 1e-5


# ---------------------------------------------------------------------------------------------
# GPU: every FFT size 256 .. 16M (powers of two)
# ---------------------------------------------------------------------------------------------

GPU_SIZES = [1 << e for e in range(8, 25)]


@pytest.mark.gpu
class TestGPUAllSizes:
    """Run with ``pytest -m gpu`` on a CUDA machine."""

    @staticmethod
    def _bh(n: int) -> tuple[int, int]:
        return (4, 8) if n <= 65536 else ((2, 4) if n <= (1 << 21) else (2, 2))

    @pytest.mark.parametrize("n", GPU_SIZES)
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
    def test_causal_forward(self, n, dtype) -> None:
        B, H = self._bh(n)
        check_forward(B, H, n // 2, n // 2, dtype, decay=True)

    @pytest.mark.parametrize("n", GPU_SIZES)
    def test_circular_forward(self, n) -> None:
        B, H = self._bh(n)
        check_forward(B, H, n, n, torch.bfloat16, causal=False, gates=False)

    @pytest.mark.parametrize("n", GPU_SIZES)
    def test_odd_length_forward(self, n) -> None:
        B, H = self._bh(n)
        check_forward(B + 1, H, n // 2 - 3, n // 2 - 3, torch.bfloat16)

    def test_offsets_past_2_31(self) -> None:
        """H * L = 2^31: the second row of each pair starts 2^31 elements into u and y. The
        outer levels' offsets of the real input and output are int64 (before stop 17 the
        product H * L was int32 and wrapped). Circular 4M, B = 2, H = 512, bf16 (about 56 GB
        at the peak); the first and last channels against float64."""
        B, H, L = 2, 512, 1 << 22
        if torch.cuda.get_device_properties(0).total_memory < 70 * 2**30:
            pytest.skip("needs a GPU with >= 70 GiB (H100 80GB / H200)")
        gen = torch.Generator(device="cuda").manual_seed(0)
        u = torch.randn(B, H, L, device="cuda", dtype=torch.bfloat16, generator=gen)
        k = torch.randn(H, L, device="cuda", generator=gen)
        k.mul_(torch.exp(-torch.arange(L, device="cuda") / 2000.0)).div_(30.0)
        plan = plan_for(L, L, False, torch.bfloat16, batch=B)
        assert plan.outer and (H * L) >= 2**31
        with torch.no_grad():
            y = fftconv_triton(u, k, causal=False, plan=plan)
        for h in (0, H - 1):
            x = torch.fft.fft(u[:, h].double()) * torch.fft.fft(k[h].double())
            want = torch.fft.ifft(x).real
            assert rel_err(y[:, h], want) <= BARS[torch.bfloat16], h

    @pytest.mark.parametrize(
        "n", [256, 1024, 4096, 8192, 16384, 32768, 65536, 1 << 20, 1 << 21, 1 << 22]
    )  # (2M: one outer level over a 16384-point inner FFT, its own fused backward)
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
    def test_causal_backward(self, n, dtype) -> None:
        B, H = self._bh(n)
        check_backward(B, H, n // 2, n // 2, dtype)

    @pytest.mark.parametrize("n", [2048, 4096, 8192])
    @pytest.mark.parametrize("option", ["hoist_f2", "fused_bwd"])
    def test_tuning_options_compile_and_agree(self, n, option) -> None:
        """The one-row kernel's tuning options on real tiles (a register or shared-memory
        overflow would show here, before the tuner meets it)."""
        B, H = self._bh(n)
        plan = plan_for(n // 2, n // 2, True, torch.bfloat16, batch=B, rows=1)
        check_backward(B, H, n // 2, n // 2, torch.bfloat16,
                       plan=dataclasses.replace(plan, **{option: True}))  # fmt: skip

    @pytest.mark.parametrize("n", [512, 8192, 32768])
    def test_circular_backward(self, n) -> None:
        check_backward(4, 4, n, n, torch.float16, causal=False)

    @pytest.mark.parametrize("n", [1 << 17, 1 << 18, 1 << 19, 1 << 22])
    def test_radix_128_and_64x64_plans(self, n) -> None:
        """The B >= 3 plans of 128K-512K (radix 128 over 1024-4096 points) and 4M (64 x 64
        over 1024): forward with gates and D, and backward, on real tiles."""
        B, H = 3, 2
        plan = plan_for(n // 2, n // 2, True, torch.bfloat16, batch=B)
        assert plan.outer == ((64, 64) if n == 1 << 22 else (128,)), plan.describe()
        check_forward(B, H, n // 2, n // 2, torch.bfloat16, plan=plan, decay=True)
        check_backward(B, H, n // 2, n // 2, torch.bfloat16, plan=plan)

    @pytest.mark.parametrize(
        "n, causal, opts",
        [(8192, True, {}), (8192, True, {"chunk": 16}), (8192, False, {}),
         (4096, False, {"chunk": 16}), (16384, True, {}), (4096, True, {}),
         (1 << 19, True, {"fused_bwd": False, "bwd_warps": 0}), (1 << 19, True, {}),
         (16384, True, {"nat_transposed_bwd": True}), (8192, True, {"nat_transposed_bwd": True}),
         (1 << 19, True, {"nat_transposed_bwd": True})],
    )  # fmt: skip
    def test_nat_transposed_on_real_sizes(self, n, causal, opts) -> None:
        """The transposed one-row kernel (stop 19, off by default) on the sizes it would serve:
        fused 4K-16K and one-row 4096-point inner FFTs under outer levels (512K), forward with
        gates and D and backward (du through it unless the backward is fused; the fused
        backward's pass too with ``nat_transposed_bwd``)."""
        L = n // 2 if causal else n
        one_row = n in (4096, 1 << 19)  # (2-row tiles by default since stop 21)
        plan = plan_for(L, L, causal, torch.bfloat16, batch=4, rows=1 if one_row else None)
        assert plan.rows == 1, plan.describe()
        plan = dataclasses.replace(plan, nat_transposed=True, **opts)
        check_forward(4, 2, L, L, torch.bfloat16, causal=causal, plan=plan, decay=True)
        check_backward(4, 2, L, L, torch.bfloat16, causal=causal, plan=plan)

    @pytest.mark.parametrize(
        "n, causal, B, outer, inner",
        [
            # one row pair: 4096-point inner FFTs at 256K / 512K / 4M
            (1 << 18, True, 2, (64,), 4096),
            (1 << 19, True, 2, (128,), 4096),
            (1 << 22, True, 2, (32, 32), 4096),
            # circular 128K / 256K: over 2048 points (stop 18); 1M: 32 x 32 over 1024 points
            # (stop 19); 4M: 64 x 64 over 1024 points
            (1 << 17, False, 3, (64,), 2048),
            (1 << 18, False, 3, (128,), 2048),
            (1 << 20, False, 3, (32, 32), 1024),
            (1 << 22, False, 3, (64, 64), 1024),
        ],
    )
    def test_one_pair_and_circular_structures(self, n, causal, B, outer, inner) -> None:
        """The default plans of stop 15 at one row pair (causal) and for circular mode: forward
        with gates and D, and backward, on real tiles."""
        L = n // 2 if causal else n
        plan = plan_for(L, L, causal, torch.bfloat16, batch=B)
        assert (plan.outer, plan.inner) == (outer, inner), plan.describe()
        check_forward(B, 2, L, L, torch.bfloat16, causal=causal, plan=plan, decay=True)
        check_backward(B, 2, L, L, torch.bfloat16, causal=causal, plan=plan)

    @pytest.mark.parametrize("n", [256, 512, 1024, 2048, 1 << 15, 1 << 17, 1 << 18, 1 << 22])
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
    def test_static_scale_on_row_tiles(self, n, dtype) -> None:
        """static_scale on the R-row (transposed) kernels, the default of the B >= 3 plans
        since stop 16: forward with gates and D (decaying filter) and backward within the
        bars, on real tiles."""
        B, H = 5, 2
        plan = plan_for(n // 2, n // 2, True, dtype, batch=B)
        assert plan.rows > 1 and plan.static_scale, plan.describe()
        check_forward(B, H, n // 2, n // 2, dtype, plan=plan, decay=True)
        check_backward(B, H, n // 2, n // 2, dtype, plan=plan)

    @pytest.mark.parametrize(
        "n, option",
        [(1 << 15, "separate"), (1 << 17, "separate"), (1 << 18, "separate"),
         (1 << 22, "separate"), (1 << 15, "xc_one_row"), (1 << 18, "unbounded"),
         (1 << 17, "fused_rows"), (1 << 22, "fused_rows")],
    )  # fmt: skip
    def test_row_tile_backward_options(self, n, option) -> None:
        """The backward options of the default B >= 3 plans that take separate passes (32K:
        radix 16 over 2048 points, 128K / 256K: radix 128 over 1024 / 2048, 4M: 64 x 64 over
        1024) other than their defaults (since stop 17 ``shared_bwd_outer`` with the filter
        gradient on the 2-row tiles, and ``bounded_fwd``): the separate passes, the filter
        gradient on one-row tiles, the scaled forward transforms, and ``fused_bwd`` on the
        2-row tiles (8 warps, no register cap); gradients within the bars of float64
        autograd, real tiles."""
        B, H = 3, 2
        plan = plan_for(n // 2, n // 2, True, torch.bfloat16, batch=B)
        assert plan.outer and not plan.fused_bwd and plan.rows == 2, plan.describe()
        assert plan.shared_bwd_outer and plan.bounded_fwd, plan.describe()
        if option == "separate":
            plan = dataclasses.replace(plan, shared_bwd_outer=False)
        elif option == "xc_one_row":
            plan = dataclasses.replace(plan, bwd_rows=1)
        elif option == "unbounded":
            plan = dataclasses.replace(plan, bounded_fwd=False)
        else:
            assert plan.bwd_rows in (0, 2)
            plan = dataclasses.replace(plan, fused_bwd=True, bwd_warps=8, bwd_maxnreg=0)
        check_backward(B, H, n // 2, n // 2, torch.bfloat16, plan=plan)

    @pytest.mark.parametrize("n", [65536, 1 << 20, 1 << 21, 1 << 22])
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
    def test_scaled_fp16_outer_buffers(self, n, dtype) -> None:
        """outer_fp16 (the default of outer plans) on real tiles: forward and the fused
        backward within the bars, one and two outer levels."""
        B, H = self._bh(n)
        plan = plan_for(n // 2, n // 2, True, dtype, batch=B)
        plan = dataclasses.replace(plan, outer_fp16=True)
        check_forward(B, H, n // 2, n // 2, dtype, plan=plan, decay=True)
        check_backward(B, H, n // 2, n // 2, dtype, plan=plan)


def test_backward_row_tiles_follow_bwd_rows() -> None:
    """``bwd_rows=1`` (the 2048-point default until stop 17) runs the forward and du on 2-row
    tiles and the filter gradient on one-row tiles: dk and dD are the one-row plan's bit for
    bit, du and the gates' gradients the 2-row plan's (the default now)."""
    two_rows = plan_for(1000, 1000, True, torch.bfloat16, batch=4)
    assert (two_rows.n, two_rows.rows, two_rows.bwd_rows) == (2048, 2, 0)
    plan = dataclasses.replace(two_rows, bwd_rows=1)
    one_row = dataclasses.replace(plan, rows=1, bwd_rows=0)
    grads = []
    for p in (plan, one_row, two_rows):
        u, k, d, g1, g2 = (t.requires_grad_(True) for t in make_inputs(4, 2, 1000, 1000,
                                                                      torch.bfloat16))  # fmt: skip
        y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=p)
        grads.append(torch.autograd.grad(y, (u, k, d, g1, g2), torch.ones_like(y)))
    mixed, ones, twos = grads
    for i in (1, 2):  # dk, dD
        assert torch.equal(mixed[i], ones[i])
    for i in (0, 3, 4):  # du, dpregate, dpostgate
        assert torch.equal(mixed[i], twos[i])
    assert not torch.equal(ones[0], twos[0])  # the tiles really differ
    check_backward(4, 2, 1000, 1000, torch.bfloat16, plan=plan)


@pytest.mark.parametrize("freq_keep", [None, 0.25])
def test_hoisted_step2_tables_give_the_same_bits(freq_keep) -> None:
    """hoist_f2 (a tuning option of the one-row kernel) changes loads, not arithmetic."""
    u, k, d, g1, g2 = make_inputs(3, 2, 1000, 1000, torch.bfloat16)
    u.requires_grad_(True)
    plan = plan_for(1000, 1000, True, torch.bfloat16, batch=3, freq_keep=freq_keep, rows=1)
    assert plan.rows == 1 and not plan.outer
    hoisted = dataclasses.replace(plan, hoist_f2=True)
    ys = [fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=p) for p in (plan, hoisted)]
    assert torch.equal(ys[0], ys[1])
    dy = torch.randn(ys[0].shape).to(torch.bfloat16)
    grads = [torch.autograd.grad(y, u, dy)[0] for y in ys]
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize(
    ("B", "L", "dtype", "freq_keep", "gates"),
    [(3, 1000, torch.float32, None, True), (4, 1000, torch.bfloat16, None, True),
     (5, 1000, torch.float32, 0.25, False)],
)  # fmt: skip
def test_fused_backward_equals_the_separate_passes(B, L, dtype, freq_keep, gates) -> None:
    """fused_bwd: du / dpregate and dk from one pass sharing FFT(postgate * dy)."""
    u, k, d, g1, g2 = make_inputs(B, 3, L, L, dtype, gates=gates)
    leaves = [t.requires_grad_(True) for t in (u, k, d, g1, g2) if t is not None]
    plan = plan_for(L, L, True, dtype, batch=B, freq_keep=freq_keep)
    # the fused pass runs on the filter gradient's tiles (bwd_rows): compare like with like
    # (the R-row tiles' static_scale does not carry over to one-row tiles, whose fused du
    # transform keeps row maxima unless static_bwd)
    static = plan.static_scale and plan.rows == 1
    plan = dataclasses.replace(plan, rows=plan.bwd_rows or plan.rows, bwd_rows=0,
                               static_scale=static)  # fmt: skip
    fused = dataclasses.replace(plan, fused_bwd=True)
    dy = torch.randn(B, 3, L, device=u.device).to(dtype)
    got = torch.autograd.grad(fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=fused),
                              leaves, dy)  # fmt: skip
    want = torch.autograd.grad(fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=plan),
                               leaves, dy)  # fmt: skip
    # the same maths; on a GPU the two kernels round their fp16 tensor-core operands per
    # chunk of different sizes (H100: 1.2e-5 apart in bf16), in the interpreter identically
    tol = 1e-4 if (u.is_cuda and dtype != torch.float32) else 1e-6
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b.double()) < tol


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_static_bounds_with_a_spike_in_dy(dtype) -> None:
    """static_bwd scales du's operands by the tile's L1 norm: a gradient with one spike of 1e3
    over values of 1e-2 (the rest falls 1e5 below the bound) stays within the bars."""
    B, H, L = 4, 2, 3000
    g = torch.Generator().manual_seed(3)
    u = torch.randn(B, H, L, generator=g).to(dtype)
    k = torch.randn(H, L, generator=g) / L**0.5
    dy = torch.randn(B, H, L, generator=g) * 1e-2
    dy[:, :, 1234] = 1e3
    dy = dy.to(dtype)
    u, k, dy = (t.to(DEV) for t in (u, k, dy))
    plan = plan_for(L, L, True, dtype, batch=B)
    plan = dataclasses.replace(plan, rows=1, bwd_rows=0, fused_bwd=True, static_bwd=True)
    leaves = [u.clone().requires_grad_(True), k.clone().requires_grad_(True)]
    got = torch.autograd.grad(fftconv_triton(*leaves, plan=plan), leaves, dy)
    l64 = [u.double().requires_grad_(True), k.double().requires_grad_(True)]
    want = torch.autograd.grad(ref64(*l64, None, None, None), l64, dy.double())
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) < BARS[dtype]


NAT_T_CASES = {
    # fused one-row plans: causal (the zero half never loaded), circular, fp32, static bounds,
    # hoisted step-2 tables, and a one-row inner FFT under an outer level (scaled fp16 buffers)
    "causal-bf16": (1000, 1000, True, torch.bfloat16, dict(rows=1), {}),
    "circular-fp16": (1024, 300, False, torch.float16, dict(rows=1), {}),
    "causal-fp32": (700, 700, True, torch.float32, dict(rows=1), {}),
    "static-bf16": (2000, 2000, True, torch.bfloat16, dict(rows=1), dict(static_scale=True)),
    "hoist-fp16": (1000, 900, True, torch.float16, dict(rows=1), dict(hoist_f2=True, chunk=16)),
    "outer-bf16": (
        3000,
        3000,
        True,
        torch.bfloat16,
        dict(rows=1, max_fused=512),
        dict(fused_bwd=False, bwd_warps=0),
    ),
}


@pytest.mark.parametrize("name", sorted(NAT_T_CASES))
def test_nat_transposed_forward_and_du(name, monkeypatch) -> None:
    """The one-row kernel in the transposed orientation (every product n2 rows) within the bars
    against float64, forward with gates and D and the backward's du / gate gradients, and
    close to the natural orientation it replaces; the natural kernel never runs for them."""
    import dnastream.kernels.fftconv_triton as ft

    L, Lk, causal, dtype, kw, opts = NAT_T_CASES[name]
    base = dataclasses.replace(plan_for(L, Lk, causal, dtype, batch=3, **kw), **opts)
    assert base.rows == 1 and not base.fused_bwd, base.describe()
    plan = dataclasses.replace(base, nat_transposed=True)
    u, k, d, g1, g2 = make_inputs(3, 2, L, Lk, dtype, decay=True)
    want = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, causal=causal, plan=base)
    monkeypatch.setattr(ft, "_conv_nat_kernel", _Boom())
    got = check_forward(3, 2, L, Lk, dtype, causal=causal, plan=plan, decay=True)
    y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, causal=causal, plan=plan)
    assert rel_err(y, want) <= BARS[dtype], got
    check_backward(3, 2, L, Lk, dtype, causal=causal, plan=plan, decay=True)


@pytest.mark.parametrize("name", ["causal-bf16", "circular-fp16", "outer-bf16"])
def test_nat_transposed_separate_filter_gradient(name, monkeypatch) -> None:
    """With nat_transposed_bwd the separate one-row filter-gradient pass runs transposed too
    (under the outer level on the scaled float16 buffers, with their pair weights): every
    gradient within the bars; the natural conv kernel never runs, and the filter-gradient
    kernel runs with TRANSPOSED only."""
    import dnastream.kernels.fftconv_triton as ft

    L, Lk, causal, dtype, kw, opts = NAT_T_CASES[name]
    plan = dataclasses.replace(plan_for(L, Lk, causal, dtype, batch=3, **kw), **opts)
    assert plan.rows == 1 and not plan.fused_bwd, plan.describe()
    plan = dataclasses.replace(plan, nat_transposed=True, nat_transposed_bwd=True)
    monkeypatch.setattr(ft, "_conv_nat_kernel", _Boom())
    seen = []
    real = ft._xcorr_nat_kernel

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append(kwargs["TRANSPOSED"])
                return real[grid](*args, **kwargs)

            return launch

    monkeypatch.setattr(ft, "_xcorr_nat_kernel", Spy())
    check_backward(3, 2, L, Lk, dtype, causal=causal, plan=plan, decay=True)
    assert seen and all(seen), seen


class _Boom:
    """Stands in for a kernel that must not be launched."""

    def __getitem__(self, grid):
        raise AssertionError("the natural-orientation kernel ran")


@pytest.mark.parametrize(
    ("L", "kw"),
    [(2000, dict(max_fused=512)),  # one-row 512-point inner FFTs under an outer level
     (1000, {})],  # fused 2048, one-row tiles
)  # fmt: skip
def test_nat_transposed_fused_backward(L, kw, monkeypatch) -> None:
    """The fused backward (du and the filter gradient's spectra in one pass) in the transposed
    orientation (nat_transposed_bwd), with gates and D (the second signal's gate and the D
    gradient in the pass), scaled float16 buffers under the outer level: every gradient within
    the bars, and the natural kernel never runs."""
    import dnastream.kernels.fftconv_triton as ft

    plan = plan_for(L, L, True, torch.bfloat16, batch=3, rows=1, **kw)
    plan = dataclasses.replace(plan, fused_bwd=True, nat_transposed=True, nat_transposed_bwd=True)
    monkeypatch.setattr(ft, "_conv_nat_kernel", _Boom())
    check_backward(3, 2, L, L, torch.bfloat16, plan=plan, decay=True)
    # the backward flag alone: the forward takes the natural kernel, the fused pass not
    monkeypatch.undo()
    plan = dataclasses.replace(plan, nat_transposed=False)
    check_backward(3, 2, L, L, torch.bfloat16, plan=plan, decay=True)


@pytest.mark.parametrize("hermitian_max_n", [0, 1 << 16])
def test_filter_gradient_through_both_inverse_paths(hermitian_max_n, monkeypatch) -> None:
    """dk from the whole cross-spectrum and ifft (N above HERMITIAN_MAX_N) and from its
    Hermitian half and irfft (up to it): both within the bars, on one outer and one fused
    plan (tests/test_fftconv_sparse.py checks the frequency-sparse gradients)."""
    import dnastream.kernels.fftconv_triton as ft

    monkeypatch.setattr(ft, "HERMITIAN_MAX_N", hermitian_max_n)
    outer = plan_for(3000, 3000, True, torch.bfloat16, batch=3, max_fused=512)
    assert outer.outer and not ft.uses_gemm_spectrum(outer)
    errs = check_backward(3, 2, 3000, 3000, torch.bfloat16, plan=outer, decay=True)
    assert errs["k"] < BARS[torch.bfloat16]
    fused = plan_for(1500, 37, True, torch.bfloat16, batch=2)  # 2048 points, one program
    assert not fused.outer and not ft.uses_gemm_spectrum(fused), fused.describe()
    check_backward(2, 2, 1500, 37, torch.bfloat16, plan=fused)


def test_static_bounds_in_the_fused_backward_by_default() -> None:
    """The fp16 plans with a fused backward (16K fused, outer levels) scale du's transform by
    per-tile bounds; fp32 plans and the separate-pass plans do not."""
    assert plan_for(8000, 8000, True, torch.bfloat16, batch=8).static_bwd
    assert plan_for(65536, 65536, True, torch.float16, batch=2).static_bwd  # [16] x 8192
    assert plan_for(524288, 524288, True, torch.float16, batch=2).static_bwd  # [128] x 8192
    assert plan_for(262144, 262144, True, torch.float16, batch=2).static_bwd  # [128] x 4096
    # (at B >= 3 the 512K plan's 4096-point tiles take 2 rows and separate passes, stop 21)
    assert not plan_for(262144, 262144, True, torch.float16, batch=8).static_bwd
    # (the 2-row radix-128 plans at B >= 3 take the separate backward passes)
    assert not plan_for(65536, 65536, True, torch.float16, batch=8).static_bwd
    assert not plan_for(65536, 65536, True, torch.float32, batch=8).static_bwd
    assert not plan_for(3000, 3000, True, torch.bfloat16, batch=8).static_bwd


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_fused_backward_with_static_bounds(dtype) -> None:
    """static_bwd: du's transform in the fused backward scales its fp16 operands by per-tile
    bounds; gradients within the bars of float64 autograd and next to the dynamic scaling."""
    B, H, L = 4, 2, 3000
    inputs = make_inputs(B, H, L, L, dtype, gates=True, D=True)
    plan = plan_for(L, L, True, dtype, batch=B)
    plan = dataclasses.replace(plan, rows=1, bwd_rows=0, fused_bwd=True, static_scale=True)
    assert not plan.outer and plan.inner == 8192
    dy = torch.randn(B, H, L, generator=torch.Generator().manual_seed(5)).to(dtype)
    dy = dy.to(inputs[0].device)
    grads = []
    for pl in (dataclasses.replace(plan, static_bwd=True), plan):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        u, k, d, g1, g2 = leaves
        y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=pl)
        grads.append(torch.autograd.grad(y, leaves, dy))
    l64 = [t.detach().double().requires_grad_(True) for t in inputs]
    want = torch.autograd.grad(ref64(*l64), l64, dy.double())
    for st, dyn, ref in zip(grads[0], grads[1], want, strict=True):
        assert rel_err(st, ref) < BARS[dtype]
        assert rel_err(st, dyn.double()) < BARS[dtype]


@pytest.mark.parametrize("freq_keep", [None, 0.25])
@pytest.mark.parametrize(("programs", "aligned"), [(2, False), (3, True), (5, False)])
def test_fused_backward_channel_runs(monkeypatch, programs, aligned, freq_keep) -> None:
    """The fused backward's filter-gradient sums: with runs of whole channels per program
    (``aligned``) each channel's sum is stored straight into its row; otherwise runs split a
    channel and the launcher adds the programs' slots. Both equal the separate passes
    (B = 6, H = 3: three pairs per channel, 9 tiles; runs of 5 tiles (2 programs) or 2 (5)
    are not aligned: 6 or 3 would be 1.2x or 1.5x the tiles; 3 programs of 3 are).
    Frequency-sparse: the kernel never stores the dropped frequencies, which must not leave
    garbage (NaN here) in the sums."""
    import dnastream.kernels.fftconv_triton as ft

    B, H, L = 6, 3, 1000
    u, k, d, g1, g2 = make_inputs(B, H, L, L, torch.float32, gates=True, D=True)
    leaves = [t.requires_grad_(True) for t in (u, k, d, g1, g2)]
    plan = plan_for(L, L, True, torch.float32, batch=B, freq_keep=freq_keep)
    plan = dataclasses.replace(plan, rows=1, bwd_rows=0, fused_bwd=False)
    fused = dataclasses.replace(plan, fused_bwd=True)
    assert not plan.outer and plan.n // plan.inner == 1
    assert (plan.n2_kept < plan.n2) == (freq_keep is not None)
    dy = torch.randn(B, H, L, device=u.device)
    want = torch.autograd.grad(fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=plan),
                               leaves, dy)  # fmt: skip
    parts = []  # 4-D per-program slot sums: only when the runs are not aligned
    real_empty, real_zeros = torch.empty, torch.zeros

    def spy(real, nan):
        def alloc(*shape, **kw):
            t = real(*shape, **kw)
            if t.dim() == 4 and tuple(t.shape[2:]) == (2, plan.inner):
                parts.append(t.shape)
            if nan and tuple(t.shape) == (H, 2, plan.inner):
                t.fill_(float("nan"))  # the aligned sums: never read before they are written
            return t

        return alloc

    monkeypatch.setattr(ft, "_programs", lambda n_tiles, ctas, dev: min(n_tiles, programs))
    monkeypatch.setattr(ft.torch, "empty", spy(real_empty, True))
    monkeypatch.setattr(ft.torch, "zeros", spy(real_zeros, False))
    got = torch.autograd.grad(fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=fused),
                              leaves, dy)  # fmt: skip
    monkeypatch.undo()
    assert (not parts) == aligned
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b.double()) < 1e-6


@pytest.mark.parametrize(
    ("B", "L", "Lk", "dtype", "causal", "gates"),
    [(3, 2000, 1000, torch.float32, True, True),
     (2, 2000, 2000, torch.bfloat16, True, True),
     (2, 4096, 4096, torch.float16, False, False),
     (3, 2000, 700, torch.bfloat16, True, True)],
)  # fmt: skip
def test_fused_backward_under_outer_levels(B, L, Lk, dtype, causal, gates) -> None:
    """fused_bwd under outer levels: both signals through the outer forward levels, one inner
    pass for du's inner convolution and the filter-gradient spectrum, then the outer inverse;
    equal to the separate passes and within the bars of float64 autograd (odd B: the last pair
    is half empty; Lk < L). Two outer levels share every function with one (the level loops of
    ``_outer_forward`` / ``_outer_inverse``, run by ``test_backward_two_outer_levels``); the
    GPU suite's backward at 1M-4M runs the fused pass with two (a 2-level case here took
    4.6 minutes in the interpreter)."""
    plan = plan_for(L, Lk, causal, dtype, batch=B, max_fused=256)
    assert plan.outer
    # fp32 buffers on both sides (the separate filter-gradient pass always has them; scaled
    # float16 buffers: test_scaled_fp16_outer_buffers_backward)
    # (like for like: both with dynamic operand scaling; the default static bounds of du's
    # transform (static_bwd) round differently, they are checked against float64 below)
    plan = dataclasses.replace(
        plan,
        rows=1,
        bwd_rows=0,
        fused_bwd=False,
        bwd_warps=0,
        outer_fp16=False,
        static_bwd=False,
        static_scale=False,
    )
    fused = dataclasses.replace(plan, fused_bwd=True)
    static = dataclasses.replace(fused, static_bwd=dtype != torch.float32)
    inputs = make_inputs(B, 2, L, Lk, dtype, gates=gates)
    g = torch.Generator().manual_seed(7)
    dy = torch.randn(B, 2, L, generator=g).to(dtype).to(inputs[0].device)
    grads = []
    for pl in (fused, plan, static):
        leaves = [t.clone().requires_grad_(True) for t in inputs if t is not None]
        u, k, d, *gs = leaves
        g1, g2 = gs if gates else (None, None)
        y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, causal=causal, plan=pl)
        grads.append(torch.autograd.grad(y, leaves, dy))
    l64 = [t.detach().double().requires_grad_(True) for t in inputs if t is not None]
    y64 = ref64(*(l64 + [None, None])[:5], causal=causal)
    want = torch.autograd.grad(y64, l64, dy.double())
    tol = 1e-4 if dtype != torch.float32 else 1e-6
    for got, sep, st, ref in zip(*grads, want, strict=True):
        assert got.dtype == sep.dtype
        assert rel_err(got, sep.double()) < tol
        assert rel_err(got, ref) < BARS[dtype]
        assert rel_err(st, ref) < BARS[dtype]


def test_filter_gradient_alone_skips_the_fused_pass(monkeypatch) -> None:
    """Only k needs a gradient: a fused_bwd plan takes the separate filter-gradient pass (the
    fused one would also compute du), and dk is within the bar."""
    import dnastream.kernels.fftconv_triton as ft

    calls = []
    real = ft._fused_du_dk
    monkeypatch.setattr(ft, "_fused_du_dk", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    plan = plan_for(2000, 700, True, torch.bfloat16, batch=2, max_fused=256)
    plan = dataclasses.replace(plan, rows=1, bwd_rows=0, fused_bwd=True)
    u, k, d, g1, g2 = make_inputs(2, 2, 2000, 700, torch.bfloat16)
    dy = torch.randn(2, 2, 2000, generator=torch.Generator().manual_seed(3)).to(u)
    kk = k.clone().requires_grad_(True)
    (gk,) = torch.autograd.grad(fftconv_triton(u, kk, D=d, pregate=g1, postgate=g2, plan=plan),
                                kk, dy)  # fmt: skip
    assert not calls
    k64 = k.double().requires_grad_(True)
    (gk64,) = torch.autograd.grad(ref64(u, k64, d, g1, g2), k64, dy.double())
    assert rel_err(gk, gk64) < BARS[torch.bfloat16]
    uu = u.clone().requires_grad_(True)  # with du wanted too, the fused pass runs
    torch.autograd.grad(fftconv_triton(uu, kk, D=d, pregate=g1, postgate=g2, plan=plan),
                        (uu, kk), dy)  # fmt: skip
    assert calls


@pytest.mark.parametrize(
    ("B", "L", "Lk", "dtype", "scale", "radix"),
    [(3, 2000, 2000, torch.bfloat16, 1.0, None),
     (4, 2000, 700, torch.float16, 1.0, None),
     (3, 2000, 2000, torch.bfloat16, 1e4, None),
     (3, 2000, 2000, torch.float16, 1e-4, None),
     (2, 30000, 3000, torch.float16, 1.0, 16)],
)  # fmt: skip
def test_scaled_fp16_outer_buffers_forward(B, L, Lk, dtype, scale, radix) -> None:
    """outer_fp16: float16 buffers scaled per pair and level. Their error against float64 is
    within 10% of the fp32 buffers' (interpreter: 1.74e-3 vs 1.73e-3 bf16, 5.6e-4 vs 5.4e-4
    fp16; two levels, fp16: 6.7e-4 vs 6.1e-4) and below the bf16 buffers' (2.4e-3, 1.9e-3,
    2.4e-3), for large and small inputs (no overflow, no flush to zero). With the inner
    output left at 1 / NR of the inverse levels' scale, 99.8% of the two-level buffer was
    subnormal in float16: it is stored times NR (``SCALE_NR``)."""
    extra = {"max_radix": radix} if radix else {}
    plan = plan_for(L, Lk, True, dtype, batch=B, max_fused=256, **extra)
    assert plan.outer and (len(plan.outer) == 2) == (radix is not None)
    # (the two-level case, N = 65536, on one channel: the interpreter's slowest test at two)
    u, k, d, g1, g2 = make_inputs(B, 1 if radix else 2, L, Lk, dtype)
    u = (u.float() * scale).to(dtype)
    want = ref64(u, k, d, g1, g2)
    err = {}
    variants = (("fp32", {"outer_fp16": False}), ("fp16", {"outer_fp16": True}),
                ("bf16", {"outer_fp16": False, "outer_bf16": True}))  # fmt: skip
    if radix:  # (bfloat16 buffers, off by default, are compared at one level: CI time)
        variants = variants[:2]
    for name, kw in variants:
        pl = dataclasses.replace(plan, **kw)
        y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=pl)
        assert torch.isfinite(y.float()).all(), name
        err[name] = rel_err(y, want)
    assert err["fp16"] <= BARS[dtype]
    assert err["fp16"] <= 1.1 * err["fp32"] + 5e-5, err
    assert err["fp16"] < err.get("bf16", 1.0), err


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "separate"])
def test_scaled_fp16_outer_buffers_backward(fused) -> None:
    """Gradients through scaled float16 outer buffers: the fused pass undoes both signals'
    scales in each pair's product; the separate filter-gradient pass keeps fp32 buffers."""
    B, L, Lk, dtype = 3, 2000, 900, torch.bfloat16
    plan = plan_for(L, Lk, True, dtype, batch=B, max_fused=256)
    plan = dataclasses.replace(plan, rows=1, bwd_rows=0, fused_bwd=fused, outer_fp16=True)
    inputs = make_inputs(B, 2, L, Lk, dtype)
    inputs = ((inputs[0].float() * 300.0).to(dtype), *inputs[1:])
    dy = (torch.randn(B, 2, L, generator=torch.Generator().manual_seed(5)) * 1e-3).to(dtype)
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    u, k, d, g1, g2 = leaves
    y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=plan)
    got = torch.autograd.grad(y, leaves, dy)
    l64 = [t.detach().double().requires_grad_(True) for t in inputs]
    want = torch.autograd.grad(ref64(*l64), l64, dy.double())
    for name, a, b in zip(("u", "k", "D", "pregate", "postgate"), got, want, strict=True):
        assert torch.isfinite(a.float()).all(), name
        assert rel_err(a, b) < BARS[dtype], name


def _backward_grads(plan, inputs, dy, gates, patch=None):
    """Gradients of every given input through ``plan``; ``patch`` = (name, object) stands in
    for that attribute of ``fftconv_triton`` during the backward only (a spy)."""
    import dnastream.kernels.fftconv_triton as ft

    leaves = [t.clone().requires_grad_(True) for t in inputs if t is not None]
    u, k, d, *gs = leaves
    g1, g2 = gs if gates else (None, None)
    y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=plan)
    if patch is None:
        return torch.autograd.grad(y, leaves, dy)
    name, obj = patch
    real = getattr(ft, name)
    setattr(ft, name, obj)
    try:
        return torch.autograd.grad(y, leaves, dy)
    finally:
        setattr(ft, name, real)


def _assert_like_separate_passes(inputs, dy, gates, dtype, got_grads, separate_grads) -> None:
    """Each gradient finite, within the bar of float64 autograd, and within 1e-2 of the bar
    of the separate passes' (beyond their own error)."""
    l64 = [t.detach().double().requires_grad_(True) for t in inputs if t is not None]
    u64, k64, d64, *g64 = l64
    y64 = ref64(u64, k64, d64, *(g64 if gates else (None, None)))
    want = torch.autograd.grad(y64, l64, dy.double())
    names = ("u", "k", "D", "pregate", "postgate")[: len(want)]
    for name, got, sep, ref in zip(names, got_grads, separate_grads, want, strict=True):
        assert torch.isfinite(got.float()).all(), name
        assert rel_err(got, ref) < BARS[dtype], name
        assert rel_err(got, sep.double()) < 1e-2 * BARS[dtype] + rel_err(sep, ref), name


@pytest.mark.parametrize(
    ("B", "rows", "bwd_rows", "gates", "dtype"),
    [(3, 2, 0, True, torch.bfloat16),  # 2-row tiles (the transposed filter-gradient kernel)
     (4, 2, 1, True, torch.float16),  # du on 2-row tiles, the filter gradient on one-row ones
     (3, 1, 0, False, torch.bfloat16)],  # one-row tiles throughout, no gates
)  # fmt: skip
def test_shared_bwd_outer_matches_the_separate_passes(B, rows, bwd_rows, gates, dtype) -> None:
    """shared_bwd_outer: postgate * dy and pregate * u through the outer forward levels once
    into scaled float16 buffers, the filter-gradient pass undoing both scales per pair, du's
    inner convolution in place on the dy buffer. Every gradient agrees with the default
    separate passes (fp32 filter-gradient buffers) to 1e-2 of the bar and is within the bar of
    float64 autograd; inputs at very different scales per pair (odd B: the last pair is half
    empty; Lk < L); the pass is really taken."""
    import dnastream.kernels.fftconv_triton as ft

    L, Lk = 2000, 900
    plan = plan_for(L, Lk, True, dtype, batch=B, max_fused=256)
    assert plan.outer and plan.outer_fp16
    plan = dataclasses.replace(plan, rows=rows, bwd_rows=bwd_rows, fused_bwd=False, bwd_warps=0,
                               shared_bwd_outer=False)  # fmt: skip
    shared = dataclasses.replace(plan, shared_bwd_outer=True)
    inputs = list(make_inputs(B, 2, L, Lk, dtype, gates=gates))
    scale = torch.tensor([300.0, 1.0, 1e-2, 5.0])[:B, None, None]  # pairs far apart in scale
    inputs[0] = (inputs[0].float() * scale).to(dtype)
    dy = torch.randn(B, 2, L, generator=torch.Generator().manual_seed(5)).to(dtype)
    calls = []
    real = ft._shared_du_dk
    spy = ("_shared_du_dk", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    grads = [_backward_grads(pl, inputs, dy, gates, spy) for pl in (shared, plan)]
    assert len(calls) == 1  # the shared plan only
    _assert_like_separate_passes(inputs, dy, gates, dtype, *grads)


@pytest.mark.parametrize(
    ("B", "rows", "fp16_buffers", "gates"),
    [(3, 2, True, True),  # scaled float16 buffers: per-pair weights in the product
     (5, 4, True, True),  # 3 pairs on 4-row tiles (one empty row)
     (4, 2, False, False)],  # fp32 buffers: unweighted, no gates
)  # fmt: skip
def test_fused_backward_on_row_tiles_under_outer_levels(B, rows, fp16_buffers, gates) -> None:
    """fused_bwd on R-row tiles under outer levels (the transposed kernel accumulating the
    filter-gradient spectra per channel over each program's run of tiles): every gradient
    agrees with the separate passes to 1e-2 of the bar and is within the bar of float64
    autograd; the kernel really ran with XCORR on R-row tiles and runs that span channels."""
    import dnastream.kernels.fftconv_triton as ft

    L, Lk, dtype = 2000, 900, torch.bfloat16
    plan = plan_for(L, Lk, True, dtype, batch=B, max_fused=256)
    assert plan.outer
    plan = dataclasses.replace(
        plan, rows=rows, bwd_rows=0, fused_bwd=False, bwd_warps=0, outer_fp16=fp16_buffers
    )
    fused = dataclasses.replace(plan, fused_bwd=True)
    launches = []
    real = ft._conv_kernel

    class Spy:
        def __getitem__(self, grid):
            def run(*a, **kw):
                if kw.get("XCORR"):
                    launches.append((grid, kw["R"], kw["SLOTS"], a[-1]))
                return real[grid](*a, **kw)

            return run

    inputs = list(make_inputs(B, 3, L, Lk, dtype, gates=gates))
    scale = torch.tensor([300.0, 1.0, 1e-2, 5.0, 0.1])[:B, None, None]  # pairs apart in scale
    inputs[0] = (inputs[0].float() * scale).to(dtype)
    dy = torch.randn(B, 3, L, generator=torch.Generator().manual_seed(5)).to(dtype)
    grads = [
        _backward_grads(pl, inputs, dy, gates, ("_conv_kernel", Spy())) for pl in (fused, plan)
    ]
    assert len(launches) == 1, launches  # the fused plan only, one inner pass
    (grid,), r, slots, per = launches[0]
    n_pblk = -(-((B + 1) // 2) // r)
    assert r == min(rows, 1 << ((B + 1) // 2 - 1).bit_length()) and r > 1
    assert per > n_pblk or grid > 3 * plan.n // plan.inner, (grid, per, n_pblk)
    _assert_like_separate_passes(inputs, dy, gates, dtype, *grads)


def test_fp16_buffers_can_be_switched_off(monkeypatch) -> None:
    """``DNASTREAM_FFTCONV_FP16_BUFFERS=off``: a default outer plan runs with fp32 buffers,
    exactly as a plan with ``outer_fp16=False``; on by default, its result differs."""
    B, L, Lk = 2, 2000, 700
    plan = plan_for(L, Lk, True, torch.bfloat16, batch=B, max_fused=256)
    assert plan.outer and plan.outer_fp16
    u, k, d, g1, g2 = make_inputs(B, 2, L, Lk, torch.bfloat16)
    fp32 = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2,
                          plan=dataclasses.replace(plan, outer_fp16=False))  # fmt: skip
    fp16 = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=plan)
    assert not torch.equal(fp16, fp32)
    monkeypatch.setenv("DNASTREAM_FFTCONV_FP16_BUFFERS", "off")
    off = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=plan)
    assert torch.equal(off, fp32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_scaled_fp16_outer_buffers_gate_and_input_peak_apart(dtype) -> None:
    """Each pair's scale is the max of |pregate * u| itself: where u is large the gate is tiny
    and the other way round (u * 1000 and gate / 1000 on the first half, the reverse on the
    second), a bound such as max|u| * max|gate| would be 1e6 too large and the scaled values
    would underflow float16 (0.89 relative error); forward and gradients stay within the
    bars."""
    B, L, Lk = 3, 2000, 2000
    plan = plan_for(L, Lk, True, dtype, batch=B, max_fused=256)
    plan = dataclasses.replace(plan, rows=1, bwd_rows=0, fused_bwd=True, outer_fp16=True)
    u, k, d, g1, g2 = make_inputs(B, 2, L, Lk, dtype)
    first = (torch.arange(L) < L // 2).float()
    u = (u.float() * (1e3 * first + 1e-3 * (1 - first))).to(dtype)
    g1 = (g1.float() * (1e-3 * first + 1e3 * (1 - first))).to(dtype)
    leaves = [t.clone().requires_grad_(True) for t in (u, k, d, g1, g2)]
    y = fftconv_triton(leaves[0], leaves[1], D=leaves[2], pregate=leaves[3],
                       postgate=leaves[4], plan=plan)  # fmt: skip
    l64 = [t.detach().double().requires_grad_(True) for t in (u, k, d, g1, g2)]
    y64 = ref64(*l64)
    assert rel_err(y, y64) < BARS[dtype]
    dy = torch.randn(B, 2, L, generator=torch.Generator().manual_seed(5)).to(dtype)
    got = torch.autograd.grad(y, leaves, dy)
    want = torch.autograd.grad(y64, l64, dy.double())
    for name, a, b in zip(("u", "k", "D", "pregate", "postgate"), got, want, strict=True):
        assert rel_err(a, b) < BARS[dtype], name


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "separate"])
def test_scaled_fp16_outer_buffers_guard_large_filters(fused) -> None:
    """A channel whose sum |k| + |D| exceeds float16's range (here 1e9 and a D of 1e6) is
    scaled down in the inner pass and back at the last inverse level: outputs and gradients
    stay finite and within the bars, next to a channel of ordinary size. Without the guard
    (FP16_BUFFER_LIMIT above float16's range) the same buffers overflow."""
    import dnastream.kernels.fftconv_triton as ft

    B, L, Lk, dtype = 3, 2000, 2000, torch.bfloat16
    plan = plan_for(L, Lk, True, dtype, batch=B, max_fused=256)
    plan = dataclasses.replace(plan, rows=1, bwd_rows=0, fused_bwd=fused, outer_fp16=True)
    u, k, d, g1, g2 = make_inputs(B, 2, L, Lk, dtype)
    k = k.clone()
    k[1] *= 1e9 / k[1].abs().sum()  # sum |k_1| = 1e9
    d = d.clone()
    d[1] = 1e6
    assert float(k[1].abs().sum() + d[1].abs()) > 65504.0
    leaves = [t.clone().requires_grad_(True) for t in (u, k, d, g1, g2)]
    dy = torch.randn(B, 2, L, generator=torch.Generator().manual_seed(5)).to(dtype)
    y = fftconv_triton(*leaves[:1], leaves[1], D=leaves[2], pregate=leaves[3],
                       postgate=leaves[4], plan=plan)  # fmt: skip
    l64 = [t.detach().double().requires_grad_(True) for t in (u, k, d, g1, g2)]
    y64 = ref64(*l64)
    assert torch.isfinite(y.float()).all()
    for h in range(2):  # each channel to the bar on its own scale
        assert rel_err(y[:, h], y64[:, h]) < BARS[dtype], h
    got = torch.autograd.grad(y, leaves, dy)
    want = torch.autograd.grad(y64, l64, dy.double())
    for name, a, b in zip(("u", "k", "D", "pregate", "postgate"), got, want, strict=True):
        assert torch.isfinite(a.float()).all(), name
        assert rel_err(a, b) < BARS[dtype], name
    # the guard is what keeps it finite: lifted, the same forward overflows float16
    ft._SCALE_MEMO[0] = None
    old = ft.FP16_BUFFER_LIMIT
    try:
        ft.FP16_BUFFER_LIMIT = 1e30
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the interpreter's overflow
            y_unguarded = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=plan)
        assert not torch.isfinite(y_unguarded[:, 1].float()).all()
    finally:
        ft.FP16_BUFFER_LIMIT = old
        ft._SCALE_MEMO[0] = None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("size", [1e-5, 30.0], ids=["small", "large"])
def test_scaled_fp16_outer_buffers_small_and_large_filters(dtype, size) -> None:
    """Scaled float16 outer buffers with a filter 1e-5 or 30 times a unit one (no D; larger
    ones overflow float16 outputs themselves, their guard is tested above): the
    channel factor brings each channel's bound to FP16_BUFFER_LIMIT, so the inner outputs
    neither sink into float16's subnormals (before: 4.4e-3 / 4.1e-3 relative error at 1e-5,
    over the bars) nor overflow; forward and backward within the bars."""
    B, L = 4, 2000
    plan = plan_for(L, L, True, dtype, batch=B, max_fused=256)
    assert plan.outer and plan.outer_fp16
    u, k, _, g1, g2 = make_inputs(B, 2, L, L, dtype, decay=True)
    k = k * size
    y = fftconv_triton(u, k, pregate=g1, postgate=g2, plan=plan)
    assert rel_err(y, ref64(u, k, None, g1, g2)) <= BARS[dtype]
    leaves = [t.clone().requires_grad_(True) for t in (u, k, g1, g2)]
    y = fftconv_triton(leaves[0], leaves[1], pregate=leaves[2], postgate=leaves[3], plan=plan)
    dy = torch.randn(B, 2, L, generator=torch.Generator().manual_seed(4)).to(dtype)
    got = torch.autograd.grad(y, leaves, dy)
    l64 = [t.detach().double().requires_grad_(True) for t in (u, k, g1, g2)]
    y64 = ref64(l64[0], l64[1], None, l64[2], l64[3])
    want = torch.autograd.grad(y64, l64, dy.double())
    for name, a, b in zip(("u", "k", "pregate", "postgate"), got, want, strict=True):
        assert rel_err(a, b) < BARS[dtype], name


def test_channel_scale_bounds_the_filter_norm() -> None:
    """_channel_scale's bound N sqrt(sum |spec|^2) + |D| is at least sum |k| + |D| (Parseval),
    for impulses, decaying and random filters, and frequency-sparse spectra; every channel's
    factor is NR * FP16_BUFFER_LIMIT / bound (down over the limit, up under it), a zero
    channel's NR; the factor is memoised for the same unchanged spectrum."""
    from dnastream.kernels.fftconv_triton import FP16_BUFFER_LIMIT, _channel_scale

    plan = plan_for(3000, 3000, True, torch.bfloat16, max_fused=256)
    nr = plan.n // plan.inner
    t = torch.arange(3000, dtype=torch.float64)
    k = torch.stack([
        torch.nn.functional.one_hot(torch.tensor(7), 3000).double(),
        torch.exp(-t / 300.0) * torch.cos(t / 5.0),
        torch.randn(3000, generator=torch.Generator().manual_seed(1), dtype=torch.float64),
        torch.full((3000,), 40.0, dtype=torch.float64),  # sum |k| = 120000: over the limit
        torch.zeros(3000, dtype=torch.float64),  # a zero channel (and no D)
        torch.full((3000,), 1e-40, dtype=torch.float64),  # far below float32's normals
    ])  # fmt: skip
    d = torch.tensor([0.5, -2.0, 0.0, 3.0, 0.0, 0.0])
    for p in (plan, dataclasses.replace(plan, freq_cut=plan.n // 8)):
        spec = filter_spectrum(k, p)
        bound = p.n * spec.double().square().sum(dim=(0, 2)).sqrt() + d.abs()
        if not p.freq_cut:
            assert (bound >= (k.abs().sum(dim=1) + d.abs()) * (1 - 1e-5)).all()
        cs = _channel_scale(spec, d, p.n, p.inner)
        want = nr * FP16_BUFFER_LIMIT / bound[:4]
        torch.testing.assert_close(cs[:4].double(), want, rtol=1e-4, atol=0)  # fp32 norm
        assert cs[0] > nr and cs[3] < nr and cs[4] == nr
        assert torch.isfinite(cs).all() and torch.isfinite(nr / cs).all() and (nr / cs > 0).all()
        assert cs[5] > 1e30 * nr  # its squares underflow float32: the max-based bound
        assert _channel_scale(spec, d, p.n, p.inner) is cs  # memoised
        spec.mul_(2.0)  # in place: recomputed
        assert _channel_scale(spec, d, p.n, p.inner) is not cs


def test_channel_scale_takes_the_filters_own_bound() -> None:
    """filter_spectrum attaches sqrt(N) ||k_h||_2 (taps * max |k_h| where squares underflow)
    to the spectra of dense plans with scaled float16 outer buffers; the channel factor uses it
    instead of two reductions over the spectrum (a quarter of the bytes), with the same value
    (Parseval). No
    bound for fused, fp32 or frequency-sparse plans, after an in-place change, or for
    inference tensors: those take the spectrum's."""
    import dnastream.kernels.fftconv_triton as ft
    from dnastream.kernels.monarch import filter_sum_bound

    plan = plan_for(3000, 3000, True, torch.bfloat16, max_fused=256)
    g = torch.Generator().manual_seed(3)
    k = torch.randn(4, 3000, generator=g) * torch.tensor([[1.0], [1e-3], [30.0], [1e-41]])
    d = torch.tensor([0.5, 0.0, -1.0, 0.0])
    spec = filter_spectrum(k, plan)
    bound = filter_sum_bound(spec)
    assert bound is not None and bound.dtype == torch.float64
    kd = k.double()
    want = kd.square().sum(dim=1).sqrt() * math.sqrt(plan.n)
    torch.testing.assert_close(bound[:3], want[:3], rtol=1e-6, atol=0)
    assert bound[3] == kd[3].abs().max() * 3000  # (underflowing squares)
    assert (bound >= kd.abs().sum(dim=1)).all()
    ft._SCALE_MEMO[0] = None
    cs = ft._channel_scale(spec, d, plan.n, plan.inner)
    # the same factor as from the spectrum (Parseval), where the squares do not underflow
    bare = spec.clone()
    assert filter_sum_bound(bare) is None
    ft._SCALE_MEMO[0] = None
    torch.testing.assert_close(cs[:3], ft._channel_scale(bare, d, plan.n, plan.inner)[:3],
                               rtol=1e-5, atol=0)  # fmt: skip
    # it is what the factor uses: a doubled bound halves the factors (no D)
    ft._SCALE_MEMO[0] = None
    plain = ft._channel_scale(spec, None, plan.n, plan.inner)
    from dnastream.kernels.monarch import _SUM_BOUND_ATTR

    setattr(spec, _SUM_BOUND_ATTR, (spec._version, bound * 2))
    ft._SCALE_MEMO[0] = None
    torch.testing.assert_close(ft._channel_scale(spec, None, plan.n, plan.inner)[:3],
                               plain[:3] / 2, rtol=1e-6, atol=0)  # fmt: skip
    spec.mul_(2.0)  # in place: the attached bound no longer holds
    assert filter_sum_bound(spec) is None
    ft._SCALE_MEMO[0] = None
    assert filter_sum_bound(filter_spectrum(k, plan_for(3000, 3000, True, torch.bfloat16))) is None
    sparse = dataclasses.replace(plan, freq_cut=plan.n // 8)
    assert filter_sum_bound(filter_spectrum(k, sparse)) is None
    # fp32 plans keep fp32 outer buffers: no channel factor, so no reductions for it
    fp32 = plan_for(3000, 3000, True, torch.float32, max_fused=256)
    assert fp32.outer and not fp32.outer_fp16
    assert filter_sum_bound(filter_spectrum(k, fp32)) is None
    with torch.inference_mode():
        assert filter_sum_bound(filter_spectrum(k, plan)) is None


def test_spectrum_bound_is_memoised_only_for_the_same_unchanged_tensors() -> None:
    """The static-scale bound is reused for the same spectrum and D at the same versions, and
    recomputed after an in-place change, for another D, or for an inference tensor."""
    from dnastream.kernels.fftconv_triton import _spectrum_bound

    plan = plan_for(3000, 3000, True, torch.bfloat16)
    spec = filter_spectrum(torch.randn(3, 3000), plan)
    d = torch.randn(3)

    def fresh(s, dd):
        want = (s[0].abs() + s[1].abs()).reshape(3, -1).amax(dim=-1)
        return want + (dd.abs() / plan.n if dd is not None else 0)

    b1 = _spectrum_bound(spec, d, plan.n, plan.inner)
    assert torch.allclose(b1, fresh(spec, d))
    assert _spectrum_bound(spec, d, plan.n, plan.inner) is b1  # same tensors: memoised
    spec[1, 0, 5] = 1e3  # in place: version bump
    b2 = _spectrum_bound(spec, d, plan.n, plan.inner)
    assert b2 is not b1 and torch.allclose(b2, fresh(spec, d))
    d.mul_(100.0)
    assert torch.allclose(_spectrum_bound(spec, d, plan.n, plan.inner), fresh(spec, d))
    assert torch.allclose(_spectrum_bound(spec, None, plan.n, plan.inner), fresh(spec, None))
    with torch.inference_mode():
        inf = spec.clone()
        b3 = _spectrum_bound(inf, None, plan.n, plan.inner)
        inf.mul_(2.0)  # no version counter: must not be served from a memo
        assert torch.allclose(_spectrum_bound(inf, None, plan.n, plan.inner), 2 * b3)


def test_backward_reuses_the_forwards_pair_maxima(monkeypatch) -> None:
    """Scaled float16 buffers: a training step computes the pair maxima of the input once (in
    the forward, kept for the backward) and those of dy once; gradients within the bars."""
    import dnastream.kernels.fftconv_triton as ft

    B, H, L = 2, 1, 3000
    plan = plan_for(L, L, True, torch.bfloat16, batch=B, max_fused=512)
    assert plan.outer and plan.outer_fp16 and plan.fused_bwd
    calls = []
    real = ft._pair_max

    def counting(src, gate):
        calls.append(src.data_ptr())
        return real(src, gate)

    monkeypatch.setattr(ft, "_pair_max", counting)
    errs = check_backward(B, H, L, L, torch.bfloat16, plan=plan, gates=True, D=True)
    assert len(calls) == 2 and len(set(calls)) == 2, calls  # u once, dy once
    assert set(errs) == {"u", "k", "D", "pregate", "postgate"}


@pytest.mark.parametrize("L, max_fused", [(1000, 8192), (3000, 512)])
def test_natural_spectrum_equals_the_scatter(L, max_fused) -> None:
    """The filter gradient's reordering to natural order equals scattering by the spectrum
    order (fused and outer-level plans)."""
    from dnastream.kernels.monarch import layout_for
    from dnastream.kernels.spectrum_reorder import natural_spectrum

    plan = plan_for(L, L, True, torch.bfloat16, max_fused=max_fused)
    heads, nr = 3, plan.n // plan.inner
    s = torch.randn(heads * nr, 2, plan.inner)
    planes = s.reshape(heads, nr, 2, plan.inner).permute(2, 0, 1, 3).reshape(2, heads, plan.n)
    want = torch.empty(heads, plan.n, dtype=torch.complex64)
    want[:, spectrum_order(plan)] = torch.complex(planes[0], planes[1])
    assert torch.equal(natural_spectrum(s, layout_for(plan, s.device)), want)


def test_the_constant_mark_is_what_torch_dynamo_sets() -> None:
    """monarch marks the fused-size limit constant for torch.compile without importing
    torch._dynamo; the mark must be exactly what dynamo's own decorator sets."""
    import torch._dynamo

    from dnastream.kernels import monarch

    def probe() -> int:
        return 0

    marked = torch._dynamo.assume_constant_result(probe)
    mine = monarch._assume_constant_result(lambda: 0)
    assert vars(marked) == vars(mine) == {"_dynamo_marked_constant": True}
    assert monarch._fused_causal_limit._dynamo_marked_constant is True


@pytest.mark.parametrize(
    ("L", "causal", "freq_keep"),
    [
        (128, True, None),
        (256, False, None),
        (500, True, 0.25),
        (300, True, None),
        (1000, True, None),
    ],
)
def test_dft_table_products_equal_the_fft_path(monkeypatch, L, causal, freq_keep) -> None:
    """Fused plans up to 1024 points take the filter spectrum and the filter gradient as one
    product with a cached DFT table (fewer host operations per step); same values as the FFT
    and gather they replace, frequency-sparse mask included."""
    from dnastream.kernels import monarch
    from dnastream.kernels.fftconv_triton import _filter_gradient

    plan = plan_for(L, L, causal, torch.float32, freq_keep=freq_keep)
    assert monarch.uses_gemm_spectrum(plan) == (plan.n <= monarch.GEMM_SPECTRUM_MAX)
    g = torch.Generator().manual_seed(L)
    k = torch.randn(5, L + 7, generator=g).to(DEV)  # taps beyond the plan's are ignored
    s = torch.randn(5, 2, plan.n, generator=g).to(DEV)  # summed spectra, storage order
    got = filter_spectrum(k, plan), _filter_gradient(plan, s, k)
    monkeypatch.setattr(monarch, "GEMM_SPECTRUM_MAX", 0)
    want = filter_spectrum(k, plan), _filter_gradient(plan, s, k)
    assert got[0].shape == want[0].shape == (2, 5, plan.n)
    assert rel_err(got[0], want[0].double()) < 1e-6
    assert got[1].shape == want[1].shape == k.shape
    assert rel_err(got[1], want[1].double()) < 1e-5


def test_dft_table_products_avoid_tf32(monkeypatch) -> None:
    """A float32 product on CUDA runs in float64 unless float32 matmuls are exact ("highest"
    precision): TF32 would cost the fp32 bar."""
    from dnastream.kernels.monarch import gemm_dtype

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "highest")
    assert gemm_dtype(torch.float32, cuda) == torch.float32
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")
    assert gemm_dtype(torch.float32, cuda) == torch.float64
    assert gemm_dtype(torch.float32, cpu) == torch.float32
    assert gemm_dtype(torch.float64, cuda) == torch.float64


def test_nat_transposed_refuses_eight_warps_on_64_row_products() -> None:
    """The transposed forward kernel at n2 = 64 over 8 warps made an illegal memory access on
    an H200 (Triton 3.6, stop 20): the plan refuses it; n2 = 128 keeps 8 warps, and the
    tuner's grid offers only 4 warps at n2 = 64."""
    from dnastream.kernels.autotune import inner_grid

    base = plan_for(4096, 4096, False, torch.bfloat16, batch=4, rows=1)
    assert (base.n2, base.rows) == (64, 1)
    with pytest.raises(ValueError, match="at most 4 warps"):
        dataclasses.replace(base, nat_transposed=True, num_warps=8)
    dataclasses.replace(base, nat_transposed=True, num_warps=4)
    big = plan_for(8192, 8192, True, torch.bfloat16, batch=4)
    assert big.n2 == 128
    dataclasses.replace(big, nat_transposed=True, num_warps=8)
    t_warps = {v["num_warps"] for v in inner_grid(base) if v.get("nat_transposed")}
    assert t_warps == {4}
    assert {v["num_warps"] for v in inner_grid(big) if v.get("nat_transposed")} == {4, 8}


@pytest.mark.parametrize("causal", [True, False])
def test_two_row_tiles_at_4096_points(causal) -> None:
    """The fused 4096-point bf16 plan runs on 2-row tiles of 8 warps with the filter gradient
    on one-row tiles of 4 warps (stop 21's default, measured on an H200); one row pair (B <= 2)
    and fp32 keep the one-row kernel, and the tuner's grid offers it back. Forward with gates
    and D and every gradient: the default, and the filter gradient on the 2-row tiles too."""
    L = 2048 if causal else 4096
    plan = plan_for(L, L, causal, torch.bfloat16, batch=4)
    assert (plan.n, plan.rows, plan.num_warps, plan.outer) == (4096, 2, 8, ())
    assert (plan.bwd_rows, plan.bwd_warps, plan.static_scale) == (1, 4, True)
    one_row = plan_for(L, L, causal, torch.bfloat16, batch=2)
    assert (one_row.rows, one_row.num_warps, one_row.bwd_rows) == (1, 4, 0)
    assert plan_for(L, L, causal, torch.float32, batch=4).rows == 1
    assert plan_for(2 * L, 2 * L, causal, torch.bfloat16, batch=4).rows == 1  # 8192 points
    from dnastream.kernels.autotune import inner_grid

    grid = inner_grid(plan)
    assert dict(rows=1, num_warps=4, maxnreg=None, ctas_per_sm=2, hoist_f2=False) in grid
    assert dict(rows=2, num_warps=8, maxnreg=None, ctas_per_sm=2) in inner_grid(one_row)
    check_forward(4, 2, L, L, torch.bfloat16, causal=causal, plan=plan, decay=True)
    check_backward(4, 1, L, L, torch.bfloat16, causal=causal, plan=plan, decay=True)
    tiled_xc = dataclasses.replace(plan, bwd_rows=0, bwd_warps=0)
    check_backward(4, 1, L, L, torch.bfloat16, causal=causal, plan=tiled_xc, decay=True)


def test_two_row_4096_tiles_under_outer_levels() -> None:
    """Causal 512K at B >= 3 (radix 128 over 4096 points) runs its inner FFTs on 2-row tiles
    of 8 warps with the separate backward passes sharing the outer forward (stop 21, H200:
    forward+backward 1.30x); B <= 2 keeps the one-row kernel and its fused backward. The same
    launch on a 64K plan over 4096 points (radix 16, small enough for the interpreter):
    forward with gates and D and every gradient within the bars."""
    L = 1 << 18
    plan = plan_for(L, L, True, torch.bfloat16, batch=8)
    assert (plan.outer, plan.inner, plan.rows, plan.num_warps) == ((128,), 4096, 2, 8)
    assert plan.shared_bwd_outer and plan.bounded_fwd and not plan.fused_bwd, plan.describe()
    assert (plan.outer_maxnreg, plan.outer_ctas_per_sm) == (168, 8)  # the one-row plan's
    one = plan_for(L, L, True, torch.bfloat16, batch=2)
    assert (one.rows, one.fused_bwd, one.shared_bwd_outer) == (1, True, False), one.describe()
    small = plan_for(32768, 32768, True, torch.bfloat16, batch=3, max_fused=4096)
    assert (small.outer, small.inner, small.rows) == ((16,), 4096, 1), small.describe()
    fields = ("rows", "num_warps", "shared_bwd_outer", "bounded_fwd", "fused_bwd", "bwd_warps")
    small = dataclasses.replace(small, static_bwd=False, **{f: getattr(plan, f) for f in fields})
    check_forward(3, 1, 32768, 32768, torch.bfloat16, plan=small, decay=True)
    check_backward(3, 1, 32768, 32768, torch.bfloat16, plan=small, decay=True)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("causal", [True, False])
def test_acc_dot_accumulates_the_last_product_in_the_dots(transposed, causal, monkeypatch) -> None:
    """``acc_dot`` (stop 20, off by default): the one-row kernels with per-tile static bounds
    accumulate their last product in the dots, in units of the tile's bound, scaled once after
    the chunk loop. Forward with gates and D equal to the per-chunk sums up to fp32 rounding,
    and every gradient within the bars through the fused backward with static bounds (its du
    transform takes the same path); natural and transposed orientations."""
    L = 1000 if causal else 2048
    plan = plan_for(L, L, causal, torch.bfloat16, batch=3, rows=1)
    plan = dataclasses.replace(plan, static_scale=True, nat_transposed=transposed)
    assert plan.rows == 1 and not plan.outer and plan.mma == "fp16", plan.describe()
    acc = dataclasses.replace(plan, acc_dot=True)
    u, k, d, g1, g2 = make_inputs(3, 2, L, L, torch.bfloat16, decay=True)
    want = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, causal=causal, plan=plan)
    import dnastream.kernels.fftconv_triton as ft

    name = "_conv_nat_t_kernel" if transposed else "_conv_nat_kernel"
    real, seen = getattr(ft, name), []

    class Spy:  # the flag reaches the kernel that runs
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append((kwargs["ACC_DOT"], kwargs["STATIC"]))
                return real[grid](*args, **kwargs)

            return launch

    monkeypatch.setattr(ft, name, Spy())
    got = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, causal=causal, plan=acc)
    assert seen == [(True, True)]
    assert rel_err(got, want) <= 2e-4
    check_forward(3, 2, L, L, torch.bfloat16, causal=causal, plan=acc, decay=True)
    fused = dataclasses.replace(acc, fused_bwd=True, static_bwd=True,
                                nat_transposed_bwd=transposed)  # fmt: skip
    check_backward(3, 2, L, L, torch.bfloat16, causal=causal, plan=fused, decay=True)


@pytest.mark.parametrize("causal", [True, False])
def test_two_phase_forms_the_output_after_the_transform(causal, monkeypatch) -> None:
    """``two_phase`` (stop 20, off by default): the natural one-row kernel with static bounds
    stores each chunk's last-step operand to per-program scratch rows and forms the output
    in a second loop. Several tiles per program (the scratch is reused), forward with gates
    and D equal to the one-loop kernel up to fp32 rounding, and every gradient within the
    bars (du's transform takes the same path; the backward is not fused here)."""
    import dnastream.kernels.fftconv_triton as ft

    L = 1000 if causal else 2048
    plan = plan_for(L, L, causal, torch.bfloat16, batch=3, rows=1)
    plan = dataclasses.replace(plan, static_scale=True, fused_bwd=False)
    assert plan.rows == 1 and not plan.outer and not plan.nat_transposed, plan.describe()
    two = dataclasses.replace(plan, two_phase=True)
    u, k, d, g1, g2 = make_inputs(3, 2, L, L, torch.bfloat16, decay=True)
    want = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, causal=causal, plan=plan)
    real, seen = ft._conv_nat_kernel, []

    class Spy:  # the flag reaches the kernel, and programs take several tiles
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append((kwargs["TWO_PHASE"], args[24], tuple(kwargs["scr_ptr"].shape)))
                return real[grid](*args, **kwargs)

            return launch

    monkeypatch.setattr(ft, "_conv_nat_kernel", Spy())
    got = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, causal=causal, plan=two)
    (flag, per, scr_shape), *_ = seen
    assert flag and per >= 2 and scr_shape[1:] == (2, plan.n1, plan.n2), seen
    assert rel_err(got, want) <= 2e-4
    check_forward(3, 2, L, L, torch.bfloat16, causal=causal, plan=two, decay=True)
    check_backward(3, 2, L, L, torch.bfloat16, causal=causal, plan=two, decay=True)
