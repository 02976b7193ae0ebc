"""HyenaDNA configuration: the official ``config.json`` fields plus our explicit options.

Two options are not in the official files and change numbers, so they are explicit here:

* ``modulation_shift``: the constant added to the exponential decay of the long filters,
  ``k = h * (exp(-t |delta|) + shift)``. The LongSafari inference code (``standalone_hyenadna.py``
  and the ``-hf`` ``modeling_hyena.py``) uses 0.05, the Lightning training code
  (``src/models/sequence/hyena.py``) uses 0.0. Published checkpoints are meant to be run with
  the inference code, hence our default 0.05.
* ``filter_len``: keep only the first K taps of every long filter (partial convolution). Needed
  for inputs longer than ``l_max``; the positional embedding then only needs K positions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MODULATION_SHIFT",
    "NATIVE_FORMAT",
    "NATIVE_FORMAT_VERSION",
    "HyenaDNAConfig",
    "HyenaLayerConfig",
]

DEFAULT_MODULATION_SHIFT = 0.05
NATIVE_FORMAT = "dnastream.hyenadna"
NATIVE_FORMAT_VERSION = 1

JsonSource = str | os.PathLike[str] | Mapping[str, Any]


def _read_json(src: JsonSource) -> dict[str, Any]:
    if isinstance(src, Mapping):
        return dict(src)
    with open(src, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{src}: expected a JSON object, got {type(data).__name__}")
    return data


def _require(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise ValueError(f"{where}: missing required field {key!r}")
    return data[key]


@dataclass(frozen=True)
class HyenaLayerConfig:
    """The ``layer`` section of the official config (one HyenaOperator, order 2 by default)."""

    l_max: int
    emb_dim: int = 3
    filter_order: int = 64
    local_order: int = 3  # width of the causal depthwise short convolution
    order: int = 2
    num_inner_mlps: int = 2
    modulate: bool = True
    w: float = 1.0  # initial Sin frequency
    train_freq: bool = True
    normalized: bool = False
    fast_decay_pct: float = 0.3
    slow_decay_pct: float = 1.5
    target: float = 1e-2
    dropout: float = 0.0
    filter_dropout: float = 0.0
    lr: float | None = None
    wd: float | None = None
    lr_pos_emb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, e.g. ``_name_``

    def __post_init__(self) -> None:
        if self.l_max < 1:
            raise ValueError(f"layer.l_max must be >= 1, got {self.l_max}")
        if self.emb_dim < 3 or self.emb_dim % 2 == 0:
            raise ValueError(f"layer.emb_dim must be odd and >= 3, got {self.emb_dim}")
        if self.order < 2:
            raise ValueError(f"layer.order must be >= 2, got {self.order}")
        if self.local_order < 1:
            raise ValueError(f"layer.local_order must be >= 1, got {self.local_order}")

    _KNOWN = (
        "l_max emb_dim filter_order local_order order num_inner_mlps modulate w train_freq "
        "normalized fast_decay_pct slow_decay_pct target dropout filter_dropout lr wd lr_pos_emb"
    ).split()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HyenaLayerConfig:
        """Build from an official ``layer`` mapping; unknown keys go to ``extra``."""
        known = {k: data[k] for k in cls._KNOWN if k in data}
        extra = {k: v for k, v in data.items() if k not in cls._KNOWN and k != "extra"}
        extra.update(data.get("extra", {}))
        _require(known, "l_max", "layer")
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """Official-style ``layer`` mapping (``extra`` keys merged back in)."""
        out = {k: getattr(self, k) for k in self._KNOWN}
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class HyenaDNAConfig:
    """Whole-model configuration (mirrors the official ``config.json``)."""

    d_model: int
    n_layer: int
    vocab_size: int
    layer: HyenaLayerConfig
    d_inner: int | None = None  # MLP width; official default 4 * d_model
    resid_dropout: float = 0.0
    embed_dropout: float = 0.1
    residual_in_fp32: bool = True
    pad_vocab_size_multiple: int = 1
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True
    modulation_shift: float = DEFAULT_MODULATION_SHIFT
    filter_len: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. fused_mlp, checkpoint_mixer

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layer", "vocab_size", "pad_vocab_size_multiple"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not math.isfinite(self.modulation_shift):
            raise ValueError(f"modulation_shift must be finite, got {self.modulation_shift}")
        if self.filter_len is not None and not 1 <= self.filter_len <= self.layer.l_max:
            raise ValueError(
                f"filter_len must be in 1..l_max={self.layer.l_max}, got {self.filter_len}"
            )

    @property
    def inner_dim(self) -> int:
        """MLP hidden width."""
        return self.d_inner if self.d_inner is not None else 4 * self.d_model

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding table: vocab_size rounded up to pad_vocab_size_multiple."""
        m = self.pad_vocab_size_multiple
        return (self.vocab_size + m - 1) // m * m

    @property
    def max_filter_taps(self) -> int:
        """Most taps a long filter can have: filter_len, else l_max."""
        return self.filter_len if self.filter_len is not None else self.layer.l_max

    def replace(self, **changes: Any) -> HyenaDNAConfig:
        """Copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- official / -hf / native JSON -------------------------------------------------------

    _OFFICIAL_TOP = (
        "d_model n_layer d_inner vocab_size resid_dropout embed_dropout residual_in_fp32 "
        "pad_vocab_size_multiple layer_norm_epsilon"
    ).split()

    @classmethod
    def from_official_json(
        cls,
        src: JsonSource,
        *,
        modulation_shift: float = DEFAULT_MODULATION_SHIFT,
        filter_len: int | None = None,
    ) -> HyenaDNAConfig:
        """From the config.json of the official weights-only repos (``layer`` sub-dict)."""
        data = _read_json(src)
        where = str(src) if not isinstance(src, Mapping) else "config"
        layer = HyenaLayerConfig.from_dict(_require(data, "layer", where))
        for key in ("d_model", "n_layer", "vocab_size"):
            _require(data, key, where)
        known = {k: data[k] for k in cls._OFFICIAL_TOP if k in data}
        extra = {k: v for k, v in data.items() if k not in cls._OFFICIAL_TOP and k != "layer"}
        return cls(
            **known,
            layer=layer,
            tie_word_embeddings=True,
            modulation_shift=modulation_shift,
            filter_len=filter_len,
            extra=extra,
        )

    _HF_LAYER = {
        "max_seq_len": "l_max",
        "emb_dim": "emb_dim",
        "filter_order": "filter_order",
        "short_filter_order": "local_order",
        "hyena_order": "order",
        "num_inner_mlps": "num_inner_mlps",
        "activation_freq": "w",
        "train_freq": "train_freq",
        "hyena_dropout": "dropout",
        "hyena_filter_dropout": "filter_dropout",
    }
    _HF_TOP = (
        "d_model n_layer d_inner vocab_size embed_dropout pad_vocab_size_multiple "
        "layer_norm_epsilon tie_word_embeddings"
    ).split()

    @classmethod
    def from_hf_json(
        cls,
        src: JsonSource,
        *,
        modulation_shift: float = DEFAULT_MODULATION_SHIFT,
        filter_len: int | None = None,
    ) -> HyenaDNAConfig:
        """From a ``-hf`` config.json (``model_type: hyenadna``, flat keys)."""
        data = _read_json(src)
        where = str(src) if not isinstance(src, Mapping) else "config"
        for key in ("d_model", "n_layer", "vocab_size", "max_seq_len"):
            _require(data, key, where)
        layer = HyenaLayerConfig(
            **{ours: data[theirs] for theirs, ours in cls._HF_LAYER.items() if theirs in data}
        )
        known = {k: data[k] for k in cls._HF_TOP if k in data}
        used = set(cls._HF_TOP) | set(cls._HF_LAYER)
        extra = {k: v for k, v in data.items() if k not in used}
        return cls(
            **known,
            layer=layer,
            modulation_shift=modulation_shift,
            filter_len=filter_len,
            extra=extra,
        )

    def to_json(self) -> dict[str, Any]:
        """Our native config.json content (carries the format marker and modulation_shift)."""
        body = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        layer = {k: getattr(self.layer, k) for k in HyenaLayerConfig._KNOWN}
        body["layer"] = layer | {"extra": dict(self.layer.extra)}
        return {"format": NATIVE_FORMAT, "format_version": NATIVE_FORMAT_VERSION, "config": body}

    @classmethod
    def from_json(cls, src: JsonSource) -> HyenaDNAConfig:
        """Inverse of :meth:`to_json` (our native format only)."""
        data = _read_json(src)
        where = str(src) if not isinstance(src, Mapping) else "config"
        if not is_native_json(data):
            raise ValueError(f"{where}: not a dnastream native config (no format marker)")
        version = data.get("format_version")
        if version != NATIVE_FORMAT_VERSION:
            raise ValueError(
                f"{where}: native format version {version!r} is not supported "
                f"(this dnastream reads version {NATIVE_FORMAT_VERSION})"
            )
        body = dict(_require(data, "config", where))
        body["layer"] = HyenaLayerConfig.from_dict(_require(body, "layer", where))
        return cls(**body)

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


def is_native_json(data: Mapping[str, Any]) -> bool:
    """True when a parsed config.json carries our native format marker."""
    return data.get("format") == NATIVE_FORMAT
