"""Multi-GPU scaling of ``dnastream embed`` under ``torchrun``, beside one GPU, same run.

Embeds the yeast S288C genome (16 chromosomes, 12.2 Mbp, ``../shared/data``) with a
random-weight HyenaDNA-large shape (d_model 256, 8 layers: the model, not the host, sets the
pace) binned to 128-base means (``--pool bin:128``, a small output), first on one GPU, then with
``torchrun --nproc-per-node N`` (NCCL, one GPU per process, regions dealt out longest first).
Prints wall time and Mbp/s for each, the speed-up and the scaling efficiency, and checks that
the merged file equals the one-GPU file (every dataset and attribute but the timestamps).

    python benchmarks/bench_multi_gpu.py --gpus 2
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_pipeline import large_checkpoint  # noqa: E402

YEAST = ROOT.parent / "shared" / "data" / "genomes" / "sacCer_S288C_R64_chrI-XVI.fa.gz"
VOLATILE = {"started", "finished", "created", "command"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    env.update(NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1")
    env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def run(cmd: list[str], cwd: Path) -> float:
    """Wall seconds of ``cmd`` (fails loudly with its output unless it exits 0)."""
    cwd.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                 f"{proc.stderr[-6000:]}")  # fmt: skip
    return wall


def differences(a: Path, b: Path) -> list[str]:
    """Datasets or attributes (timestamps and command line aside) that differ."""
    out: list[str] = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:

        def attrs(x, y, where: str) -> None:
            for key in sorted(set(x.attrs) | set(y.attrs)):
                if key in VOLATILE:
                    continue
                if key not in x.attrs or key not in y.attrs:
                    out.append(f"{where} attr {key} missing")
                elif not np.array_equal(np.asarray(x.attrs[key]), np.asarray(y.attrs[key])):
                    out.append(f"{where} attr {key}")

        def visit(name: str, obj) -> None:
            other = fb.get(name)
            if other is None:
                out.append(f"{name} missing")
            elif isinstance(obj, h5py.Dataset):
                if not np.array_equal(obj[()], other[()], equal_nan=obj.dtype.kind == "f"):
                    out.append(f"{name} values")
                attrs(obj, other, name)
            else:
                attrs(obj, other, name)

        attrs(fa, fb, "/")
        fa.visititems(visit)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", type=int, default=torch.cuda.device_count())
    ap.add_argument("--chunk", type=int, default=262_144)
    args = ap.parse_args()
    if args.gpus < 2:
        sys.exit(f"bench_multi_gpu: needs >= 2 GPUs, found {args.gpus}")
    card = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        model = large_checkpoint(Path(tmp))
        embed = ["-m", "dnastream", "embed", str(YEAST), "-o", "out.h5", "--model", str(model),
                 "--pool", "bin:128", "--chunk", str(args.chunk), "--device", "cuda",
                 "--quiet"]  # fmt: skip
        # warm the Triton/inductor caches (not timed): a short region, one process
        run([sys.executable, *embed, "--region", "chrI:1-230218"], Path(tmp) / "warm")
        one = run([sys.executable, *embed], Path(tmp) / "one")
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                    "--nproc-per-node", str(args.gpus), "--master-addr", "127.0.0.1",
                    "--master-port", str(_free_port())]  # fmt: skip
        many = run([*torchrun, *embed], Path(tmp) / "many")
        diff = differences(Path(tmp) / "many" / "out.h5", Path(tmp) / "one" / "out.h5")
        with h5py.File(Path(tmp) / "one" / "out.h5", "r") as f:
            bases = sum(int(g.attrs["length"]) for g in f["regions"].values())
    mbp = bases / 1e6
    print(f"\n## dnastream embed, yeast S288C ({mbp:.2f} Mbp, 16 chromosomes), HyenaDNA-large "
          f"shape, --pool bin:128, chunk {args.chunk:,}, {card}\n")  # fmt: skip
    print("| run | wall s | Mbp/s | speed-up | efficiency |")
    print("|---|---|---|---|---|")
    print(f"| 1 GPU | {one:.1f} | {mbp / one:.3f} | 1.00x | - |")
    print(f"| torchrun {args.gpus} GPUs | {many:.1f} | {mbp / many:.3f} | {one / many:.2f}x | "
          f"{one / many / args.gpus:.0%} |")  # fmt: skip
    print("\nwall = whole command (process start, imports, model load, run, merge).")
    print("merged file vs one-GPU file: " + ("identical" if not diff else f"DIFFERS: {diff[:8]}"))


if __name__ == "__main__":
    main()
