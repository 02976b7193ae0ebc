"""The Triton kernels compile for the GPU (sm_90, H100/H200) on this machine without one.

CI has no GPU and runs the kernels under ``TRITON_INTERPRET=1``, which checks their numbers but
not that Triton can compile them; a construct the interpreter accepts and the compiler does not
would only show on a lent GPU. Here every kernel specialisation of a few plans (each kernel
kind, the tuning options (the R-row fused and shared-outer backwards too), frequency-sparse,
fp32, blocked windows with a streaming context) is
compiled by Triton and assembled by its ptxas, in a subprocess (the interpreter must be off
there), and must fit an H100's shared memory;
so is every autotuning config of the short depthwise conv (both layouts, bf16 and fp32).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton.backends.nvidia.compiler", reason="Triton's CUDA backend (Linux)")

SRC = Path(__file__).resolve().parents[1] / "src"

SCRIPT = r"""
import dataclasses, functools, json, sys
import torch
import dnastream.kernels.fftconv_triton as ft
from dnastream.kernels.compile_check import compile_launches
from dnastream.kernels.monarch import plan_for

cases = []
def add(label, n, dtype=torch.bfloat16, **kw):
    keep = kw.pop("freq_keep", None)
    cases.append((label, n, dtype, keep, kw))
add("rows 256", 256)
add("rows 1024 capped", 1024)
add("rows 2048 (one-row backward)", 2048)
one = dict(rows=1, bwd_rows=0)
add("one-row 2048 hoist_f2", 2048, hoist_f2=True, **one)
add("one-row 2048 fused_bwd", 2048, fused_bwd=True, **one)
add("one-row 2048 sparse", 2048, freq_keep=0.25, **one)
# (64K takes 2-row tiles since stop 17, 512K at B >= 3 since stop 21: B = 2 here)
add("outer 524288 one-row", 524288, plan_batch=2)
add("outer 524288 separate backward", 524288, fused_bwd=False, bwd_warps=0, plan_batch=2)
add("outer 524288 fp32 buffers", 524288, outer_fp16=False, plan_batch=2)
add("outer 131072 2-row fused backward", 131072, fused_bwd=True, bwd_warps=8, bwd_maxnreg=0)
add("outer 131072 2-row shared outer forward", 131072, shared_bwd_outer=True)
add("rows 1024 static scale", 1024, static_scale=True)
add("outer 131072 2-row static scale", 131072, static_scale=True)
add("outer 131072 2-row bounded forward", 131072, bounded_fwd=True)
add("outer 131072 2-row fused backward bounded", 131072, bounded_fwd=True, fused_bwd=True,
    bwd_warps=8, bwd_maxnreg=0)
add("fp32 2048", 2048, torch.float32)
add("one-row 8192 transposed", 8192, nat_transposed=True, nat_transposed_bwd=True, **one)
add("one-row 16384 transposed fused backward", 16384, nat_transposed=True,
    nat_transposed_bwd=True, **one)
add("outer 524288 one-row transposed", 524288, nat_transposed=True, fused_bwd=False, bwd_warps=0,
    plan_batch=2)
out, seen = [], set()
for label, n, dtype, keep, kw in cases:
    seq, b, h = n // 2, 4, 2
    pb = kw.pop("plan_batch", b)  # the batch the plan is chosen for (its tiles' rows)
    plan = dataclasses.replace(plan_for(seq, seq, True, dtype, batch=pb, freq_keep=keep), **kw)
    u = torch.zeros(b, h, seq, dtype=dtype); g = torch.zeros_like(u)
    k = torch.zeros(h, seq); d = torch.zeros(h)
    spec = ft.filter_spectrum(k, plan)
    for run in (functools.partial(ft.conv_forward, plan, u, spec, d, g, g),
                functools.partial(ft.conv_backward, plan, g, u, k, d, g, g, spec, (True,) * 5)):
        for r in compile_launches(run, 90, seen):
            out.append(dict(case=label, kernel=r.kernel, regs=r.registers,
                            spill=r.spill_store_bytes, shared=r.shared_bytes, error=r.error,
                            wgmma=r.wgmma, mma_sync=r.mma_sync))
# the fused 8K forward: its last product added per chunk, in the dots, or in a second loop
for name, kw in (("acc_dot=False", {}), ("acc_dot=True", dict(acc_dot=True)),
                 ("two_phase", dict(two_phase=True))):
    plan = dataclasses.replace(plan_for(4096, 4096, True, torch.bfloat16, batch=4), **kw)
    u = torch.zeros(4, 2, 4096, dtype=torch.bfloat16)
    spec = ft.filter_spectrum(torch.zeros(2, 4096), plan)
    run = functools.partial(ft.conv_forward, plan, u, spec, torch.zeros(2), u, u)
    for r in compile_launches(run, 90, seen):
        out.append(dict(case=f"fused 8192 forward {name}", kernel=r.kernel,
                        regs=r.registers, spill=r.spill_store_bytes, shared=r.shared_bytes,
                        error=r.error))
