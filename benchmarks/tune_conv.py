"""Tune FFT-convolution plans on this GPU: coordinate search over launch parameters.

For each case (``mode:N``, FlashFFTConv's workload as in ``bench_conv``) the default plan of
:func:`dnastream.kernels.monarch.plan_for` is timed, then variants of the inner (fused) kernel's
parameters (warps, register cap, persistent programs per SM, spectrum chunk / rows per tile),
then, with the best inner choice, of the outer kernels' (warps, register cap, programs per
SM, columns per tile). Every variant's output is checked against a float64 convolution
(relative L2 error <= 3e-3, the bf16 bar), so a faster plan is never a wrong one. Prints one
line per variant and a summary table (default ms, best ms, gain, best settings); ``--json``
writes the best settings, ``--write-cache`` stores them where
:func:`dnastream.kernels.autotune.tuned_plan` finds them (same keys and search as the runtime
autotuner, :mod:`dnastream.kernels.autotune`).

    python benchmarks/tune_conv.py --cases padded:4096,padded:16384 --json tuned.json
    python benchmarks/tune_conv.py --write-cache
"""

from __future__ import annotations

import argparse
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

from bench_conv import ANCHORS, load_anchors, workload  # noqa: E402
from dnastream.kernels import autotune  # noqa: E402
from dnastream.kernels.monarch import plan_for  # noqa: E402

DEFAULT_CASES = (
    "padded:256,padded:1024,padded:2048,padded:4096,padded:8192,circular:4096,"
    "padded:16384,padded:65536,padded:1048576"
)

# the search grids live in dnastream.kernels.autotune (also used for runtime tuning)
inner_grid = autotune.inner_grid
outer_grid = autotune.outer_grid


def _shape(mode: str, n: int, fwd: dict, args) -> tuple[int, int, int]:
    """(B, H, L): bench_conv's workload, with ``--batch`` / ``--heads`` replacing B / H (the
    tuning entries are keyed by the batch bucket: B = 2 is the one-pair plans of training at
    two sequences per step, B = 1 of streaming)."""
    b, h, seq = workload(mode, n, fwd)
    return args.batch or b, args.heads or h, seq


def tune_case(case: str, fwd: dict, t_start: float, args) -> tuple:
    """Coordinate search for one case (:func:`dnastream.kernels.autotune.tune`); returns
    (default plan, default ms, best ms, best settings that differ from the default)."""
    mode, n = case.split(":")
    b, h, seq = _shape(mode, int(n), fwd, args)
    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(b, h, seq, device="cuda", generator=g).to(torch.bfloat16)
    k = torch.randn(h, seq, device="cuda", generator=g) / math.sqrt(seq)
    gate = torch.randn(b, h, seq, device="cuda", generator=g).to(torch.bfloat16)
    gated = mode == "gated_padded"
    causal = mode != "circular"
    base = plan_for(seq, seq, causal, u.dtype, batch=b)

    def timer(fn, plan) -> float:
        return float(triton.testing.do_bench(fn, warmup=5, rep=args.rep_ms, return_mode="median"))

    budget = min(args.case_budget_s, args.budget_s - (time.perf_counter() - t_start))
    entry = autotune.tune(
        u, k, causal=causal, pregate=gate if gated else None, postgate=gate if gated else None,
        timer=timer, budget_s=max(0.0, budget), save=args.write_cache,
        log=lambda msg: print(f"#   {case} {msg}", flush=True),
    )  # fmt: skip
    if not entry:
        return base.describe(), None, None, {}
    default = autotune.launch_fields(base)
    best_kw = {f: entry[f] for f in autotune.LAUNCH_FIELDS if entry[f] != default[f]}
    if args.write_cache:
        print(f"#   {case}: stored as {entry['key']} for {entry['gpu']}", flush=True)
    return base.describe(), entry["default_ms"], entry["ms"], best_kw


def bwd_grid(plan) -> list[dict]:
    """Variants of the filter-gradient kernels' settings (forward+backward timing)."""
    out = []
    for ch in (16, 32, 64):
        if ch > plan.n1:
            continue
        for nw in (4, 8):
            for reg in (None, 128):
                out.append(dict(bwd_chunk=ch, bwd_warps=nw, bwd_maxnreg=reg))
    if plan.rows == 1 and not plan.outer:  # du and the filter gradient in one pass
        out += [dict(fused_bwd=True), dict(fused_bwd=True, hoist_f2=True)]
    if plan.rows > 1 and plan.outer and not plan.fused_bwd:
        # R-row plans under outer levels (separate passes): the filter-gradient kernel without
        # the inner kernel's register cap, the shared outer forward, the fused R-row backward
        out += [
            dict(bwd_maxnreg=0),
            dict(bwd_warps=8, bwd_maxnreg=0),
            dict(shared_bwd_outer=True),
            dict(shared_bwd_outer=True, bwd_maxnreg=0),
        ]
        if plan.bwd_rows in (0, plan.rows):
            out.append(dict(fused_bwd=True, bwd_warps=8, bwd_maxnreg=0))
    return out


