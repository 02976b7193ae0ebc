"""A/B in one process: filter spectrum and filter gradient by DFT-table products or by FFTs.

Times ``fftconv_triton(u, k).backward(dy)`` (``padded_bwd`` workload of ``bench_conv``: B=64,
H=768, L=N/2, bf16) and the forward alone with ``monarch.GEMM_SPECTRUM_MAX`` set to N (tables)
and to 0 (FFT + gather), alternating ``--rounds`` times, and prints medians per size.

    python benchmarks/ab_spectrum_gemm.py --sizes 256,512,1024
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from dnastream.kernels import monarch  # noqa: E402
from dnastream.kernels.fftconv_triton import fftconv_triton, plan_for  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import triton.testing

    print(f"# device: {torch.cuda.get_device_name()} | torch {torch.__version__}")
    print("N | mode | tables ms | fft ms | fft / tables")
    for n in (int(s) for s in args.sizes.split(",")):
        seq = n // 2
        u = torch.randn(64, 768, seq, device="cuda").to(torch.bfloat16).requires_grad_(True)
        k = (torch.randn(768, seq, device="cuda") / math.sqrt(seq)).requires_grad_(True)
        dy = torch.randn_like(u)
        plan = plan_for(seq, seq, True, u.dtype, batch=64)

        def step(u=u, k=k, plan=plan, dy=dy) -> None:
            u.grad = k.grad = None
            fftconv_triton(u, k, plan=plan).backward(dy)

        def fwd(u=u, k=k, plan=plan) -> None:
            with torch.no_grad():
                fftconv_triton(u, k, plan=plan)

        for mode, fn in (("fwd+bwd", step), ("fwd", fwd)):
            times: dict[int, list[float]] = {n: [], 0: []}
            for _ in range(args.rounds):
                for limit in (n, 0):
                    monarch.GEMM_SPECTRUM_MAX = limit
                    fn()
                    times[limit].append(
                        triton.testing.do_bench(fn, warmup=10, rep=100, return_mode="median")
                    )
            a, b = statistics.median(times[n]), statistics.median(times[0])
            print(f"{n} | {mode} | {a:.3f} | {b:.3f} | {b / a:.2f}", flush=True)


if __name__ == "__main__":
    main()
