"""score's track writer: whole chunks, raw where gzip does not pay, same values as plain writes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from dnastream.pipelines.score import LOGPROB_FILTERS, _TrackWriter


def _dataset(f: h5py.File, name: str, n: int, chunk: int) -> h5py.Dataset:
    return f.create_dataset(name, shape=(n,), dtype=np.float32, chunks=(chunk,),
                            fillvalue=np.float32(np.nan), **LOGPROB_FILTERS)  # fmt: skip


def _track(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lp = np.log(rng.dirichlet([0.5] * 4, size=n)[:, 0]).astype(np.float32)
    lp[1000:40000] = np.nan  # a run of N
    return lp


@pytest.mark.parametrize("piece", [4096, 5000, 262_144])
@pytest.mark.parametrize("reverse", [False, True])
def test_pieces_in_any_order_give_the_plain_values(tmp_path, piece, reverse) -> None:
    n, chunk = 150_001, 16_384
    lp = _track(n)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        ds = _dataset(f, "x", n, chunk)
        w = _TrackWriter(ds)
        starts = list(range(0, n, piece))
        for lo in reversed(starts) if reverse else starts:
            w.write(lo, lp[lo : lo + piece])
        assert not w.open
        w.close()
    with h5py.File(tmp_path / "t.h5", "r") as f:
        got = f["x"][:]
        ds = f["x"]
        masks = [ds.id.get_chunk_info(i).filter_mask for i in range(ds.id.get_num_chunks())]
    np.testing.assert_array_equal(got, lp)  # NaN == NaN here
    assert len(masks) == -(-n // chunk)
    assert masks[0] == 0 and masks[1] == 0  # N runs are compressed
    assert 3 in masks  # random log-likelihoods are stored unfiltered


def test_always_compress_switch(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DNASTREAM_COMPRESS_ALWAYS", "1")
    lp = _track(70_000, seed=1)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        ds = _dataset(f, "x", len(lp), 16_384)
        w = _TrackWriter(ds)
        w.write(0, lp)
        w.close()
        masks = {ds.id.get_chunk_info(i).filter_mask for i in range(ds.id.get_num_chunks())}
        np.testing.assert_array_equal(ds[:], lp)
    assert masks == {0}


def test_missing_pieces_are_written_on_close(tmp_path) -> None:
    lp = _track(50_000, seed=2)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        ds = _dataset(f, "x", len(lp), 16_384)
        w = _TrackWriter(ds)
        w.write(0, lp[:20_000])  # chunk 1 only half written
        w.close()
        got = ds[:]
    np.testing.assert_array_equal(got[:20_000], lp[:20_000])
    assert np.isnan(got[20_000:]).all()
