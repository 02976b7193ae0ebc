"""Safe loading: checkpoints are read without ever running code from their pickles."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
import subprocess
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from dnastream.models import (
    CheckpointFormatError,
    ModelLoadError,
    Placeholder,
    UnsafeCheckpointError,
    load_model,
    load_torch_checkpoint,
)
from dnastream.models.safe_unpickle import restricted_loads

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "hyenadna"
needs_fixtures = pytest.mark.skipif(
    not (FIXTURES / "lightning_tiny" / "weights.ckpt").is_file(),
    reason=f"HyenaDNA reference fixtures not found at {FIXTURES}",
)


class _Evil:
    """Pickles as ``func(*args)``: what a malicious checkpoint does at load time."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, _Evil]:
    cmd = f"touch {marker}"
    return {
        "os.system": _Evil(os.system, cmd),
        "builtins.eval": _Evil(builtins.eval, f"__import__('os').system({cmd!r})"),
        "builtins.exec": _Evil(builtins.exec, f"import os; os.system({cmd!r})"),
        "subprocess.Popen": _Evil(subprocess.Popen, ["touch", str(marker)]),
        "builtins.getattr": _Evil(getattr, "text", "upper"),
        "torch.load": _Evil(torch.load, str(marker)),
    }


@pytest.fixture
def marker() -> Path:
    path = Path("/tmp") / f"pwned-{uuid.uuid4().hex}"
    yield path
    path.unlink(missing_ok=True)


def _torch_save(obj: Any, path: Path) -> Path:
    torch.save(obj, path)
    assert zipfile.is_zipfile(path)
    return path


@pytest.mark.parametrize(
    "name",
    ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "builtins.getattr"]
    + ["torch.load"],
)
def test_malicious_zip_checkpoint_is_refused(tmp_path: Path, marker: Path, name: str) -> None:
    evil = _payloads(marker)[name]
    ckpt = _torch_save(
        {"state_dict": {"w": torch.ones(2)}, "hyper_parameters": evil}, tmp_path / "weights.ckpt"
    )
    with pytest.raises(UnsafeCheckpointError) as info:
        load_torch_checkpoint(ckpt)
    message = str(info.value)
    assert str(ckpt) in message and "allow-list" in message
    func_name = name.split(".")[1] if name != "os.system" else "system"
    assert func_name in message
    assert not marker.exists()


def test_payload_is_live_control(marker: Path) -> None:
    """Control: the payload does run under a plain unpickler, so the refusals are meaningful."""
    pickle.loads(pickle.dumps(_payloads(marker)["os.system"]))
    assert marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_malicious_plain_pickle_is_refused(tmp_path: Path, marker: Path, protocol: int) -> None:
    path = tmp_path / "weights.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": _payloads(marker)["os.system"]}, protocol))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_torch_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError, match="allow-list"):
        restricted_loads(path.read_bytes(), source=str(path))
    assert not marker.exists()


