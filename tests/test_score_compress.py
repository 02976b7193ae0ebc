"""score's track chunks compressed in worker processes: same values and same stored bytes.

``_TrackWriter`` hands the whole chunks it must filter to a real pool of forked processes
(:func:`~dnastream.pipelines.h5store.compression_pool`), which filter them with HDF5's own code
(:func:`~dnastream.pipelines.h5store._filter_chunk`). Every chunk must then be stored exactly
as h5py's own write (``ds[...] = values`` into a dataset with the same filters) stores it, or
unfiltered where the raw policy says so, and read back with plain h5py; ``run_score`` with
``DNASTREAM_COMPRESS_PROCS=2`` must write the same file content as without a pool.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from dnastream.pipelines import score
from dnastream.pipelines.h5store import compression_pool
from dnastream.pipelines.score import H5_CHUNK, LOGPROB_FILTERS, _TrackWriter, run_score

HG38 = "genomes/hg38_chr2_1-2333275.fa.gz"
# Both start in chr2's leading 10,000 N. The '-' region is written from its end (out of
# order) and has an edge chunk (14,464 of 65,536); the '+' one is a single short chunk. The
# tiny model's log-likelihoods compress well (gzip keeps ~0.68), so every chunk of these
# tracks goes to the pool (the raw policy is covered by the writer tests above).
REGIONS = ("chr2:1-80000:-", "chr2:5001-45000")
_names = itertools.count()


class CountingPool:
    """A real pool that counts the chunks handed to it."""

    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self.pool = pool
        self.submitted = 0

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        self.submitted += 1
        return self.pool.submit(fn, *args)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    p = compression_pool(2)
    assert p is not None
    yield p
    p.shutdown(wait=True)


def _dataset(f: h5py.File, name: str, n: int, chunk: int, **filters: Any) -> h5py.Dataset:
    return f.create_dataset(
        name, shape=(n,), dtype=np.float32, chunks=(chunk,), fillvalue=np.float32(np.nan),
        **(filters or LOGPROB_FILTERS),
    )  # fmt: skip


def _chunks(ds: h5py.Dataset) -> list[tuple[int, bytes]]:
    """(filter mask, stored bytes) of every chunk, in chunk order."""
    cr = ds.chunks[0]
    out = []
    for c in range(-(-ds.shape[0] // cr)):
        mask, data = ds.id.read_direct_chunk((c * cr,))
        out.append((int(mask), bytes(data)))
    return out


def _plain(values: np.ndarray, chunk: int) -> list[tuple[int, bytes]]:
    """The chunks h5py's own write stores for ``values`` (same filters, chunks, fill)."""
    name = f"score-compress-plain-{next(_names)}.h5"
    with h5py.File(name, "w", driver="core", backing_store=False) as f:
        ds = _dataset(f, "x", len(values), chunk)
        ds[...] = values
        return _chunks(ds)


def _padded(values: np.ndarray, c: int, chunk: int) -> bytes:
    full = np.full(chunk, np.nan, np.float32)
    part = values[c * chunk : (c + 1) * chunk]
    full[: len(part)] = part
    return full.tobytes()


def _check_chunks(got: list[tuple[int, bytes]], values: np.ndarray, chunk: int) -> int:
    """Each chunk is h5py's own filtered chunk (mask 0) or the raw padded values (all filters
    skipped); returns how many are filtered."""
    plain = _plain(values, chunk)
    assert len(got) == len(plain)
    filtered = 0
    for c, ((mask, data), want) in enumerate(zip(got, plain, strict=True)):
        if mask == 0:
            assert (mask, data) == want, f"chunk {c} differs from h5py's own write"
            filtered += 1
        else:
            assert mask == 3 and data == _padded(values, c, chunk), f"raw chunk {c}"
    return filtered


def _track(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lp = np.log(rng.dirichlet([0.5] * 4, size=n)[:, 0]).astype(np.float32)
    lp[1000:40000] = np.nan  # a run of N: compresses
    lp[-3000:] = np.nan  # so does the edge chunk
    return lp


# --------------------------------------------------------------------------------------------
# the writer with a real pool
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("always", ["0", "1"])
@pytest.mark.parametrize("piece", [5000, 40_000])
def test_pool_pieces_out_of_order_store_h5py_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: ProcessPoolExecutor, always: str,
    piece: int,
) -> None:  # fmt: skip
    monkeypatch.setenv("DNASTREAM_COMPRESS_ALWAYS", always)
    n, chunk = 150_001, 16_384  # 10 chunks, the last one 2,545 long
    lp = _track(n, seed=3)
    starts = list(np.random.default_rng(piece).permutation(range(0, n, piece)))
    files = {}
    for label, p in (("pool", CountingPool(pool)), ("inline", None)):
        files[label] = tmp_path / f"{label}.h5"
        with h5py.File(files[label], "w") as f:
            w = _TrackWriter(_dataset(f, "x", n, chunk), p, workers=2)
            assert w.pool is p
            for lo in starts:
                w.write(int(lo), lp[lo : lo + piece])
                assert len(w.pending) <= w.depth
            if p is not None:
                assert p.submitted == w.filtered_chunks == (10 if always == "1" else 4)
            w.close()
            assert not w.pending and not w.open
    got = {}
    for label, path in files.items():
        with h5py.File(path, "r") as f:  # plain h5py decodes every chunk
            np.testing.assert_array_equal(f["x"][:], lp)  # NaN == NaN here
            got[label] = _chunks(f["x"])
    assert got["pool"] == got["inline"]
    filtered = _check_chunks(got["pool"], lp, chunk)
    assert filtered == (10 if always == "1" else 4)  # N run: chunks 0-2; the edge chunk


