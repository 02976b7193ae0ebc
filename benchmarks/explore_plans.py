"""Time plan *structures* on this GPU: what the launch-field tuner cannot change.

``benchmarks/tune_conv.py`` searches launch settings of a fixed plan (warps, register caps,
tiles). This script compares plans of different shape for the same convolution: the largest
FFT done in one fused program (8192 today: 16384 = 128 x 128 and 32768 = 256 x 128 in one
kernel instead of an outer radix-16 pass through HBM on each side), the inner FFT size under
the outer levels, and the outer kernels' twiddle computation (``outer_tw_split``). Each
variant is checked against a float64 convolution (relative L2 error, bf16 bar 3e-3) and timed
(median of ``triton.testing.do_bench``) beside the default plan and PyTorch's rfft convolution,
FlashFFTConv's workload (``bench_conv.workload``). Triton compiles the big fused kernels
slowly, so ``--warm-jobs N`` first runs every variant once in N worker processes (the
compiled kernels land in Triton's on-disk cache) before the timing pass in this process.

    python benchmarks/explore_plans.py --warm-jobs 12
    python benchmarks/explore_plans.py --cases padded:16384 --warm-jobs 0
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

DEFAULT_CASES = (
    "padded:2048,gated_padded:2048,circular:2048,padded:4096,circular:4096,padded:8192,"
    "circular:8192,padded:16384,gated_padded:16384,circular:16384,padded:32768,gated_padded:32768,"
    "padded:65536,padded:262144,padded:1048576,circular:1048576,padded:4194304"
)


def variants(mode: str, n: int, batch: int):
    """(label, plan) pairs for one case; the first is the default plan."""
    import torch

    from dnastream.kernels.monarch import plan_for

    causal = mode != "circular"
    seq = n // 2 if causal else n
    base = plan_for(seq, seq, causal, torch.bfloat16, batch=batch)
    out = [("default", base)]
    if not base.outer and 2048 <= base.inner <= 8192:  # fused: the other split, row tiles
        swap = dict(n1=base.n2, n2=base.n1, io_rows=0, chunk=min(32, base.n2))
        if base.n1 != base.n2:
            out.append(("swap", dataclasses.replace(base, **swap)))
        for label, kw in (
            ("rows2_w4_cap128_c4", dict(rows=2, num_warps=4, maxnreg=128, ctas_per_sm=4)),
            ("rows2_w8", dict(rows=2, num_warps=8, maxnreg=None, ctas_per_sm=2)),
            ("rows2_w4", dict(rows=2, num_warps=4, maxnreg=None, ctas_per_sm=2)),
        ):
            out.append((label, dataclasses.replace(base, **kw)))
            if base.inner == 2048:
                out.append(("swap_" + label, dataclasses.replace(base, **swap, **kw)))
    if base.static_scale:  # the default: against the row/column-max scaling it replaced
        out.append(("dynamic_scale", dataclasses.replace(base, static_scale=False)))
    elif base.rows == 1:  # fp16 operands scaled by per-tile bounds (no per-chunk reductions)
        out.append(("static_scale", dataclasses.replace(base, static_scale=True)))
    elif base.inner == 2048:
        out.append(
            ("rows1_static", dataclasses.replace(base, rows=1, bwd_rows=0, static_scale=True))
        )
    if base.rows > 1 and not base.static_scale:  # R-row kernels: L1-norm / derived scales
        out.append(("static_rows", dataclasses.replace(base, static_scale=True)))
    if base.rows > 1 and base.mma == "fp16" and not base.static_inv:  # inverse: known bounds
        out.append(("static_inv", dataclasses.replace(base, static_scale=True, static_inv=True)))
    if base.outer:
        out.append(("tw_split", dataclasses.replace(base, outer_tw_split=True)))
        out.append(("bf16_buffer", dataclasses.replace(base, outer_bf16=True, outer_fp16=False)))
    for fused in (16384, 32768):
        if n > fused * 8 and fused == 32768:
            continue
        p = plan_for(seq, seq, causal, torch.bfloat16, batch=batch, max_fused=fused)
        if p is None or p.inner == base.inner or p.inner != fused:
            continue
        if p.inner == 32768 and not causal:  # 254 KB of shared memory: does not launch
            continue
        grid = ((8, 16), (16, 16)) if n == p.inner else ((8, 16),)
        for warps, chunk in grid:
            for split in (False, True) if p.outer else (False,):
                label = f"inner{p.inner}_w{warps}_c{chunk}" + ("_tw" if split else "")
                q = dataclasses.replace(
                    p, num_warps=warps, chunk=chunk, maxnreg=None, outer_tw_split=split
                )
                out.append((label, q))
    return out


def _inputs(mode: str, n: int):
    import torch

    from bench_conv import ANCHORS, load_anchors, workload

    b, h, seq = workload(mode, n, load_anchors(ANCHORS)[0])
    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(b, h, seq, device="cuda", generator=g).to(torch.bfloat16)
    k = (
        torch.randn(h, seq, device="cuda", generator=g)
        * torch.exp(-torch.arange(seq, device="cuda") / (seq / 8))
        / math.sqrt(seq / 8)
    )
    gate = None
    if mode == "gated_padded":
        gate = torch.rand(b, h, seq, device="cuda", generator=g).to(torch.bfloat16)
    return b, h, seq, u, k, gate


def _run(plan, u, k, gate, causal):
    from dnastream.kernels.fftconv_triton import fftconv_triton

    return fftconv_triton(u, k, pregate=gate, postgate=gate, causal=causal, plan=plan)


def _warm(jobs: list[tuple[str, str]]) -> list[str]:
    """Worker: run each (case, label) once so its kernels are compiled into the disk cache."""
    import torch

    done = []
    for case, label in jobs:
        mode, n = case.split(":")
        b, h, seq, u, k, gate = _inputs(mode, int(n))
        plan = dict(variants(mode, int(n), b))[label]
        try:
            _run(plan, u, k, gate, mode != "circular")
            torch.cuda.synchronize()
            done.append(f"{case} {label}")
        except Exception as e:  # noqa: BLE001 - reported by the timing pass again
            done.append(f"{case} {label} FAILED {type(e).__name__}: {str(e)[:120]}")
        del u, k, gate
        torch.cuda.empty_cache()
    return done


def time_case(case: str) -> None:
    """Check and time every variant of one case; prints one table row per variant."""
    import torch
    import triton.testing

    from bench_conv import ref64, rel_err, torch_rfft_conv

    mode, n = case.split(":")
    causal = mode != "circular"
    b, h, seq, u, k, gate = _inputs(mode, int(n))
    g2 = gate[:2] if gate is not None else None
    y64 = ref64(torch, u[:2], k, g2, g2, causal)

    def bench(fn) -> float:
        return float(triton.testing.do_bench(fn, warmup=5, rep=40, return_mode="median"))

    t_torch = bench(lambda: torch_rfft_conv(torch, u, k, gate, gate, causal))
    t_def = None
    for label, plan in variants(mode, int(n), b):
        try:
            y = _run(plan, u, k, gate, causal)
            err = rel_err(torch, y[:2], y64)
            del y
            ms = bench(lambda plan=plan: _run(plan, u, k, gate, causal))
        except Exception as e:  # noqa: BLE001 - a variant that fails is a result
            print(f"{case} | {b} | {h} | {seq} | {label} | {plan.describe()} | FAILS: "
                  f"{type(e).__name__}: {str(e)[:100]} |||||")  # fmt: skip
            torch.cuda.empty_cache()
            continue
        t_def = t_def or ms
        flag = "" if err <= 3e-3 else " (ERROR BAR MISSED)"
        print(f"{case} | {b} | {h} | {seq} | {label} | {plan.describe()} | {ms:.3f} | "
              f"{t_def / ms:.2f}x | {t_torch:.3f} | {t_torch / ms:.2f}x | {err:.2e}{flag}",
              flush=True)  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=DEFAULT_CASES)
    ap.add_argument("--warm-jobs", type=int, default=8)
    args = ap.parse_args()
    import torch
    import triton

    from bench_conv import ANCHORS, load_anchors, workload

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    work = []
    for case in cases:
        mode, n = case.split(":")
        b, _, _ = workload(mode, int(n), load_anchors(ANCHORS)[0])
        work += [(case, label) for label, _ in variants(mode, int(n), b)]
    t0 = time.time()
    if args.warm_jobs > 0:
        # big kernels first, spread round-robin over the workers
        buckets = [[] for _ in range(args.warm_jobs)]
        for i, item in enumerate(work):
            buckets[i % args.warm_jobs].append(item)
        with mp.get_context("spawn").Pool(args.warm_jobs) as pool:
            for lines in pool.map(_warm, [b for b in buckets if b]):
                for line in lines:
                    if "FAILED" in line:
                        print("# warm:", line, flush=True)
        print(f"# warmed {len(work)} variants in {time.time() - t0:.0f} s", flush=True)

    card = torch.cuda.get_device_name()
    print(f"# {card} | torch {torch.__version__} | triton {triton.__version__}")
    print("case | B | H | L | variant | plan | ms | vs default | torch ms | speed-up vs torch "
          "| rel err")  # fmt: skip
    print("---|---|---|---|---|---|---|---|---|---|---")
    for case in cases:
        time_case(case)
        torch.cuda.empty_cache()
    print(f"# total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
