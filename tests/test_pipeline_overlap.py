"""Host/device overlap of the runner, phase timings, and the compression fast path (CPU).

On CPU ``overlap=True`` runs the CUDA look-ahead bookkeeping (chunk i handed over after chunk
i + 1 is launched) without streams; outputs must be identical to the plain path.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from dnastream.genomics import FastaFile
from dnastream.models import load_model
from dnastream.pipelines.embed import EmbedOptions, run_embed
from dnastream.pipelines.runner import ModelRunner
from dnastream.pipelines.score import run_score
from dnastream.pipelines.source import Region, iter_batch_chunks, iter_token_chunks

TEST_DATA = Path(__file__).parent / "data"
MODEL = TEST_DATA / "hyenadna_tiny_random_hf"
ECOLI_SLICE = TEST_DATA / "ecoli_K12_W3110_first200kb.fa.gz"
ECOLI_ID = "NC_007779.1"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    return load_model(MODEL).eval()


@pytest.fixture(scope="module")
def ecoli():
    with FastaFile(ECOLI_SLICE) as fa:
        yield fa


def _results(runner, fa, region, **kw):
    return list(runner.run_region(iter_token_chunks(fa, region, chunk=900), **kw))


@pytest.mark.parametrize("strand", ["+", "-"])
def test_overlap_gives_identical_outputs(tiny, ecoli, strand):
    region = Region("r", ECOLI_ID, 1_000, 5_100, strand)
    plain = ModelRunner(tiny, device="cpu", chunk=700, overlap=False)
    ahead = ModelRunner(tiny, device="cpu", chunk=700, overlap=True)
    kw = {"layers": [0, 1], "logprobs": True}
    a, b = _results(plain, ecoli, region, **kw), _results(ahead, ecoli, region, **kw)
    assert [r.offset for r in a] == [r.offset for r in b] == [0, 900, 1800, 2700, 3600]
    for x, y in zip(a, b, strict=True):
        assert x.hidden.tobytes() == y.hidden.tobytes()
        assert x.logprobs.tobytes() == y.logprobs.tobytes()
        assert sorted(x.layers) == sorted(y.layers) == [0, 1]
        for i in x.layers:
            assert x.layers[i].tobytes() == y.layers[i].tobytes()
        assert np.array_equal(x.flags, y.flags)
    assert ahead.stats.chunks == 5 and ahead.stats.bases == 4_100


def test_overlap_batches_identical(tiny, ecoli):
    regions = [Region(f"r{i}", ECOLI_ID, 2_000 * i, 2_000 * i + 1_500, "-") for i in range(3)]
    out = []
    for overlap in (False, True):
        runner = ModelRunner(tiny, device="cpu", chunk=1000, overlap=overlap)
        steps = list(runner.run_batch(iter_batch_chunks(ecoli, regions, chunk=600), layers=[1]))
        out.append(steps)
        assert runner.stats.bases == 3 * 1_500
    for sa, sb in zip(*out, strict=True):
        for x, y in zip(sa, sb, strict=True):
            assert x.offset == y.offset
            assert x.hidden.tobytes() == y.hidden.tobytes()
            assert x.layers[1].tobytes() == y.layers[1].tobytes()


@pytest.mark.parametrize("overlap", [False, True])
def test_look_ahead_order(tiny, ecoli, overlap):
    """With overlap, chunk i reaches the consumer after chunk i + 1 was launched."""
    runner = ModelRunner(tiny, device="cpu", chunk=4096, overlap=overlap)
    steps = []
    original = runner.engine.step

    def step(ids, **kw):
        steps.append(int(ids.shape[1]))
        return original(ids, **kw)

    runner.engine.step = step  # type: ignore[method-assign]
    seen = []
    region = Region("r", ECOLI_ID, 0, 2_500)
    for res in runner.run_region(iter_token_chunks(ecoli, region, chunk=1000)):
        seen.append((res.offset, len(steps)))
    ahead = 1 if overlap else 0
    assert seen == [(0, 1 + ahead), (1000, 2 + ahead), (2000, 3)]


def test_consumer_may_keep_the_arrays(tiny, ecoli):
    """Every chunk has its own host buffer: arrays kept by the consumer stay valid."""
    region = Region("r", ECOLI_ID, 0, 3_000)
    runner = ModelRunner(tiny, device="cpu", chunk=1000, overlap=True)
    kept = [r.hidden.copy() for r in _results(runner, ecoli, region)]
    again = [r.hidden for r in _results(runner, ecoli, region)]
    for x, y in zip(kept, again, strict=True):
        assert x.tobytes() == y.tobytes()


def _datasets(path: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()].tobytes()

        f.visititems(visit)
    return out


def test_embed_with_overlap_stats_and_compress_workers_is_identical(tmp_path, monkeypatch):
    opts = EmbedOptions(chunk=3000, device="cpu", strand="both", layers="0")
    region = [f"{ECOLI_ID}:1-20000"]
    plain = run_embed(ECOLI_SLICE, MODEL, tmp_path / "a.h5", region_strings=region, options=opts)
    monkeypatch.setenv("DNASTREAM_OVERLAP", "1")
    monkeypatch.setenv("DNASTREAM_COMPRESS_PROCS", "1")  # whole chunks go to a worker
    stats = tmp_path / "embed.json"
    other = run_embed(
        ECOLI_SLICE,
        MODEL,
        tmp_path / "b.h5",
        region_strings=region,
        options=opts,
        stats_path=stats,
    )
    assert plain.bases == other.bases == 2 * 20_000
    a, b = _datasets(plain.output), _datasets(other.output)
    assert sorted(a) == sorted(b) and "regions/NC_007779.1:1-20000/minus/layer_0" in a
    assert a == b
    with h5py.File(plain.output, "r") as fa, h5py.File(other.output, "r") as fb:
        ds_a = fa["regions/NC_007779.1:1-20000/plus/embedding"]
        ds_b = fb["regions/NC_007779.1:1-20000/plus/embedding"]
        rows = ds_a.chunks[0]
        for c in range(0, ds_a.shape[0], rows):  # the stored (compressed) bytes too
            assert ds_a.id.read_direct_chunk((c, 0)) == ds_b.id.read_direct_chunk((c, 0))
    report = json.loads(stats.read_text())
    assert report["job"] == "embed" and report["bases"] == 40_000 and report["overlap"]
    assert report["compress_processes"] == 1
    marks = report["marks"]
    order = ["model_loaded", "loop_start", "first_chunk", "loop_end", "drained", "end"]
    assert [marks[m] for m in order] == sorted(marks[m] for m in order)
    assert report["chunks"] == 14 and report["first_chunk_bases"] == 3000
    for key in ("step", "d2h_wait", "input_wait", "host", "write_wait", "writer_busy"):
        assert report["loop"][key] >= 0
    assert report["steady_kbp_s"] > 0


def test_score_stats_from_env_and_identical_tracks(tmp_path, monkeypatch):
    common = {"regions": [f"{ECOLI_ID}:5001-14000:-"], "chunk": 2048, "device": "cpu"}
    a = run_score(ECOLI_SLICE, MODEL, output=tmp_path / "a.h5", **common)
    stats = tmp_path / "score.json"
    monkeypatch.setenv("DNASTREAM_PROFILE", str(stats))
    monkeypatch.setenv("DNASTREAM_OVERLAP", "1")
    b = run_score(ECOLI_SLICE, MODEL, output=tmp_path / "b.h5", **common)
    assert a.summaries[0].nll_sum == b.summaries[0].nll_sum
    with h5py.File(tmp_path / "a.h5", "r") as fa, h5py.File(tmp_path / "b.h5", "r") as fb:
        key = next(iter(fa["regions"]))
        assert (
            fa[f"regions/{key}/logprob"][()].tobytes() == fb[f"regions/{key}/logprob"][()].tobytes()
        )
    report = json.loads(stats.read_text())
    assert report["job"] == "score" and report["bases"] == 9_000 and report["overlap"]
    assert report["phases"]["steady"] > 0 and report["loop"]["write"] > 0
