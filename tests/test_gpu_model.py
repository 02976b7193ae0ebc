"""GPU: the model on CUDA (Triton FFT convolutions) matches the fixtures and the CPU reference."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from dnastream.kernels import FFTConv, fftconv, fftconv_ref
from dnastream.models import load_model

pytestmark = pytest.mark.gpu


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("fmt", ["hf_tiny", "lightning_tiny"])
def test_parity_float32_on_cuda(hyenadna_fixtures, fmt):
    expected = load_file(str(hyenadna_fixtures / "expected.safetensors"))
    model = load_model(hyenadna_fixtures / fmt, device="cuda").eval()
    for x in ("a", "b", "c"):
        ids = expected[f"input_ids.{x}"].cuda()
        with torch.no_grad():
            out = model(ids, output_layers=[0, 1])
        assert _rel(out.last_hidden_state.cpu(), expected[f"shift0p05.{x}.final_hidden"]) <= 1e-5
        assert _rel(out.logits.cpu(), expected[f"shift0p05.{x}.logits"]) <= 1e-5


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-3)])
@pytest.mark.parametrize("length, force", [(1000, False), (3000, False), (100_000, True)])
def test_fftconv_dispatches_to_triton_and_matches_reference(dtype, tol, length, force, monkeypatch):
    if force:  # above 8192 FFT points Triton only runs when asked for
        monkeypatch.setenv("DNASTREAM_FFTCONV", "triton")
    gen = torch.Generator(device="cuda").manual_seed(length)
    u = torch.randn(4, 64, length, device="cuda", generator=gen).to(dtype)
    gate = torch.randn(4, 64, length, device="cuda", generator=gen).to(dtype)
    decay = torch.exp(-torch.arange(length, device="cuda") / 300.0)
    k = torch.randn(64, length, device="cuda", generator=gen) * decay
    D = torch.randn(64, device="cuda", generator=gen)
    filt = FFTConv(k)
    y = fftconv(u, filt, D, pregate=gate, postgate=gate)
    y_again = fftconv(u, filt, D, pregate=gate, postgate=gate)  # cached spectrum
    ref = fftconv_ref(u.double(), k.double(), D.double(), pregate=gate.double(),
                      postgate=gate.double())  # fmt: skip
    err = ((y.double() - ref).norm() / ref.norm()).item()
    assert err <= tol
    assert torch.equal(y, y_again)
