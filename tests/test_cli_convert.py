"""``dnastream convert``: official/-hf checkpoints to the native format, safely."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from dnastream.cli.main import app
from dnastream.models import detect_format, load_model

runner = CliRunner()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_convert_lightning_to_native_keeps_parity(hyenadna_fixtures, tmp_path):
    dst = tmp_path / "native"
    result = runner.invoke(
        app, ["convert", str(hyenadna_fixtures / "lightning_tiny"), str(dst), "--shift", "0.0"]
    )
    assert result.exit_code == 0, result.output
    assert detect_format(dst) == "native"
    model = load_model(dst, dtype=torch.float64).eval()
    assert model.config.modulation_shift == 0.0
    expected = load_file(str(hyenadna_fixtures / "expected.safetensors"))
    with torch.no_grad():
        out = model(expected["input_ids.a"])
    assert _rel(out.logits, expected["shift0p00.a.logits"]) <= 1e-6


def test_convert_refuses_to_overwrite_without_force(hyenadna_fixtures, tmp_path):
    dst = tmp_path / "native"
    src = str(hyenadna_fixtures / "hf_tiny")
    assert runner.invoke(app, ["convert", src, str(dst)]).exit_code == 0
    before = (dst / "model.safetensors").read_bytes()
    again = runner.invoke(app, ["convert", src, str(dst), "--shift", "0.0"])
    assert again.exit_code == 2
    assert "--force" in again.output
    assert (dst / "model.safetensors").read_bytes() == before
    forced = runner.invoke(app, ["convert", src, str(dst), "--shift", "0.0", "--force"])
    assert forced.exit_code == 0, forced.output
    assert load_model(dst).config.modulation_shift == 0.0


def test_convert_corrupt_checkpoint_is_a_clear_error(hyenadna_fixtures, tmp_path):
    src = tmp_path / "broken"
    src.mkdir()
    (src / "config.json").write_bytes(
        (hyenadna_fixtures / "lightning_tiny/config.json").read_bytes()
    )
    (src / "weights.ckpt").write_bytes(b"PK\x03\x04 this is not a torch checkpoint")
    dst = tmp_path / "out"
    result = runner.invoke(app, ["convert", str(src), str(dst)])
    assert result.exit_code == 2
    assert "weights.ckpt" in result.output
    assert not dst.exists()
