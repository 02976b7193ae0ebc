"""Map official (Lightning / standalone) and ``-hf`` state-dict keys onto our module names.

Everything is decided from the keys themselves, never from config flags:

* prefixes ``model.`` (Lightning) and ``hyena.`` (-hf) are stripped when present;
* the gradient-checkpointing wrapper form ``.mixer.layer.`` / ``.mlp.layer.`` is unwrapped;
* the Sin frequency, one shared tensor stored under any non-empty subset of
  ``implicit_filter.{1,3,5}.freq``, becomes the single ``freq`` parameter;
* an ``lm_head.weight`` equal to the embedding (aliasing it, or a copy as in -hf) means a tied
  head; a different one is kept as an untied head.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["KeyMapError", "MappedState", "official_to_native"]


class KeyMapError(ValueError):
    """A checkpoint's keys or shapes do not fit the HyenaDNA layout."""


@dataclass
class MappedState:
    """Result of mapping a checkpoint: our state dict plus what was noticed on the way."""

    state: dict[str, Tensor]
    tied: bool
    layout: str  # "lightning", "hf" or "standalone"
    checkpointed_keys: bool = False
    ignored: list[str] = field(default_factory=list)


_BLOCK = re.compile(r"^backbone\.layers\.(\d+)\.(.+)$")
_FREQ = re.compile(r"^mixer\.filter_fn\.implicit_filter\.(\d+)\.freq$")
_MLP_LAYER = re.compile(r"^mixer\.filter_fn\.implicit_filter\.(\d+)\.(weight|bias)$")

_DIRECT = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "mixer.in_proj.weight": "mixer.in_proj.weight",
    "mixer.in_proj.bias": "mixer.in_proj.bias",
    "mixer.out_proj.weight": "mixer.out_proj.weight",
    "mixer.out_proj.bias": "mixer.out_proj.bias",
    "mixer.short_filter.bias": "mixer.short_conv.bias",
    "mixer.filter_fn.bias": "mixer.filter.bias",
}


def _strip_prefix(keys: list[str]) -> tuple[str, str]:
    """Detect the layout from the key prefix: returns (layout, prefix)."""
    if any(k.startswith("hyena.backbone.") for k in keys):
        return "hf", "hyena."
    if any(k.startswith("model.backbone.") for k in keys):
        return "lightning", "model."
    if any(k.startswith("backbone.") for k in keys):
        return "standalone", ""
    sample = ", ".join(sorted(keys)[:5])
    raise KeyMapError(
        "no HyenaDNA backbone keys found (expected 'model.backbone.*', 'hyena.backbone.*' "
        f"or 'backbone.*'); first keys: {sample}"
    )


def _squeeze_to(name: str, t: Tensor, dims: int) -> Tensor:
    """Drop leading singleton dims (official buffers carry (1, 1, ...) batch axes)."""
    while t.dim() > dims and t.shape[0] == 1:
        t = t[0]
    if t.dim() != dims:
        raise KeyMapError(f"{name}: unexpected shape {tuple(t.shape)}")
    return t


def _map_block_key(sub: str, t: Tensor, name: str) -> tuple[str, Tensor] | None:
    """Map one per-block key (after ``backbone.layers.N.``); None if it is a freq key."""
    if sub in _DIRECT:
        return _DIRECT[sub], t
    if sub == "mixer.short_filter.weight":
        if t.dim() != 3 or t.shape[1] != 1:
            raise KeyMapError(f"{name}: expected (C, 1, W), got {tuple(t.shape)}")
        return "mixer.short_conv.weight", t[:, 0, :]
    if sub == "mixer.filter_fn.pos_emb.z":
        return "mixer.filter.z", _squeeze_to(name, t, 2)
    if sub == "mixer.filter_fn.pos_emb.t":
        return "mixer.filter.t", _squeeze_to(name, t, 2)
    if sub == "mixer.filter_fn.modulation.deltas":
        return "mixer.filter.deltas", _squeeze_to(name, t, 1)
    if _FREQ.match(sub):
        return None
    m = _MLP_LAYER.match(sub)
    if m and int(m.group(1)) % 2 == 0:
        return f"mixer.filter.mlp.{int(m.group(1)) // 2}.{m.group(2)}", t
    raise KeyMapError(f"{name}: unknown HyenaDNA block key")


def _merge_freqs(layer: int, freqs: dict[str, Tensor]) -> Tensor:
    """The Sin frequencies stored under several names must be one and the same tensor."""
    names = sorted(freqs)
    first = freqs[names[0]]
    for n in names[1:]:
        if freqs[n].shape != first.shape or not torch.equal(freqs[n], first):
            raise KeyMapError(
                f"layer {layer}: Sin frequencies {names[0]} and {n} differ; HyenaDNA shares "
                "one frequency tensor between all Sin activations of a filter"
            )
    return _squeeze_to(names[0], first, 1)


def official_to_native(state: Mapping[str, Tensor], n_layer: int) -> MappedState:
    """Map a Lightning / standalone / -hf state dict onto HyenaDNAModel keys.

    Keys outside the model (for example task heads of a fine-tuning checkpoint) are listed in
    ``ignored``. Missing Sin frequencies are left out (the caller decides whether the config
    allows that); everything else is checked by ``load_state_dict(strict=True)``.
    """
    keys = list(state)
    layout, prefix = _strip_prefix(keys)
    checkpointed = any(".mixer.layer." in k or ".mlp.layer." in k for k in keys)
    out: dict[str, Tensor] = {}
    ignored: list[str] = []
    freqs: dict[int, dict[str, Tensor]] = {}
    head: Tensor | None = None
    for full, t in state.items():
        if not isinstance(t, Tensor):
            raise KeyMapError(f"{full}: expected a tensor, got {type(t).__name__}")
        key = full[len(prefix) :] if full.startswith(prefix) else full
        if checkpointed:
            key = re.sub(r"\.(mixer|mlp)\.layer\.", r".\1.", key)
        if key in ("lm_head.weight",) or full == "lm_head.weight":
            head = t
            continue
        if key == "backbone.embeddings.word_embeddings.weight":
            out["embedding.weight"] = t
        elif key in ("backbone.ln_f.weight", "backbone.ln_f.bias"):
            out[key[len("backbone.") :]] = t
        elif m := _BLOCK.match(key):
            layer, sub = int(m.group(1)), m.group(2)
            if layer >= n_layer:
                raise KeyMapError(f"{full}: layer {layer} but the config has n_layer={n_layer}")
            mapped = _map_block_key(sub, t, full)
            if mapped is None:
                freqs.setdefault(layer, {})[full] = t
            else:
                out[f"blocks.{layer}.{mapped[0]}"] = mapped[1]
        elif key.startswith("backbone."):
            raise KeyMapError(f"{full}: unknown HyenaDNA backbone key")
        else:
            ignored.append(full)
    for layer, named in freqs.items():
        out[f"blocks.{layer}.mixer.filter.freq"] = _merge_freqs(layer, named)
    emb = out.get("embedding.weight")
    tied = head is None or (emb is not None and head.shape == emb.shape and torch.equal(head, emb))
    if not tied:
        assert head is not None
        out["lm_head.weight"] = head
    return MappedState(
        state=out, tied=tied, layout=layout, checkpointed_keys=checkpointed, ignored=ignored
    )
