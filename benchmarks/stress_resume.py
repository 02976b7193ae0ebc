"""Reliability check: SIGKILL `dnastream embed` at random moments, resume, compare with a clean run.

    python benchmarks/stress_resume.py [RUNS] [WORKDIR]

Each run kills the same command up to 3 times at a random moment (the first seconds include
start-up), then lets it finish, and compares every dataset value and attribute with an
uninterrupted run. Results: benchmarks/results/stress_resume_cpu.log.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
HG38 = REPO.parent / "shared" / "data" / "genomes" / "hg38_chr2_1-2333275.fa.gz"
MODEL = REPO / "tests/data/hyenadna_tiny_random_hf"
N = int(sys.argv[1]) if len(sys.argv) > 1 else 10
root = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/stress")
root.mkdir(exist_ok=True)
bed = root / "r.bed"
bed.write_text("chr2\t9500\t13600\tfirst\t0\t+\nchr2\t40000\t43000\tsecond\t0\t-\n")
args = [
    sys.executable,
    "-m",
    "dnastream",
    "embed",
    str(HG38),
    "-o",
    "out.h5",
    "--model",
    str(MODEL),
    "--regions",
    str(bed),
    "--strand",
    "both",
    "--rc-average",
    "--layers",
    "0",
    "--chunk",
    "512",
    "--threads",
    "1",
    "--quiet",
]
env = dict(os.environ, PYTHONPATH=str(REPO / "src"), DNASTREAM_TEST_SLEEP_PER_CHUNK="0.02")


def dump(p):
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = (obj.dtype.str, obj.shape, obj[()].tobytes())
        for k, v in obj.attrs.items():
            out[f"{name}@{k}"] = np.asarray(v).tolist()

    with h5py.File(p, "r") as f:
        for k, v in f.attrs.items():
            if k not in ("started", "finished", "command"):
                out[f"@{k}"] = np.asarray(v).tolist()
        f.visititems(visit)
    return out


clean = root / "clean"
clean.mkdir(exist_ok=True)
if not (clean / "out.h5").exists():
    t = time.time()
    subprocess.run(args, cwd=clean, env=env, check=True)
    full = time.time() - t
else:
    full = 6.0
ref = dump(clean / "out.h5")
print(f"clean run {full:.1f}s", flush=True)
rng = random.Random(0)
bad = 0
for i in range(N):
    d = root / f"k{i}"
    d.mkdir(exist_ok=True)
    for f in d.glob("out.h5*"):
        f.unlink()
    kills = 0
    while True:
        p = subprocess.Popen(
            args, cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        delay = rng.uniform(1.5, full + 1.0)
        try:
            rc = p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills += 1
            if kills < 4:
                continue
            rc = subprocess.run(args, cwd=d, env=env, capture_output=True, text=True).returncode
        err = p.stderr.read().decode()[-400:] if p.stderr else ""
        if kills >= 4 or rc is not None:
            break
    if rc == 3 and "already complete" in err:
        rc = 0
    if rc != 0:
        bad += 1
        print(f"run {i}: rc={rc} after {kills} kills: {err}", flush=True)
        continue
    same = dump(d / "out.h5") == ref
    bad += not same
    print(f"run {i}: {kills} kills, identical={same}", flush=True)
print(f"{bad} bad of {N}")
