"""FASTA streaming + windowing + tokenization throughput and peak memory, on real genomes.

Each genome runs in a fresh child process pinned to one CPU core, so that its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that genome alone. The timed pass
opens the file, validates it (the streaming pass that measures the records), cuts every
record into windows (``iter_genome_windows``) and tokenizes every window
(``dnastream.genomics.tokenizer.encode``). Peak RSS should not grow with genome size: the
``synthetic`` row (the yeast genome written four times, as a plain-gzip file in a temporary
folder) checks that.

Usage::

    python benchmarks/bench_io.py                 # all genomes, window 32768, + strand
    python benchmarks/bench_io.py --size 1024 --strand -
    python benchmarks/bench_io.py --json out.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GENOMES = REPO_ROOT.parent / "shared" / "data" / "genomes"
INPUTS = {
    "ecoli_200kb_slice (bgzf)": REPO_ROOT / "tests" / "data" / "ecoli_K12_W3110_first200kb.fa.gz",
    "hg38_chr2_2.3Mb (bgzf)": GENOMES / "hg38_chr2_1-2333275.fa.gz",
    "ecoli_K12 (gzip)": GENOMES / "ecoli_K12_W3110_NC_007779.1.fasta.gz",
    "yeast_S288C (gzip)": GENOMES / "sacCer_S288C_R64_chrI-XVI.fa.gz",
}


def _max_rss_mib() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def one_pass(path: Path, size: int, stride: int | None, strand: str, encode) -> dict:
    """Open ``path``, window every record and tokenize every window; time it."""
    from dnastream.genomics.fasta import FastaFile
    from dnastream.genomics.windows import iter_genome_windows

    t0 = time.perf_counter()
    n_windows = n_bases = n_tokens = checksum = 0
    with FastaFile(path) as fa:
        mode = f"{fa.compression}, {'indexed' if fa.random_access else 'streamed'}"
        for w in iter_genome_windows(fa, size=size, stride=stride, strand=strand):
            n_windows += 1
            n_bases += len(w.seq)
            if encode is not None:
                ids = encode(w.seq, record=w.record, offset=w.start, path=path)
                n_tokens += ids.shape[0]
                checksum += int(ids[-1])
        n_records = len(fa.records())  # measured by the single streaming pass above
    seconds = time.perf_counter() - t0
    return {
        "path": str(path),
        "mode": mode,
        "records": n_records,
        "windows": n_windows,
        "bases": n_bases,
        "tokens": n_tokens,
        "checksum": checksum,
        "seconds": seconds,
        "mbp_per_s": n_bases / seconds / 1e6,
    }


def run_one(
    path: Path, size: int, stride: int | None, strand: str, tokenize: bool, repeat: int
) -> dict:
    """``repeat`` passes in this process (pinned to one core); the fastest, and the peak RSS."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    encode = None
    if tokenize:
        try:
            from dnastream.genomics.tokenizer import encode
        except ImportError as exc:  # written in parallel by another engineer
            raise SystemExit(
                f"dnastream.genomics.tokenizer.encode is not available ({exc}); "
                "run with --no-tokenize to time FASTA reading and windowing alone"
            ) from exc
    rss_start = _max_rss_mib()
    runs = [one_pass(path, size, stride, strand, encode) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["seconds"])
    best["first_pass_seconds"] = runs[0]["seconds"]  # includes lazy imports (Bio.bgzf, ...)
    best["rss_after_imports_mib"] = rss_start
    best["peak_rss_mib"] = _max_rss_mib()
    return best


def make_synthetic(folder: Path, copies: int = 4) -> Path:
    """The yeast genome written ``copies`` times (ids suffixed) as one plain-gzip FASTA."""
    src = INPUTS["yeast_S288C (gzip)"]
    out = folder / f"yeast_x{copies}.fa.gz"
    text = gzip.decompress(src.read_bytes())
    with gzip.open(out, "wb", compresslevel=1) as fh:
        for k in range(copies):  # '>' only starts header lines here
            fh.write(text.replace(b">", f">copy{k}_".encode()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32_768, help="window size (bases)")
    parser.add_argument("--stride", type=int, default=None, help="window stride (default size)")
    parser.add_argument("--strand", choices=["+", "-"], default="+")
    parser.add_argument("--no-tokenize", action="store_true", help="time windowing alone")
    parser.add_argument("--no-synthetic", action="store_true", help="skip the 48 Mbp genome")
    parser.add_argument("--repeat", type=int, default=3, help="passes per genome (best kept)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()

    if args.one is not None:
        tokenize = not args.no_tokenize
        result = run_one(args.one, args.size, args.stride, args.strand, tokenize, args.repeat)
        print(json.dumps(result))
        return
    if not GENOMES.is_dir():
        raise SystemExit(f"shared genomes folder {GENOMES} is absent")
    child = [sys.executable, __file__, "--size", str(args.size), "--strand", args.strand]
    child += ["--stride", str(args.stride)] if args.stride else []
    child += ["--no-tokenize"] if args.no_tokenize else []
    child += ["--repeat", str(args.repeat)]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_io-") as tmp:
        inputs = dict(INPUTS)
        if not args.no_synthetic:
            inputs["synthetic yeast x4 (gzip)"] = make_synthetic(Path(tmp))
        what = "windowing" + ("" if args.no_tokenize else " + tokenization")
        print(f"{what}: window {args.size}, stride {args.stride or args.size}, "
              f"strand {args.strand}, one core, best of {args.repeat}")  # fmt: skip
        header = f"{'genome':28} {'mode':17} {'Mbp':>7} {'windows':>8} {'s':>7} {'Mbp/s':>7}"
        print(header + f" {'RSS0 MiB':>9} {'peak MiB':>9}")
        for name, path in inputs.items():
            out = subprocess.run(
                [*child, "--one", str(path)], capture_output=True, text=True, check=False
            )
            if out.returncode != 0:
                raise SystemExit(f"{name}: child failed:\n{out.stderr}")
            best = json.loads(out.stdout.strip().splitlines()[-1])
            best["genome"] = name
            results.append(best)
            print(
                f"{name:28} {best['mode']:17} {best['bases'] / 1e6:7.2f} {best['windows']:8d} "
                f"{best['seconds']:7.3f} {best['mbp_per_s']:7.1f} "
                f"{best['rss_after_imports_mib']:9.1f} {best['peak_rss_mib']:9.1f}"
            )

    peaks = [r["peak_rss_mib"] for r in results]
    sizes = [r["bases"] / 1e6 for r in results]
    slowest = min(results, key=lambda r: r["mbp_per_s"])
    print(
        f"peak RSS {min(peaks):.1f}-{max(peaks):.1f} MiB for {min(sizes):.1f}-{max(sizes):.1f} "
        f"Mbp genomes; slowest {slowest['mbp_per_s']:.1f} Mbp/s ({slowest['genome']})"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
