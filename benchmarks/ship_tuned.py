"""Merge a tuning cache (``fftconv_plans.json`` from ``tune_conv.py --write-cache`` on a lent
GPU) into the settings shipped with dnastream (``src/dnastream/kernels/tuned_plans.json``),
which :func:`dnastream.kernels.autotune.tuned_plan` falls back to when a user's own cache has
no entry for their card.

    python benchmarks/ship_tuned.py gpu_out/fftconv_plans.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from dnastream.kernels import autotune  # noqa: E402

SHIPPED = REPO / "src" / "dnastream" / "kernels" / autotune.PACKAGED_FILE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cache", type=Path, help="a fftconv_plans.json written by the autotuner")
    args = ap.parse_args()
    new = json.loads(args.cache.read_text())
    if new.get("_version") != autotune.CACHE_VERSION:
        sys.exit(f"{args.cache}: cache version {new.get('_version')}, expected "
                 f"{autotune.CACHE_VERSION}")  # fmt: skip
    shipped = json.loads(SHIPPED.read_text())
    n = 0
    for gpu, entries in new.items():
        if gpu == "_version" or gpu.startswith("cpu|"):
            continue
        for key, entry in entries.items():
            kept = {k: v for k, v in entry.items()
                    if k in autotune.LAUNCH_FIELDS or k in ("ms", "default_ms", "bwd_ms",
                                                            "bwd_default_ms")}  # fmt: skip
            shipped.setdefault(gpu, {})[key] = kept
            n += 1
    SHIPPED.write_text(json.dumps(shipped, indent=1, sort_keys=True) + "\n")
    print(f"{SHIPPED}: {n} entries merged from {args.cache}")


if __name__ == "__main__":
    main()
