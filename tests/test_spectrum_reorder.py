"""Spectrum reorderings (``dnastream.kernels.spectrum_reorder``) against their PyTorch twins and
the paths they replace.

Without a GPU the kernels run in Triton's CPU interpreter (conftest sets ``TRITON_INTERPRET=1``
before anything imports Triton). The orders are the real ones of fused plans and of plans with
one and two outer levels, frequency-sparse too. The ``gpu``-marked test runs the kernels at
fused, one- and two-level plans on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from dnastream.kernels import spectrum_reorder as sr
from dnastream.kernels.backend import interpret_requested
from dnastream.kernels.monarch import (
    FFTPlan,
    filter_spectrum,
    freq_mask,
    layout_for,
    plan_for,
    spectrum_order,
)
from dnastream.kernels.spectrum_reorder import (
    hermitian_spectrum,
    hermitian_spectrum_ref,
    natural_spectrum,
    natural_spectrum_ref,
    storage_layout,
    storage_spectrum,
    storage_spectrum_ref,
)

ON_GPU = torch.cuda.is_available()
TRITON = ON_GPU or interpret_requested()
CPU = torch.device("cpu")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.to(torch.complex128) if b.is_complex() else b.double()
    a = a.to(torch.complex128) if a.is_complex() else a.double()
    den = b.abs().norm().item()
    return (a - b).abs().norm().item() / (den if den > 0 else 1.0)


PLANS: dict[str, FFTPlan] = {
    "fused-256": plan_for(100, 100, True, torch.bfloat16),
    "fused-2048": plan_for(1000, 1000, True, torch.bfloat16),
    "fused-16384-sparse": plan_for(8000, 8000, True, torch.bfloat16, freq_keep=0.25),
    "outer-8192": plan_for(3000, 3000, True, torch.bfloat16, max_fused=512),
    "outer-16384": plan_for(16384, 16384, False, torch.bfloat16),
    "outer2-65536": plan_for(30000, 3000, True, torch.bfloat16, max_fused=256, max_radix=16),
}


# (two outer levels: one head only, the interpreter runs ~800 programs a head there)
CASES = [
    (name, h) for name in sorted(PLANS) for h in (1, 3) if not (name[-5:] == "65536" and h > 1)
]


def test_the_plans_cover_fused_outer_and_sparse() -> None:
    assert not PLANS["fused-2048"].outer and PLANS["fused-256"].n == 256
    sparse = PLANS["fused-16384-sparse"]
    assert not sparse.outer and sparse.freq_cut and sparse.n == 16384
    assert len(PLANS["outer-8192"].outer) == 1 and PLANS["outer-8192"].n == 8192
    assert PLANS["outer-16384"].outer and PLANS["outer-16384"].n == 16384
    assert len(PLANS["outer2-65536"].outer) == 2


@pytest.mark.parametrize("name", sorted(PLANS))
def test_layout_digits_reproduce_the_order(name: str) -> None:
    """position a * (n / A) + m * C + c holds frequency a + A * mid[m] + (n / C) * c."""
    plan = PLANS[name]
    lay = layout_for(plan, CPU)
    assert torch.equal(lay.order, spectrum_order(plan))
    assert lay.a == (plan.outer[0] if plan.outer else plan.n1) and lay.c == plan.n2
    assert lay.mid.shape == (plan.n // (lay.a * lay.c),)


def test_storage_layout_rejects_other_orders() -> None:
    order = spectrum_order(PLANS["outer-8192"])
    with pytest.raises(ValueError, match="not a digit reversal"):
        storage_layout(order.flip(0), 16, 32, 512)
    with pytest.raises(ValueError, match="do not fit"):
        storage_layout(order, 3, 32, 512)


def old_monarch_path(k: torch.Tensor, plan: FFTPlan) -> torch.Tensor:
    """What filter_spectrum did before: full FFT, mask, one gather (float64 here)."""
    spec = torch.fft.fft(k.double(), n=plan.n, dim=-1, norm="forward")
    if plan.freq_cut:
        spec = spec * freq_mask(plan.n, plan.freq_cut)
    planes = torch.view_as_real(spec).permute(2, 0, 1)
    return torch.index_select(planes, 2, spectrum_order(plan))


@pytest.mark.parametrize(("name", "heads"), CASES)
def test_storage_spectrum_real_plans(name: str, heads: int) -> None:
    plan = PLANS[name]
    g = torch.Generator().manual_seed(heads)
    k = torch.randn(heads, plan.taps - 3, generator=g)
    r = torch.fft.rfft(k, n=plan.n)
    lay = layout_for(plan, CPU)
    keep = freq_mask(plan.n, plan.freq_cut).float() if plan.freq_cut else None
    got = storage_spectrum(r, lay, 1.0 / plan.n, keep)
    want = storage_spectrum_ref(r, lay, 1.0 / plan.n, keep)
    assert got.shape == (2, heads, plan.n) and got.dtype == torch.float32
    assert torch.equal(got, want)
    assert rel_err(got, old_monarch_path(k, plan)) < 1e-6
    assert rel_err(filter_spectrum(k, plan), old_monarch_path(k, plan)) < 1e-6


def test_storage_spectrum_from_a_float64_fft() -> None:
    """complex128 (the CPU's float64 filter spectrum) takes the twin: float32 planes rounded
    once from the float64 values."""
    plan = PLANS["outer-8192"]
    k = torch.randn(2, 700, dtype=torch.float64)
    got = storage_spectrum(torch.fft.rfft(k, n=plan.n), layout_for(plan, CPU), 1.0 / plan.n)
    assert got.dtype == torch.float32
    assert torch.equal(got, old_monarch_path(k, plan).to(torch.float32))


@pytest.mark.parametrize(("name", "heads"), CASES)
def test_natural_spectrum_real_plans(name: str, heads: int) -> None:
    plan = PLANS[name]
    nr = plan.n // plan.inner
    g = torch.Generator().manual_seed(10 + heads)
    s = torch.randn(heads * nr, 2, plan.inner, generator=g)
    lay = layout_for(plan, CPU)
    keep = freq_mask(plan.n, plan.freq_cut).float() if plan.freq_cut else None
    got = natural_spectrum(s, lay, keep)
    want = natural_spectrum_ref(s, lay, keep)
    assert torch.equal(natural_spectrum(s, lay, keep, scale=0.25), want * 0.25)
    assert got.shape == (heads, plan.n) and got.dtype == torch.complex64
    assert torch.equal(got, want)
    # independently: position p of head h sits at s[h * nr + p // inner, :, p % inner]
    p = torch.arange(plan.n)
    f = spectrum_order(plan)
    for h in range(heads):
        blk = s[h * nr + p // plan.inner, :, p % plan.inner]
        nat = torch.complex(blk[:, 0], blk[:, 1])
        if keep is not None:
            nat = nat * keep[f]
        assert torch.equal(got[h, f], nat)


@pytest.mark.parametrize(("name", "heads"), CASES)
def test_hermitian_spectrum_real_plans(name: str, heads: int) -> None:
    """The Hermitian half equals its twin bit for bit, equals the fold of the natural-order
    spectrum computed independently, and its irfft is ifft(G).real (the filter gradient)."""
    plan = PLANS[name]
    nr, n = plan.n // plan.inner, plan.n
    g = torch.Generator().manual_seed(20 + heads)
    s = torch.randn(heads * nr, 2, plan.inner, generator=g)
    lay = layout_for(plan, CPU)
    keep = freq_mask(n, plan.freq_cut).float() if plan.freq_cut else None
    got = hermitian_spectrum(s, lay, keep, scale=0.5)
    assert got.shape == (heads, n // 2 + 1) and got.dtype == torch.complex64
    assert torch.equal(got, hermitian_spectrum_ref(s, lay, keep, 0.5))
    nat = natural_spectrum_ref(s, lay, keep, 0.5).to(torch.complex128)
    f = torch.arange(n // 2 + 1)
    fold = (nat[:, f] + nat[:, (n - f) % n].conj()) / 2
    assert rel_err(got, fold) < 1e-6
    assert torch.equal(got[:, 0].imag, torch.zeros(heads))
    assert torch.equal(got[:, n // 2].imag, torch.zeros(heads))
    want = torch.fft.ifft(nat, dim=-1).real
    assert rel_err(torch.fft.irfft(got.to(torch.complex128), n=n), want) < 1e-6


def test_hermitian_spectrum_of_a_real_signal_is_its_rfft() -> None:
    """On a spectrum that is already Hermitian (a real signal's, in storage order) the fold
    changes nothing: it returns rfft of the signal."""
    plan = PLANS["outer-8192"]
    lay = layout_for(plan, CPU)
    x = torch.randn(3, plan.n, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    full = torch.fft.fft(x, dim=-1)  # natural order, Hermitian
    sto = full[:, spectrum_order(plan)]  # storage order
    nr = plan.n // plan.inner
    s = torch.stack([sto.real, sto.imag], 1).reshape(3, 2, nr, plan.inner).transpose(1, 2)
    s = s.reshape(3 * nr, 2, plan.inner).float().contiguous()
    got = hermitian_spectrum(s, lay)
    assert rel_err(got, torch.fft.rfft(x, dim=-1)) < 1e-6


@pytest.mark.skipif(not TRITON, reason="no Triton backend")
def test_launchers_run_the_kernels(monkeypatch) -> None:
    """The launchers really launch the kernels: with the twins disabled they still work."""

    def boom(*args, **kwargs):
        raise AssertionError("the reference ran instead of the kernel")

    monkeypatch.setattr(sr, "storage_spectrum_ref", boom)
    monkeypatch.setattr(sr, "natural_spectrum_ref", boom)
    monkeypatch.setattr(sr, "hermitian_spectrum_ref", boom)
    plan = PLANS["outer-8192"]
    lay = layout_for(plan, CPU)
    r = torch.fft.rfft(torch.randn(2, 100), n=plan.n)
    assert sr.storage_spectrum(r, lay, 1.0).shape == (2, 2, plan.n)
    s = torch.randn(2 * plan.n // plan.inner, 2, plan.inner)
    assert sr.natural_spectrum(s, lay).shape == (2, plan.n)
    assert sr.hermitian_spectrum(s, lay).shape == (2, plan.n // 2 + 1)


@pytest.mark.skipif(not TRITON, reason="no Triton backend")
@pytest.mark.parametrize("tile", [8, 16, 128])
def test_tile_launches_agree(tile: int) -> None:
    """The launch options (tiles smaller and larger than the default, 2 or 8 warps) change
    nothing in the result: both kernels equal their twins."""
    plan = PLANS["fused-2048"]  # digits a = 64, c = 32: tiles 8 x 8, 16 x 16, 64 x 32
    lay = layout_for(plan, CPU)
    r = torch.fft.rfft(torch.randn(2, 900, generator=torch.Generator().manual_seed(tile)), n=plan.n)
    want = storage_spectrum_ref(r, lay, 1.0 / plan.n)
    warps = 2 if tile < 64 else 8
    assert torch.equal(storage_spectrum(r, lay, 1.0 / plan.n, tile=tile, num_warps=warps), want)
    s = torch.randn(2 * plan.n // plan.inner, 2, plan.inner)
    got = natural_spectrum(s, lay, scale=0.5, tile=tile, num_warps=warps)
    assert torch.equal(got, natural_spectrum_ref(s, lay, None, 0.5))
    got = hermitian_spectrum(s, lay, scale=0.5, tile=tile, num_warps=warps)
    assert torch.equal(got, hermitian_spectrum_ref(s, lay, None, 0.5))
    with pytest.raises(ValueError, match="power of two"):
        storage_spectrum(r, lay, 1.0, tile=48)


def test_validation_errors() -> None:
    plan = PLANS["outer-8192"]
    lay = layout_for(plan, CPU)
    n = plan.n
    r = torch.fft.rfft(torch.randn(2, 10), n=n)
    with pytest.raises(ValueError, match=r"r must be \(H, 4097\)"):
        storage_spectrum(r[:, :-1], lay, 1.0)
    with pytest.raises(ValueError, match="complex64"):
        storage_spectrum(r.real.contiguous(), lay, 1.0)
    with pytest.raises(ValueError, match="keep must be"):
        storage_spectrum(r, lay, 1.0, torch.ones(n - 1))
    s = torch.randn(2 * n // plan.inner, 2, plan.inner)
    with pytest.raises(ValueError, match="s must be"):
        natural_spectrum(s[:, :1], lay)
    with pytest.raises(ValueError, match="float32"):
        natural_spectrum(s.double(), lay)
    with pytest.raises(ValueError, match="hermitian_spectrum: s must be"):
        hermitian_spectrum(s[:, :1], lay)


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs CUDA")
@pytest.mark.parametrize(
    "L, causal", [(2048, True), (8000, True), (2**19, True), (2**21, True), (2**21, False)]
)
def test_gpu_large_spectra(L: int, causal: bool, monkeypatch) -> None:
    """Both kernels equal their twins on CUDA: fused plans of 4096 (the window of HyenaDNA-tiny's
    overlap-save plans) and 16384 points, and 1M-4M points (one and two outer levels); the
    outputs are allocated NaN-filled, so a position the kernel does not write shows."""
    real_empty = torch.empty

    def nan_empty(*shape, **kw):  # (int64 words of -1 hold two float32 NaNs)
        t = real_empty(*shape, **kw)
        if t.is_floating_point():
            return t.fill_(float("nan"))
        return t.fill_(-1) if t.dtype == torch.int64 else t

    monkeypatch.setattr(sr.torch, "empty", nan_empty)
    plan = plan_for(L, L, causal, torch.bfloat16, batch=8)
    dev = torch.device("cuda")
    heads = 48 if plan.n <= 2**20 else 16
    lay = layout_for(plan, dev)
    k = torch.randn(heads, L, device=dev) / L**0.5
    r = torch.fft.rfft(k, n=plan.n)
    assert torch.equal(storage_spectrum(r, lay, 1.0 / plan.n),
                       storage_spectrum_ref(r, lay, 1.0 / plan.n))  # fmt: skip
    s = torch.randn(heads * plan.n // plan.inner, 2, plan.inner, device=dev)
    assert torch.equal(natural_spectrum(s, lay), natural_spectrum_ref(s, lay))
    assert torch.equal(hermitian_spectrum(s, lay), hermitian_spectrum_ref(s, lay))
