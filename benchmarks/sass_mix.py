"""Instruction mix of the FFT-convolution kernels on sm_90, from their SASS (no GPU needed).

Each kernel launch of the default plan for an FFT size (padded causal forward, or forward +
backward with ``--backward``) is compiled by Triton for the target, its binary disassembled by
the ``nvdisasm`` that ships with Triton, and the instructions counted by class: tensor-core
products (HMMA / HGMMA), fp32 arithmetic, conversions and packed-half arithmetic, shared,
global and local (spill) memory, shuffles, barriers, integer/address arithmetic and the rest.

The counts are static (instructions in the binary, not executed ones). The inner kernels'
tile loop is one straight-line body, so their mix is close to the executed one: how much of the
issue bandwidth the tensor-core products get against the work around them (operand scaling and
packing, twiddles, layout changes through shared memory). The outer kernels compute their
twiddles with libdevice ``sinf``/``cosf``, whose range-reduction slow path (integer-heavy, never
taken for their arguments) dominates their static counts. Timings need a GPU.

    python benchmarks/sass_mix.py --sizes 1024,4096,16384,131072
    python benchmarks/sass_mix.py --sizes 131072 --backward --top 12
"""

from __future__ import annotations

import argparse
import collections
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

from dnastream.kernels import fftconv_triton as ft  # noqa: E402
from dnastream.kernels.compile_check import compile_launches  # noqa: E402
from dnastream.kernels.monarch import plan_for  # noqa: E402

#: opcode (without modifiers) -> class; anything else is "other"
CLASSES = {
    "tensor": ("HMMA", "HGMMA", "IMMA", "WARPGROUP"),
    "fp32": ("FFMA", "FMUL", "FADD", "FMNMX", "FSETP", "FSEL", "MUFU", "FCHK", "FRND", "FSET"),
    "convert": ("F2F", "F2FP", "I2F", "F2I", "I2FP", "F2IP", "HADD2", "HMUL2", "HFMA2",
                "HMNMX2", "HSETP2", "PRMT"),
    "shared": ("LDS", "STS", "LDSM", "STSM", "ATOMS"),
    "global": ("LDG", "STG", "LDGSTS", "RED", "ATOMG", "UBLKCP", "UTMALDG", "UTMASTG"),
    "local": ("LDL", "STL"),
    "shuffle": ("SHFL",),
    "barrier": ("BAR", "SYNCS", "MEMBAR", "DEPBAR", "WARPSYNC"),
    "int": ("IMAD", "IADD3", "LEA", "SHF", "LOP3", "ISETP", "IABS", "IMNMX", "SEL", "MOV",
            "S2R", "S2UR", "ULDC", "UMOV", "UIADD3", "ULEA", "USHF", "ULOP3", "UISETP", "USEL",
            "IADD", "IMUL", "CS2R", "R2UR", "UIMAD", "P2R", "R2P", "PLOP3", "VOTE", "POPC",
            "FLO", "BREV", "LOP", "SHL", "SHR", "IMAD.WIDE", "BMSK", "UPRMT"),
}  # fmt: skip
_OPCODE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)")


def classify(op: str) -> str:
    for name, ops in CLASSES.items():
        if op in ops:
            return name
    return "other"


def disassemble(cubin: bytes) -> list[str]:
    """Opcodes of a cubin's SASS, in order (``nvdisasm`` from Triton's NVIDIA backend)."""
    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as fh:
        fh.write(cubin)
    text = subprocess.run(
        [str(nvdisasm), "-c", fh.name], capture_output=True, text=True, check=True
    ).stdout
    return _OPCODE.findall(text)


def _field(item: str) -> tuple[str, object]:
    """``name=value`` -> (name, value) with value parsed as bool, int or None."""
    name, _, raw = item.partition("=")
    low = raw.strip().lower()
    value: object = {"true": True, "false": False, "none": None}.get(low, raw)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    return name.strip(), value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1024,4096,16384,131072", help="FFT sizes (L = N / 2)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-fused", type=int, default=0, help="plan_for's max_fused (0: default)")
    ap.add_argument("--backward", action="store_true", help="also the backward's kernels")
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--top", type=int, default=0, help="also list each kernel's top opcodes")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a plan field (e.g. fold_scale=true); repeatable")  # fmt: skip
    args = ap.parse_args()
    overrides = dict(_field(item) for item in args.set)
    names = list(CLASSES) + ["other"]
    print(f"# triton {triton.__version__}, sm_{args.arch}, static SASS instruction counts; "
          "classes as % of all instructions")  # fmt: skip
    print("| plan | pass | kernel | regs | spill B | instructions | "
          + " | ".join(names) + " |")  # fmt: skip
    print("|" + "---|" * (6 + len(names)))
    seen: set = set()
    for n in (int(x) for x in args.sizes.split(",")):
        seq, h = n // 2, 2
        extra = {"max_fused": args.max_fused} if args.max_fused else {}
        plan = plan_for(seq, seq, True, torch.bfloat16, batch=args.batch, **extra)
        plan = dataclasses.replace(plan, **overrides) if overrides else plan
        u = torch.zeros(args.batch, h, seq, dtype=torch.bfloat16)
        k = torch.zeros(h, seq)
        d = torch.zeros(h)
        spec = ft.filter_spectrum(k, plan)
        runs = [("fwd", functools.partial(ft.conv_forward, plan, u, spec, d, None, None))]
        if args.backward:
            needs = (True, True, True, False, False)
            runs.append(("bwd", functools.partial(ft.conv_backward, plan, u, u, k, d, None,
                                                  None, spec, needs)))  # fmt: skip
        for label, run in runs:
            for r in compile_launches(run, args.arch, seen, keep_cubin=True):
                if r.error or r.cubin is None:
                    print(f"| {plan.describe()} | {label} | {r.kernel} | FAILS: {r.error} |")
                    continue
                ops = disassemble(r.cubin)
                by = collections.Counter(classify(o) for o in ops)
                total = max(1, len(ops))
                cells = " | ".join(f"{100 * by[c] / total:.1f}" for c in names)
                print(f"| {plan.describe()} | {label} | {r.kernel} | {r.registers} | "
                      f"{r.spill_store_bytes} | {len(ops)} | {cells} |")  # fmt: skip
                if args.top:
                    top = collections.Counter(ops).most_common(args.top)
                    print("|  |  | top: " + ", ".join(f"{o} {c}" for o, c in top) + " |")


if __name__ == "__main__":
    main()