def test_pool_is_not_used_for_other_filters(tmp_path: Path, pool: ProcessPoolExecutor) -> None:
    lp = _track(50_000, seed=4)
    counting = CountingPool(pool)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        ds = _dataset(f, "x", len(lp), 16_384, compression="gzip", compression_opts=4,
                      shuffle=True)  # fmt: skip
        w = _TrackWriter(ds, counting, workers=2)
        assert w.pool is None
        w.write(0, lp)
        w.close()
        np.testing.assert_array_equal(ds[:], lp)
    assert counting.submitted == 0


class PendingPool:
    """Futures that stay pending until the test finishes them (or never do)."""

    def __init__(self) -> None:
        self.futures: list[Future[Any]] = []

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        self.futures.append(Future())
        return self.futures[-1]


def test_failed_compression_raises_and_abandon_never_waits(tmp_path: Path) -> None:
    lp = np.full(40_000, np.nan, np.float32)  # compresses: every chunk goes to the pool
    with h5py.File(tmp_path / "t.h5", "w") as f:
        late = PendingPool()
        w = _TrackWriter(_dataset(f, "x", len(lp), 16_384), late, workers=1)
        w.write(0, lp)
        assert len(w.pending) == 3  # fewer than the depth: the writer does not wait
        for fut in late.futures:
            fut.set_exception(RuntimeError("worker died"))
        with pytest.raises(RuntimeError, match="worker died"):
            w.close()
        assert not w.pending  # the rest dropped: close() does not wait for them either

        stuck = PendingPool()
        w = _TrackWriter(_dataset(f, "y", len(lp), 16_384), stuck, workers=1)
        w.write(0, lp[:20_000])
        w.abandon()  # returns at once, the futures cancelled
        assert not w.pending and not w.open
        assert len(stuck.futures) == 1 and stuck.futures[0].cancelled()


# --------------------------------------------------------------------------------------------
# run_score end to end, with and without a pool
# --------------------------------------------------------------------------------------------


def _run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path, tiny: Path, procs: int
) -> tuple[dict[str, np.ndarray], dict[str, list[tuple[int, bytes]]], int, dict[str, Any]]:
    made: list[CountingPool] = []
    real = score.compression_pool

    def counting_pool(n: int) -> CountingPool | None:
        p = real(n)
        if p is None:
            return None
        made.append(CountingPool(p))
        return made[-1]

    monkeypatch.setattr(score, "compression_pool", counting_pool)
    monkeypatch.setenv("DNASTREAM_COMPRESS_PROCS", str(procs))
    out, stats = tmp_path / f"p{procs}.h5", tmp_path / f"p{procs}.json"
    run_score(shared_data / HG38, tiny, output=out, regions=REGIONS, chunk=20_000,
              stats_path=stats)  # fmt: skip
    assert len(made) == (1 if procs else 0)
    values, chunks = {}, {}
    with h5py.File(out, "r") as f:
        for key in f["regions"]:
            ds = f["regions"][key]["logprob"]
            assert ds.compression == "gzip" and ds.compression_opts == 1 and ds.shuffle
            assert np.isnan(ds.fillvalue) and ds.chunks == (min(ds.shape[0], H5_CHUNK),)
            assert ds.attrs["units"] == "nats"
            values[key], chunks[key] = ds[:], _chunks(ds)
    return values, chunks, made[0].submitted if made else 0, json.loads(stats.read_text())


def test_run_score_with_a_pool_writes_the_same_file_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path, hyenadna_fixtures: Path
) -> None:
    monkeypatch.delenv("DNASTREAM_COMPRESS_ALWAYS", raising=False)
    tiny = hyenadna_fixtures / "hf_tiny"
    v0, c0, n0, s0 = _run(tmp_path, monkeypatch, shared_data, tiny, 0)
    v2, c2, n2, s2 = _run(tmp_path, monkeypatch, shared_data, tiny, 2)
    assert (s0["compress_processes"], s2["compress_processes"]) == (0, 2)
    assert v0.keys() == v2.keys() and len(v2) == len(REGIONS)
    filtered = 0
    for key in v2:
        np.testing.assert_array_equal(np.isnan(v2[key]), np.isnan(v0[key]))
        np.testing.assert_array_equal(v2[key], v0[key])
        assert np.isnan(v2[key]).sum() >= 5000  # the N run
        assert c2[key] == c0[key]  # same masks and stored bytes, chunk by chunk
        filtered += _check_chunks(c2[key], v2[key], min(len(v2[key]), H5_CHUNK))
    n_chunks = sum(len(c) for c in c2.values())
    assert n0 == 0 and n2 == filtered == s2["filtered_chunks"] == s0["filtered_chunks"]
    assert s2["raw_chunks"] == s0["raw_chunks"] == n_chunks - filtered
    assert filtered == n_chunks == 3  # all went through the pool