from dnastream.kernels.monarch import block_plan_for
for label, L, Lk, window, dtype, C, gates in (
        ("blocked 256 gates", 2000, 100, 256, torch.bfloat16, 0, True),  # multi-row tiles
        ("blocked 4096 fp32 context", 9000, 1026, 4096, torch.float32, 1025, False),
        ("blocked 8192 context", 20000, 4097, 8192, torch.bfloat16, 4096, True)):
    plan = block_plan_for(L, Lk, dtype, batch=1, window=window, context=C)
    u = torch.zeros(1, 2, L, dtype=dtype); g = torch.zeros_like(u) if gates else None
    k = torch.zeros(2, Lk); d = torch.zeros(2)
    ctx = torch.zeros(1, 2, C) if C else None
    run = functools.partial(ft.conv_forward, plan, u, ft.filter_spectrum(k, plan), d, g, g, ctx)
    for r in compile_launches(run, 90, seen):
        out.append(dict(case=label, kernel=r.kernel, regs=r.registers,
                        spill=r.spill_store_bytes, shared=r.shared_bytes, error=r.error))
from dnastream.kernels import pair_max as pm
for gated in (False, True):
    x = torch.zeros(3, 2, 5000, dtype=torch.bfloat16)
    run = functools.partial(pm.pair_max_triton, x, x if gated else None)
    for r in compile_launches(run, 90, seen, module=pm, kernels=("_row_absmax_kernel",)):
        out.append(dict(case=f"pair max gated={gated}", kernel=r.kernel, regs=r.registers,
                        spill=r.spill_store_bytes, shared=r.shared_bytes, error=r.error))
from dnastream.kernels import short_conv_triton as sct
from dnastream.kernels.compile_check import SHORT_CONV_KERNELS
for layout, pool in (("contiguous", sct._CONTIG_CONFIGS), ("channels-last", sct._STRIDED_CONFIGS)):
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.zeros(2, 64, 4096, dtype=dtype)
        if layout == "channels-last":
            x = x.transpose(1, 2).contiguous().transpose(1, 2)
        w = torch.zeros(64, 3, dtype=dtype); b = torch.zeros(64, dtype=dtype)
        s = torch.zeros(2, 64, 2, dtype=dtype)
        for c in pool:
            cfg = dict(c.kwargs, num_warps=c.num_warps)
            for run in (functools.partial(sct.short_conv_fwd_triton, x, w, b, s, config=cfg),
                        functools.partial(sct.short_conv_bwd_triton, x, x, w, s, config=cfg)):
                for r in compile_launches(run, 90, seen, module=sct, kernels=SHORT_CONV_KERNELS):
                    out.append(dict(case=f"short conv {layout} {dtype}", kernel=r.kernel,
                                    regs=r.registers, spill=r.spill_store_bytes,
                                    shared=r.shared_bytes, error=r.error))
json.dump(out, sys.stdout)
"""


def test_every_kernel_kind_compiles_for_sm90() -> None:
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=str(SRC))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    kinds = {r["kernel"] for r in rows}
    assert {"_conv_kernel", "_conv_nat_kernel", "_xcorr_kernel", "_xcorr_nat_kernel",
            "_outer_fwd_kernel", "_outer_inv_kernel"} <= kinds  # fmt: skip
    for r in rows:
        assert r["error"] is None, r
        assert r["shared"] <= 232_448, r  # an H100 block's shared memory
        assert 0 < r["regs"] <= 255, r
    cases = {r["case"] for r in rows}
    assert {"one-row 2048 fused_bwd", "one-row 2048 sparse", "one-row 2048 hoist_f2"} <= cases
    assert {"blocked 256 gates", "blocked 4096 fp32 context", "blocked 8192 context"} <= cases
    assert {"pair max gated=False", "pair max gated=True"} <= cases
    # the plans with scaled float16 outer buffers reach their inner and outer kernels (their
    # pair maxima run first, on the CPU through the PyTorch twin)
    # (the first such case: later cases skip the specialisations compiled before)
    outer = {r["kernel"] for r in rows if r["case"] == "outer 524288 one-row"}
    assert {"_conv_nat_kernel", "_outer_fwd_kernel", "_outer_inv_kernel"} <= outer
    # the one-row kernels in the transposed orientation: every product a warpgroup MMA (the
    # natural ones at 32-row chunks issue 12 of their 16 as mma.sync; Triton 3.9's choice)
    both = ("one-row 8192 transposed", "one-row 16384 transposed fused backward")
    trans = [r for r in rows if r["kernel"] == "_conv_nat_t_kernel"
             or (r["kernel"] == "_xcorr_nat_kernel" and r["case"] in both)]  # fmt: skip
    assert {(r["case"], r["kernel"]) for r in trans} >= {
        (both[0], "_conv_nat_t_kernel"),
        (both[0], "_xcorr_nat_kernel"),
        (both[1], "_conv_nat_t_kernel"),
    }
    for r in trans:
        assert r["wgmma"] > 0 and r["mma_sync"] == 0, r
    # acc_dot: the fused 8K forward (static bounds) spills less with its last product
    # accumulated in the dots (Triton 3.9: 712 -> 484 B per thread, gates and D)
    spill = {r["case"]: r["spill"] for r in rows if r["case"].startswith("fused 8192 forward")}
    assert spill["fused 8192 forward acc_dot=True"] < spill["fused 8192 forward acc_dot=False"]
    assert "fused 8192 forward two_phase" in spill  # compiles, within an H100 block's limits
    short = [r for r in rows if r["case"].startswith("short conv")]
    assert {r["kernel"] for r in short} == {"_short_conv_fwd_kernel", "_short_conv_bwd_kernel"}
    assert len(short) >= 20  # every autotuning config of both layouts
