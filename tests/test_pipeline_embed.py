"""``dnastream embed``: real FASTA and annotations, real HDF5, real subprocesses (no mocks)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dnastream.cli.main import app
from dnastream.genomics import FastaFile, encode, reverse_complement
from dnastream.models import load_model
from resume_helpers import done_counters, dump_h5, run_until_killed

TEST_DATA = Path(__file__).parent / "data"
ECOLI_SLICE = TEST_DATA / "ecoli_K12_W3110_first200kb.fa.gz"
ECOLI_ID = "NC_007779.1"

cli = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small chunks run faster on one thread (and do not suffer from busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(hyenadna_fixtures):
    return hyenadna_fixtures / "hf_tiny"


@pytest.fixture(scope="module")
def tiny(model_dir):
    return load_model(model_dir, filter_len=1026).eval()


@pytest.fixture(scope="module")
def hg38_path(shared_data):
    return shared_data / "genomes" / "hg38_chr2_1-2333275.fa.gz"


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _forward(model, bases: bytes, layers=()) -> dict[str, np.ndarray]:
    """Whole-sequence forward on the same tokens: {"embedding": (L, d), "layer_i": ...}."""
    ids = torch.from_numpy(encode(bases)).unsqueeze(0)
    with torch.no_grad():
        out = model(ids, output_layers=list(layers), return_logits=False)
    res = {"embedding": out.last_hidden_state[0].numpy()}
    res.update({f"layer_{i}": h[0].numpy() for i, h in out.hidden_states.items()})
    return res


def _both_strands(model, bases: bytes, layers=()) -> tuple[dict, dict]:
    """(+ outputs, - outputs flipped back to + order)."""
    plus = _forward(model, bases, layers)
    minus = {k: v[::-1] for k, v in _forward(model, reverse_complement(bases), layers).items()}
    return plus, minus


def _embed(*args: str) -> object:
    return cli.invoke(app, ["embed", *map(str, args)])


# -- contents ----------------------------------------------------------------------------------


def test_embed_ecoli_region_equals_full_forward(tmp_path, model_dir, tiny):
    out = tmp_path / "e.h5"
    res = _embed(
        ECOLI_SLICE,
        "-o",
        out,
        "--model",
        model_dir,
        "--region",
        f"{ECOLI_ID}:150001-156000",
        "--layers",
        "0,-1",
        "--chunk",
        "2048",
    )
    assert res.exit_code == 0, res.output
    assert "kbp/s" in res.output and not out.with_name("e.h5.part").exists()
    with FastaFile(ECOLI_SLICE) as fa:
        bases = fa.fetch(ECOLI_ID, 150_000, 156_000)
    want = _forward(tiny, bases, layers=(0, 1))
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == "dnastream.embed" and f.attrs["complete"]
        assert f.attrs["model_sha256"] == json.loads(f.attrs["settings"])["model_sha256"]
        assert (
            f.attrs["command"].startswith("dnastream embed")
            and "--layers 0,-1" in f.attrs["command"]
        )
        g = f[f"regions/{ECOLI_ID}:150001-156000"]
        assert (g.attrs["record"], g.attrs["start"], g.attrs["end"]) == (ECOLI_ID, 150_000, 156_000)
        assert g.attrs["complete"] and g.attrs["done_plus"] == 6000
        assert list(g) == ["mask", "plus"] and sorted(g["plus"]) == [
            "embedding",
            "layer_0",
            "layer_1",
        ]
        for name, ref in want.items():
            ds = g[f"plus/{name}"]
            assert ds.shape == (6000, 128) and ds.dtype == np.float32
            assert ds.compression == "lzf" and ds.chunks is not None
            assert _rel(ds[()], ref) <= 1e-5
        assert not g["mask"][()].any()


def test_embed_whole_slice_subprocess(tmp_path, model_dir, tiny):
    """The whole 200 kb record through ``python -m dnastream``; probes equal full forwards
    over their receptive field (2 blocks x (K - 1 + 2) bases)."""
    out = tmp_path / "slice.h5"
    cmd = [
        sys.executable,
        "-m",
        "dnastream",
        "embed",
        str(ECOLI_SLICE),
        "-o",
        str(out),
        "--model",
        str(model_dir),
        "--dtype",
        "float16",
        "--compression",
        "gzip",
        "--threads",
        "1",
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # --quiet
    field = 2 * (1026 - 1 + 2)
    with FastaFile(ECOLI_SLICE) as fa, h5py.File(out, "r") as f:
        ds = f[f"regions/{ECOLI_ID}/plus/embedding"]
        assert ds.shape == (200_000, 128) and ds.dtype == np.float16 and ds.compression == "gzip"
        for lo in (0, 97_531, 199_000):
            hi = min(lo + 1000, 200_000)
            ctx = max(0, lo - field)
            ref = _forward(tiny, fa.fetch(ECOLI_ID, ctx, hi))["embedding"][lo - ctx :]
            assert _rel(ds[lo:hi].astype(np.float32), ref) <= 2e-3  # float16 storage


def test_strands_rc_average_softmask_and_n(tmp_path, model_dir, tiny, hg38_path):
    """hg38 chr2:9,001-12,600 spans the leading N run and soft-masked repeats."""
    out = tmp_path / "s.h5"
    res = _embed(
        hg38_path,
        "-o",
        out,
        "--model",
        model_dir,
        "--region",
        "chr2:9001-12600",
        "--strand",
        "both",
        "--rc-average",
        "--layers",
        "1",
        "--chunk",
        "1000",
    )
    assert res.exit_code == 0, res.output
    with FastaFile(hg38_path) as fa:
        bases = fa.fetch("chr2", 9000, 12_600)
    plus, minus = _both_strands(tiny, bases, layers=(1,))
    raw = np.frombuffer(bases, dtype=np.uint8)
    with h5py.File(out, "r") as f:
        g = f["regions/chr2:9001-12600"]
        assert sorted(g) == ["mask", "minus", "plus", "rc_average"]
        assert g.attrs["done_plus"] == g.attrs["done_minus"] == 3600
        mask = g["mask"][()]
        assert np.array_equal(mask & 1 != 0, raw == ord("N"))
        assert np.array_equal(mask & 2 != 0, (raw >= ord("a")) & (raw <= ord("z")))
        assert (mask == 1).sum() == 1000 and (mask == 2).sum() > 1000
        for name in ("embedding", "layer_1"):
            assert _rel(g[f"plus/{name}"][()], plus[name]) <= 1e-5
            assert _rel(g[f"minus/{name}"][()], minus[name]) <= 1e-5
            avg = (plus[name] + minus[name]) / 2
            assert _rel(g[f"rc_average/{name}"][()], avg) <= 1e-5
    assert not out.with_name("s.h5.stage.part").exists()


def test_pooling_mean_and_bins(tmp_path, model_dir, tiny, hg38_path):
    start, end, n = 30_000, 33_333, 500  # 3333 bases: 7 bins, the last one 333 long
    with FastaFile(hg38_path) as fa:
        bases = fa.fetch("chr2", start, end)
    plus, minus = _both_strands(tiny, bases, layers=(0,))
    edges = list(range(0, end - start, n)) + [end - start]
    for pool in ("mean", f"bin:{n}"):
        out = tmp_path / f"{pool.replace(':', '')}.h5"
        res = _embed(
            hg38_path,
            "-o",
            out,
            "--model",
            model_dir,
            "--region",
            f"chr2:{start + 1}-{end}",
            "--pool",
            pool,
            "--strand",
            "both",
            "--rc-average",
            "--layers",
            "0",
            "--chunk",
            "768",
        )
        assert res.exit_code == 0, res.output
        with h5py.File(out, "r") as f:
            g = f[f"regions/chr2:{start + 1}-{end}"]
            assert g["mask"].shape == (end - start,)
            for name in ("embedding", "layer_0"):
                for track, ref in (
                    ("plus", plus[name]),
                    ("minus", minus[name]),
                    ("rc_average", (plus[name] + minus[name]) / 2),
                ):
                    got = g[f"{track}/{name}"][()]
                    if pool == "mean":
                        want = ref.mean(axis=0)
                        assert got.shape == (128,)
                    else:
                        want = np.stack(
                            [
                                ref[a:b].mean(axis=0)
                                for a, b in zip(edges[:-1], edges[1:], strict=True)
                            ]
                        )
                        assert got.shape == (7, 128)
                    assert _rel(got, want) <= 1e-5, (pool, track, name)


def test_minus_strand_on_plain_gzip_and_batches(tmp_path, model_dir, tiny, shared_data):
    """Plain gzip has no random access: regions still work (with a bgzip hint); equal-length
    regions batched together give the same numbers."""
    genome = shared_data / "genomes" / "ecoli_K12_W3110_NC_007779.1.fasta.gz"
    bed = tmp_path / "w.bed"
    bed.write_text(
        "".join(
            f"{ECOLI_ID}\t{s}\t{s + 2500}\tw{s}\t0\t-\n" for s in (1000, 5000, 9000, 13_000, 17_000)
        )
    )
    outs = {}
    for bs in ("1", "4"):
        outs[bs] = tmp_path / f"b{bs}.h5"
        res = _embed(
            genome,
            "-o",
            outs[bs],
            "--model",
            model_dir,
            "--regions",
            bed,
            "--strand",
            "-",
            "--batch-size",
            bs,
            "--chunk",
            "1024",
        )
        assert res.exit_code == 0, res.output
        assert "bgzip" in res.output
    with FastaFile(ECOLI_SLICE) as fa:
        bases = fa.fetch(ECOLI_ID, 9000, 11_500)
    want = _forward(tiny, reverse_complement(bases))["embedding"][::-1]
    with h5py.File(outs["1"], "r") as one, h5py.File(outs["4"], "r") as four:
        assert sorted(one["regions"]) == ["w1000", "w13000", "w17000", "w5000", "w9000"]
        assert one["regions/w9000"].attrs["strand"] == "-"
        assert list(one["regions/w9000"]) == ["mask", "minus"]
        assert _rel(one["regions/w9000/minus/embedding"][()], want) <= 1e-5
        for key in one["regions"]:
            a, b = (
                one[f"regions/{key}/minus/embedding"][()],
                four[f"regions/{key}/minus/embedding"][()],
            )
            assert _rel(b, a) <= 1e-5


# -- resume, refusals, errors -----------------------------------------------------------------


def test_sigkill_and_resume_give_an_identical_file(tmp_path, model_dir, hg38_path):
    bed = tmp_path / "two.bed"
    bed.write_text("chr2\t9500\t13600\tfirst\t0\t+\nchr2\t40000\t43000\tsecond\t0\t-\n")
    args = [
        sys.executable,
        "-m",
        "dnastream",
        "embed",
        str(hg38_path),
        "-o",
        "out.h5",
        "--model",
        str(model_dir),
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
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    clean.mkdir()
    killed.mkdir()
    proc = subprocess.run(args, cwd=clean, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr

    part = killed / "out.h5.part"
    # killed in the + pass of the first region, then in the - pass of the second
    run_until_killed(args, killed, part, lambda d: d.get("first", (0, 0))[0] >= 1536, "0.15")
    assert 1536 <= done_counters(part)["first"][0] < 4100
    again = _embed(
        hg38_path,
        "-o",
        killed / "out.h5",
        "--model",
        model_dir,
        "--regions",
        bed,
        "--strand",
        "both",
        "--layers",
        "0",
        "--chunk",
        "512",
    )
    assert again.exit_code == 3 and "--rc-average" in again.output  # other settings: refused
    run_until_killed(args, killed, part, lambda d: d.get("second", (0, 0))[1] >= 1024, "0.15")
    progress = done_counters(part)
    assert progress["first"] == (4100, 4100) and 1024 <= progress["second"][1] < 3000
    proc = subprocess.run(args, cwd=killed, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not part.exists() and not (killed / "out.h5.stage.part").exists()
    assert dump_h5(killed / "out.h5") == dump_h5(clean / "out.h5")


def test_finished_output_is_kept_without_force(tmp_path, model_dir, hg38_path):
    out = tmp_path / "f.h5"
    base = [hg38_path, "-o", out, "--model", model_dir, "--region", "chr2:20001-21000"]
    assert _embed(*base, "--pool", "mean").exit_code == 0
    before = out.read_bytes()
    same = _embed(*base, "--pool", "mean")
    assert same.exit_code == 3 and "already complete" in same.output and "--force" in same.output
    other = _embed(*base, "--pool", "none")
    assert other.exit_code == 3 and "--pool" in other.output and '"mean"' in other.output
    assert out.read_bytes() == before
    forced = _embed(*base, "--pool", "none", "--force")
    assert forced.exit_code == 0, forced.output
    with h5py.File(out, "r") as f:
        assert f["regions/chr2:20001-21000/plus/embedding"].shape == (1000, 128)


def test_bad_inputs_are_clear_and_leave_outputs_intact(tmp_path, model_dir, hg38_path):
    out = tmp_path / "keep.h5"
    assert (
        _embed(
            hg38_path,
            "-o",
            out,
            "--model",
            model_dir,
            "--region",
            "chr2:20001-20500",
            "--pool",
            "mean",
        ).exit_code
        == 0
    )
    before = out.read_bytes()

    bed = tmp_path / "bad.bed"
    bed.write_text("chr2\t100\t200\tok\n2\t100\t200\tnochr\n")
    res = _embed(hg38_path, "-o", out, "--model", model_dir, "--regions", bed, "--force")
    assert res.exit_code == 2
    assert "bad.bed" in res.output and "line 2" in res.output and "'chr2'" in res.output

    fasta = tmp_path / "bad.fa"
    fasta.write_text(">ok\n" + "ACGT" * 30 + "\n>broken\nACGTACGTAC\nACGTAC-GTU\n")
    res = _embed(fasta, "-o", out, "--model", model_dir, "--force")
    assert res.exit_code == 2
    assert "bad.fa" in res.output and "'broken'" in res.output and "position 16" in res.output

    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_bytes((model_dir / "config.json").read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    res = _embed(hg38_path, "-o", out, "--model", broken, "--force")
    assert res.exit_code == 2 and "model.safetensors" in res.output

    gz = tmp_path / "trunc.fa.gz"
    gz.write_bytes(gzip.compress((">t\n" + "ACGT" * 5000 + "\n").encode())[:-40])
    res = _embed(gz, "-o", out, "--model", model_dir, "--force")
    assert res.exit_code == 2 and "trunc.fa.gz" in res.output

    for bad in (["--pool", "max"], ["--strand", "x"], ["--layers", "7"], ["--chunk", "0"]):
        res = _embed(hg38_path, "-o", out, "--model", model_dir, "--force", *bad)
        assert res.exit_code == 2, (bad, res.output)
        assert bad[0] in res.output
    assert out.read_bytes() == before
    assert not list(tmp_path.glob("*.part"))
