"""Resuming after a kill that left a chunk half-written (undecodable).

A SIGKILL while HDF5 rewrites a compressed chunk can leave its bytes and its index in
disagreement; reading it back then fails ("filter returned failure during read"), which a
random-kill stress run hit about once in twelve. Here the damage is made deterministic: kill a
run mid-region, overwrite the stored bytes of chunks around the ``done`` boundary with garbage,
resume, and compare every value and attribute with an uninterrupted run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from dnastream.pipelines.h5store import EmbedStore
from resume_helpers import done_counters, dump_h5, run_until_killed


@pytest.fixture(scope="module")
def model_dir(hyenadna_fixtures):
    return hyenadna_fixtures / "hf_tiny"


@pytest.fixture(scope="module")
def hg38_path(shared_data):
    return shared_data / "genomes" / "hg38_chr2_1-2333275.fa.gz"


def _args(hg38: Path, model: Path, bed: Path) -> list[str]:
    return [
        sys.executable, "-m", "dnastream", "embed", str(hg38), "-o", "out.h5",
        "--model", str(model), "--regions", str(bed), "--strand", "both", "--layers", "0",
        "--chunk", "512", "--threads", "1", "--quiet",
    ]  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


def _smash(ds: h5py.Dataset, row: int) -> bool:
    """Overwrite the stored bytes of the chunk holding ``row`` with garbage (in place)."""
    offset = (row // ds.chunks[0] * ds.chunks[0],) + (0,) * (ds.ndim - 1)
    info = ds.id.get_chunk_info_by_coord(offset)
    all_skipped = (1 << ds.id.get_create_plist().get_nfilters()) - 1
    if info.byte_offset is None or info.filter_mask == all_skipped:
        return False  # not allocated, or stored unfiltered (nothing to fail decoding)
    path = ds.file.filename
    ds.file.flush()
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(bytes((i * 97 + 13) % 256 for i in range(info.size)))
    return True


def test_resume_repairs_undecodable_chunks(tmp_path, model_dir, hg38_path) -> None:
    bed = tmp_path / "one.bed"
    bed.write_text("chr2\t9500\t13600\tfirst\t0\t+\n")
    args = _args(hg38_path, model_dir, bed)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    clean.mkdir()
    killed.mkdir()
    proc = subprocess.run(args, cwd=clean, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    want = dump_h5(clean / "out.h5")

    part = killed / "out.h5.part"
    run_until_killed(args, killed, part, lambda d: d.get("first", (0, 0))[0] >= 1536, "0.15",
                     env=_env())  # fmt: skip
    done = done_counters(part)["first"][0]
    assert 1536 <= done < 4100
    with h5py.File(part, "r+") as f:
        g = f["regions/first"]
        smashed = [_smash(g["mask"], done - 1)]  # the mask: one gzip chunk, committed rows
        smashed += [_smash(g[name], done) for name in ("plus/embedding", "plus/layer_0")]
        with pytest.raises(OSError):
            g["mask"][0:10]  # really undecodable now
    assert smashed[0]

    proc = subprocess.run(args, cwd=killed, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not part.exists()
    assert dump_h5(killed / "out.h5") == want


def test_repair_lowers_done_only_for_committed_rows(tmp_path) -> None:
    """Unit level: garbage beyond the boundary is reset without lowering ``done``; garbage in
    a chunk with committed rows lowers it to that chunk's start."""
    from dnastream.pipelines.h5store import RegionLayout

    out = tmp_path / "o.h5"
    store, resumed = EmbedStore.open(out, {"s": 1}, {})
    assert not resumed
    layout = RegionLayout(
        tracks=("plus",), outputs=("embedding",), length=5000, rows=5000, width=4,
        dtype="float32", compression="gzip", chunk_rows=1000,
    )  # fmt: skip
    store.prepare_region("r", {"length": 5000}, layout)
    rng = np.random.default_rng(0)
    values = np.round(rng.standard_normal((5000, 4)), 1).astype("f4")  # compressible
    store.file["regions/r/plus/embedding"][:] = values
    store.file["regions/r"].attrs["done_plus"] = 1500  # chunk 1 holds committed rows
    store.close()

    def smash_and_repair(row: int) -> tuple[int, int, np.ndarray]:
        with h5py.File(f"{out}.part", "r+") as f:
            assert _smash(f["regions/r/plus/embedding"], row)
        store, resumed = EmbedStore.open(out, {"s": 1}, {})
        assert resumed
        try:
            n = store.repair_region("r")
            g = store.file["regions/r"]
            return n, int(g.attrs["done_plus"]), g["plus/embedding"][:]
        finally:
            store.close()

    n, done, now = smash_and_repair(3000)  # beyond the boundary: uncommitted
    assert (n, done) == (1, 1500)
    assert (now[3000:4000] == 0).all() and (now[:3000] == values[:3000]).all()
    n, done, now = smash_and_repair(1000)  # the boundary chunk
    assert (n, done) == (1, 1000)
    assert (now[:1000] == values[:1000]).all() and (now[1000:2000] == 0).all()
    with h5py.File(f"{out}.part", "r") as f:
        assert f["regions/r/plus/embedding"].id.get_chunk_info_by_coord((1000, 0)).filter_mask
