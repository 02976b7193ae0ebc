"""Host side of ``dnastream embed`` alone: the model step replaced by precomputed outputs.

The tiny model's real embeddings of the first ``--rows`` bases of *E. coli* are computed once;
then :meth:`ModelRunner._step` is replaced by a function returning them (tiled to the step's
length), so a run measures what the host adds: reading and tokenizing, masks, the HDF5 writer
(compression or raw chunks), worker processes. Real outputs matter: float embeddings barely
compress, a constant stand-in compresses 100-fold and would hide the cost.

    python benchmarks/bench_embed_host.py --procs 2                     # like a GPU run
    python benchmarks/bench_embed_host.py --procs 0 --chunk 4096        # like a CPU run
    DNASTREAM_COMPRESS_ALWAYS=1 python benchmarks/bench_embed_host.py   # every chunk filtered
    PYTHONPATH=/old/checkout/src python benchmarks/bench_embed_host.py  # another version

Prints one JSON line: steady kbp/s, loop sums, raw/filtered chunk counts, file size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if "PYTHONPATH" not in os.environ:
    sys.path.insert(0, str(ROOT / "src"))

import dnastream  # noqa: E402
from dnastream.genomics import FastaFile, encode  # noqa: E402
from dnastream.models import load_model  # noqa: E402
from dnastream.models.streaming import StreamingChunkOutput, StreamingHyenaDNA  # noqa: E402
from dnastream.pipelines import runner as runner_mod  # noqa: E402
from dnastream.pipelines.embed import EmbedOptions, run_embed  # noqa: E402

SHARED = ROOT.parent / "shared"
ECOLI = SHARED / "data" / "genomes" / "ecoli_K12_W3110_NC_007779.1.fasta.gz"
MODEL = ROOT / "tests" / "data" / "hyenadna_tiny_random_hf"


def real_outputs(rows: int, dtype: torch.dtype) -> torch.Tensor:
    """(rows, d) final hidden states of the tiny model on E. coli's first ``rows`` bases."""
    model = load_model(MODEL).eval()
    with FastaFile(ECOLI) as fa:
        record = fa.records()[0].name
        ids = torch.from_numpy(encode(fa.fetch(record, 0, rows))).long()[None]
    engine = StreamingHyenaDNA(model)
    engine.reset(1)
    with torch.inference_mode():
        out = engine.step(ids)
    return out.last_hidden_state[0].to(dtype).contiguous()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", type=int, default=2, help="DNASTREAM_COMPRESS_PROCS")
    ap.add_argument("--chunk", type=int, default=262_144)
    ap.add_argument("--rows", type=int, default=16_384, help="distinct output rows tiled")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--compression", default="lzf")
    ap.add_argument("--max-bases", type=int, default=None, help="region: the first N bases")
    ap.add_argument("--keep", type=Path, default=None, help="keep the output here")
    args = ap.parse_args()
    os.environ["DNASTREAM_COMPRESS_PROCS"] = str(args.procs)

    base = real_outputs(args.rows, torch.float32)
    reps = -(-args.chunk // args.rows)
    tile = base.repeat(reps, 1)[: args.chunk][None]  # (1, chunk, d)

    def fake_step(self, ids, layers, logprobs, hidden):  # noqa: ANN001, ANN202
        b, n = ids.shape
        return StreamingChunkOutput(start=0, last_hidden_state=tile[:, :n].expand(b, n, -1))

    runner_mod.ModelRunner._step = fake_step  # type: ignore[method-assign]
    regions = ()
    with FastaFile(ECOLI) as fa:
        record = fa.records()[0].name
    if args.max_bases:
        regions = (f"{record}:1-{args.max_bases}",)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "out.h5"
        stats = Path(tmp) / "stats.json"
        opts = EmbedOptions(
            device="cpu",
            chunk=args.chunk,
            dtype=args.dtype,
            compression=args.compression,
            force=True,
        )
        t0 = time.perf_counter()
        report = run_embed(
            ECOLI, MODEL, out, region_strings=regions, options=opts, stats_path=stats
        )
        wall = time.perf_counter() - t0
        s = json.loads(stats.read_text())
        size = os.path.getsize(report.output)
    print(
        json.dumps(
            {
                "dnastream": str(Path(dnastream.__file__).parent),
                "always": os.environ.get("DNASTREAM_COMPRESS_ALWAYS", ""),
                "procs": args.procs,
                "chunk": args.chunk,
                "dtype": args.dtype,
                "compression": args.compression,
                "bases": s["bases"],
                "wall_s": round(wall, 2),
                "steady_kbp_s": round(s["steady_kbp_s"], 1),
                "loop": {k: round(v, 2) for k, v in s["loop"].items()},
                "raw_chunks": s.get("raw_chunks"),
                "filtered_chunks": s.get("filtered_chunks"),
                "file_bytes": size,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
