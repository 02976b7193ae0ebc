"""Exact streaming over the hg38 chr2 fragment (2.33 Mbp) on the CPU: accuracy and peak RSS.

Each (chunk, total length) runs in a fresh process, streaming the first ``total`` bases of
``../shared/data/genomes/hg38_chr2_1-2333275.fa.gz`` (read window by window, never whole)
through the tiny fixture model. Each run also checks, on real sequence, that

* the stream's first 20 kbp equal a full forward over the same prefix, and
* a 2 kbp slice near the end equals a full forward over its receptive field,

both as max relative error in float32. Peak RSS must not grow with the total length.

    python benchmarks/bench_streaming.py [--chunks 4096 65536] [--totals 250000 1000000 2333275]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dnastream.genomics import FastaFile, encode  # noqa: E402
from dnastream.models import load_model  # noqa: E402
from dnastream.models.streaming import StreamingHyenaDNA  # noqa: E402

SHARED = ROOT.parent / "shared"
GENOME = SHARED / "data" / "genomes" / "hg38_chr2_1-2333275.fa.gz"
MODEL = SHARED / "fixtures" / "hyenadna" / "hf_tiny"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def one_run(chunk: int, total: int, filter_len: int | None) -> dict[str, float]:
    torch.set_num_threads(2)
    model = load_model(MODEL).eval()
    model.set_filter_len(filter_len or model.config.layer.l_max)
    engine = StreamingHyenaDNA(model)
    taps = engine.taps
    field = model.config.n_layer * (taps - 1 + 2)
    prefix_len = 20_000
    probe = (total - 2_000, total)
    keep_prefix: list[torch.Tensor] = []
    keep_probe: list[torch.Tensor] = []
    engine.reset(1)
    t0 = time.perf_counter()
    with FastaFile(GENOME, build_index=False) as fa:
        for start, seq in fa.iter_chunks("chr2", chunk, 0, total):
            ids = torch.from_numpy(encode(seq, record="chr2", offset=start)).unsqueeze(0)
            out = engine.step(ids).last_hidden_state
            end = start + ids.shape[1]
            if start < prefix_len:
                keep_prefix.append(out[:, : max(0, prefix_len - start)])
            lo, hi = max(start, probe[0]), min(end, probe[1])
            if lo < hi:
                keep_probe.append(out[:, lo - start : hi - start])
    seconds = time.perf_counter() - t0
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with FastaFile(GENOME, build_index=False) as fa:
        prefix_ids = torch.from_numpy(encode(fa.fetch("chr2", 0, prefix_len))).unsqueeze(0)
        lo = probe[0] - field
        probe_ids = torch.from_numpy(encode(fa.fetch("chr2", lo, probe[1]))).unsqueeze(0)
    with torch.no_grad():
        full_prefix = model(prefix_ids, return_logits=False).last_hidden_state
        full_probe = model(probe_ids, return_logits=False).last_hidden_state[:, field:]
    return {
        "chunk": chunk,
        "total": total,
        "filter_len": taps,
        "seconds": seconds,
        "kbp_s": total / seconds / 1e3,
        "peak_rss_mb": peak_rss_mb,
        "state_mb": engine.state.nbytes() / 2**20 if engine.state else 0.0,
        "rel_err_prefix": _rel(torch.cat(keep_prefix, 1), full_prefix),
        "rel_err_probe": _rel(torch.cat(keep_probe, 1), full_probe),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, nargs="*", default=[4096, 65536])
    parser.add_argument("--totals", type=int, nargs="*", default=[250_000, 1_000_000, 2_333_275])
    parser.add_argument("--filter-len", type=int, default=None, help="K (default: l_max=1026)")
    parser.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one[0], args.one[1], args.filter_len)))
        return
    rows = []
    for chunk in args.chunks:
        for total in args.totals:
            cmd = [sys.executable, __file__, "--one", str(chunk), str(total)]
            if args.filter_len:
                cmd += ["--filter-len", str(args.filter_len)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print("\n## Exact streaming, tiny model, hg38 chr2 fragment, CPU (2 threads)\n")
    print("| chunk | total bp | K | s | kbp/s | peak RSS MB | state MB | rel.err prefix "
          "| rel.err end slice |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['chunk']:,} | {r['total']:,} | {r['filter_len']} | {r['seconds']:.1f} | "
              f"{r['kbp_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['state_mb']:.2f} | "
              f"{r['rel_err_prefix']:.1e} | {r['rel_err_probe']:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
