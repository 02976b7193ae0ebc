"""Run a few FFT-convolution cases once each inside a CUDA profiler range (for Nsight Compute).

Every case is compiled and warmed up first; then ``cudaProfilerStart`` / ``cudaProfilerStop``
bracket one call per case, so::

    ncu --profile-from-start off --clock-control none --section SpeedOfLight \\
        --section Occupancy --section LaunchStats python benchmarks/profile_conv.py

profiles exactly the Triton kernels of those calls (the filter spectra are precomputed).
Cases are ``mode:N`` with FlashFFTConv's workload (see ``bench_conv.workload``). With
``--backward`` each call is a training step through ``dnastream.kernels.fftconv`` (forward
and backward, the filter spectrum computed in the step, as training does).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402

from bench_conv import ANCHORS, load_anchors, workload  # noqa: E402
from dnastream.kernels import fftconv  # noqa: E402
from dnastream.kernels.fftconv_triton import fftconv_triton, filter_spectrum, plan_for  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="circular:4096,padded:1024,padded:16384,padded:1048576")
    ap.add_argument("--backward", action="store_true", help="forward + backward steps")
    args = ap.parse_args()
    fwd, _ = load_anchors(ANCHORS)
    calls = []
    for case in args.cases.split(","):
        mode, n = case.split(":")
        b, h, seq = workload(mode, int(n), fwd)
        u = torch.randn(b, h, seq, device="cuda").to(torch.bfloat16)
        k = torch.randn(h, seq, device="cuda") / math.sqrt(seq)
        g = None
        if mode == "gated_padded":
            g = torch.randn_like(u)
        causal = mode != "circular"
        plan = plan_for(seq, seq, causal, u.dtype, batch=b)
        spec = filter_spectrum(k, plan)

        def call(u=u, k=k, g=g, causal=causal, plan=plan, spec=spec):
            return fftconv_triton(
                u, k, pregate=g, postgate=g, causal=causal, plan=plan, k_spectrum=spec
            )

        if args.backward:
            u.requires_grad_(True)
            k.requires_grad_(True)
            dy = torch.randn(b, h, seq, device="cuda").to(torch.bfloat16)

            def call(u=u, k=k, g=g, causal=causal, dy=dy):  # noqa: F811 - the step instead
                u.grad = k.grad = None
                fftconv(u, k, pregate=g, postgate=g, causal=causal).backward(dy)

        call()
        torch.cuda.synchronize()
        calls.append((case, plan, call))
        print(f"# {case}: B={b} H={h} L={seq} plan {plan.describe()}", flush=True)
    torch.cuda.cudart().cudaProfilerStart()
    for _case, _plan, call in calls:
        call()
        torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()


if __name__ == "__main__":
    main()
