"""Checkpoint loading details: configs, key layouts, tied/untied heads, native format, errors."""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dnastream.models import (
    NATIVE_FORMAT,
    HyenaDNAConfig,
    ModelLoadError,
    convert,
    load_model,
    load_torch_checkpoint,
    save_native,
)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "hyenadna"
pytestmark = pytest.mark.skipif(
    not (FIXTURES / "hf_tiny" / "model.safetensors").is_file(),
    reason=f"HyenaDNA reference fixtures not found at {FIXTURES}",
)
IDS = torch.tensor([[0, 7, 8, 9, 10, 11, 7, 7, 10, 1]])


def lightning_state() -> OrderedDict[str, torch.Tensor]:
    return load_torch_checkpoint(FIXTURES / "lightning_tiny" / "weights.ckpt")["state_dict"]


def write_lightning(folder: Path, state: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "lightning_tiny" / "config.json", folder / "config.json")
    torch.save({"state_dict": OrderedDict(state), "epoch": 0}, folder / "weights.ckpt")
    return folder


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


# -- configs -----------------------------------------------------------------------------------


def test_official_and_hf_configs_agree() -> None:
    official = HyenaDNAConfig.from_official_json(FIXTURES / "lightning_tiny" / "config.json")
    hf = HyenaDNAConfig.from_hf_json(FIXTURES / "hf_tiny" / "config.json")
    for cfg in (official, hf):
        assert (cfg.d_model, cfg.n_layer, cfg.inner_dim, cfg.padded_vocab_size) == (128, 2, 512, 16)
        layer = cfg.layer
        assert (layer.l_max, layer.emb_dim, layer.filter_order, layer.local_order) == (
            1026,
            5,
            64,
            3,
        )
        assert layer.w == 10 and layer.order == 2 and cfg.modulation_shift == 0.05
    assert (
        official.extra["fused_dropout_add_ln"] is True and official.layer.extra["_name_"] == "hyena"
    )
    assert hf.tie_word_embeddings is False and hf.extra["model_type"] == "hyenadna"


def test_native_config_round_trip(tmp_path: Path) -> None:
    cfg = HyenaDNAConfig.from_official_json(
        FIXTURES / "lightning_tiny_ckpt_layer" / "config.json", modulation_shift=0.0, filter_len=99
    )
    cfg.save_json(tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["format"] == NATIVE_FORMAT and data["config"]["modulation_shift"] == 0.0
    assert HyenaDNAConfig.from_json(tmp_path / "config.json") == cfg
    with pytest.raises(ValueError, match="format marker"):
        HyenaDNAConfig.from_json(FIXTURES / "hf_tiny" / "config.json")
    data["format_version"] = 99
    with pytest.raises(ValueError, match="version 99"):
        HyenaDNAConfig.from_json(data)


# -- key layouts and heads ---------------------------------------------------------------------


def test_any_subset_of_shared_freq_names_loads(tmp_path: Path) -> None:
    ref = logits(load_model(FIXTURES / "lightning_tiny"))
    state = lightning_state()
    for layer in (0, 1):
        prefix = f"model.backbone.layers.{layer}.mixer.filter_fn.implicit_filter"
        del state[f"{prefix}.1.freq"], state[f"{prefix}.3.freq"]
    assert torch.equal(logits(load_model(write_lightning(tmp_path / "m", state))), ref)


def test_differing_freqs_are_rejected(tmp_path: Path) -> None:
    state = {k: v.clone() for k, v in lightning_state().items()}
    state["model.backbone.layers.1.mixer.filter_fn.implicit_filter.3.freq"] += 1.0
    with pytest.raises(ModelLoadError, match="Sin frequencies"):
        load_model(write_lightning(tmp_path / "m", state))


def test_missing_and_unknown_keys(tmp_path: Path) -> None:
    state = lightning_state()
    del state["model.backbone.layers.1.mlp.fc2.bias"]
    with pytest.raises(ModelLoadError, match=r"missing \['blocks.1.mlp.fc2.bias'\]"):
        load_model(write_lightning(tmp_path / "a", state))
    state = lightning_state()
    state["model.backbone.layers.0.mixer.mystery.weight"] = torch.zeros(1)
    with pytest.raises(ModelLoadError, match="unknown HyenaDNA block key"):
        load_model(write_lightning(tmp_path / "b", state))


def test_non_model_tensors_are_ignored_with_warning(tmp_path: Path) -> None:
    state = lightning_state()
    state["decoder.0.output_transform.weight"] = torch.zeros(2, 128)
    with pytest.warns(UserWarning, match="ignoring 1 tensors"):
        model = load_model(write_lightning(tmp_path / "m", state))
    assert torch.equal(logits(model), logits(load_model(FIXTURES / "lightning_tiny")))


def test_shape_mismatch_names_the_tensor(tmp_path: Path) -> None:
    folder = write_lightning(tmp_path / "m", lightning_state())
    config = json.loads((folder / "config.json").read_text())
    config["d_inner"] = 256
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="mlp.fc1.weight has shape"):
        load_model(folder)


def test_untied_hf_head(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    shutil.copytree(FIXTURES / "hf_tiny", folder)
    state = load_file(folder / "model.safetensors")
    tied = load_model(folder)
    assert tied.tied  # the -hf head is a copy of the embedding
    head = state["lm_head.weight"] + 0.5
    state["lm_head.weight"] = head
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    model = load_model(folder)
    assert not model.tied
    with torch.no_grad():
        out = model(IDS)
    assert torch.allclose(out.logits, out.last_hidden_state @ head.T)
    native = tmp_path / "native"
    save_native(model, native)
    assert torch.equal(logits(load_model(native)), out.logits)


# -- native format -----------------------------------------------------------------------------


def test_convert_writes_native(tmp_path: Path) -> None:
    dst = convert(FIXTURES / "lightning_tiny_ckpt_layer", tmp_path / "out", modulation_shift=0.0)
    with safe_open(dst / "model.safetensors", framework="pt") as fh:
        keys = set(fh.keys())
    assert "lm_head.weight" not in keys and "embedding.weight" in keys
    assert "blocks.0.mixer.filter.freq" in keys and len(keys) == 2 * 26 + 3
    back = load_model(dst)
    assert back.tied and back.config.modulation_shift == 0.0
    ref = load_model(FIXTURES / "lightning_tiny", modulation_shift=0.0)
    assert torch.equal(logits(back), logits(ref))
    assert torch.equal(
        logits(load_model(dst, modulation_shift=0.05)), logits(load_model(FIXTURES / "hf_tiny"))
    )


def test_filter_len_option_and_device_dtype(tmp_path: Path) -> None:
    model = load_model(FIXTURES / "hf_tiny", filter_len=100, dtype=torch.float64, device="cpu")
    assert model.dtype == torch.float64 and model.config.filter_len == 100
    with torch.no_grad():
        out = model(torch.randint(0, 12, (1, 3000)))
    assert out.last_hidden_state.shape == (1, 3000, 128)
    save_native(model, tmp_path / "k")
    assert load_model(tmp_path / "k").config.filter_len == 100


def test_missing_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no weights file"):
        load_model(tmp_path / "empty")
    folder = tmp_path / "noconfig"
    folder.mkdir()
    shutil.copy(FIXTURES / "hf_tiny" / "model.safetensors", folder)
    with pytest.raises(ModelLoadError, match="config.json is missing"):
        load_model(folder)
