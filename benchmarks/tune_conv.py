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


def tune_case(case: str, fwd: dict, t_start: float, args) -> tuple:
    """Coordinate search for one case (:func:`dnastream.kernels.autotune.tune`); returns
    (default plan, default ms, best ms, best settings that differ from the default)."""
    mode, n = case.split(":")
    b, h, seq = workload(mode, int(n), fwd)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=DEFAULT_CASES)
    ap.add_argument("--budget-s", type=float, default=480.0, help="stop searching after this")
    ap.add_argument("--case-budget-s", type=float, default=60.0, help="search time per case")
    ap.add_argument("--rep-ms", type=int, default=25)
    ap.add_argument("--json", default=None)
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