def test_legacy_torch_file_is_not_loaded(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "legacy.pt"
    evil = _payloads(marker)["os.system"]
    torch.save({"w": torch.ones(2), "x": evil}, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    with pytest.raises(CheckpointFormatError, match="pre-1.6"):
        load_torch_checkpoint(path)
    assert not marker.exists()


def test_garbage_and_plain_pickles_give_format_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00not a pickle at all")
    with pytest.raises(CheckpointFormatError, match="not a torch.save zip"):
        load_torch_checkpoint(junk)
    plain = tmp_path / "plain.ckpt"
    plain.write_bytes(pickle.dumps({"a": [1, 2]}))
    with pytest.raises(CheckpointFormatError, match="plain pickle"):
        load_torch_checkpoint(plain)


def test_load_model_refuses_malicious_weights(tmp_path: Path, marker: Path) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    config = {"d_model": 8, "n_layer": 1, "vocab_size": 12, "layer": {"l_max": 16}}
    (folder / "config.json").write_text(json.dumps(config))
    _torch_save({"state_dict": _payloads(marker)["os.system"]}, folder / "weights.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="weights.ckpt"):
        load_model(folder)
    assert not marker.exists()


def test_placeholders_are_inert() -> None:
    # GLOBAL omegaconf.dictconfig DictConfig, called with an argument, then BUILD with state
    data = (
        b"\x80\x02comegaconf.dictconfig\nDictConfig\nq\x00X\x03\x00\x00\x00argq\x01\x85q\x02R"
        b"q\x03}q\x04X\x01\x00\x00\x00kq\x05K\x01sb."
    )
    obj = restricted_loads(data)
    assert isinstance(obj, Placeholder)
    assert obj.qualname == "omegaconf.dictconfig.DictConfig"
    assert obj.args == ("arg",) and obj.state == {"k": 1}
    assert not callable(obj)
    with pytest.raises(AttributeError):
        obj.anything = 1  # type: ignore[attr-defined]


def test_restricted_loads_keeps_plain_data() -> None:
    value = {"a": [1, 2.5, "x", (True, None)], "b": {3, 4}, "c": b"raw"}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert restricted_loads(pickle.dumps(value, protocol)) == value


def test_tensor_records_round_trip(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    saved = {
        "view": base[1:, ::2],
        "alias": base,
        "ints": torch.arange(5),
        "half": torch.ones(3, dtype=torch.bfloat16),
        "param": torch.nn.Parameter(torch.full((2,), 3.0)),
        "empty": torch.zeros(0),
    }
    loaded = load_torch_checkpoint(_torch_save(saved, tmp_path / "t.pt"))
    for key, value in saved.items():
        assert torch.equal(loaded[key], value.detach()) and loaded[key].dtype == value.dtype
    assert (
        loaded["view"].untyped_storage().data_ptr() == loaded["alias"].untyped_storage().data_ptr()
    )


@needs_fixtures
def test_lightning_fixture_loads_safely() -> None:
    ckpt = load_torch_checkpoint(FIXTURES / "lightning_tiny" / "weights.ckpt")
    assert ckpt["pytorch-lightning_version"] == "1.8.6" and ckpt["epoch"] == 1
    state = ckpt["state_dict"]
    assert len(state) == 60 and all(v.dtype == torch.float32 for v in state.values())
    emb = state["model.backbone.embeddings.word_embeddings.weight"]
    head = state["model.lm_head.weight"]
    assert head.untyped_storage().data_ptr() == emb.untyped_storage().data_ptr()
    prefix = "model.backbone.layers.0.mixer.filter_fn.implicit_filter"
    freqs = [state[f"{prefix}.{i}.freq"] for i in (1, 3, 5)]
    assert len({f.untyped_storage().data_ptr() for f in freqs}) == 1
    hparams = ckpt["hyper_parameters"]
    assert isinstance(hparams, Placeholder) and not callable(hparams)
    assert hparams.qualname == "omegaconf.dictconfig.DictConfig"
    assert isinstance(ckpt["callbacks"], dict) and ckpt["optimizer_states"]


@needs_fixtures
def test_lightning_fixture_matches_hf_tensors() -> None:
    from safetensors.torch import load_file

    state = load_torch_checkpoint(FIXTURES / "lightning_tiny" / "weights.ckpt")["state_dict"]
    hf = load_file(FIXTURES / "hf_tiny" / "model.safetensors")
    shared = 0
    for key, value in state.items():
        hf_key = (
            "hyena." + key[len("model.") :] if key != "model.lm_head.weight" else "lm_head.weight"
        )
        if hf_key in hf:
            assert torch.equal(hf[hf_key], value), key
            shared += 1
    assert shared == 56


@needs_fixtures
def test_truncated_archive_is_a_clear_error(tmp_path: Path) -> None:
    src = FIXTURES / "lightning_tiny" / "weights.ckpt"
    broken = tmp_path / "weights.ckpt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(broken, "w") as zout:
        for item in zin.infolist():
            if not item.filename.endswith("/data/3"):
                zout.writestr(item, zin.read(item.filename))
    with pytest.raises(CheckpointFormatError, match="missing tensor record"):
        load_torch_checkpoint(broken)
    shutil.copy(FIXTURES / "lightning_tiny" / "config.json", tmp_path / "config.json")
    with pytest.raises((CheckpointFormatError, ModelLoadError)):
        load_model(tmp_path)
