"""Where forward + backward time goes: GPU kernel time against host (launch) time.

For each FFT size (``padded_bwd`` workload of ``bench_conv``: B and H as its anchors table, or
capped as FlashFFTConv's benchmark beyond it; L=N/2, bf16), runs
``fftconv_triton(u, k).backward(dy)`` under ``torch.profiler`` and prints, per iteration:

* ``step_ms``   -- median wall time of one step (``triton.testing.do_bench``, as bench_conv),
* ``gpu_ms``    -- the sum of the step's CUDA kernel times (what the GPU actually works),
* ``host_ms``   -- host time to enqueue one step (50 steps queued back to back, no sync),
* ``kernels``   -- CUDA kernels launched per step,

then the top kernels by GPU time. If ``step_ms`` is near ``host_ms`` and well above
``gpu_ms``, the step is bound by Python/launch overhead, not by the kernels.

    python benchmarks/profile_backward.py --sizes 256,512,1024,4096
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402

from bench_conv import ANCHORS, load_anchors, workload  # noqa: E402
from dnastream.kernels.fftconv_triton import fftconv_triton, plan_for  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,512,1024,2048,4096")
    ap.add_argument("--batch", type=int, default=0, help="B (default: bench_conv's workload)")
    ap.add_argument("--heads", type=int, default=0, help="H (default: bench_conv's workload)")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--cprofile", action="store_true", help="also print the host's hot spots")
    ap.add_argument("--forward-only", action="store_true", help="no backward (no autograd)")
    args = ap.parse_args()
    import triton

    print(f"# device: {torch.cuda.get_device_name()} | torch {torch.__version__}")
    anchors_fwd = load_anchors(ANCHORS)[0] if ANCHORS.exists() else {}
    summary = []
    for n in (int(s) for s in args.sizes.split(",")):
        batch, heads, _ = workload("padded_bwd", n, anchors_fwd)
        batch, heads, seq = args.batch or batch, args.heads or heads, n // 2
        u = torch.randn(batch, heads, seq, device="cuda").to(torch.bfloat16)
        k = torch.randn(heads, seq, device="cuda") / math.sqrt(seq)
        dy = torch.randn_like(u)
        ur = u.clone().requires_grad_(True)
        kr = k.clone().requires_grad_(True)
        plan = plan_for(seq, seq, True, u.dtype, batch=batch)

        def step(ur=ur, kr=kr, plan=plan, dy=dy) -> None:
            if args.forward_only:
                with torch.no_grad():
                    fftconv_triton(ur, kr, causal=True, plan=plan)
                return
            ur.grad = kr.grad = None
            fftconv_triton(ur, kr, causal=True, plan=plan).backward(dy)

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        step_ms = float(triton.testing.do_bench(step, warmup=10, rep=200, return_mode="median"))
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(50):
            step()
        host_ms = (time.perf_counter() - t0) / 50 * 1e3
        torch.cuda.synchronize()
        iters = 10
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(iters):
                step()
            torch.cuda.synchronize()
        kern: dict[str, list[float]] = {}
        for ev in prof.events():
            if ev.device_type == torch.autograd.DeviceType.CUDA:
                kern.setdefault(ev.name, []).append(ev.device_time_total / 1e3)
        gpu_ms = sum(sum(v) for v in kern.values()) / iters
        count = sum(len(v) for v in kern.values()) / iters
        summary.append((n, step_ms, gpu_ms, host_ms, count, plan.describe()))
        print(
            f"\n## N={n} B={batch} H={heads} ({plan.describe()}): step {step_ms:.3f} ms,"
            f" kernels {gpu_ms:.3f} ms, host {host_ms:.3f} ms, {count:.0f} kernels/step"
        )
        if args.cprofile:
            import cProfile
            import pstats

            pr = cProfile.Profile()
            pr.enable()
            for _ in range(50):
                step()
            pr.disable()
            torch.cuda.synchronize()
            pstats.Stats(pr).sort_stats("tottime").print_stats(30)
        top = sorted(kern.items(), key=lambda kv: -sum(kv[1]))[: args.top]
        for name, times in top:
            print(f"#   {sum(times) / iters:8.4f} ms  x{len(times) / iters:4.1f}  {name[:110]}")
    print("\nN | step_ms | gpu_ms | host_ms | kernels | plan")
    for n, s, g, h, c, p in summary:
        print(f"{n} | {s:.3f} | {g:.3f} | {h:.3f} | {c:.0f} | {p}")


if __name__ == "__main__":
    main()
