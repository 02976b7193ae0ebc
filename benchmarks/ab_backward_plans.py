"""A/B in one process: forward+backward of one FFT size under backward-plan variants.

Times ``fftconv_triton(u, k).backward(dy)`` on ``bench_conv``'s ``padded_bwd`` workload (bf16,
L = N/2, B and H capped as FlashFFTConv's benchmark) for the default plan and for variants of
its backward settings (``fused_bwd``: du and the filter-gradient spectrum in one inner pass,
under outer levels too; ``num_warps``; ``bwd_chunk``), beside PyTorch's rfft convolution,
alternating ``--rounds`` times, and prints medians and each variant's gradients' distance
from the default's, the forward alone, and errors against float64. ``--gated`` adds pre/post
gates and D (the Hyena operator's case); ``--circular`` runs the circular convolution of
``bench_conv``'s ``circular`` workload (L = N) instead.

    python benchmarks/ab_backward_plans.py --sizes 131072,1048576 --variants fused,fused_w8
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402

from bench_conv import ref64, torch_rfft_conv, workload  # noqa: E402
from dnastream.kernels.fftconv_triton import fftconv_triton, plan_for  # noqa: E402

# 2-row tiles of 8 warps on a plan with outer levels over one-row inner tiles (512K): the
# scaled forward transforms, the separate backward passes (stop 21's variants below)
_R2_OUTER = dict(
    rows=2, num_warps=8, bounded_fwd=True, fused_bwd=False, bwd_warps=0, static_bwd=False
)

VARIANTS = {
    "default": {},
    "separate": dict(fused_bwd=False, bwd_warps=0),
    "fused": dict(fused_bwd=True, bwd_warps=0),
    "fused_bw8": dict(fused_bwd=True, bwd_warps=8),
    "fused_w8": dict(fused_bwd=True, num_warps=8),
    "fused_hoist": dict(fused_bwd=True, hoist_f2=True),
    "xc64": dict(bwd_chunk=64),
    "bf16buf": dict(outer_bf16=True, outer_fp16=False),
    "fp16buf": dict(outer_fp16=True),
    "fp32buf": dict(outer_fp16=False, outer_bf16=False),
    # launch settings of the forward kernels with the (half as large) float16 buffers
    "w8": dict(num_warps=8),
    "chunk16": dict(chunk=16),
    "ob16": dict(outer_block=16),
    "ob32": dict(outer_block=32),
    "ob64": dict(outer_block=64),
    "ow8": dict(outer_warps=8),
    "octa2": dict(outer_ctas_per_sm=2),
    "octa8": dict(outer_ctas_per_sm=8),
    "oreg255": dict(outer_maxnreg=None),
    "ostage2": dict(outer_stages=2),
    "ostage3": dict(outer_stages=3),
    "ostage4": dict(outer_stages=4),
    "octa8_ob64": dict(outer_ctas_per_sm=8, outer_block=64),
    # the inner kernel's own settings
    "chunk64": dict(chunk=64),
    "istage2": dict(num_stages=2),
    # other plan structures: smaller inner FFTs under an outer radix, or larger (one level less)
    "inner1k": dict(max_fused=1024),
    "inner2k": dict(max_fused=2048),
    "inner4k": dict(max_fused=4096),
    "inner16k": dict(max_fused=16384),
    "inner32k": dict(max_fused=32768),
    # one-row tiles on a 2048-point inner FFT (default: 2 rows), and the fused backward there
    "r1": dict(rows=1, bwd_rows=0),
    "r1_fused": dict(rows=1, bwd_rows=0, fused_bwd=True, bwd_warps=8),
    "xc32": dict(bwd_chunk=32),
    # per-tile operand bounds (no per-chunk reductions) in the fused backward's du transform,
    # and in the forward under outer levels (the float16 buffers' inputs are at most 1)
    "static_bwd": dict(static_bwd=True),
    "static_all": dict(static_scale=True, static_bwd=True),
    "fused_static": dict(fused_bwd=True, static_bwd=True),
    "dynamic_bwd": dict(static_bwd=False),
    # separate backward passes sharing the outer forward of postgate * dy, the filter-gradient
    # pass on scaled float16 buffers (plans with outer levels that do not take fused_bwd)
    "shared": dict(shared_bwd_outer=True),
    "shared_nocap": dict(shared_bwd_outer=True, bwd_maxnreg=0),
    # the filter-gradient kernel of the R-row plans without the inner kernel's register cap
    # (sm_90 compile at 128K: 128 registers and 688 B of spills capped), and the fused backward
    # on R-row tiles under outer levels
    "sep_nocap": dict(bwd_maxnreg=0),
    "sep_w8_nocap": dict(bwd_warps=8, bwd_maxnreg=0),
    "fused_rows_w8_nocap": dict(fused_bwd=True, bwd_warps=8, bwd_maxnreg=0),
    # R-row kernels: L1-norm scales in each transform's first step, a derived bound in its
    # second (no row maxima; sm_90 SASS: 12-16% fewer instructions at 1024-2048 points)
    "static_rows": dict(static_scale=True),
    "shared_static": dict(shared_bwd_outer=True, static_scale=True),
    # the stop-15 defaults, against stop 16's (static_scale on R-row kernels, shared_bwd_outer
    # over 1024-point inner FFTs)
    "dynamic_rows": dict(static_scale=False),
    "unshared": dict(shared_bwd_outer=False),
    # 2048-point inner FFTs (fused 2K, 32K and 256K at B >= 3): the filter gradient on the
    # forward's 2-row tiles (the transposed kernel, with static_scale's derived bounds since
    # stop 16) instead of one-row tiles, alone and with the shared outer forward
    "xc_rows": dict(bwd_rows=0),
    "xc_rows_shared": dict(bwd_rows=0, shared_bwd_outer=True),
    # R-row inner kernels under outer levels: the forward transforms of the scaled float16
    # buffers without operand scaling (sm_90 SASS at 128K: -15% instructions in the inner
    # kernel, -30% in the filter-gradient kernel; results/sass_bounded_fwd_*_stop16.log)
    "bounded": dict(bounded_fwd=True),
    # R-row kernels: the inverse transform scaled by the forward's L1 norm times the spectrum
    # block's maximum, no row reductions (sm_90 SASS: -17..20% at 512-2048 and 128K / 256K,
    # -28% with bounded_fwd at 128K; results/sass_static_inv_*_stop16.log)
    "static_inv": dict(static_inv=True),
    "static_inv_bounded": dict(static_inv=True, bounded_fwd=True),
    # stop 17's defaults against what they replaced: the scaled forward transforms
    # (bounded_fwd off), and over 2048-point inner FFTs the filter gradient on one-row tiles
    # with and without the shared outer forward (stop 16's 2048-point plans, bounded aside)
    "unbounded": dict(bounded_fwd=False),
    "xc_one_row": dict(bwd_rows=1),
    "stop16_2k": dict(bwd_rows=1, shared_bwd_outer=False, bounded_fwd=False),
    # two outer levels over 1024 points at 512K / 1M (they lost to the one-row 4096 / 8192-
    # point plans in stop 17 while they won at 2M / 4M, whose outer kernels take 64-column
    # tiles; 512K / 1M take 128): with the 2M tiles, and with the levels in the other order
    "inner1k_ob64": dict(max_fused=1024, outer_block=64),
    "inner1k_ob32": dict(max_fused=1024, outer_block=32),
    "inner1k_ow4": dict(max_fused=1024, outer_warps=4),
    "inner1k_octa4": dict(max_fused=1024, outer_ctas_per_sm=4),
    "inner1k_rev": dict(max_fused=1024, reverse_outer=True),
    "inner1k_rev_ob64": dict(max_fused=1024, reverse_outer=True, outer_block=64),
    "inner2k_ob64": dict(max_fused=2048, outer_block=64),
    # the radix-64 single level's launch (stop 18's tuner: 1.47-1.52x forward at 64K / 128K)
    # on the two-level plans whose largest radix is 64 (2M: 64 x 32, 4M: 64 x 64)
    "ob32_w4_c3": dict(outer_block=32, outer_warps=4, outer_ctas_per_sm=3),
    "ob64_w4_c3": dict(outer_block=64, outer_warps=4, outer_ctas_per_sm=3),
    # the shipped H100 tuning of circular 256K (an H200 takes it since stop 20's same-chip
    # fallback) against stop 20's default there (32-column tiles, 4 warps, 3 per SM)
    "h100_entry_256k": dict(
        outer_block=16, outer_warps=8, outer_maxnreg=128, outer_ctas_per_sm=2, ctas_per_sm=4
    ),  # fmt: skip
    # 512K / 1M over two levels of 1024 points lost in stops 17-18 (0.54-0.90x) with the old
    # outer launch, or with 32 / 64-column tiles alone (8 warps kept): with the whole launch
    "inner1k_ob32_w4_c3": dict(max_fused=1024, outer_block=32, outer_warps=4, outer_ctas_per_sm=3),
    "inner1k_ob64_w4_c3": dict(max_fused=1024, outer_block=64, outer_warps=4, outer_ctas_per_sm=3),
    # stop 19: that launch won at 1M (causal 1.34x, circular 1.60x over two levels of 1024
    # points); the same idea over 2048-point inner FFTs (512K: 16 x 16)
    "inner2k_ob64_w4_c3": dict(max_fused=2048, outer_block=64, outer_warps=4, outer_ctas_per_sm=3),
    "inner2k_ob32_w4_c3": dict(max_fused=2048, outer_block=32, outer_warps=4, outer_ctas_per_sm=3),
    # stop 19: the one-row kernels in the transposed orientation (every product n2 rows, all
    # wgmma on sm_90 where the natural one issues 12 of 16 as mma.sync), with 16-row chunks
    # (no spills at 4K causal in the sm_90 compile) and with 8 warps
    "nat_t": dict(nat_transposed=True),
    # stop 20 (H200 ncu: the fused 4K-16K kernels latency bound at 8 warps per SM): 4096 points
    # on 2-row tiles of 8 warps (every product a wgmma in the sm_90 compile), and the one-row
    # kernel capped at 168 registers, 3 programs per SM (416 B of spills at 4K)
    "r2_w8": dict(rows=2, num_warps=8),
    # the static-bound one-row kernels' last product accumulated in the dots (8K spills
    # 712 -> 484 B in the sm_90 compile), alone, with hoisted step-2 tables (364 B), and with
    # 168 registers / 3 programs per SM
    "acc_dot": dict(acc_dot=True),
    "acc_dot_hoist": dict(acc_dot=True, hoist_f2=True),
    "acc_dot_reg168_c3": dict(acc_dot=True, maxnreg=168, ctas_per_sm=3),
    # ... or formed in a second loop from scratch rows (4K: 238 registers, no spills; 96 B at
    # 168 registers against 416 B for the one-loop kernel; 8K: 580 B)
    "two_phase": dict(two_phase=True),
    "two_phase_reg168_c3": dict(two_phase=True, maxnreg=168, ctas_per_sm=3),
    "two_phase_hoist": dict(two_phase=True, hoist_f2=True),
    "reg168_c3": dict(maxnreg=168, ctas_per_sm=3),
    # stop 21 (H200): r2_w8 won the forward at 4K (1.14x causal, 1.09x circular) but not the
    # whole step everywhere (1.03x / 0.96x): with the filter gradient on one-row tiles of
    # 4 warps, and with a 128-register cap (two 8-warp programs per SM); two_phase at 168
    # registers won circular 8K's forward (1.11x) and lost the step (0.89x): with the filter
    # gradient uncapped (results/ab_fused_*_h200_stop21.log)
    "r2_w8_xc1": dict(rows=2, num_warps=8, bwd_rows=1, bwd_warps=4),
    "r2_w8_reg128_c2": dict(rows=2, num_warps=8, maxnreg=128, ctas_per_sm=2),
    "two_phase_reg168_c3_xcfree": dict(two_phase=True, maxnreg=168, ctas_per_sm=3, bwd_maxnreg=0),
    # the 2-row default of stop 21 at 4096 points against 4-row tiles and one program per SM
    "r4_w8": dict(rows=4, num_warps=8),
    "c1": dict(ctas_per_sm=1),
    "r1_w4": dict(rows=1, num_warps=4, bwd_rows=0, bwd_warps=0),
    # ... and under outer levels (causal 512K: radix 128 over the one-row 4096-point kernel):
    # separate backward passes, the fused R-row backward, the shared outer forward, and with
    # the radix-128 launch of the 2-row plans (uncapped, 3 programs per SM)
    "r2_w8_outer": _R2_OUTER,
    "r2_w8_outer_fused": dict(_R2_OUTER, fused_bwd=True, bwd_warps=8),
    "r2_w8_outer_shared": dict(_R2_OUTER, shared_bwd_outer=True),
    # stop 21's 512K default (2-row tiles, shared backward pass) with the radix-128 2-row launch
    "o3_shared": dict(outer_maxnreg=None, outer_ctas_per_sm=3),
    "r2_w8_outer_o3": dict(_R2_OUTER, outer_maxnreg=None, outer_ctas_per_sm=3),
    "nat_t_c16": dict(nat_transposed=True, chunk=16),
    "nat_t_w8": dict(nat_transposed=True, num_warps=8),
    # ... and the fused backward's pass too (16K fused, one-row plans under outer levels)
    "nat_t_all": dict(nat_transposed=True, nat_transposed_bwd=True),
    "nat_t_all_c16": dict(nat_transposed=True, nat_transposed_bwd=True, chunk=16),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="131072,1048576")
    ap.add_argument("--variants", default="fused,fused_w8", help=",".join(VARIANTS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gated", action="store_true", help="pre/post gates and D")
    ap.add_argument("--circular", action="store_true", help="circular convolution, L = N")
    ap.add_argument("--batch", type=int, default=0, help="B instead of the workload's")
    ap.add_argument("--max-fused", type=int, default=0, help="cap the fused size (smoke runs)")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: TRITON_INTERPRET=1 smoke run

    def bench(fn) -> float:
        if dev == "cpu":
            import time

            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        import triton.testing

        return triton.testing.do_bench(fn, warmup=5, rep=100, return_mode="median")

    names = ["default"] + [v for v in args.variants.split(",") if v and v != "default"]
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu (interpreter)"
    print(f"# device: {name} | torch {torch.__version__}")
    print(f"# gates and D: {args.gated} | circular: {args.circular}")
    print(
        "N | B | H | variant | ms | torch ms | speed-up vs torch | vs default | grad dist"
        " | fwd err64 | du err64 | fwd ms | fwd vs default"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        run_size(n, args, names, bench, dev)
        if dev == "cuda":
            torch.cuda.empty_cache()


def run_size(n: int, args: argparse.Namespace, names: list[str], bench, dev: str) -> None:
    """Time the default plan and the variants at FFT size ``n``; print one row each."""
    causal = not args.circular
    b, h, seq = workload("padded_bwd" if causal else "circular", n, {})
    if dev == "cpu":
        b, h = 3, 2
    b = args.batch or b
    gen = torch.Generator(device=dev).manual_seed(0)
    u = torch.randn(b, h, seq, device=dev, generator=gen).to(torch.bfloat16)
    k = torch.randn(h, seq, device=dev, generator=gen) / math.sqrt(seq)
    dy = torch.randn(b, h, seq, device=dev, generator=gen).to(torch.bfloat16)
    g1 = g2 = d = None
    if args.gated:
        g1 = torch.randn(b, h, seq, device=dev, generator=gen).to(torch.bfloat16)
        g2 = torch.randn(b, h, seq, device=dev, generator=gen).to(torch.bfloat16)
        d = torch.randn(h, device=dev, generator=gen).requires_grad_(True)
    leaves = [t.requires_grad_(True) for t in (u, k) if t is not None]
    if args.gated:
        leaves += [g1.requires_grad_(True), g2.requires_grad_(True), d]
    extra = {"max_fused": args.max_fused} if args.max_fused else {}
    base = plan_for(seq, seq, causal, u.dtype, batch=b, **extra)
    plans = {}
    for v in names:
        kw = dict(VARIANTS[v])
        if "max_fused" in kw:  # a structure variant: plan_for's own choice at that limit
            mf = kw.pop("max_fused")
            plan = plan_for(seq, seq, causal, u.dtype, batch=b, max_fused=mf)
            if kw.pop("reverse_outer", False):  # (outer_io follows the first level)
                kw.update(outer=tuple(reversed(plan.outer)), outer_io=0)
            plans[v] = dataclasses.replace(plan, **kw)
            print(f"# {n} {v}: {plans[v].describe()} {kw}", flush=True)
        else:
            plans[v] = dataclasses.replace(base, **kw)

    def step(plan) -> None:
        for t in leaves:
            t.grad = None
        fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, causal=causal, plan=plan).backward(dy)

    def theirs() -> None:
        for t in leaves:
            t.grad = None
        y = torch_rfft_conv(torch, u, k, g1, g2, causal)
        if d is not None:
            x = u.float() if g1 is None else u.float() * g1.float()
            y = y + d[:, None] * x * (1.0 if g2 is None else g2.float())
        y.backward(dy)

    grads = {}
    for v in list(names):
        try:
            step(plans[v])
        except Exception as e:  # a structure that does not compile / fit: reported, skipped
            print(f"# {n} {v}: failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
            names = [x for x in names if x != v]
            continue
        grads[v] = [t.grad.double() for t in leaves]
    # errors against float64 on a slice (2 rows, 8 channels): the forward and du
    sl = (slice(0, 2), slice(0, 8))
    g1s = None if g1 is None else g1[sl].detach().double()
    g2s = None if g2 is None else g2[sl].detach().double()
    u64 = u[sl].detach().double().requires_grad_(True)
    y64 = ref64(torch, u64, k[:8].detach(), g1s, g2s, causal)
    if d is not None:
        x64 = u64 * (1.0 if g1s is None else g1s)
        y64 = y64 + d[:8, None].detach().double() * x64 * (1.0 if g2s is None else g2s)
    y64.backward(dy[sl].double())
    err = {}
    with torch.no_grad():
        for v in names:
            y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, causal=causal, plan=plans[v])
            du = grads[v][0][sl]
            err[v] = (
                float((y[sl].double() - y64).norm() / y64.norm()),
                float((du - u64.grad).norm() / u64.grad.norm()),
            )
    dist = {}
    for v in names:
        dist[v] = max(
            float((a - b0).norm() / b0.norm().clamp_min(1e-30))
            for a, b0 in zip(grads[v], grads["default"], strict=True)
        )
    del grads
    times: dict[str, list[float]] = {v: [] for v in [*names, "torch"]}
    fwd: dict[str, list[float]] = {v: [] for v in names}

    def forward(plan) -> None:
        with torch.no_grad():
            fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, causal=causal, plan=plan)

    for _ in range(args.rounds):
        for v in names:
            times[v].append(bench(lambda v=v: step(plans[v])))
            fwd[v].append(bench(lambda v=v: forward(plans[v])))
        times["torch"].append(bench(theirs))
    med = {v: statistics.median(t) for v, t in times.items()}
    fmed = {v: statistics.median(t) for v, t in fwd.items()}
    for v in names:
        print(
            f"{n} | {b} | {h} | {v} | {med[v]:.3f} | {med['torch']:.3f} | "
            f"{med['torch'] / med[v]:.2f} | {med['default'] / med[v]:.2f} | {dist[v]:.1e} | "
            f"{err[v][0]:.2e} | {err[v][1]:.2e} | {fmed[v]:.3f} | "
            f"{fmed['default'] / fmed[v]:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
