"""Benchmark: the float16 outer buffers' row-pair maxima, Triton pass against its PyTorch twin.

``pair_max(src, gate)`` (``dnastream.kernels.pair_max``) runs before the outer forward levels
of every plan with scaled float16 buffers (32K and up), once per signal: u in the forward,
u and dy in the backward (the eager path reuses the forward's). Its twin ``pair_max_ref`` is
the PyTorch reduction it replaced, which materialises ``src * gate`` when gated.

Shapes are ``bench_conv.py``'s (FlashFFTConv's workload) at FFT sizes 32K-4M, bf16, L = N / 2.
The same run measures the copy bandwidth (``Tensor.copy_``, bytes read + written); the floor is
reading ``src`` (and the gate) once at it. Prints per case: floor ms, PyTorch ms, ours ms,
ours / floor, speed-up, and whether both agree within the product's bf16 rounding.

    python benchmarks/bench_pair_max.py
    python benchmarks/bench_pair_max.py --device cpu   # tiny smoke run (interpreter)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

# (N, B, H) of bench_conv.py's workload
CASES = [(32768, 16, 768), (131072, 8, 384), (1048576, 8, 48), (4194304, 8, 16)]
SMOKE = [(512, 3, 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch
    import triton

    from dnastream.kernels.pair_max import pair_max, pair_max_ref

    dev = args.device
    cuda = dev == "cuda"
    timed = timer_for(cuda)
    card = torch.cuda.get_device_name() if cuda else "cpu (interpreter)"
    bw = copy_bandwidth(torch, dev, timed)
    print(f"# {card} | torch {torch.__version__} | triton {triton.__version__}")
    print(f"# copy bandwidth {bw / 1e12:.2f} TB/s (read + write)")
    print("N | B | H | L | gated | floor ms | torch ms | ours ms | ours/floor | speed-up | agree")
    for n, b, h in SMOKE if not cuda else CASES:
        g = torch.Generator(device=dev).manual_seed(n)
        src = torch.randn(b, h, n // 2, device=dev, generator=g).to(torch.bfloat16)
        gate = torch.randn(b, h, n // 2, device=dev, generator=g).to(torch.bfloat16)
        for gt in (None, gate):
            nbytes = src.numel() * src.element_size() * (1 if gt is None else 2)
            floor = nbytes / bw * 1e3
            t_ref = timed(lambda s=src, q=gt: pair_max_ref(s, q))
            t_ours = timed(lambda s=src, q=gt: pair_max(s, q))
            agree = torch.allclose(pair_max(src, gt), pair_max_ref(src, gt), rtol=2.0**-8, atol=0)
            cells = [n, b, h, n // 2, gt is not None, f"{floor:.3f}", f"{t_ref:.3f}"]
            cells += [f"{t_ours:.3f}", f"{t_ours / floor:.2f}", f"{t_ref / t_ours:.2f}", agree]
            print(" | ".join(str(c) for c in cells))


def timer_for(cuda: bool):
    """Milliseconds of one call: the median of ``triton.testing.do_bench`` on CUDA, one wall
    clock run elsewhere (the interpreter's smoke runs)."""
    import triton.testing

    def timed(fn) -> float:
        if cuda:
            return float(triton.testing.do_bench(fn, warmup=10, rep=100, return_mode="median"))
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return timed


def copy_bandwidth(torch, dev: str, timed) -> float:
    """Bytes per second read + written by a 256 MiB device-to-device copy."""
    big = torch.empty(1 << 28, dtype=torch.uint8, device=dev)
    out = torch.empty_like(big)
    ms = timed(lambda: out.copy_(big))
    return 2 * big.numel() / (ms * 1e-3)


if __name__ == "__main__":
    main()
