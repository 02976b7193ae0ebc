"""Chunks that do not shrink are stored unfiltered (filter mask set); readers see no difference.

Real HDF5 files, real subprocesses killed with SIGKILL (no mocks).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from dnastream.pipelines.h5store import (
    RAW_RATIO,
    EmbedStore,
    RegionLayout,
    compression_pool,
    stored_raw,
)
from resume_helpers import done_counters, dump_h5, run_until_killed

RAW = 0b11  # shuffle and the compressor both skipped


def _chunks(ds: h5py.Dataset) -> list[tuple[int, int, bytes]]:
    """(filter mask, stored size, stored bytes) of every chunk, in dataset order."""
    out = []
    for r in range(0, ds.shape[0], ds.chunks[0]):
        mask, data = ds.id.read_direct_chunk((r, 0))
        out.append((int(mask), len(data), bytes(data)))
    return out


@pytest.mark.parametrize("comp", ["lzf", "gzip"])
@pytest.mark.parametrize("dtype", ["f4", "f2"])
def test_h5py_reads_chunks_written_with_all_filters_masked(tmp_path, comp, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((100, 16)).astype(dtype)
    kw = {"compression_opts": 1} if comp == "gzip" else {}
    with h5py.File(tmp_path / "t.h5", "w", libver=("v108", "latest")) as f:
        ds = f.create_dataset(
            "e", shape=x.shape, dtype=dtype, chunks=(32, 16), compression=comp, shuffle=True, **kw
        )
        assert ds.id.get_create_plist().get_nfilters() == 2
        ds.id.write_direct_chunk((0, 0), np.ascontiguousarray(x[:32]), RAW)
        ds[32:96] = x[32:96]  # filtered by HDF5
        edge = np.zeros((32, 16), dtype)
        edge[:4] = x[96:]
        ds.id.write_direct_chunk((96, 0), edge, RAW)  # the edge chunk, padded
    with h5py.File(tmp_path / "t.h5", "r") as f:
        ds = f["e"]
        np.testing.assert_array_equal(ds[()], x)
        np.testing.assert_array_equal(ds[10:40, 3:7], x[10:40, 3:7])  # across raw/filtered
        info = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
        assert [i.filter_mask for i in info][0] == RAW and info[3].filter_mask == RAW
        assert info[0].size == 32 * 16 * x.itemsize
        assert ds.id.read_direct_chunk((0, 0))[0] == RAW
        assert ds.id.read_direct_chunk((32, 0))[0] != RAW
        with h5py.File(tmp_path / "copy.h5", "w") as g:  # h5py copy keeps the masks
            f.copy(ds, g, "e")
            np.testing.assert_array_equal(g["e"][()], x)
            assert g["e"].id.get_chunk_info(0).filter_mask == RAW


def _layout(rows: int, dtype: str, compression: str, chunk_rows: int) -> RegionLayout:
    return RegionLayout(
        tracks=("plus",),
        outputs=("embedding",),
        length=rows,
        rows=rows,
        width=64,
        dtype=dtype,
        compression=compression,
        chunk_rows=chunk_rows,
    )


def _data(rows: int, dtype: str) -> np.ndarray:
    """Float noise (does not shrink) with a constant stretch (shrinks) in rows 512-1535."""
    x = np.random.default_rng(0).standard_normal((rows, 64)).astype(np.float32)
    x[512:1536] = np.float32(0.25)
    return x.astype(dtype)


def _write(path: Path, x: np.ndarray, compression: str, steps, procs: int = 0) -> Path:
    pool = compression_pool(procs)
    store, _ = EmbedStore.open(path, {"s": 1}, {})
    store.compress_in(pool, procs)
    store.prepare_region("r", {"name": "r"}, _layout(len(x), x.dtype.str, compression, 256))
    lo = 0
    for hi in steps:
        store.write("r", "plus/embedding", lo, hi, x[lo:hi].astype(np.float32))
        store.commit("r", "+", hi)
        lo = hi
    store.complete_region("r")
    counts = (store.raw_chunks, store.filtered_chunks)
    store.finish({})
    return path, counts


@pytest.mark.parametrize("dtype", ["f4", "f2"])
@pytest.mark.parametrize("compression", ["lzf", "gzip"])
def test_store_keeps_noise_raw_and_compresses_constant_chunks(tmp_path, dtype, compression):
    rows = 2000  # chunks of 256 rows: 7 whole + an edge chunk of 208 rows
    x = _data(rows, dtype)
    steps = [256, 512, 1000, 1024, 1536, 1900, 2000]  # commits inside chunks 3 and 7 too
    path, (raw, filtered) = _write(tmp_path / "a.h5", x, compression, steps)
    with h5py.File(path, "r") as f:
        ds = f["regions/r/plus/embedding"]
        np.testing.assert_array_equal(ds[()], x)
        chunks = _chunks(ds)
        masks = [m for m, _, _ in chunks]
        full = 256 * 64 * x.itemsize
        # 0, 1: noise, whole -> raw; 2: constant -> filtered; 3: partial at a commit ->
        # HDF5's own write (filtered); 4, 5: constant; 6: noise; 7: edge chunk, partial too
        assert masks[0] == masks[1] == masks[6] == RAW
        assert all(masks[c] != RAW for c in (2, 3, 4, 5, 7))
        assert all(chunks[c][1] == full for c in (0, 1, 6))
        assert all(chunks[c][1] < 0.2 * full for c in (2, 4, 5))
        assert chunks[0][2] == x[:256].tobytes()  # stored as it is
        assert f["regions/r/mask"].compression == "gzip"
    assert (raw, filtered) == (3, 3)

    # every chunk filtered on request; the same values
    os.environ["DNASTREAM_COMPRESS_ALWAYS"] = "1"
    try:
        other, (raw, filtered) = _write(tmp_path / "b.h5", x, compression, steps)
    finally:
        del os.environ["DNASTREAM_COMPRESS_ALWAYS"]
    assert (raw, filtered) == (0, 6)
    with h5py.File(other, "r") as f:
        ds = f["regions/r/plus/embedding"]
        np.testing.assert_array_equal(ds[()], x)
        assert all(m != RAW for m, _, _ in _chunks(ds))


def test_store_with_compression_processes_stores_the_same_bytes(tmp_path):
    x = _data(2000, "f4")
    x[1800:] = 0  # the edge chunk (with its zero padding) compresses
    steps = [512, 1024, 1536, 2000]
    a, _ = _write(tmp_path / "a.h5", x, "lzf", steps)
    b, counts = _write(tmp_path / "b.h5", x, "lzf", steps, procs=1)
    assert counts == (3, 5)
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ca, cb = _chunks(fa["regions/r/plus/embedding"]), _chunks(fb["regions/r/plus/embedding"])
        assert ca == cb
        assert [m for m, _, _ in ca] == [RAW, RAW, 0, 0, 0, 0, RAW, 0]


def test_the_choice_depends_on_the_chunk_only():
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((2048, 128)).astype(np.float32)
    assert stored_raw(noise, "lzf", 32) and stored_raw(noise, "lzf", 32)
    assert stored_raw(noise.astype(np.float16), "lzf", 32)
    assert not stored_raw(np.zeros_like(noise), "lzf", 32)
    assert not stored_raw(np.full_like(noise, 3.5), "gzip", 32)
    quantized = np.round(noise * 4).astype(np.float32) / 4  # few distinct values: shrinks
    assert not stored_raw(quantized, "lzf", 32)
    assert 0.5 < RAW_RATIO < 0.95


# -- SIGKILL and resume ------------------------------------------------------------------------


def _stored(path: Path) -> dict[str, object]:
    """Every dataset's values, every attribute but the run times, and every chunk's stored
    bytes and filter mask."""
    return dump_h5(path, chunks=True)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_sigkill_and_resume_store_the_same_raw_and_filtered_chunks(
    tmp_path, hyenadna_fixtures, shared_data, dtype
):
    hg38 = shared_data / "genomes" / "hg38_chr2_1-2333275.fa.gz"
    bed = tmp_path / "two.bed"
    # "nstart" opens with 10 kbp of N (constant outputs: filtered chunks), then sequence (raw);
    # "second" is read on both strands with an edge chunk and commits inside chunks (- pass)
    bed.write_text("chr2\t0\t24576\tnstart\t0\t+\nchr2\t40000\t57384\tsecond\t0\t-\n")
    args = [sys.executable, "-m", "dnastream", "embed", str(hg38), "-o", "out.h5",
            "--model", str(hyenadna_fixtures / "hf_tiny"), "--regions", str(bed),
            "--strand", "both", "--rc-average", "--chunk", "4096", "--threads", "1",
            "--dtype", dtype, "--quiet"]  # fmt: skip
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    clean.mkdir()
    killed.mkdir()
    proc = subprocess.run(args, cwd=clean, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    part = killed / "out.h5.part"
    run_until_killed(
        args, killed, part, lambda d: d.get("nstart", (0, 0))[0] >= 12288, "0.3", poll=0.02
    )
    assert 12288 <= done_counters(part)["nstart"][0] < 24576
    run_until_killed(
        args, killed, part, lambda d: d.get("second", (0, 0))[1] >= 4096, "0.3", poll=0.02
    )
    assert 4096 <= done_counters(part)["second"][1] < 17384
    proc = subprocess.run(args, cwd=killed, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    a, b = _stored(clean / "out.h5"), _stored(killed / "out.h5")
    assert a == b
    masks = [m for k, v in a.items() if k.endswith("#chunks") for _, m, _ in v]
    assert masks.count(RAW) >= 6 and masks.count(0) >= 6  # both kinds, in both runs
    n_chunks = a["regions/nstart/plus/embedding#chunks"]
    assert [m for _, m, _ in n_chunks][:2] == [0, 0] and n_chunks[-1][1] == RAW
