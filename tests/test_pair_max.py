"""Row-pair maxima of |gate * x| (``dnastream.kernels.pair_max``): the Triton pass against its
PyTorch twin and against the exact float32 product.

Without a GPU the kernel runs in Triton's CPU interpreter (conftest). A product of two bf16 or
fp16 values is exact in float32, so the Triton pass must equal max |float(g) * float(x)|
exactly; the twin rounds the product to the inputs' dtype first, so it agrees to that rounding.
"""

from __future__ import annotations

import pytest
import torch

from dnastream.kernels import pair_max as pm
from dnastream.kernels.pair_max import pair_max, pair_max_ref

DEV = "cuda" if torch.cuda.is_available() else "cpu"
ROUNDING = {torch.float32: 0.0, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-10}


def _exact(src: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    x = src.double() if gate is None else src.double() * gate.double()
    m = x.abs().amax(dim=-1)
    if m.shape[0] % 2:
        m = torch.cat([m, torch.zeros_like(m[:1])])
    return m.view(-1, 2, m.shape[1]).amax(dim=1).float()


@pytest.mark.parametrize(
    ("B", "H", "L", "dtype", "gated"),
    [(4, 3, 5000, torch.bfloat16, True),  # chunks of whole blocks, a ragged last one
     (3, 2, 777, torch.float16, True),  # odd B: the last pair has one row
     (2, 5, 2048, torch.float32, False),  # exactly one block per row
     (1, 1, 9000, torch.bfloat16, False),  # one row: the chunks split it
     (5, 1, 1, torch.float32, True)],  # L = 1
)  # fmt: skip
def test_pair_max_is_exact_and_matches_its_twin(B, H, L, dtype, gated, monkeypatch) -> None:
    """Exact against float64 (the largest element may sit anywhere, also in the ragged tail);
    the twin agrees within the rounding of its product; several chunks per row really run."""
    monkeypatch.setattr(pm, "TARGET_PROGRAMS", 64)  # several chunks per row at these sizes
    g = torch.Generator().manual_seed(B * 1000 + L)
    src = torch.randn(B, H, L, generator=g).to(dtype).to(DEV)
    gate = torch.randn(B, H, L, generator=g).to(dtype).to(DEV) if gated else None
    src[-1, -1, -1] = 40.0  # the tail of the last row holds the largest magnitude
    src[0, 0, L // 2] = -30.0  # a negative peak in the middle of the first row
    got = pair_max(src, gate)
    assert got.shape == ((B + 1) // 2, H) and got.dtype == torch.float32
    assert torch.equal(got, _exact(src, gate))
    ref = pair_max_ref(src, gate)
    assert torch.allclose(got, ref, rtol=ROUNDING[dtype], atol=0.0)


def test_pair_max_zero_rows_and_fallbacks() -> None:
    """All-zero pairs give the smallest normal float32 (a finite inverse); non-contiguous
    inputs take the twin; mismatched shapes are refused with the shapes named."""
    src = torch.zeros(3, 2, 300, device=DEV)
    src[2, 1, 7] = -2.0
    got = pair_max(src, None)
    tiny = torch.finfo(torch.float32).tiny
    assert got[0].tolist() == [tiny, tiny] and got[1].tolist() == [tiny, 2.0]
    x = torch.randn(2, 300, 4, device=DEV).transpose(1, 2)  # (2, 4, 300), strided
    assert torch.equal(pair_max(x, None), pair_max_ref(x, None))
    with pytest.raises(ValueError, match=r"\(2, 4, 300\)"):
        pair_max(x, torch.ones(2, 4, 301, device=DEV))


@pytest.mark.gpu
def test_pair_max_on_gpu_at_a_long_length() -> None:
    """CUDA, bf16, 2M samples per row with the gate (the outer plans' case): exact."""
    g = torch.Generator(device="cuda").manual_seed(0)
    src = torch.randn(3, 4, 1 << 21, device="cuda", generator=g).to(torch.bfloat16)
    gate = torch.rand(3, 4, 1 << 21, device="cuda", generator=g).to(torch.bfloat16)
    assert torch.equal(pair_max(src, gate), _exact(src, gate))
