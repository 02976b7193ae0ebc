"""Tune FFT-convolution plans on this GPU: coordinate search over launch parameters.

For each case (``mode:N``, FlashFFTConv's workload as in ``bench_conv``) the default plan of
:func:`dnastream.kernels.monarch.plan_for` is timed, then variants of the inner (fused) kernel's
parameters (warps, register cap, persistent programs per SM, spectrum chunk / rows per tile),
then, with the best inner choice, of the outer kernels' (warps, register cap, programs per
SM, columns per tile). Every variant's output is checked against a float64 convolution
(relative L2 error <= 3e-3, the bf16 bar), so a faster plan is never a wrong one. Prints one
line per variant and a summary table (default ms, best ms, gain, best settings); ``--json``
writes the best settings.

    python benchmarks/tune_conv.py --cases padded:4096,padded:16384 --json tuned.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402
import triton.testing  # noqa: E402

from bench_conv import ANCHORS, load_anchors, ref64, rel_err, workload  # noqa: E402
from dnastream.kernels.fftconv_triton import fftconv_triton, filter_spectrum, plan_for  # noqa: E402

DEFAULT_CASES = (
    "padded:256,padded:1024,padded:2048,padded:4096,padded:8192,circular:4096,"
    "padded:16384,padded:65536,padded:1048576"
)


def inner_grid(plan) -> list[dict]:
    """Variants of the inner kernel's launch parameters."""
    out: list[dict] = []
    if plan.rows == 1:
        chunks = sorted({c for c in (16, 32, plan.chunk) if c <= plan.n1})
        for reg, nw, ch in itertools.product((128, None), (8, 4), chunks):
            ctas = (1, 2, 4) if reg is None else (2, 3, 4)
            for c in ctas:
                out.append(dict(num_warps=nw, maxnreg=reg, chunk=ch, ctas_per_sm=c))
    else:
        rows = sorted({r for r in (plan.rows // 2, plan.rows) if r >= 2})
        for reg, nw, r in itertools.product((128, None), (8, 4), rows):
            ctas = (1, 2, 4) if reg is None else (2, 3, 4)
            for c in ctas:
                out.append(dict(num_warps=nw, maxnreg=reg, rows=r, ctas_per_sm=c))
    return out


def outer_grid(plan) -> list[dict]:
    out: list[dict] = []
    blocks = sorted({b for b in (plan.outer_block // 2, plan.outer_block) if b >= 16})
    for reg, nw, blk in itertools.product((168, 128, None), (4, 8), blocks):
        for c in (2, 3, 4):
            out.append(
                dict(outer_warps=nw, outer_maxnreg=reg, outer_block=blk, outer_ctas_per_sm=c)
            )
    return out


def tune_case(case: str, fwd: dict, t_start: float, args) -> tuple:
    """Coordinate search for one case; returns (default plan, default ms, best ms, best kw)."""
    t_case = time.perf_counter()
    mode, n = case.split(":")
    b, h, seq = workload(mode, int(n), fwd)
    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(b, h, seq, device="cuda", generator=g).to(torch.bfloat16)
    k = torch.randn(h, seq, device="cuda", generator=g) / math.sqrt(seq)
    gate = torch.randn(b, h, seq, device="cuda", generator=g).to(torch.bfloat16)
    gated = mode == "gated_padded"
    causal = mode != "circular"
    base = plan_for(seq, seq, causal, u.dtype, batch=b)
    spec = filter_spectrum(k, base)

    def run(plan):
        return fftconv_triton(
            u,
            k,
            pregate=gate if gated else None,
            postgate=gate if gated else None,
            causal=causal,
            plan=plan,
            k_spectrum=spec,
        )

    sl = (slice(0, 2), slice(0, 8))
    g_sl = gate[sl] if gated else None
    y64 = ref64(torch, u[sl], k[:8], g_sl, g_sl, causal)

    def timed(kw: dict, plan) -> float | None:
        try:
            err = rel_err(torch, run(plan)[sl], y64)
            if not math.isfinite(err) or err > 3e-3:
                print(f"#   {case} {kw}: WRONG (rel err {err:.2e})", flush=True)
                return None
            ms = float(
                triton.testing.do_bench(
                    lambda: run(plan), warmup=5, rep=args.rep_ms, return_mode="median"
                )
            )
        except Exception as e:  # noqa: BLE001 - e.g. out of shared memory / registers
            print(f"#   {case} {kw}: fails ({type(e).__name__}: {str(e)[:100]})", flush=True)
            return None
        print(f"#   {case} {kw}: {ms:.4f} ms", flush=True)
        return ms

    base_ms = timed({}, base)
    best_kw: dict = {}
    best_ms = base_ms
    stages = [inner_grid] + ([outer_grid] if base.outer else [])
    for stage in stages:
        cur = dataclasses.replace(base, **best_kw)
        for kw in stage(cur):
            now = time.perf_counter()
            if now - t_start > args.budget_s or now - t_case > args.case_budget_s:
                print("# budget spent; stopping the search", flush=True)
                break
            try:
                plan = dataclasses.replace(cur, **kw)
            except ValueError:
                continue
            ms = timed(kw, plan)
            if ms is not None and (best_ms is None or ms < best_ms):
                best_ms = ms
                best_kw = {**best_kw, **kw}
    return base.describe(), base_ms, best_ms, best_kw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=DEFAULT_CASES)
    ap.add_argument("--budget-s", type=float, default=480.0, help="stop searching after this")
    ap.add_argument("--case-budget-s", type=float, default=60.0, help="search time per case")
    ap.add_argument("--rep-ms", type=int, default=25)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    t_start = time.perf_counter()
    fwd, _ = load_anchors(ANCHORS)
    card = torch.cuda.get_device_name()
    print(f"# device: {card} | torch {torch.__version__} | triton {triton.__version__}")
    summary = []
    best_all: dict[str, dict] = {}
    for case in args.cases.split(","):
        desc, base_ms, best_ms, best_kw = tune_case(case, fwd, t_start, args)
        summary.append((case, desc, base_ms, best_ms, best_kw))
        best_all[case] = dict(plan=desc, default_ms=base_ms, best_ms=best_ms, **best_kw)
        torch.cuda.empty_cache()
    print(f"\n## Plan tuning, {card}, bf16\n")
    print("| case | default plan | default ms | tuned ms | gain | tuned settings |")
    print("|---|---|---|---|---|---|")
    for case, desc, d_ms, b_ms, kw in summary:
        gain = f"{d_ms / b_ms:.2f}x" if d_ms and b_ms else "-"
        print(f"| {case} | {desc} | {d_ms or float('nan'):.3f} | {b_ms or float('nan'):.3f} "
              f"| {gain} | {kw} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(best_all, indent=1))


if __name__ == "__main__":
    main()
