"""Benchmark: the filter spectrum's passes per training step, and the reorders' launch options.

Every forward+backward step computes the filter's spectrum (``rfft(k, n)``, then
:func:`~dnastream.kernels.spectrum_reorder.storage_spectrum` into the kernels' storage order)
and, for the filter gradient, brings the cross-spectrum back: since stop 19 its Hermitian
half (:func:`~dnastream.kernels.spectrum_reorder.hermitian_spectrum`, then ``irfft``), before
that the whole of it (:func:`~dnastream.kernels.spectrum_reorder.natural_spectrum`, then
``ifft``), both timed here. Stop 18's profile put these at about 2.3 ms of the 11.9 ms step at
128K (``results/profile_steps_*``).

Shapes are ``bench_conv.py``'s (FlashFFTConv's workload: H channels, L = N / 2) with the plans
``plan_for`` picks at B = 8. The same run measures the copy bandwidth (bytes read + written);
each reorder's floor is reading its input and writing its output once at it. Prints per case
and launch (tile edge, warps; the first row of each pass is its default): ms, ms / floor,
speed-up over the default launch, and the cuFFT passes beside them.

    python benchmarks/bench_spectrum_reorder.py
    python benchmarks/bench_spectrum_reorder.py --device cpu   # tiny smoke run (interpreter)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_pair_max import copy_bandwidth, timer_for  # noqa: E402

# (N, H, causal) of bench_conv.py's workload
CASES = [(65536, 768, True), (131072, 384, True), (262144, 192, True), (1048576, 48, True),
         (4194304, 16, True), (131072, 384, False)]  # fmt: skip
SMOKE = [(2048, 2, True)]
LAUNCHES = [(64, 4), (32, 4), (32, 2), (64, 8), (128, 8), (16, 2), (16, 4), (8, 2)]  # (tile, warps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch
    import triton

    dev = args.device
    cuda = dev == "cuda"
    timed = timer_for(cuda)

    card = torch.cuda.get_device_name() if cuda else "cpu (interpreter)"
    bw = copy_bandwidth(torch, dev, timed)
    print(f"# {card} | torch {torch.__version__} | triton {triton.__version__}")
    print(f"# copy bandwidth {bw / 1e12:.2f} TB/s (read + write)")
    print("N | H | causal | pass | tile | warps | ms | floor ms | ms/floor | vs default | agree")
    for n, h, causal in SMOKE if not cuda else CASES:
        run_case(torch, dev, n, h, causal, bw, timed)
        if cuda:
            torch.cuda.empty_cache()


def run_case(torch, dev: str, n: int, h: int, causal: bool, bw: float, timed) -> None:
    """One case's rows: the two cuFFT passes, then each reorder under every launch."""
    from dnastream.kernels import spectrum_reorder as sr
    from dnastream.kernels.monarch import layout_for, plan_for
    from dnastream.kernels.spectrum_reorder import (
        hermitian_spectrum,
        hermitian_spectrum_ref,
        natural_spectrum,
        natural_spectrum_ref,
        storage_spectrum,
        storage_spectrum_ref,
    )

    seq = n // 2 if causal else n
    plan = plan_for(seq, seq, causal, torch.bfloat16, batch=8)
    lay = layout_for(plan, dev)
    g = torch.Generator(device=dev).manual_seed(n)
    k = torch.randn(h, seq, device=dev, generator=g)
    r = torch.fft.rfft(k, n=n)
    s = torch.randn(h * n // plan.inner, 2, plan.inner, device=dev, generator=g)
    nat = natural_spectrum(s, lay, scale=1.0 / n)
    half = hermitian_spectrum(s, lay, scale=1.0 / n)
    print(f"# {plan.describe()} (storage digits a={lay.a}, c={lay.c})")
    row = [n, h, causal]

    def show(cells: list) -> None:
        print(" | ".join(str(c) for c in row + cells))

    # cuFFT beside them: the forward transform of k, the inverse of the cross-spectrum
    for name, fn, nbytes in (
        ("rfft(k)", lambda: torch.fft.rfft(k, n=n), k.numel() * 4 + r.numel() * 8),
        ("ifft(S)", lambda: torch.fft.ifft(nat, dim=-1, norm="forward"), 2 * nat.numel() * 8),
        ("irfft(S/2)", lambda: torch.fft.irfft(half, n=n, dim=-1, norm="forward"),
         half.numel() * 8 + h * n * 4),
    ):  # fmt: skip
        ms, floor = timed(fn), nbytes / bw * 1e3
        show([name, "-", "-", f"{ms:.3f}", f"{floor:.3f}", f"{ms / floor:.2f}", "-", "-"])

    def sto(t: int, w: int):
        return storage_spectrum(r, lay, 1.0 / n, tile=t, num_warps=w)

    def nat_(t: int, w: int):
        return natural_spectrum(s, lay, None, 1.0 / n, tile=t, num_warps=w)

    def her_(t: int, w: int):
        return hermitian_spectrum(s, lay, None, 1.0 / n, tile=t, num_warps=w)

    passes = (
        ("storage", sto, r.numel() * 8 + 2 * h * n * 4, storage_spectrum_ref(r, lay, 1.0 / n),
         (sr.STORAGE_TILE, sr.STORAGE_WARPS)),
        ("natural", nat_, s.numel() * 4 + h * n * 8, natural_spectrum_ref(s, lay, None, 1.0 / n),
         (sr.NATURAL_TILE, sr.NATURAL_WARPS)),
        ("hermitian", her_, s.numel() * 4 + half.numel() * 8,
         hermitian_spectrum_ref(s, lay, None, 1.0 / n), (sr.HERMITIAN_TILE, sr.HERMITIAN_WARPS)),
    )  # fmt: skip
    cuda = dev == "cuda"
    for name, fn, nbytes, want, default in passes:
        floor = nbytes / bw * 1e3
        base = None
        launches = [default] + [x for x in LAUNCHES if x != default]
        for tile, warps in launches if cuda else launches[:2]:
            ms = timed(lambda f=fn, t=tile, w=warps: f(t, w))
            base = base or ms
            agree = torch.equal(fn(tile, warps), want)
            show([name, tile, warps, f"{ms:.3f}", f"{floor:.3f}", f"{ms / floor:.2f}",
                  f"{base / ms:.2f}", agree])  # fmt: skip


if __name__ == "__main__":
    main()
