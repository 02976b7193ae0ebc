"""End-to-end pipeline throughput beside model-only throughput, measured in the same run.

* ``embed``: the whole *E. coli* genome (4.65 Mbp, plain gzip) through ``dnastream embed``
  (a real subprocess: FASTA reading, tokenization thread, model, HDF5 writing), and
* ``score``: the whole 2.33 Mbp hg38 chr2 fragment as one region through ``dnastream score``,

each beside the model alone streaming the same tokens (already in memory) with the same chunk
size and bringing back what the pipeline brings back (hidden states for embed, log-likelihoods
for score), so ``overhead = pipeline time / model time - 1`` is what the pipeline adds. Peak
memory is the subprocess's peak RSS.

The subprocess writes its phase timings (``--stats-json``, see ``dnastream.pipelines.stats``),
which split the end-to-end time into a fixed cost (spawn -> first chunk on the host: python and
torch imports, CUDA init, model load, Triton JIT / warm-up; plus the drain and finalize after
the last chunk) and the steady state (first chunk -> last chunk), compared with the model's own
steady state (its first chunk, which carries the warm-up, left out on both sides).

``--model-shape large`` runs a random-weight HyenaDNA-large shape (d_model 256, 8 layers,
d_inner 1024, l_max 1,000,002; K = l_max) written to a temporary native checkpoint, where the
model dominates. ``--max-bases N`` limits each job to its first N bases (CPU smoke runs).

    python benchmarks/bench_pipeline.py --device cpu --threads 2      # bar: >= 53.7 kbp/s, <= 2 GB
    python benchmarks/bench_pipeline.py --device cuda                 # bar: overhead <= 10%
    python benchmarks/bench_pipeline.py --device cuda --model-shape large

A last table times both sides in fresh processes: the pipeline's command against the model
alone in a fresh process (``--model-only-child``: imports, CUDA, model load and the kernels'
caches paid the same way, tokens prepared beforehand), i.e. what the pipeline adds end to end.
Both leave through :mod:`dnastream.cli.exit`'s quick exit, and each pipeline run writes a new
output file (replacing a finished 2.4 GB file costs its unlink, not the pipeline's work).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dnastream.genomics import FastaFile, encode  # noqa: E402
from dnastream.models import HyenaDNAModel, load_model  # noqa: E402
from dnastream.models.load import save_native  # noqa: E402
from dnastream.models.streaming import StreamingHyenaDNA  # noqa: E402

SHARED = ROOT.parent / "shared"
ECOLI = SHARED / "data" / "genomes" / "ecoli_K12_W3110_NC_007779.1.fasta.gz"
HG38 = SHARED / "data" / "genomes" / "hg38_chr2_1-2333275.fa.gz"
MODEL = ROOT / "tests" / "data" / "hyenadna_tiny_random_hf"
REFERENCE_CPU_KBPS = 17.9  # reference HyenaDNA code, tiny shape, this 2-core machine


def large_checkpoint(folder: Path) -> Path:
    """A random-weight HyenaDNA-large shape (d 256, 8 layers, d_inner 1024, l_max 1,000,002)
    saved as a native checkpoint in ``folder``."""
    tiny = load_model(MODEL).config
    config = tiny.replace(
        d_model=256,
        n_layer=8,
        d_inner=1024,
        layer=dataclasses.replace(tiny.layer, l_max=1_000_002),
    )
    torch.manual_seed(0)
    return save_native(HyenaDNAModel(config).eval(), folder / "hyenadna_large_random")


def model_only(
    model_path: Path,
    path: Path,
    record: str,
    chunk: int,
    device: str,
    logprobs: bool,
    max_bases: int | None,
) -> tuple[float, float, int, int]:
    """(total s, steady s, bases, first chunk bases) for the model alone streaming the
    record (tokens prepared beforehand); steady leaves out the first chunk (warm-up)."""
    with FastaFile(path, build_index=False) as fa:
        pieces = fa.iter_chunks(record, chunk, 0, max_bases)
        ids = [torch.from_numpy(encode(seq)) for _, seq in pieces]
    model = load_model(model_path, device=device).eval()
    engine = StreamingHyenaDNA(model, filter_len=model.config.layer.l_max)
    engine.reset(1)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    first = None
    for piece in ids:
        out = engine.step(piece.to(device)[None], return_logprobs=logprobs)
        # bring back what the pipeline brings back (a synchronous copy waits for the GPU)
        (out.token_logprobs if logprobs else out.last_hidden_state).cpu()
        if first is None:
            first = time.perf_counter()
    if cuda:
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    return t1 - t0, t1 - first, sum(int(p.numel()) for p in ids), int(ids[0].numel())


def model_only_child(model_path: str, tokens: str, chunk: int, device: str, logprobs: bool) -> None:
    """The model alone in a fresh process (``--model-only-child``): load the model and stream
    the tokens saved by the parent (``.npy``), bringing back what the pipeline brings back.
    The parent times the whole process, so it pays what the pipeline pays for python, torch,
    CUDA and the kernels' caches, but no FASTA, tokenizer, HDF5 or compression."""
    ids = torch.from_numpy(np.load(tokens))
    model = load_model(Path(model_path), device=device).eval()
    engine = StreamingHyenaDNA(model, filter_len=model.config.layer.l_max)
    engine.reset(1)
    for piece in ids.split(chunk):
        out = engine.step(piece.to(device)[None], return_logprobs=logprobs)
        (out.token_logprobs if logprobs else out.last_hidden_state).cpu()
    if device.startswith("cuda"):
        torch.cuda.synchronize()


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


