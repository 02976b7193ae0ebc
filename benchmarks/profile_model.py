"""Where a HyenaDNA forward spends its GPU time: torch.profiler over one long sequence.

Builds the HyenaDNA-large shape (random weights, as ``bench_model.py``), runs one forward of
``--length`` tokens (bf16 autocast, no grad) under ``torch.profiler`` for each long-convolution
/ short-convolution backend combination asked for, and prints the wall time and the top CUDA
kernels by total time, so the next optimisation goes where the time is.

    python benchmarks/profile_model.py --length 1000000 --configs auto,fft=triton,short=triton
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_model import large_config  # noqa: E402
from dnastream.models import HyenaDNAModel  # noqa: E402

ENV = {"fft": "DNASTREAM_FFTCONV", "short": "DNASTREAM_SHORT_CONV"}
fftconv_ref_mod = importlib.import_module("dnastream.kernels.fftconv_ref")
FFT_SIZE = fftconv_ref_mod.fft_size


def _pow2_fft_size(seq_len: int, filter_len: int, *, causal: bool = True) -> int:
    """torch.fft lengths rounded up to a power of two instead of a 2-3-5-smooth size."""
    n = FFT_SIZE(seq_len, filter_len, causal=causal)
    return 1 << (n - 1).bit_length() if causal else n


def apply(config: str) -> dict[str, str | None]:
    """Set the environment for ``config``: ``auto`` or e.g. ``fft=triton+short=reference``;
    ``fftlen=pow2`` makes the torch.fft convolutions use power-of-two lengths (a 5% longer
    FFT that cuFFT may run faster than 2^7 * 5^6 at 1 Mbp)."""
    saved = {v: os.environ.get(v) for v in ENV.values()}
    for v in ENV.values():
        os.environ.pop(v, None)
    fftconv_ref_mod.fft_size = FFT_SIZE
    if config != "auto":
        for part in config.split("+"):
            key, value = part.split("=")
            if key == "fftlen":
                fftconv_ref_mod.fft_size = _pow2_fft_size if value == "pow2" else FFT_SIZE
            else:
                os.environ[ENV[key]] = value
    return saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--length", type=int, default=1_000_000)
    ap.add_argument("--configs", default="auto,short=reference,fft=triton,fftlen=pow2")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = HyenaDNAModel(large_config()).cuda().eval()
    ids = torch.randint(7, 11, (1, args.length), device="cuda")
    print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | L={args.length}")

    def run() -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return model(ids, return_logits=False).last_hidden_state

    outs = {}
    for config in args.configs.split(","):
        saved = apply(config)
        try:
            outs[config] = run().float()  # warm-up (compiles, fills caches)
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times = []
            for _ in range(3):
                start.record()
                run()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            torch.cuda.reset_peak_memory_stats()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                run()
                torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 1e9
            diff = (outs[config] - outs[next(iter(outs))]).norm() / outs[next(iter(outs))].norm()
            print(f"\n## {config}: median {sorted(times)[1]:.1f} ms, peak {peak:.2f} GB, "
                  f"rel. diff vs first config {diff:.2e}")  # fmt: skip
            table = prof.key_averages().table(sort_by="device_time_total", row_limit=args.top)
            print(table)
        finally:
            fftconv_ref_mod.fft_size = FFT_SIZE
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return 0


if __name__ == "__main__":
    sys.exit(main())
