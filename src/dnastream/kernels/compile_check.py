"""Compile the FFT-convolution kernels for a GPU architecture without a GPU (ptxas report).

The launchers of :mod:`dnastream.kernels.fftconv_triton` run on CPU tensors with the kernel
launches intercepted; each distinct kernel specialisation is compiled by Triton for the target
(default sm_90, H100/H200) and assembled by the ``ptxas`` that ships with Triton. The result
says whether a plan compiles and fits (shared memory per block at most 232,448 B on an H100)
and how many registers and spill bytes each kernel needs, which decides occupancy. Used by
``benchmarks/compile_report.py`` and by the CPU test suite (so a kernel change that would not
compile for the GPU fails CI, which has none).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from dnastream.kernels import fftconv_triton as ft

__all__ = ["MAX_SHARED_BYTES", "SHORT_CONV_KERNELS", "KernelReport", "compile_launches"]

MAX_SHARED_BYTES = 232_448
"""Shared memory one block may use on an H100 / H200 (sm_90)."""


@dataclass(frozen=True)
class KernelReport:
    """One compiled kernel specialisation."""

    kernel: str
    registers: int | None
    spill_store_bytes: int | None
    shared_bytes: int | None
    options: dict
    error: str | None = None
    cubin: bytes | None = None  # the compiled binary (``compile_launches(keep_cubin=True)``)
    wgmma: int | None = None  # wgmma.mma_async instructions in the PTX (sm_90 warpgroup MMA)
    mma_sync: int | None = None  # mma.sync instructions in the PTX (the pre-Hopper MMA)


KERNELS = (
    "_conv_nat_kernel",
    "_conv_nat_t_kernel",
    "_conv_kernel",
    "_xcorr_nat_kernel",
    "_xcorr_kernel",
    "_outer_fwd_kernel",
    "_outer_inv_kernel",
)
SHORT_CONV_KERNELS = ("_short_conv_fwd_kernel", "_short_conv_bwd_kernel")
TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int64: "i64"}


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


def _ptxas(ptx: str, arch: int) -> tuple[int | None, int | None]:
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as fh:
        fh.write(ptx)
    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    out = subprocess.run(
        [get_ptxas(arch).path, "-v", "--gpu-name", gpu, fh.name, "-o", "/dev/null"],
        capture_output=True, text=True, check=False,
    ).stderr  # fmt: skip
    regs = re.findall(r"Used (\d+) registers", out)
    spill = re.findall(r"(\d+) bytes spill stores", out)
    return (int(regs[-1]) if regs else None), (int(spill[-1]) if spill else None)


def compile_launches(
    run: Callable[[], object],
    arch: int = 90,
    seen: set | None = None,
    *,
    module: object = ft,
    kernels: tuple[str, ...] = KERNELS,
    keep_cubin: bool = False,
) -> list[KernelReport]:
    """Compile every kernel launch that ``run()`` makes (CPU tensors; nothing executes).

    ``module``/``kernels``: where the launchers look their kernels up (default: the FFT
    convolution's; the short conv's are ``short_conv_triton`` and ``SHORT_CONV_KERNELS``).
    ``seen`` (optional) skips specialisations already compiled by an earlier call. Errors are
    reported per kernel (``KernelReport.error``), not raised. ``keep_cubin``: each report
    carries its binary (for a disassembly, ``benchmarks/sass_mix.py``).
    """
    seen = set() if seen is None else seen
    _Capture.calls = []
    saved = {k: getattr(module, k) for k in kernels}
    for k, f in saved.items():
        setattr(module, k, _Capture(f))
    try:
        run()
    except Exception:  # noqa: BLE001, S110 - the kernels did not run: later steps see garbage
        pass
    finally:
        for k, f in saved.items():
            setattr(module, k, f)
    out: list[KernelReport] = []
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
            ptx = compiled.asm["ptx"]
            regs, spill = _ptxas(ptx, arch)
            cubin = compiled.asm.get("cubin") if keep_cubin else None
            out.append(
                KernelReport(
                    fn.__name__, regs, spill, compiled.metadata.shared, opts, None, cubin,
                    ptx.count("wgmma.mma_async"), ptx.count("mma.sync"),
                )
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001 - reported, not raised
            out.append(
                KernelReport(fn.__name__, None, None, None, opts, f"{type(e).__name__}: {e}")
            )
    return out
