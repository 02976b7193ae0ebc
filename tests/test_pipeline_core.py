"""pipelines.source and pipelines.runner: regions, token chunks read ahead, exact streaming."""

from __future__ import annotations

import gzip
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from dnastream.genomics import (
    FastaFile,
    IntervalError,
    InvalidBaseError,
    encode,
    reverse_complement,
)
from dnastream.models import load_model
from dnastream.pipelines.runner import MIN_CHUNK, ModelRunner, tune_malloc
from dnastream.pipelines.source import (
    FLAG_N,
    FLAG_SOFTMASK,
    Region,
    iter_batch_chunks,
    iter_token_chunks,
    regions_from,
    run_ahead,
)

TEST_DATA = Path(__file__).parent / "data"
ECOLI_SLICE = TEST_DATA / "ecoli_K12_W3110_first200kb.fa.gz"
ECOLI_ID = "NC_007779.1"


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small chunks run faster on one thread (and do not suffer from busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def hg38(shared_data):
    with FastaFile(shared_data / "genomes" / "hg38_chr2_1-2333275.fa.gz") as fa:
        yield fa


@pytest.fixture(scope="module")
def tiny(hyenadna_fixtures):
    return load_model(hyenadna_fixtures / "hf_tiny", filter_len=1026).eval()


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dnastream-read-ahead"]


# -- regions ----------------------------------------------------------------------------------


def test_regions_default_to_whole_records(shared_data):
    with FastaFile(shared_data / "genomes" / "sacCer_S288C_R64_chrI-XVI.fa.gz") as fa:
        regions = regions_from(fa)
        lengths = fa.lengths()
    assert [r.record for r in regions] == list(lengths)
    assert all(r.start == 0 and r.end == lengths[r.record] and r.strand == "+" for r in regions)


def test_regions_from_bed_strings_and_genes(hg38, shared_data):
    bed = shared_data / "annotations" / "hg38_chr2_1-2333275.genes.bed"
    regions = regions_from(hg38, regions_path=bed)
    assert len(regions) == 42
    assert regions[0] == Region("FAM110C", "chr2", 38813, 46870, "-")
    picked = regions_from(hg38, regions_path=bed, genes=["ACP1"], region_strings=["chr2:11-20"])
    assert [(r.name, r.start, r.end, r.strand) for r in picked] == [
        ("ACP1", 264139, 278283, "+"),
        ("chr2:11-20", 10, 20, "+"),
    ]
    twice = regions_from(hg38, region_strings=["chr2:1-5:-", "chr2:1-5:-"])
    assert [r.name for r in twice] == ["chr2:1-5:-", "chr2:1-5:-#2"]
    assert twice[0].strand == "-"


def test_regions_errors_name_file_line_and_record(hg38, tmp_path, shared_data):
    bed = tmp_path / "bad.bed"
    bed.write_text("chr2\t10\t20\tok\nchr22\t5\t50\tother\n")
    with pytest.raises(IntervalError, match=r"bad\.bed.*line 2.*unknown contig 'chr22'"):
        regions_from(hg38, regions_path=bed)
    with pytest.raises(IntervalError, match="past the end"):
        regions_from(hg38, region_strings=["chr2:2333000-2400000"])
    with pytest.raises(IntervalError, match="no annotation"):
        regions_from(hg38, genes=["ACP1"])
    genes = shared_data / "annotations" / "hg38_chr2_1-2333275.genes.bed"
    with pytest.raises(IntervalError, match="'ACP2' is not in the annotation.*ACP1"):
        regions_from(hg38, regions_path=genes, genes=["ACP2"])


# -- token chunks ------------------------------------------------------------------------------


def test_plus_and_minus_chunks_with_softmask_and_n(hg38):
    start, end = 9_000, 16_500  # 10 kb of leading N, then soft-masked repeats
    raw = hg38.fetch("chr2", start, end)
    plus = list(iter_token_chunks(hg38, Region("r", "chr2", start, end, "+"), chunk=1000))
    assert [c.offset for c in plus] == list(range(0, 7500, 1000))
    assert [len(c.ids) for c in plus] == [1000] * 7 + [500]
    assert np.array_equal(np.concatenate([c.ids for c in plus]), encode(raw))
    flags = np.concatenate([c.flags for c in plus])
    arr = np.frombuffer(raw, dtype=np.uint8)
    assert np.array_equal(flags & FLAG_N != 0, np.isin(arr, list(b"Nn")))
    assert np.array_equal(flags & FLAG_SOFTMASK != 0, np.isin(arr, list(b"acgtn")))
    assert np.array_equal(np.concatenate([c.mask for c in plus]), flags != 0)
    assert (flags == FLAG_N).sum() == 1000 and (flags == FLAG_SOFTMASK).sum() > 1000

    minus = list(iter_token_chunks(hg38, Region("r", "chr2", start, end, "-"), chunk=1000))
    assert [c.offset for c in minus] == [c.offset for c in plus]
    assert [c.plus_start for c in minus] == [6500, 5500, 4500, 3500, 2500, 1500, 500, 0]
    assert np.array_equal(np.concatenate([c.ids for c in minus]), encode(reverse_complement(raw)))
    assert np.array_equal(np.concatenate([c.flags for c in minus]), flags[::-1])


def test_minus_strand_on_plain_gzip_streams_once(shared_data):
    path = shared_data / "genomes" / "ecoli_K12_W3110_NC_007779.1.fasta.gz"
    with FastaFile(path) as fa:
        assert not fa.random_access
        region = Region("r", ECOLI_ID, 1_000, 9_000, "-")
        chunks = list(iter_token_chunks(fa, region, chunk=3000))
    with FastaFile(ECOLI_SLICE) as indexed:
        want = encode(reverse_complement(indexed.fetch(ECOLI_ID, 1_000, 9_000)))
    assert np.array_equal(np.concatenate([c.ids for c in chunks]), want)


def test_reader_errors_reach_the_consumer_intact(tmp_path):
    fasta = tmp_path / "bad.fa.gz"
    seq = "ACGT" * 1000 + "ACGX" + "ACGT" * 1000
    with gzip.open(fasta, "wt") as fh:
        fh.write(">good\n" + "ACGT" * 50 + "\n>chrB\n")
        fh.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
    with FastaFile(fasta) as fa:
        region = Region("b", "chrB", 0, len(seq))
        got = []
        with pytest.raises(InvalidBaseError) as info:
            for c in iter_token_chunks(fa, region, chunk=512, prefetch=3):
                got.append(c.offset)
    msg = str(info.value)
    assert "bad.fa.gz" in msg and "'chrB'" in msg and "position 4003" in msg and "'X'" in msg
    assert got == list(range(0, 3584, 512))  # the chunks before the bad one
    assert not _reader_threads()


def test_closing_early_stops_the_reader(hg38):
    chunks = iter_token_chunks(hg38, Region("r", "chr2", 0, 200_000), chunk=1000, prefetch=2)
    assert next(chunks).offset == 0
    chunks.close()
    assert not _reader_threads()


def test_run_ahead_keeps_order_and_passes_exceptions():
    def numbers():
        yield from range(50)
        raise KeyError("boom")

    out = []
    with pytest.raises(KeyError, match="boom"):
        for x in run_ahead(numbers, 3):
            out.append(x)
    assert out == list(range(50))
    assert list(run_ahead(lambda: iter("abc"), 0)) == ["a", "b", "c"]


# -- runner ------------------------------------------------------------------------------------


def _full(model, ids: np.ndarray, layers=(0, 1)):
    with torch.no_grad():
        return model(
            torch.from_numpy(ids).unsqueeze(0), output_layers=list(layers), return_logprobs=True
        )


@pytest.mark.parametrize("strand", ["+", "-"])
def test_runner_equals_full_forward(tiny, hg38, strand):
    region = Region("r", "chr2", 9_500, 12_700, strand)
    runner = ModelRunner(tiny, device="cpu", chunk=700)
    chunks = iter_token_chunks(hg38, region, chunk=1000)
    results = list(runner.run_region(chunks, layers=[0, -1], logprobs=True))
    assert [r.offset for r in results] == [0, 1000, 2000, 3000]
    ids = np.concatenate([c.ids for c in iter_token_chunks(hg38, region, chunk=1000)])
    full = _full(tiny, ids)
    hidden = np.concatenate([r.hidden for r in results])
    assert hidden.shape == (3200, 128) and hidden.dtype == np.float32
    assert _rel(hidden, full.last_hidden_state[0].numpy()) <= 1e-5
    for i in (0, 1):
        layer = np.concatenate([r.layers[i] for r in results])
        assert _rel(layer, full.hidden_states[i][0].numpy()) <= 1e-5
    logp = np.concatenate([r.logprobs for r in results])
    assert np.isnan(logp[0])
    assert np.abs(logp[1:] - full.next_token_logprobs[0].numpy()).max() <= 1e-4
    assert runner.filter_len == 1026 and runner.backoffs == 0


def test_runner_batches_equal_length_regions(tiny, hg38):
    regions = [Region(f"r{i}", "chr2", 20_000 + 3000 * i, 22_500 + 3000 * i, "-") for i in range(3)]
    runner = ModelRunner(tiny, device="cpu", chunk=1000)
    steps = list(runner.run_batch(iter_batch_chunks(hg38, regions, chunk=1000), layers=[1]))
    assert [len(s) for s in steps] == [3, 3, 3]
    for b, region in enumerate(regions):
        single = list(runner.run_region(iter_token_chunks(hg38, region, chunk=1000), layers=[1]))
        batched = np.concatenate([s[b].hidden for s in steps])
        assert _rel(batched, np.concatenate([r.hidden for r in single])) <= 1e-5
        assert (
            _rel(
                np.concatenate([s[b].layers[1] for s in steps]),
                np.concatenate([r.layers[1] for r in single]),
            )
            <= 1e-5
        )
    with pytest.raises(ValueError, match="equal lengths"):
        iter_batch_chunks(hg38, [regions[0], Region("x", "chr2", 0, 10)], chunk=1000)


class _FakeOOM:
    """Wraps the engine's mixer step: raises CUDA-style OOM in block 1 above ``limit`` tokens,
    after block 0 has already replaced its state (so the snapshot restore is exercised)."""

    def __init__(self, runner: ModelRunner, limit: int) -> None:
        self.inner = runner.engine._mixer_step
        self.limit = limit
        self.raised = 0
        self.blocks = list(runner.model.blocks)

    def __call__(self, block, x, layer):
        if x.shape[1] > self.limit and block is self.blocks[1]:
            self.raised += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        return self.inner(block, x, layer)


def test_oom_backoff_halves_the_step_and_stays_exact(tiny, hg38, caplog):
    region = Region("r", "chr2", 30_000, 33_000, "+")
    ids = np.concatenate([c.ids for c in iter_token_chunks(hg38, region, chunk=3000)])
    full = _full(tiny, ids)
    runner = ModelRunner(tiny, device="cpu", chunk=2048)
    fake = _FakeOOM(runner, limit=300)
    runner.engine._mixer_step = fake
    with caplog.at_level(logging.WARNING, logger="dnastream.pipelines"):
        results = list(
            runner.run_region(iter_token_chunks(hg38, region, chunk=1000), logprobs=True)
        )
    assert fake.raised == 2 and runner.backoffs == 2 and runner.chunk == 250
    assert "with 1000-token steps: retrying with 500-token steps" in caplog.text
    assert "with 500-token steps: retrying with 250-token steps" in caplog.text
    assert [len(r.hidden) for r in results] == [1000] * 3  # one result per input chunk
    hidden = np.concatenate([r.hidden for r in results])
    assert _rel(hidden, full.last_hidden_state[0].numpy()) <= 1e-5
    logp = np.concatenate([r.logprobs for r in results])
    assert np.abs(logp[1:] - full.next_token_logprobs[0].numpy()).max() <= 1e-4


def test_oom_at_the_smallest_step_gives_up(tiny, hg38):
    runner = ModelRunner(tiny, device="cpu", chunk=4 * MIN_CHUNK)
    runner.engine._mixer_step = _FakeOOM(runner, limit=1)
    with pytest.raises(MemoryError, match="out of memory on cpu even with 64-token steps"):
        list(runner.run_region(iter_token_chunks(hg38, Region("r", "chr2", 0, 500), chunk=500)))


def test_other_errors_are_not_taken_for_oom(tiny, hg38):
    runner = ModelRunner(tiny, device="cpu", chunk=256)

    def broken(block, x, layer):
        raise RuntimeError("shape mismatch")

    runner.engine._mixer_step = broken
    with pytest.raises(RuntimeError, match="shape mismatch"):
        list(runner.run_region(iter_token_chunks(hg38, Region("r", "chr2", 0, 500), chunk=500)))
    assert runner.backoffs == 0


def test_tune_malloc_is_idempotent():
    first = tune_malloc()
    assert tune_malloc() == first


def test_runner_logprobs_only(tiny, hg38):
    runner = ModelRunner(tiny, device="cpu", chunk=512)
    region = Region("r", "chr2", 40_000, 41_000, "-")
    results = list(
        runner.run_region(iter_token_chunks(hg38, region, chunk=400), logprobs=True, hidden=False)
    )
    assert [r.hidden for r in results] == [None] * 3 and results[0].layers == {}
    ids = np.concatenate([c.ids for c in iter_token_chunks(hg38, region, chunk=1000)])
    want = _full(tiny, ids).next_token_logprobs[0].numpy()
    got = np.concatenate([r.logprobs for r in results])
    assert got.shape == (1000,) and np.abs(got[1:] - want).max() <= 1e-4
