"""Exact parity with the reference HyenaDNA activations for every checkpoint format.

Error measure: max|x - ref| / max|ref|. Limits: 1e-6 in float64, 1e-5 in float32 (the
reference itself run in float32 is 3.4e-6 off its float64 numbers).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dnastream.models import HyenaDNAModel, detect_format, load_model, save_native

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "hyenadna"
pytestmark = pytest.mark.skipif(
    not (FIXTURES / "expected.safetensors").is_file(),
    reason=f"HyenaDNA reference fixtures not found at {FIXTURES}",
)

SHIFTS = {"shift0p05": 0.05, "shift0p00": 0.0}
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-5}
FORMATS = ["lightning_tiny", "lightning_tiny_ckpt_layer", "hf_tiny", "native"]


@cache
def expected() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "expected.safetensors")


@cache
def native_dir() -> Path:
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="dnastream-native-")) / "tiny"
    # stored with the training-code shift, so loading must honour the stored value
    save_native(load_model(FIXTURES / "lightning_tiny", modulation_shift=0.0), out)
    return out


@cache
def model(fmt: str, shift: float, dtype: torch.dtype) -> HyenaDNAModel:
    path = native_dir() if fmt == "native" else FIXTURES / fmt
    return load_model(path, modulation_shift=shift, dtype=dtype)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref).abs().max() / ref.abs().max()).item()


def outputs(m: HyenaDNAModel, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        out = m(ids, output_layers=[0, 1], return_logprobs=True)
    assert out.logits is not None and out.next_token_logprobs is not None
    return {
        "residual_after_block0": out.hidden_states[0],
        "residual_after_block1": out.hidden_states[1],
        "final_hidden": out.last_hidden_state,
        "logits": out.logits,
        "next_token_logprob": out.next_token_logprobs,
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shift_name", list(SHIFTS))
@pytest.mark.parametrize("fmt", FORMATS)
def test_parity(fmt: str, shift_name: str, dtype: torch.dtype) -> None:
    m = model(fmt, SHIFTS[shift_name], dtype)
    assert m.dtype == dtype and not m.training
    exp = expected()
    checked = 0
    for x in "abc":
        got = outputs(m, exp[f"input_ids.{x}"])
        for name, value in got.items():
            key = f"{shift_name}.{x}.{name}"
            if key not in exp:
                continue
            ref = exp[key]
            assert value.shape == ref.shape, key
            err = rel_err(value, ref)
            assert err <= TOLERANCE[dtype], f"{fmt} {dtype} {key}: rel err {err:.3e}"
            checked += 1
    assert checked == 13  # 4 tensors x 3 inputs + next-token log-probs of a


def test_wrong_shift_is_detected() -> None:
    """The two shift sets differ, so the parity test can tell a wrong shift apart."""
    exp = expected()
    got = outputs(model("hf_tiny", 0.0, torch.float64), exp["input_ids.b"])
    assert rel_err(got["final_hidden"], exp["shift0p05.b.final_hidden"]) > 1e-3


def test_default_shifts() -> None:
    """Official and -hf default to 0.05; native keeps the shift it was saved with."""
    exp = expected()
    for path in (FIXTURES / "lightning_tiny", FIXTURES / "hf_tiny"):
        m = load_model(path, dtype=torch.float64)
        assert m.config.modulation_shift == 0.05
        got = outputs(m, exp["input_ids.c"])
        assert rel_err(got["logits"], exp["shift0p05.c.logits"]) < 1e-6
    native = load_model(native_dir(), dtype=torch.float64)
    assert native.config.modulation_shift == 0.0
    got = outputs(native, exp["input_ids.c"])
    assert rel_err(got["logits"], exp["shift0p00.c.logits"]) < 1e-6


def test_formats_are_detected() -> None:
    assert detect_format(FIXTURES / "lightning_tiny") == "official"
    assert detect_format(FIXTURES / "lightning_tiny_ckpt_layer" / "weights.ckpt") == "official"
    assert detect_format(FIXTURES / "hf_tiny") == "hf"
    assert detect_format(native_dir()) == "native"


def test_all_formats_hold_identical_parameters() -> None:
    ref = model("lightning_tiny", 0.05, torch.float32).state_dict()
    for fmt in ("lightning_tiny_ckpt_layer", "hf_tiny", "native"):
        other = model(fmt, 0.05, torch.float32).state_dict()
        assert other.keys() == ref.keys()
        for k, v in ref.items():
            assert torch.equal(other[k], v), f"{fmt}: {k}"
