"""Short filters on long sequences: blocked overlap-save plans against one long FFT.

A filter of ``Lk`` taps on ``L >> Lk`` samples (HyenaDNA-tiny's 1026-tap filters streamed over
262,144-base chunks, a ``--filter-len`` cut, FlashFFTConv's "partial convolutions") needs only
windows of ``n >= 2 (Lk - 1)`` samples. Per case (B, H, L, Lk, dtype) this prints, measured in
the same run:

* the memory floor (u read once, y written once, at the copy bandwidth),
* PyTorch: ``fftconv_ref`` (rfft of the whole sequence, fp32), what the model ran before,
* ours, full: ``plan_for``'s plan (one FFT of ``next_pow2(L + Lk - 1)``, multi-pass above
  8192 points),
* ours, blocked: :func:`dnastream.kernels.monarch.block_plan_for`'s windows,
* relative L2 errors against float64, and each plan.

Cases: the streaming engine's inputs (B = 1, fp32 work dtype, context of Lk - 1 prepended)
for HyenaDNA-tiny (d_model 128, Lk 1026) and wider shapes, and bf16 at FlashFFTConv-like
widths. ``--cpu-smoke`` runs two tiny cases through the interpreter.

    python benchmarks/bench_blocked.py
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

CASES = [
    # B, H, L, Lk, dtype
    (1, 128, 262_144 + 1025, 1026, "fp32"),  # HyenaDNA-tiny streaming chunk
    (1, 256, 262_144 + 1025, 1026, "fp32"),
    (1, 256, 1_048_576, 1026, "fp32"),
    (1, 256, 1_048_576, 4097, "bf16"),
    (1, 768, 1_048_576, 129, "bf16"),
    (4, 768, 262_144, 1026, "bf16"),
    (8, 768, 32_768, 1026, "bf16"),
    (8, 768, 65_536, 4097, "bf16"),
]
SMOKE = [(1, 2, 3000, 100, "fp32"), (2, 2, 2000, 200, "bf16")]


def run_case(torch, timer, fmt, dev, bw, B, H, L, Lk, name, dt) -> list:
    """One table row: times, errors and plans of the three ways for (B, H, L, Lk, dtype)."""
    from dnastream.kernels.fftconv_ref import fftconv_ref
    from dnastream.kernels.fftconv_triton import fftconv_triton, filter_spectrum
    from dnastream.kernels.monarch import block_plan_for, plan_for

    g = torch.Generator(device="cpu").manual_seed(L + Lk)
    u = torch.randn(B, H, L, generator=g).to(dt).to(dev)
    alpha = torch.logspace(-3, -1, H)[:, None]
    k = (torch.randn(H, Lk, generator=g) * torch.exp(-alpha * torch.arange(Lk))).to(dev)
    floor = 2 * u.numel() * u.element_size() / bw * 1e3
    full = plan_for(L, Lk, True, dt, batch=B)
    blk = block_plan_for(L, Lk, dt, batch=B)
    spec_full = filter_spectrum(k, full)
    spec_blk = filter_spectrum(k, blk) if blk is not None else None
    with torch.no_grad():
        t_ref = timer(lambda: fftconv_ref(u, k))
        t_full = timer(lambda: fftconv_triton(u, k, plan=full, k_spectrum=spec_full))
        t_blk = None
        if blk is not None:
            t_blk = timer(lambda: fftconv_triton(u, k, plan=blk, k_spectrum=spec_blk))
        h8 = min(H, 8)  # float64 reference of the first 8 channels (memory)
        y64 = fftconv_ref(u[:, :h8].double(), k[:h8].double())

        def err(y):
            return ((y[:, :h8].double() - y64).norm() / y64.norm()).item()

        e_ref = err(fftconv_ref(u, k))
        e_full = err(fftconv_triton(u, k, plan=full, k_spectrum=spec_full))
        e_blk = None
        if blk is not None:
            e_blk = err(fftconv_triton(u, k, plan=blk, k_spectrum=spec_blk))
    return [
        B, H, L, Lk, name, fmt(floor), fmt(t_ref), fmt(t_full), fmt(t_blk),
        fmt(t_blk / floor if t_blk else None, ".1f"),
        fmt(t_ref / t_blk if t_blk else None, ".2f"),
        fmt(t_full / t_blk if t_blk else None, ".2f"),
        f"{e_ref:.2e}", f"{e_full:.2e}", f"{e_blk:.2e}" if e_blk is not None else "-",
        full.describe(), blk.describe() if blk else "-",
    ]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true")
    args = ap.parse_args()
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    from bench_conv import Timer, copy_bandwidth, fmt

    dev = "cpu" if args.cpu_smoke else "cuda"
    timer = Timer(torch, dev, quick=args.cpu_smoke)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    card = "CPU (interpreter)" if args.cpu_smoke else torch.cuda.get_device_name()
    bw = copy_bandwidth(torch, dev, timer)
    print(f"# device: {card} | torch {torch.__version__} | copy {bw / 1e12:.3f} TB/s")
    head = (
        "B | H | L | Lk | dtype | floor_ms | torch_ms | full_ms | blocked_ms | blocked/floor"
        " | vs_torch | vs_full | err_torch | err_full | err_blocked | full plan | blocked plan"
    )
    print(head)
    rows = []
    for B, H, L, Lk, name in SMOKE if args.cpu_smoke else CASES:
        row = run_case(torch, timer, fmt, dev, bw, B, H, L, Lk, name, dtypes[name])
        rows.append(row)
        print(" | ".join(str(c) for c in row), flush=True)
        if dev == "cuda":
            torch.cuda.empty_cache()
    print(f"\n## Blocked (overlap-save) short-filter convolution, forward, {card}\n")
    print("| " + head.replace(" | ", " | ") + " |")
    print("|" + "---|" * len(head.split(" | ")))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
