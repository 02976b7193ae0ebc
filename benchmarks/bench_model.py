"""HyenaDNA forward throughput and peak memory: full and streaming, CPU and GPU.

Prints, per (shape, length, mode): time, tokens/s, peak memory, beside a baseline measured in
the same run (``naive``: the same model with the reference code's memory behaviour: whole
spectra of all channels at once, filters recomputed per call) and the reference HyenaDNA
numbers measured by the peers on an H100 (``../shared/anchors/flashfftconv_h100.md``), plus a
compute floor (the model's matmul FLOPs at the card's measured bf16 rate).

    python benchmarks/bench_model.py --device cuda            # H100: large shape, 160k..4M
    python benchmarks/bench_model.py --device cpu             # 2 cores: tiny shape, 1 kbp

Streaming rows run :class:`StreamingHyenaDNA` over the whole length in chunks; their peak
memory must not grow with the length.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import importlib  # noqa: E402

from dnastream.models import HyenaDNAConfig, HyenaDNAModel, HyenaLayerConfig  # noqa: E402
from dnastream.models.streaming import StreamingHyenaDNA  # noqa: E402

SHARED = ROOT.parent / "shared"
# modules (not the same-named functions the packages re-export) whose size limits we switch
fftconv_ref_mod = importlib.import_module("dnastream.kernels.fftconv_ref")
spectrum_mod = importlib.import_module("dnastream.kernels.spectrum")
filter_mod = importlib.import_module("dnastream.models.filter")

# Reference HyenaDNA (public standalone code, torch.fft), H100, large shape, B=1, bf16 autocast:
# ../shared/anchors/flashfftconv_h100.md. CPU: the reference code on this 2-core machine,
# tiny shape, 1 kbp E. coli windows, batch 64 (numbers given in the issue).
ANCHORS_GPU = {1_000_000: (810.0, 27.9), 2_300_000: (2044.0, 64.1), 4_000_000: (None, None)}
ANCHOR_CPU_TINY_KBPS = 17.9


@dataclass
class Row:
    device: str
    shape: str
    mode: str
    batch: int
    length: int
    chunk: int | None
    filter_len: int | None
    ms: float
    mtok_s: float
    peak_gb: float
    floor_ms: float | None
    ref_ms: float | None
    ref_peak_gb: float | None
    note: str = ""


def large_config(l_max: int = 1_000_002) -> HyenaDNAConfig:
    """HyenaDNA-large-1m shape: d 256, 8 layers, d_inner 1024, l_max 1M + 2."""
    layer = HyenaLayerConfig(
        l_max=l_max, emb_dim=5, filter_order=64, local_order=3, modulate=True, w=10
    )
    return HyenaDNAConfig(
        d_model=256,
        n_layer=8,
        d_inner=1024,
        vocab_size=12,
        layer=layer,
        pad_vocab_size_multiple=8,
        embed_dropout=0.0,
    )


def matmul_flops_per_token(cfg: HyenaDNAConfig) -> float:
    """Linear-layer FLOPs per token: in_proj 3d^2, out_proj d^2, MLP 2 d d_inner (x2 for FMA)."""
    d, inner = cfg.d_model, cfg.inner_dim
    return cfg.n_layer * 2 * (3 * d * d + d * d + 2 * d * inner) + 2 * d * 16


@contextlib.contextmanager
def naive_memory() -> Iterator[None]:
    """The reference code's memory behaviour: no channel grouping, no caches."""
    saved = (
        fftconv_ref_mod.WORKSPACE_BYTES,
        spectrum_mod.SPECTRUM_CACHE_BYTES,
        filter_mod.FILTER_CACHE_BYTES,
    )
    fftconv_ref_mod.WORKSPACE_BYTES = 1 << 62
    spectrum_mod.SPECTRUM_CACHE_BYTES = -1
    filter_mod.FILTER_CACHE_BYTES = -1
    try:
        yield
    finally:
        (
            fftconv_ref_mod.WORKSPACE_BYTES,
            spectrum_mod.SPECTRUM_CACHE_BYTES,
            filter_mod.FILTER_CACHE_BYTES,
        ) = saved


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """Long convolutions through the PyTorch reference (torch.fft) instead of Triton."""
    saved = os.environ.get("DNASTREAM_FFTCONV")
    os.environ["DNASTREAM_FFTCONV"] = "reference"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["DNASTREAM_FFTCONV"]
        else:
            os.environ["DNASTREAM_FFTCONV"] = saved


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(fn: Callable[[], object], device: str, repeats: int) -> tuple[float, float]:
    """Median ms over ``repeats`` runs after one warm-up, and peak memory (GB) of one run."""
    if device == "cuda":
        fn()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        peak = torch.cuda.max_memory_allocated() / 1e9
    else:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        peak = rss_gb()
    times.sort()
    return times[len(times) // 2], peak


def bf16_matmul_tflops() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms, _ = measure(lambda: a @ b, "cuda", 10)
    return 2 * 8192**3 / (ms * 1e-3) / 1e12


def gpu_rows(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    tflops = bf16_matmul_tflops()
    print(f"card: {torch.cuda.get_device_name()}; bf16 matmul {tflops:.0f} TFLOP/s", flush=True)
    torch.manual_seed(0)
    model = HyenaDNAModel(large_config()).cuda().eval()
    cfg = model.config
    flops = matmul_flops_per_token(cfg)

    def full(ids: torch.Tensor) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                return model(ids, return_logits=False).last_hidden_state

        return run

    for length in args.lengths:
        filter_len = None if length <= cfg.layer.l_max else cfg.layer.l_max
        model.set_filter_len(filter_len)
        ids = torch.randint(7, 11, (1, length), device="cuda")
        floor = flops * length / (tflops * 1e12) * 1e3
        ref_ms, ref_gb = ANCHORS_GPU.get(length, (None, None))
        modes = [("full", contextlib.nullcontext), ("full, torch.fft", reference_ops)]
        if length <= 2_300_000 and args.naive:
            modes.append(("naive", naive_memory))
        for mode, ctx in modes:
            gc.collect()
            torch.cuda.empty_cache()
            try:
                with ctx():
                    ms, peak = measure(full(ids), "cuda", args.repeats)
                note = ""
            except torch.OutOfMemoryError as err:
                ms, peak, note = math.nan, math.nan, f"OOM: {str(err)[:60]}"
            rows.append(
                Row("cuda", "large", mode, 1, length, None, filter_len, ms, length / ms / 1e3,
                    peak, floor, ref_ms, ref_gb, note)
            )  # fmt: skip
            print(rows[-1], flush=True)
    model.set_filter_len(None)
    for length in args.stream_lengths:
        for filter_len, chunk in args.stream_configs:
            model.set_filter_len(filter_len)
            engine = StreamingHyenaDNA(model)
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            engine.reset(1)
            gen = torch.Generator(device="cuda").manual_seed(1)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                for start in range(0, length, chunk):
                    n = min(chunk, length - start)
                    ids = torch.randint(7, 11, (1, n), device="cuda", generator=gen)
                    engine.step(ids)
            torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) * 1e3
            peak = torch.cuda.max_memory_allocated() / 1e9
            rows.append(
                Row("cuda", "large", "stream", 1, length, chunk, filter_len, ms,
                    length / ms / 1e3, peak, flops * length / (tflops * 1e12) * 1e3, None, None)
            )  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def cpu_rows(args: argparse.Namespace) -> list[Row]:
    from dnastream.genomics import FastaFile, encode
    from dnastream.models import load_model

    rows: list[Row] = []
    torch.set_num_threads(args.threads)
    model = load_model(SHARED / "fixtures" / "hyenadna" / "hf_tiny").eval()
    genome = SHARED / "data" / "genomes" / "ecoli_K12_W3110_NC_007779.1.fasta.gz"
    with FastaFile(genome) as fa:
        name = fa.records()[0].name
        seq = fa.fetch(name, 0, 64 * 1000 * args.batches)
    ids = torch.from_numpy(encode(seq)).view(-1, 1000)
    ids = torch.cat([torch.zeros(ids.shape[0], 1, dtype=ids.dtype), ids], 1)  # [CLS] + 1 kbp
    batches = ids.split(64)

    def run() -> None:
        with torch.no_grad():
            for batch in batches:
                model(batch, return_logits=False)

    ms, peak = measure(run, "cpu", 3)
    bases = 1000 * ids.shape[0]
    rows.append(
        Row("cpu", "tiny", "full 1kbp windows", 64, 1001, None, None, ms / len(batches),
            bases / ms / 1e3, peak, None, None, None,
            f"{bases / ms:.1f} kbp/s vs reference {ANCHOR_CPU_TINY_KBPS} kbp/s")
    )  # fmt: skip
    print(rows[-1], flush=True)
    return rows


def print_table(rows: list[Row], card: str) -> None:
    print(f"\n## HyenaDNA forward, {card}\n")
    print("| dev | shape | mode | B | length | chunk | K | ms | M tok/s | peak GB | floor ms "
          "| ref ms | ref peak GB | note |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:

        def f(x: float | None, p: str = ".1f") -> str:
            return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, p)

        print(f"| {r.device} | {r.shape} | {r.mode} | {r.batch} | {r.length:,} | "
              f"{r.chunk or '-'} | {r.filter_len or '-'} | {f(r.ms)} | {f(r.mtok_s, '.3f')} | "
              f"{f(r.peak_gb, '.2f')} | {f(r.floor_ms)} | {f(r.ref_ms, '.0f')} | "
              f"{f(r.ref_peak_gb)} | {r.note} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lengths", type=int, nargs="*",
                        default=[160_000, 1_000_000, 2_300_000, 4_000_000])  # fmt: skip
    parser.add_argument("--stream-lengths", type=int, nargs="*",
                        default=[1_000_000, 4_000_000, 16_000_000])  # fmt: skip
    parser.add_argument("--stream-configs", default="65536:262144,1000002:1048576",
                        help="K:chunk pairs for streaming rows")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive", action="store_true", help="also time the naive-memory mode")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4, help="CPU: batches of 64 x 1 kbp")
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args()
    args.stream_configs = [
        tuple(int(x) for x in pair.split(":")) for pair in args.stream_configs.split(",") if pair
    ]
    if args.device == "cuda":
        rows = gpu_rows(args)
        card = torch.cuda.get_device_name()
    else:
        rows = cpu_rows(args)
        card = f"CPU, {args.threads} threads ({os.cpu_count()} cores visible)"
    print_table(rows, card)
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
            writer.writeheader()
            writer.writerows(asdict(r) for r in rows)


if __name__ == "__main__":
    main()