def write_floor(nbytes: int, folder: str) -> float:
    """Seconds to write ``nbytes`` to a new file in ``folder`` in 1 MiB pieces, no fsync (as
    the pipeline writes its HDF5 file): the storage side of the physical floor."""
    piece = np.random.default_rng(0).random(1 << 17).astype(np.float64).tobytes()  # 1 MiB
    path = Path(folder) / "write_floor.bin"
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        for _ in range(max(1, nbytes // len(piece))):
            fh.write(piece)
    seconds = time.perf_counter() - t0
    path.unlink()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=None, help="default: 4096 CPU, 262144 GPU")
    parser.add_argument("--jobs", default="embed,score")
    parser.add_argument("--model-shape", choices=("tiny", "large"), default="tiny")
    parser.add_argument("--max-bases", type=int, default=None, help="only the first N bases")
    parser.add_argument("--keep-stats", type=Path, default=None, help="copy the stats JSONs here")
    parser.add_argument("--fresh-repeats", type=int, default=3,
                        help="fresh-process runs of each side (end-to-end table)")  # fmt: skip
    parser.add_argument("--model-only-child", nargs=4, metavar=("MODEL", "TOKENS", "CHUNK", "LP"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.model_only_child:
        m, tokens, n, lp = args.model_only_child
        model_only_child(m, tokens, int(n), args.device, lp == "1")
        from dnastream.cli.exit import exit_now

        exit_now(0)  # the same quick exit as the pipeline's command (like with like)
        return
    chunk = args.chunk or (4096 if args.device == "cpu" else 262_144)
    torch.set_num_threads(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        f"CPU, {args.threads} threads")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = MODEL if args.model_shape == "tiny" else large_checkpoint(Path(tmp))
        lim = args.max_bases
        ecoli_region = ["--region", f"NC_007779.1:1-{lim}"] if lim else []
        hg38_region = f"chr2:1-{min(lim, 2_333_275)}" if lim else "chr2:1-2333275"
        common = ["--model", str(model), "--chunk", str(chunk), "--device", args.device, "--quiet"]
        jobs = {
            "embed E. coli": (ECOLI, "NC_007779.1", False, [
                sys.executable, "-m", "dnastream", "embed", str(ECOLI), "-o", f"{tmp}/e.h5",
                *ecoli_region, *common,
            ]),
            "score hg38 chr2": (HG38, "chr2", True, [
                sys.executable, "-m", "dnastream", "score", str(HG38), "--region", hg38_region,
                "-o", f"{tmp}/s.h5", *common,
            ]),
        }  # fmt: skip
        for name, (path, record, logprobs, cmd) in jobs.items():
            job = name.split()[0]
            if job not in args.jobs:
                continue
            model_s, model_steady, bases, first = model_only(
                model, path, record, chunk, args.device, logprobs, lim
            )
            stats_path = Path(tmp) / f"{job}.json"
            spawn = time.time()
            pipe_s, rss_gb, _ = pipeline([*cmd, "--stats-json", str(stats_path)], env)
            stats = json.loads(stats_path.read_text())
            # the model alone in a fresh process, timed like the pipeline's subprocess
            tokens = Path(tmp) / f"{job}_tokens.npy"
            with FastaFile(path, build_index=False) as fa:
                np.save(tokens, np.concatenate(
                    [encode(seq) for _, seq in fa.iter_chunks(record, chunk, 0, lim)]))  # fmt: skip
            child = [sys.executable, __file__, "--device", args.device, "--model-only-child",
                     str(model), str(tokens), str(chunk), "1" if logprobs else "0"]  # fmt: skip
            # fresh processes alternate (model alone, pipeline) --fresh-repeats times: python
            # and torch imports vary by seconds from run to run on a shared host
            fresh_runs, pipe_runs = [], []
            out_file = Path(cmd[cmd.index("-o") + 1])
            for _ in range(args.fresh_repeats):
                fresh_runs.append(pipeline(child, env)[0])
                # a new output each time, as the first run wrote it: replacing a finished
                # 2.4 GB file (--force) costs its unlink, 1.8-2.8 s on the lent H100 host
                # (results/exit_probe_h100_stop11.log), which is not the pipeline's work
                out_file.unlink(missing_ok=True)
                pipe_runs.append(pipeline(cmd, env)[0])
            if args.keep_stats is not None:
                args.keep_stats.mkdir(parents=True, exist_ok=True)
                (args.keep_stats / stats_path.name).write_text(stats_path.read_text())
            disk_s = write_floor(out_file.stat().st_size, tmp)
            stats["write_floor_s"] = disk_s
            stats["output_bytes"] = out_file.stat().st_size
            stats["model_only_fresh_runs_s"] = fresh_runs
            stats["pipeline_fresh_runs_s"] = pipe_runs
            rows.append((name, bases, first, model_s, model_steady, pipe_s, rss_gb, spawn, stats))
            print(json.dumps(stats), flush=True)
    shape = "tiny" if args.model_shape == "tiny" else "HyenaDNA-large shape (random weights)"
    print(f"\n## Pipelines end to end, {shape} model, {card}, chunk {chunk:,}\n")
    print("| job | Mbp | model-only kbp/s | pipeline kbp/s | overhead | peak RSS GB | note |")
    print("|---|---|---|---|---|---|---|")
    for name, bases, _, model_s, _, pipe_s, rss, _, _ in rows:
        note = ""
        if args.device == "cpu" and name.startswith("embed") and not lim:
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
    print("\n### Fixed cost and steady state (from the pipeline's --stats-json)\n")
    print(
        "fixed = spawn -> first chunk on the host + drain + finalize, less the first chunk's "
        "share of model-only steady time; steady = first chunk -> last chunk, model-only "
        "likewise without its first chunk.\n"
    )
    print(
        "| job | fixed s | imports s | setup s | first chunk s | drain+finalize s "
        "| model steady kbp/s | pipeline steady kbp/s | steady overhead | fixed vs model-only |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, bases, first, model_s, model_steady, _, _, spawn, st in rows:
        ph = st["phases"]
        m_rate = (bases - first) / model_steady if model_steady > 0 else float("nan")
        to_entry = st["entry_epoch"] - spawn
        to_first = to_entry + st["marks"]["first_chunk"]
        tail = (ph.get("drain") or 0.0) + (ph.get("finalize") or 0.0)
        fixed = to_first + tail - st["first_chunk_bases"] / m_rate
        p_rate = (st["steady_kbp_s"] or float("nan")) * 1e3
        cells = [
            name,
            f"{fixed:.2f}",
            f"{to_entry:.2f}",
            f"{(ph.get('setup') or 0) + (ph.get('prepare') or 0):.2f}",
            f"{ph.get('first_chunk') or 0:.2f}",
            f"{tail:.2f}",
            f"{m_rate / 1e3:.1f}",
            f"{p_rate / 1e3:.1f}",
            f"{m_rate / p_rate - 1:+.0%}",
            f"{fixed / model_s:+.0%}",
        ]
        print("| " + " | ".join(cells) + " |")  # fmt: skip
    print(
        "\nStorage floor: the output file's bytes written to the same disk in 1 MiB pieces "
        "(no fsync), measured after each job. Where it exceeds the model's time, the pipeline "
        "cannot beat it.\n"
    )
    print("| job | output GB | write floor s | model-only s | pipeline s | vs max(model, floor) |")
    print("|---|---|---|---|---|---|")
    for name, _, _, model_s, _, pipe_s, _, _, st in rows:
        floor = max(model_s, st["write_floor_s"])
        print(f"| {name} | {st['output_bytes'] / 1e9:.2f} | {st['write_floor_s']:.2f} | "
              f"{model_s:.2f} | {pipe_s:.2f} | {pipe_s / floor - 1:+.0%} |")  # fmt: skip
    print(
        "\nBoth in fresh processes: the pipeline's command against the model alone in a fresh "
        "process (python, torch, CUDA, model load, kernel caches; tokens prepared beforehand, "
        "outputs copied back, nothing written; both leave through dnastream.cli.exit's quick "
        "exit; each pipeline run writes a new output file): what the pipeline itself adds end "
        "to end.\n"
    )
    print("| job | runs | model-only fresh s (median) | pipeline s (median) | end-to-end overhead "
          "| model-only runs s | pipeline runs s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, *_, st in rows:
        fresh, pipe = st["model_only_fresh_runs_s"], st["pipeline_fresh_runs_s"]
        f_med, p_med = float(np.median(fresh)), float(np.median(pipe))
        print(f"| {name} | {len(fresh)} | {f_med:.2f} | {p_med:.2f} | {p_med / f_med - 1:+.0%} "
              f"| {', '.join(f'{x:.2f}' for x in fresh)} "
              f"| {', '.join(f'{x:.2f}' for x in pipe)} |")  # fmt: skip
    print("\nloop sums (s):")
    for name, *_, st in rows:
        loop = ", ".join(f"{k} {v:.2f}" for k, v in sorted(st["loop"].items()))
        print(f"- {name}: {loop}")


if __name__ == "__main__":
    main()
