"""HyenaDNA training step (forward + backward of the LM loss): the default long-conv dispatch
against torch.fft for every long convolution, in one process.

HyenaDNA-large shape (d 256, 8 layers, random weights), bf16 autocast, next-token cross
entropy, ``loss.backward()``. For each (B, L) it alternates ``DNASTREAM_FFTCONV=auto`` (the
default: Triton where ``triton_is_faster`` says so) and ``=reference`` (torch.fft) for
``--rounds`` rounds and prints medians, peak memory and the gradients' distance.

    python benchmarks/bench_train_step.py --cases 4x16384,2x65536,2x131072
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_model import large_config  # noqa: E402
from dnastream.kernels.fftconv import triton_is_faster  # noqa: E402
from dnastream.kernels.monarch import plan_for  # noqa: E402
from dnastream.models import HyenaDNAModel  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="4x16384,2x65536,2x131072", help="BxL, comma separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cuda", help="cuda; cpu only as a smoke run")
    args = ap.parse_args()
    dev = args.device
    cuda = dev.startswith("cuda")
    name = torch.cuda.get_device_name() if cuda else "cpu (smoke run)"
    print(f"# device: {name} | torch {torch.__version__}")
    print("B | L | long-conv plan | triton? | default ms | torch.fft ms | speed-up | "
          "default peak GB | torch.fft peak GB | grad dist")  # fmt: skip
    for case in args.cases.split(","):
        batch, seq = (int(x) for x in case.split("x"))
        run_case(batch, seq, args.rounds, dev, cuda)


def run_case(batch: int, seq: int, rounds: int, dev: str, cuda: bool) -> None:
    """One (B, L): time the default dispatch and torch.fft, print a row."""
    torch.manual_seed(0)
    model = HyenaDNAModel(large_config(seq + 2)).to(dev).train()
    ids = torch.randint(0, 12, (batch, seq + 1), device=dev)
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        for p in params:
            p.grad = None
        with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16):
            logits = model(ids[:, :-1]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {"auto": [], "reference": []}
    peak: dict[str, float] = {}
    grads: dict[str, list[torch.Tensor]] = {}
    try:
        for mode in ("auto", "reference"):  # warm up / compile, gradients, peak memory
            os.environ["DNASTREAM_FFTCONV"] = mode
            step()
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            step()
            sync()
            peak[mode] = torch.cuda.max_memory_allocated() / 1e9 if cuda else 0.0
            grads[mode] = [p.grad.detach().float().clone() for p in params]
        for _ in range(rounds):
            for mode in ("auto", "reference"):
                os.environ["DNASTREAM_FFTCONV"] = mode
                sync()
                t0 = time.perf_counter()
                for _ in range(3):
                    step()
                sync()
                times[mode].append((time.perf_counter() - t0) / 3 * 1e3)
    except torch.cuda.OutOfMemoryError:
        print(f"{batch} | {seq} | - | - | out of memory | | | | |", flush=True)
        if cuda:
            torch.cuda.empty_cache()
        return
    finally:
        os.environ.pop("DNASTREAM_FFTCONV", None)
    num = sum(
        float((a - b).norm() ** 2) for a, b in zip(grads["auto"], grads["reference"], strict=True)
    )
    den = sum(float(b.norm() ** 2) for b in grads["reference"])
    plan = plan_for(seq, seq, True, torch.bfloat16, batch=batch)
    med = {m: statistics.median(t) for m, t in times.items()}
    print(
        f"{batch} | {seq} | {plan.describe()} | "
        f"{triton_is_faster(plan, batch, torch.bfloat16, True)} | {med['auto']:.1f} | "
        f"{med['reference']:.1f} | {med['reference'] / med['auto']:.2f} | "
        f"{peak['auto']:.1f} | {peak['reference']:.1f} | {(num / den) ** 0.5:.1e}",
        flush=True,
    )
    if cuda:
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
