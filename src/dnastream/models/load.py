"""Load HyenaDNA checkpoints (official Lightning, ``-hf``, native) and save our native format.

Formats, detected from the files and the tensor names (config flags are never trusted):

* official weights-only repos (LongSafari ``hyenadna-*-seqlen``): ``config.json`` (with a
  ``layer`` section) + ``weights.ckpt`` (a Lightning checkpoint, read with the safe unpickler),
  keys ``model.backbone.*`` (also the gradient-checkpointing form ``.mixer.layer.``);
* ``-hf`` repos: ``config.json`` (``model_type: hyenadna``) + ``model.safetensors`` (or
  ``pytorch_model.bin``), keys ``hyena.backbone.*`` and ``lm_head.weight``;
* native: ``config.json`` with ``"format": "dnastream.hyenadna"`` + ``model.safetensors`` with
  our own parameter names; it stores the modulation shift and filter_len.

Default modulation shift for the official and -hf formats is 0.05, the value of the LongSafari
inference code (``standalone_hyenadna.py``, ``modeling_hyena.py``) these checkpoints are
published for; pass ``modulation_shift=0.0`` for the Lightning training code's behaviour.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from dnastream.models.config import DEFAULT_MODULATION_SHIFT, HyenaDNAConfig, is_native_json
from dnastream.models.hyenadna import HyenaDNAModel
from dnastream.models.keymap import KeyMapError, official_to_native
from dnastream.models.safe_unpickle import load_torch_checkpoint

__all__ = [
    "CheckpointFormat",
    "ModelLoadError",
    "convert",
    "detect_format",
    "load_model",
    "save_native",
]

PathLike = str | os.PathLike[str]
CheckpointFormat = Literal["official", "hf", "native"]

_WEIGHT_FILES = ("model.safetensors", "weights.ckpt", "pytorch_model.bin")


class ModelLoadError(ValueError):
    """A checkpoint folder cannot be loaded; the message names the file and the problem."""


def _locate(path: PathLike) -> tuple[Path, Path]:
    """(config.json, weights file) for a checkpoint folder or a weights file inside one."""
    p = Path(path)
    if p.is_dir():
        folder = p
        found = [folder / n for n in _WEIGHT_FILES if (folder / n).is_file()]
        if not found:
            ckpts = sorted(folder.glob("*.ckpt"))
            found = ckpts[:1]
        if not found:
            raise ModelLoadError(
                f"{folder}: no weights file found (expected one of {', '.join(_WEIGHT_FILES)})"
            )
        weights = found[0]
    elif p.is_file():
        folder, weights = p.parent, p
    else:
        raise ModelLoadError(f"{p}: no such file or folder")
    config = folder / "config.json"
    if not config.is_file():
        raise ModelLoadError(f"{folder}: config.json is missing next to {weights.name}")
    return config, weights


def _read_config_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return data


def _safetensors_keys(path: Path) -> list[str]:
    with safe_open(path, framework="pt") as fh:
        return list(fh.keys())


def _read_state(weights: Path) -> dict[str, Tensor]:
    """Tensors of a weights file: safetensors, or a torch zip (safe unpickler)."""
    if weights.suffix == ".safetensors":
        return load_file(weights)
    obj = load_torch_checkpoint(weights)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ModelLoadError(f"{weights}: no state_dict of tensors found in the checkpoint")
    return dict(obj)


def detect_format(path: PathLike) -> CheckpointFormat:
    """Which checkpoint format a folder (or weights file) holds: official, hf or native."""
    config_path, weights = _locate(path)
    if is_native_json(_read_config_json(config_path)):
        return "native"
    if weights.suffix == ".safetensors":
        keys = _safetensors_keys(weights)
    else:
        keys = list(_read_state(weights))
    if any(k.startswith("hyena.backbone.") for k in keys):
        return "hf"
    if any(k.startswith(("model.backbone.", "backbone.")) for k in keys):
        return "official"
    raise ModelLoadError(f"{weights}: no HyenaDNA tensor names found")


def _config_from_json(
    data: dict[str, Any], where: Path, shift: float, filter_len: int | None
) -> HyenaDNAConfig:
    try:
        if "layer" in data:
            return HyenaDNAConfig.from_official_json(
                data, modulation_shift=shift, filter_len=filter_len
            )
        if data.get("model_type") == "hyenadna" or "max_seq_len" in data:
            return HyenaDNAConfig.from_hf_json(data, modulation_shift=shift, filter_len=filter_len)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{where}: invalid HyenaDNA config: {exc}") from exc
    raise ModelLoadError(
        f"{where}: not a HyenaDNA config (no 'layer' section, no model_type 'hyenadna', "
        "no dnastream format marker)"
    )


def _load_native(
    config_path: Path, weights: Path, shift: float | None, filter_len: int | None
) -> HyenaDNAModel:
    try:
        config = HyenaDNAConfig.from_json(config_path)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{config_path}: invalid native config: {exc}") from exc
    if shift is not None:
        config = config.replace(modulation_shift=shift)
    if filter_len is not None:
        config = config.replace(filter_len=filter_len)
    model = HyenaDNAModel(config)
    state = load_file(weights)
    if model.tied:
        if "lm_head.weight" in state:
            raise ModelLoadError(f"{weights}: lm_head.weight stored but the config ties it")
        state["lm_head.weight"] = state.get("embedding.weight", torch.empty(0))
    _load_state(model, state, weights)
    return model


def _load_state(model: HyenaDNAModel, state: dict[str, Tensor], weights: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelLoadError(
            f"{weights}: tensors do not match the config: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}"
        )
    for name, t in state.items():
        if tuple(t.shape) != tuple(expected[name].shape):
            raise ModelLoadError(
                f"{weights}: {name} has shape {tuple(t.shape)}, the config implies "
                f"{tuple(expected[name].shape)}"
            )
    model.load_state_dict(state, strict=True)


def _load_official(
    config_path: Path, weights: Path, shift: float, filter_len: int | None
) -> HyenaDNAModel:
    config = _config_from_json(_read_config_json(config_path), config_path, shift, filter_len)
    try:
        mapped = official_to_native(_read_state(weights), config.n_layer)
    except KeyMapError as exc:
        raise ModelLoadError(f"{weights}: {exc}") from exc
    if mapped.ignored:
        warnings.warn(
            f"{weights}: ignoring {len(mapped.ignored)} tensors outside the HyenaDNA model "
            f"(e.g. {mapped.ignored[:3]})",
            stacklevel=3,
        )
    config = config.replace(tie_word_embeddings=mapped.tied)
    model = HyenaDNAModel(config)
    state = dict(mapped.state)
    for i, block in enumerate(model.blocks):
        key = f"blocks.{i}.mixer.filter.freq"
        if key not in state:
            if config.layer.train_freq:
                raise ModelLoadError(f"{weights}: layer {i} has no Sin frequency (freq) tensor")
            state[key] = block.mixer.filter.freq.detach().clone()
    if mapped.tied:
        state["lm_head.weight"] = state.get("embedding.weight", torch.empty(0))
    _load_state(model, state, weights)
    return model


def load_model(
    path: PathLike,
    *,
    modulation_shift: float | None = None,
    filter_len: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> HyenaDNAModel:
    """Load a HyenaDNA checkpoint folder (official, -hf or native) as an eval-mode model.

    Args:
        path: checkpoint folder (or the weights file inside it).
        modulation_shift: override the filter modulation shift. Default: 0.05 for official and
            -hf checkpoints (LongSafari inference code), the stored value for native ones.
        filter_len: truncate the long filters to their first K taps (any input length).
        dtype, device: where the model lives.
    """
    config_path, weights = _locate(path)
    if is_native_json(_read_config_json(config_path)):
        model = _load_native(config_path, weights, modulation_shift, filter_len)
    else:
        shift = DEFAULT_MODULATION_SHIFT if modulation_shift is None else modulation_shift
        model = _load_official(config_path, weights, shift, filter_len)
    return model.to(dtype=dtype, device=device).eval()


def save_native(model: HyenaDNAModel, dst: PathLike) -> Path:
    """Write ``model`` to folder ``dst`` as config.json + model.safetensors (native format).

    Tensors keep the model's dtype; a tied LM head is stored once (as the embedding).
    """
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.tied:
        del state["lm_head.weight"]
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    model.config.save_json(out / "config.json")
    return out


def convert(
    src: PathLike,
    dst: PathLike,
    *,
    modulation_shift: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Convert any supported checkpoint folder to the native format; returns ``dst``.

    The modulation shift (default as in :func:`load_model`) is recorded in the output, so a
    native checkpoint always reproduces the numbers it was converted with.
    """
    model = load_model(src, modulation_shift=modulation_shift, dtype=dtype)
    return save_native(model, dst)
