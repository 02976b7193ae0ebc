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
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.backends.nvidia.compiler import get_ptxas  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import dnastream.kernels.fftconv_triton as ft  # noqa: E402
from dnastream.kernels.monarch import plan_for  # noqa: E402

KERNELS = (
    "_conv_nat_kernel",
    "_conv_kernel",
    "_xcorr_nat_kernel",
    "_xcorr_kernel",
    "_outer_fwd_kernel",
    "_outer_inv_kernel",
)
TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int64: "i64"}
VARIANTS = ("default", "hoist_f2", "fused_bwd", "sparse", "fp32")


class _Capture:
    """Stands in for a JIT kernel: ``kernel[grid](*args, **kw)`` records the call."""

    calls: list[tuple] = []

    def __init__(self, fn) -> None:
        self.fn = fn

    def __getitem__(self, grid):
        def call(*args, **kw):
            _Capture.calls.append((self.fn, args, kw))

        return call


def _signature(fn, args, kw) -> tuple[dict, dict, dict]:
    opts = {k: kw[k] for k in ("num_warps", "num_stages", "maxnreg") if k in kw}
    params = {p.name: p for p in fn.params}
    values = dict(zip(fn.arg_names, args, strict=False))
    values.update({k: v for k, v in kw.items() if k not in opts})
    sig, consts = {}, {}
    for i, name in enumerate(fn.arg_names):
        v = values.get(name, params[name].default)
        if params[name].is_constexpr:
            sig[name] = "constexpr"
            consts[(i,)] = v
        elif isinstance(v, torch.Tensor):
            sig[name] = "*" + TYPES[v.dtype]
        elif isinstance(v, bool):
            sig[name] = "i1"
        elif isinstance(v, int):
            sig[name] = "i64" if abs(v) >= 2**31 else "i32"
        elif isinstance(v, float):
            sig[name] = "fp32"
        else:
            raise TypeError(f"{fn.__name__}: argument {name} of type {type(v)}")
    return sig, consts, opts


def _ptxas(ptx: str, arch: int) -> tuple[str, str]:
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as fh:
        fh.write(ptx)
    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    out = subprocess.run(
        [get_ptxas(arch).path, "-v", "--gpu-name", gpu, fh.name, "-o", "/dev/null"],
        capture_output=True, text=True, check=False,
    ).stderr  # fmt: skip
    regs = re.findall(r"Used (\d+) registers", out)
    spill = re.findall(r"(\d+) bytes spill stores", out)
    return (regs[-1] if regs else "?"), (spill[-1] if spill else "?")


def report(label: str, run, arch: int, seen: set) -> None:
    _Capture.calls = []
    saved = {k: getattr(ft, k) for k in KERNELS}
    for k, f in saved.items():
        setattr(ft, k, _Capture(f))
    try:
        run()
    except Exception as e:  # noqa: BLE001 - the kernels did not run, outputs are garbage
        if not _Capture.calls:
            print(f"{label}: no launch ({type(e).__name__}: {e})")
    finally:
        for k, f in saved.items():
            setattr(ft, k, f)
    for fn, args, kw in _Capture.calls:
        sig, consts, opts = _signature(fn, args, kw)
        key = (fn.__name__, tuple(sorted((k, repr(v)) for k, v in consts.items())), repr(opts))
        if key in seen:
            continue
        seen.add(key)
        try:
            compiled = triton.compile(
                ASTSource(fn, sig, consts), target=GPUTarget("cuda", arch, 32), options=opts
            )
            regs, spill = _ptxas(compiled.asm["ptx"], arch)
            smem = compiled.metadata.shared
            flag = "  (> 232,448 B: will not launch)" if smem > 232_448 else ""
            print(f"| {label} | {fn.__name__} | {regs} | {spill} | {smem}{flag} | {opts} |")
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"| {label} | {fn.__name__} | FAILS: {type(e).__name__}: {str(e)[:200]} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,1024,2048,4096,8192,16384,1048576",
                    help="FFT sizes (padded causal: L = N / 2)")  # fmt: skip
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--arch", type=int, default=90, help="compute capability x 10")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    print(f"# triton {triton.__version__}, target sm_{args.arch}; one row per distinct kernel")
    print("| case | kernel | registers | spill stores B | shared B | launch options |")
    print("|---|---|---|---|---|---|")
    seen: set = set()
    for n in (int(x) for x in args.sizes.split(",")):
        seq = n // 2
        for variant in args.variants.split(","):
            dtype = torch.float32 if variant == "fp32" else torch.bfloat16
            base = plan_for(seq, seq, True, dtype, batch=args.batch,
                            freq_keep=0.25 if variant == "sparse" else None)  # fmt: skip
            if variant in ("hoist_f2", "fused_bwd"):
                if base.rows != 1 or base.outer:
                    continue
                base = dataclasses.replace(base, **{variant: True})
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
