"""Streaming with an out-of-memory back-off against a fresh run at the final step size: exact?

Diagnostic for ``test_real_cuda_oom_backs_off_and_matches_unconstrained`` (which compares the
two under a real memory cap). Here the out-of-memory error is *simulated*: after the last layer
of any step longer than ``--final`` tokens, so the failed attempts run (and cache filter spectra)
like real ones, without a memory cap. On CUDA the default kernels run; ``--interpret`` runs the
Triton kernels in the CPU interpreter instead (the Triton backend forced on the CPU).

    python benchmarks/repro_backoff_exactness.py                 # CUDA
    python benchmarks/repro_backoff_exactness.py --interpret     # CPU, ~4 min

Prints the back-offs, the kernel launches and the max difference between the two runs (0.0
when the back-off leaves no trace). Stop 13: 0.0 in the interpreter (4 windows a step); stop 14:
0.0 on an H100 (``results/repro_backoff_exactness_cuda_h100_stop14.log``).

What the GPU test had caught (stop 14, ``results/gpu_oom_diag_steps_h100_stop14.log``): under
the real cap a 512K-token first step fitted and the back-off came at a later step, so the
capped run's steps were not those of a run with the final step size throughout. A different
split changes which overlap-save windows share a packed complex row at a step's tail, hence
float32 rounding there (1.7e-6, from token 84 x 3071). The test now replays the capped run's
own steps as its exact reference.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

TINY = REPO / "tests" / "data" / "hyenadna_tiny_random_hf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--final", type=int, default=4 * 3071, help="tokens per step that fit")
    ap.add_argument("--interpret", action="store_true", help="Triton's CPU interpreter")
    args = ap.parse_args()
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    import numpy as np
    import torch

    import dnastream.models.streaming as streaming
    from dnastream.models import load_model
    from dnastream.pipelines.runner import ModelRunner
    from dnastream.pipelines.source import Region, TokenChunk

    fc = sys.modules["dnastream.kernels.fftconv"]  # (the package exports a function of that name)
    device = "cpu" if args.interpret else "cuda"
    if args.interpret:
        fc._select_backend = lambda u, context: fc._triton_backend  # Triton on the CPU
    total = 4 * args.final
    ids = np.random.default_rng(7).integers(7, 11, size=total, dtype=np.int64)
    flags = np.zeros(total, dtype=bool)
    chunks = [TokenChunk(Region("random", "random", 0, total), 0, ids, flags, flags.view(np.uint8))]

    original = streaming.StreamingHyenaDNA._mixer_step
    limit: list[int | None] = [None]

    def mixer_step(self, block, x, layer):  # noqa: ANN001, ANN202
        out = original(self, block, x, layer)
        if limit[0] is not None and x.shape[1] > limit[0] and block is self.model.blocks[-1]:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return out

    streaming.StreamingHyenaDNA._mixer_step = mixer_step

    def run(chunk: int, cap: int | None) -> tuple[list[np.ndarray], int]:
        limit[0] = cap
        runner = ModelRunner(load_model(TINY), device=device, chunk=chunk)
        t0 = time.perf_counter()
        out = [r.hidden for r in runner.run_region(chunks, logprobs=False)]
        print(f"steps of {chunk} (limit {cap}): final {runner.chunk}, back-offs "
              f"{runner.backoffs}, {time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip
        return out, runner.chunk

    backed, final = run(4 * args.final, args.final)
    fresh, _ = run(final, None)
    for k, (a, b) in enumerate(zip(backed, fresh, strict=True)):
        diff = np.abs(a - b)
        bad = np.argwhere(diff > 0)
        first = tuple(bad[0]) if len(bad) else None
        print(f"chunk {k}: max difference {diff.max()}, first at {first}, {len(bad)} differ")


if __name__ == "__main__":
    main()