def tune_backward_case(case: str, fwd: dict, t_start: float, args) -> tuple:
    """Forward+backward (gradients of u and k, like bench_conv's padded_bwd) over the
    filter-gradient kernels' settings; each variant's du and dk are checked against float64."""
    from bench_conv import ref64, rel_err
    from dnastream.kernels.fftconv_triton import fftconv_triton

    t_case = time.perf_counter()
    mode, n = case.split(":")
    b, h, seq = _shape(mode, int(n), fwd, args)
    causal = mode != "circular"
    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(b, h, seq, device="cuda", generator=g).to(torch.bfloat16).requires_grad_()
    k = (torch.randn(h, seq, device="cuda", generator=g) / math.sqrt(seq)).requires_grad_()
    dy = torch.randn(b, h, seq, device="cuda", generator=g).to(torch.bfloat16)
    base = autotune.tuned_plan(seq, seq, causal, u.dtype, batch=b, gated=False, device="cuda")
    # float64 reference on the first 8 channels over the WHOLE batch: dk sums over it
    sl = (slice(None), slice(0, 8))
    u64 = u.detach()[sl].double().requires_grad_()
    k64 = k.detach()[:8].double().requires_grad_()
    ref64(torch, u64, k64, causal=causal).backward(dy[sl].double())

    def run(plan):
        u.grad = k.grad = None
        fftconv_triton(u, k, causal=causal, plan=plan).backward(dy)

    def timed(kw, plan):
        try:
            run(plan)
            errs = (rel_err(torch, u.grad[sl], u64.grad), rel_err(torch, k.grad[:8], k64.grad))
            if not all(math.isfinite(e) and e <= 3e-3 for e in errs):
                print(f"#   {case} bwd {kw}: WRONG {errs}", flush=True)
                return None
            ms = float(triton.testing.do_bench(lambda: run(plan), warmup=3, rep=args.rep_ms))
        except Exception as e:  # noqa: BLE001 - out of resources etc.
            print(f"#   {case} bwd {kw}: fails ({type(e).__name__}: {str(e)[:100]})", flush=True)
            return None
        print(f"#   {case} bwd {kw}: {ms:.4f} ms", flush=True)
        return ms

    import dataclasses

    base_ms = timed({}, base)
    best_ms, best_kw = base_ms, {}
    for kw in bwd_grid(base):
        now = time.perf_counter()
        if now - t_start > args.budget_s or now - t_case > args.case_budget_s:
            print("# budget spent; stopping the search", flush=True)
            break
        ms = timed(kw, dataclasses.replace(base, **kw))
        if ms is not None and (best_ms is None or ms < best_ms):
            best_ms, best_kw = ms, kw
    if args.write_cache and best_kw:
        gpu = autotune.device_id("cuda")
        key = autotune.plan_key_for(base, u.dtype, b, False)
        entry = dict(autotune.lookup(gpu, key) or {**autotune.launch_fields(base)})
        entry.update(best_kw, bwd_ms=best_ms, bwd_default_ms=base_ms)
        autotune.store(gpu, key, entry)
        print(f"#   {case}: backward settings stored under {key}", flush=True)
    return base.describe(), base_ms, best_ms, best_kw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=DEFAULT_CASES)
    ap.add_argument("--budget-s", type=float, default=480.0, help="stop searching after this")
    ap.add_argument("--case-budget-s", type=float, default=60.0, help="search time per case")
    ap.add_argument("--rep-ms", type=int, default=25)
    ap.add_argument("--json", default=None)
    ap.add_argument("--batch", type=int, default=0, help="B instead of the workload's")
    ap.add_argument("--heads", type=int, default=0, help="H instead of the workload's")
    ap.add_argument(
        "--backward",
        action="store_true",
        help="tune the filter-gradient kernels, timing forward+backward (after any forward "
        "settings already stored for the case)",
    )
    ap.add_argument(
        "--write-cache",
        action="store_true",
        help="store each case's winner in the autotune cache used at run time "
        f"(${{DNASTREAM_CACHE_DIR}}/{autotune.CACHE_FILE}, default ~/.cache/dnastream/)",
    )
    args = ap.parse_args()
    t_start = time.perf_counter()
    fwd, _ = load_anchors(ANCHORS)
    card = torch.cuda.get_device_name()
    print(f"# device: {card} | torch {torch.__version__} | triton {triton.__version__}")
    summary = []
    best_all: dict[str, dict] = {}
    for case in args.cases.split(","):
        tune_fn = tune_backward_case if args.backward else tune_case
        desc, base_ms, best_ms, best_kw = tune_fn(case, fwd, t_start, args)
        summary.append((case, desc, base_ms, best_ms, best_kw))
        best_all[case] = dict(plan=desc, default_ms=base_ms, best_ms=best_ms, **best_kw)
        torch.cuda.empty_cache()
    what = "forward+backward" if args.backward else "forward"
    print(f"\n## Plan tuning ({what}), {card}, bf16\n")
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
