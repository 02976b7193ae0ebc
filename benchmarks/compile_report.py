"""Compile the FFT-convolution kernels for a GPU architecture on a machine without one.

Runs the launchers of :mod:`dnastream.kernels.fftconv_triton` on CPU tensors with the kernel
launches intercepted, compiles each distinct kernel specialisation with Triton for the target
(default ``sm_90``, the H100/H200) and assembles its PTX with the ``ptxas`` that ships with
Triton, then prints registers per thread, spill stores and shared memory. It proves that a
plan variant compiles (and fits: an H100 has 232,448 B of shared memory per block and 65,536
registers per SM) before any GPU time is spent, and shows the register pressure that decides
occupancy (``ncu`` on an H100 showed the one-row kernel at 246-255 registers: one 4-warp
program... per 64K registers / (128 x regs)).

    python benchmarks/compile_report.py                       # default cases
    python benchmarks/compile_report.py --sizes 4096,8192 --variants default,fused_bwd --arch 90
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402
import triton  # noqa: E402

import dnastream.kernels.fftconv_triton as ft  # noqa: E402
from dnastream.kernels.compile_check import MAX_SHARED_BYTES, compile_launches  # noqa: E402
from dnastream.kernels.monarch import plan_for  # noqa: E402

VARIANTS = ("default", "hoist_f2", "fused_bwd", "sparse", "fp32")
# the backward of R-row plans under outer levels: fused on R-row tiles (warps, register cap)
# and the shared outer forward of the separate passes (not in the default list)
ROW_VARIANTS = {
    "fused_rows": dict(fused_bwd=True),
    "fused_rows_w8": dict(fused_bwd=True, bwd_warps=8),
    "fused_rows_w8_nocap": dict(fused_bwd=True, bwd_warps=8, bwd_maxnreg=0),
    "shared": dict(shared_bwd_outer=True),
    "shared_nocap": dict(shared_bwd_outer=True, bwd_maxnreg=0),
    "sep_nocap": dict(bwd_maxnreg=0),
    "sep_w8_nocap": dict(bwd_warps=8, bwd_maxnreg=0),
}
# the one-row kernels in the transposed orientation (stop 19), forward and filter gradient
ONE_ROW_VARIANTS = {
    "nat_t": dict(nat_transposed=True, nat_transposed_bwd=True),
    "nat_t_c16": dict(nat_transposed=True, nat_transposed_bwd=True, chunk=16),
    # stop 20: the last product accumulated in the dots (static-bound one-row kernels)
    "acc_dot": dict(acc_dot=True),
    "acc_dot_hoist": dict(acc_dot=True, hoist_f2=True),
    "two_phase": dict(two_phase=True),
}


def report(label: str, run, arch: int, seen: set) -> None:
    for r in compile_launches(run, arch, seen):
        if r.error:
            print(f"| {label} | {r.kernel} | FAILS: {r.error[:200]} |")
            continue
        flag = " (too much: will not launch)" if (r.shared_bytes or 0) > MAX_SHARED_BYTES else ""
        print(f"| {label} | {r.kernel} | {r.registers} | {r.spill_store_bytes} | "
              f"{r.shared_bytes}{flag} | {r.wgmma} / {r.mma_sync} | {r.options} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,1024,2048,4096,8192,16384,1048576",
                    help="FFT sizes (padded causal: L = N / 2)")  # fmt: skip
    every = (*VARIANTS, *ROW_VARIANTS, *ONE_ROW_VARIANTS)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(every)}")
    ap.add_argument("--arch", type=int, default=90, help="compute capability x 10")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    print(f"# triton {triton.__version__}, target sm_{args.arch}; one row per distinct kernel")
    print("| case | kernel | registers | spill stores B | shared B | wgmma / mma.sync | "
          "launch options |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    seen: set = set()
    for n in (int(x) for x in args.sizes.split(",")):
        seq = n // 2
        for variant in args.variants.split(","):
            dtype = torch.float32 if variant == "fp32" else torch.bfloat16
            base = plan_for(seq, seq, True, dtype, batch=args.batch,
                            freq_keep=0.25 if variant == "sparse" else None)  # fmt: skip
            if variant in ("hoist_f2", "fused_bwd"):
                if base.rows != 1 or (base.outer and variant == "hoist_f2"):
                    continue
                base = dataclasses.replace(base, **{variant: True})
            elif variant in ROW_VARIANTS:
                if base.rows == 1 or not base.outer:
                    continue
                base = dataclasses.replace(base, **ROW_VARIANTS[variant])
            elif variant in ONE_ROW_VARIANTS:
                if base.rows != 1:
                    continue
                base = dataclasses.replace(base, **ONE_ROW_VARIANTS[variant])
            h = 2
            u = torch.zeros(args.batch, h, seq, dtype=dtype)
            k = torch.zeros(h, seq)
            d = torch.zeros(h)
            g = torch.zeros_like(u)
            spec = ft.filter_spectrum(k, base)
            label = f"N={n} {variant}"
            fwd = functools.partial(ft.conv_forward, base, u, spec, d, g, g)
            bwd = functools.partial(ft.conv_backward, base, g, u, k, d, g, g, spec, (True,) * 5)
            report(label + " fwd", fwd, args.arch, seen)
            report(label + " bwd", bwd, args.arch, seen)


if __name__ == "__main__":
    main()
