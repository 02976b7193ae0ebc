"""End-to-end pipeline throughput beside model-only throughput, measured in the same run.

* ``embed``: the whole *E. coli* genome (4.65 Mbp, plain gzip) through ``dnastream embed``
  (a real subprocess: FASTA reading, tokenization thread, model, HDF5 writing), and
* ``score``: the whole 2.33 Mbp hg38 chr2 fragment as one region through ``dnastream score``,

each beside the model alone streaming the same tokens (already in memory) with the same chunk
size, so ``overhead = pipeline time / model time - 1`` is what the pipeline adds. Peak memory is
the subprocess's peak RSS (and peak CUDA memory for the model-only pass on a GPU).

    python benchmarks/bench_pipeline.py --device cpu --threads 2      # bar: >= 53.7 kbp/s, <= 2 GB
    python benchmarks/bench_pipeline.py --device cuda                 # bar: overhead <= 10%
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dnastream.genomics import FastaFile, encode  # noqa: E402
from dnastream.models import load_model  # noqa: E402
from dnastream.models.streaming import StreamingHyenaDNA  # noqa: E402

SHARED = ROOT.parent / "shared"
ECOLI = SHARED / "data" / "genomes" / "ecoli_K12_W3110_NC_007779.1.fasta.gz"
HG38 = SHARED / "data" / "genomes" / "hg38_chr2_1-2333275.fa.gz"
MODEL = ROOT / "tests" / "data" / "hyenadna_tiny_random_hf"
REFERENCE_CPU_KBPS = 17.9  # reference HyenaDNA code, tiny shape, this 2-core machine


def model_only(
    path: Path, record: str, chunk: int, device: str, logprobs: bool
) -> tuple[float, int]:
    """Seconds for the model alone to stream the whole record (tokens prepared beforehand)."""
    with FastaFile(path, build_index=False) as fa:
        ids = [torch.from_numpy(encode(seq)) for _, seq in fa.iter_chunks(record, chunk)]
    model = load_model(MODEL, device=device).eval()
    engine = StreamingHyenaDNA(model, filter_len=model.config.layer.l_max)
    engine.reset(1)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for piece in ids:
        out = engine.step(piece.to(device)[None], return_logprobs=logprobs)
        out.last_hidden_state.cpu()  # the pipeline also brings every chunk back to the host
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, sum(int(p.numel()) for p in ids)


def pipeline(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GB) of a subprocess, and its stderr tail."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds, max(peak, before) / 2**20, proc.stderr[-300:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=None, help="default: 4096 CPU, 262144 GPU")
    parser.add_argument("--jobs", default="embed,score")
    args = parser.parse_args()
    chunk = args.chunk or (4096 if args.device == "cpu" else 262_144)
    torch.set_num_threads(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        f"CPU, {args.threads} threads")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = {
            "embed E. coli": (ECOLI, "NC_007779.1", False, [
                sys.executable, "-m", "dnastream", "embed", str(ECOLI), "-o", f"{tmp}/e.h5",
                "--model", str(MODEL), "--chunk", str(chunk), "--device", args.device, "--quiet",
            ]),
            "score hg38 chr2 2.33 Mbp": (HG38, "chr2", True, [
                sys.executable, "-m", "dnastream", "score", str(HG38), "--region",
                "chr2:1-2333275", "-o", f"{tmp}/s.h5", "--model", str(MODEL), "--chunk",
                str(chunk), "--device", args.device, "--quiet",
            ]),
        }  # fmt: skip
        for name, (path, record, logprobs, cmd) in jobs.items():
            if name.split()[0] not in args.jobs:
                continue
            model_s, bases = model_only(path, record, chunk, args.device, logprobs)
            pipe_s, rss_gb, _ = pipeline(cmd, env)
            rows.append((name, bases, model_s, pipe_s, rss_gb))
            print(rows[-1], flush=True)
    print(f"\n## Pipelines end to end, tiny model, {card}, chunk {chunk:,}\n")
    print("| job | Mbp | model-only kbp/s | pipeline kbp/s | overhead | peak RSS GB | note |")
    print("|---|---|---|---|---|---|---|")
    for name, bases, model_s, pipe_s, rss in rows:
        note = ""
        if args.device == "cpu" and name.startswith("embed"):
            note = (
                f"reference code {REFERENCE_CPU_KBPS} kbp/s; bar 3x = {3 * REFERENCE_CPU_KBPS:.1f}"
            )
        cells = [
            name,
            f"{bases / 1e6:.2f}",
            f"{bases / model_s / 1e3:.1f}",
            f"{bases / pipe_s / 1e3:.1f}",
            f"{pipe_s / model_s - 1:+.0%}",
            f"{rss:.2f}",
            note,
        ]
        print("| " + " | ".join(cells) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
