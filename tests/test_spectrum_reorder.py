"""Spectrum reorderings (``dnastream.kernels.spectrum_reorder``) against their PyTorch twins and
the paths they replace.

Without a GPU the kernels run in Triton's CPU interpreter (conftest sets ``TRITON_INTERPRET=1``
before anything imports Triton). The orders and gather tables are the real ones of fused and
outer-level plans (``spectrum_order``, ``_natural_gather``), plus random permutations at tiny
and non-power-of-two sizes, with forced small blocks for ragged tails. The ``gpu``-marked test
runs both kernels at H = 48, n = 2**20 on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from dnastream.kernels import spectrum_reorder as sr
from dnastream.kernels.backend import interpret_requested
from dnastream.kernels.fftconv_triton import _natural_gather
from dnastream.kernels.monarch import (
    FFTPlan,
    filter_spectrum,
    freq_mask,
    plan_for,
    spectrum_order,
)
from dnastream.kernels.spectrum_reorder import (
    hermitian_natural,
    hermitian_natural_ref,
    storage_spectrum,
    storage_spectrum_ref,
)

ON_GPU = torch.cuda.is_available()
DEV = "cuda" if ON_GPU else "cpu"
CPU = torch.device("cpu")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.double()
    den = b.norm().item()
    return (a.double() - b).norm().item() / (den if den > 0 else 1.0)


def plans() -> dict[str, FFTPlan]:
    """Real plans: fused (2048, 16384 frequency-sparse) and with outer levels (8192, 16384)."""
    return {
        "fused-2048": plan_for(1000, 1000, True, torch.bfloat16),
        "fused-16384-sparse": plan_for(8000, 8000, True, torch.bfloat16, freq_keep=0.25),
        "outer-8192": plan_for(3000, 3000, True, torch.bfloat16, max_fused=512),
        "outer-16384": plan_for(16384, 16384, False, torch.bfloat16),
    }


PLANS = plans()


def test_the_plans_cover_fused_outer_and_sparse() -> None:
    assert not PLANS["fused-2048"].outer and PLANS["fused-2048"].n == 2048
    sparse = PLANS["fused-16384-sparse"]
    assert not sparse.outer and sparse.freq_cut and sparse.n == 16384
    assert PLANS["outer-8192"].outer and PLANS["outer-8192"].n == 8192
    assert PLANS["outer-16384"].outer and PLANS["outer-16384"].n == 16384


def monarch_path(k: torch.Tensor, order: torch.Tensor, n: int, keep: torch.Tensor | None):
    """What monarch.filter_spectrum does for outer plans: full FFT, mask, one gather."""
    spec = torch.fft.fft(k, n=n, dim=-1, norm="forward")
    if keep is not None:
        spec = spec * keep
    planes = torch.view_as_real(spec).permute(2, 0, 1)
    return torch.index_select(planes, 2, order.to(torch.int64))


def random_perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# storage_spectrum
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PLANS))
@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_storage_spectrum_real_plans(name: str, heads: int, masked: bool) -> None:
    plan = PLANS[name]
    n = plan.n
    g = torch.Generator().manual_seed(heads + 10 * masked)
    taps = min(plan.taps, n - 3)
    k = torch.randn(heads, taps, generator=g)
    order = spectrum_order(plan, CPU)
    keep = freq_mask(n, plan.freq_cut or n // 8).to(torch.float32) if masked else None
    r = torch.fft.rfft(k, n=n)
    got = storage_spectrum(r, order, n, 1.0 / n, keep)
    ref = storage_spectrum_ref(r, order, n, 1.0 / n, keep)
    assert got.shape == (2, heads, n) and got.dtype == torch.float32 and got.is_contiguous()
    assert torch.equal(got, ref)
    assert rel_err(got, monarch_path(k.double(), order, n, keep)) < 1e-6
    if not masked or plan.freq_cut:  # filter_spectrum masks exactly by plan.freq_cut
        kk = torch.randn(heads, plan.taps, generator=g)
        keep_plan = freq_mask(n, plan.freq_cut).to(torch.float32) if plan.freq_cut else None
        want = filter_spectrum(kk, plan)
        got = storage_spectrum(torch.fft.rfft(kk, n=n), order, n, 1.0 / n, keep_plan)
        assert rel_err(got, want) < 1e-6


@pytest.mark.parametrize("n", [2, 6, 8, 64, 100])
@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("order_dtype", [torch.int64, torch.int32])
def test_storage_spectrum_small_sizes(n: int, heads: int, masked: bool, order_dtype) -> None:
    g = torch.Generator().manual_seed(n)
    taps = max(1, n - 1)
    k = torch.randn(heads, taps, generator=g)
    order = random_perm(n, n).to(order_dtype)
    keep = torch.rand(n, generator=g) if masked else None
    if keep is not None:
        keep = 0.5 * (keep + keep[(n - torch.arange(n)) % n])
    r = torch.fft.rfft(k, n=n)
    for block in (None, 2, 16):
        got = storage_spectrum(r, order, n, 0.37, keep, block=block)
        assert torch.equal(got, storage_spectrum_ref(r, order, n, 0.37, keep))
    want = monarch_path(k.double(), order, n, keep) * (0.37 * n)
    assert rel_err(got, want) < 1e-6


def test_storage_spectrum_bool_keep_and_noncontiguous_r() -> None:
    n, heads = 64, 3
    g = torch.Generator().manual_seed(1)
    full = torch.randn(heads, 2 * (n // 2 + 1), dtype=torch.complex64, generator=g)
    r = full[:, ::2]  # strided
    r[:, 0] = r[:, 0].real  # DC and Nyquist of a real filter's rfft are real
    r[:, -1] = r[:, -1].real
    order = random_perm(n, 2)
    keep = freq_mask(n, 10)
    got = storage_spectrum(r, order, n, 1.0, keep)
    assert torch.equal(got, storage_spectrum_ref(r.contiguous(), order, n, 1.0, keep.float()))
    conj = storage_spectrum(r.conj(), order, n, 1.0)  # a lazy conj view is resolved
    assert torch.equal(conj, storage_spectrum_ref(r.conj().resolve_conj(), order, n, 1.0))
    assert torch.equal(conj[1], -storage_spectrum(r, order, n, 1.0)[1])


@pytest.mark.skipif(not (ON_GPU or interpret_requested()), reason="no Triton backend")
def test_launchers_run_the_kernels(monkeypatch) -> None:
    """On CUDA or under the interpreter the launchers do not fall back to the references."""

    def boom(*args, **kwargs):
        raise AssertionError("reference called")

    monkeypatch.setattr(sr, "storage_spectrum_ref", boom)
    monkeypatch.setattr(sr, "hermitian_natural_ref", boom)
    r = torch.fft.rfft(torch.randn(2, 8), n=8).to(DEV)
    sr.storage_spectrum(r, torch.arange(8, device=DEV), 8, 1.0)
    sr.hermitian_natural(torch.randn(2, 16, device=DEV), torch.arange(16, device=DEV), 8)


# ---------------------------------------------------------------------------------------------
# hermitian_natural
# ---------------------------------------------------------------------------------------------


def storage_from_natural(spec: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(H, n) complex64 natural spectrum -> (H, 2n) fp32 storage-order blocks (idx scatter)."""
    heads, n = spec.shape
    s = torch.empty(heads, 2 * n, dtype=torch.float32)
    s[:, idx] = torch.view_as_real(spec).reshape(heads, 2 * n)
    return s


def check_hermitian(s, idx, n, keep, spec, block=None) -> None:
    got = hermitian_natural(s, idx, n, keep, block=block)
    assert got.shape == (s.shape[0], n // 2 + 1) and got.dtype == torch.complex64
    assert torch.equal(got, hermitian_natural_ref(s, idx, n, keep))
    # the purpose: irfft of the Hermitian part == real part of ifft of the full spectrum
    full = spec.to(torch.complex128)
    if keep is not None:
        full = full * keep.double()
    want = torch.fft.ifft(full, dim=-1).real
    have = torch.fft.irfft(got.to(torch.complex128), n=n, dim=-1)
    torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    assert rel_err(have, want) < 1e-6


@pytest.mark.parametrize("name", sorted(PLANS))
@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_hermitian_natural_real_plans(name: str, heads: int, masked: bool) -> None:
    plan = PLANS[name]
    n = plan.n
    g = torch.Generator().manual_seed(heads + 10 * masked)
    spec = torch.randn(heads, n, dtype=torch.complex64, generator=g)
    idx = _natural_gather(plan, CPU)
    s = storage_from_natural(spec, idx)
    keep = None
    if masked:
        keep = freq_mask(n, plan.freq_cut or n // 8).to(torch.float32)
        assert torch.equal(keep, keep[(n - torch.arange(n)) % n])  # symmetric
    # the gather table reads back the natural spectrum (what _natural_spectrum does)
    nat = torch.view_as_complex(torch.index_select(s, 1, idx).view(heads, n, 2))
    assert torch.equal(nat, spec)
    check_hermitian(s, idx, n, keep, spec)


@pytest.mark.parametrize("n", [2, 6, 8, 64, 100])
@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("idx_dtype", [torch.int64, torch.int32])
def test_hermitian_natural_small_sizes(n: int, heads: int, masked: bool, idx_dtype) -> None:
    g = torch.Generator().manual_seed(n + heads)
    spec = torch.randn(heads, n, dtype=torch.complex64, generator=g)
    idx = random_perm(2 * n, n)
    s = storage_from_natural(spec, idx)
    keep = freq_mask(n, max(1, n // 4)).to(torch.float32) if masked else None
    for block in (None, 2, 16):
        check_hermitian(s, idx.to(idx_dtype), n, keep, spec, block=block)


def test_hermitian_natural_bool_keep_and_noncontiguous_s() -> None:
    n, heads = 64, 3
    spec = torch.randn(heads, n, dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
    idx = random_perm(2 * n, 4)
    s = storage_from_natural(spec, idx)
    wide = torch.zeros(heads, 4 * n)
    wide[:, ::2] = s
    keep = freq_mask(n, 9)
    got = hermitian_natural(wide[:, ::2], idx, n, keep)
    assert torch.equal(got, hermitian_natural_ref(s, idx, n, keep.float()))


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def test_storage_spectrum_validation() -> None:
    n = 8
    r = torch.zeros(2, n // 2 + 1, dtype=torch.complex64)
    order = torch.arange(n)
    for fn in (storage_spectrum, storage_spectrum_ref):
        with pytest.raises(ValueError, match="n must be an even integer"):
            fn(r, order, 7, 1.0)
        with pytest.raises(ValueError, match="n must be an even integer"):
            fn(r, order, 0, 1.0)
        with pytest.raises(ValueError, match=r"r must be \(H, 5\)"):
            fn(r[:, :4], order, n, 1.0)
        with pytest.raises(ValueError, match=r"r must be \(H, 5\)"):
            fn(r[0], order, n, 1.0)
        with pytest.raises(ValueError, match=r"r must be complex64 \(or complex128\)"):
            fn(r.real.contiguous(), order, n, 1.0)
        with pytest.raises(ValueError, match=r"order must be \(8,\)"):
            fn(r, order[:4], n, 1.0)
        with pytest.raises(ValueError, match="order must be int64 or int32"):
            fn(r, order.float(), n, 1.0)
        with pytest.raises(ValueError, match=r"keep must be \(8,\)"):
            fn(r, order, n, 1.0, torch.ones(4))
        with pytest.raises(ValueError, match="keep must be float32"):
            fn(r, order, n, 1.0, torch.ones(n, dtype=torch.float64))
    with pytest.raises(ValueError, match="block must be a power of two"):
        storage_spectrum(r, order, n, 1.0, block=12)


def test_hermitian_natural_validation() -> None:
    n = 8
    s = torch.zeros(2, 2 * n)
    idx = torch.arange(2 * n)
    for fn in (hermitian_natural, hermitian_natural_ref):
        with pytest.raises(ValueError, match="n must be an even integer"):
            fn(s, idx, 9)
        with pytest.raises(ValueError, match=r"s must be \(H, 16\)"):
            fn(s[:, :8], idx, n)
        with pytest.raises(ValueError, match=r"s must be \(H, 16\)"):
            fn(s[0], idx, n)
        with pytest.raises(ValueError, match="s must be float32"):
            fn(s.double(), idx, n)
        with pytest.raises(ValueError, match=r"idx must be \(16,\)"):
            fn(s, idx[:8], n)
        with pytest.raises(ValueError, match="idx must be int64 or int32"):
            fn(s, idx.float(), n)
        with pytest.raises(ValueError, match=r"keep must be \(8,\)"):
            fn(s, idx, n, torch.ones(16))
        with pytest.raises(ValueError, match="keep must be float32"):
            fn(s, idx, n, torch.ones(n, dtype=torch.int32))
    with pytest.raises(ValueError, match="block must be a power of two"):
        hermitian_natural(s, idx, n, block=1)


# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_million_point_spectra() -> None:
    """H = 48, n = 2**20 (an outer-level plan's tables) on CUDA, with and without a mask."""
    dev = torch.device("cuda")
    plan = plan_for(1 << 19, 1 << 19, True, torch.bfloat16)
    assert plan.outer and plan.n == 1 << 20
    n, heads = plan.n, 48
    g = torch.Generator(device=dev).manual_seed(0)
    k = torch.randn(heads, plan.taps, generator=g, device=dev)
    r = torch.fft.rfft(k, n=n)
    order = spectrum_order(plan, dev)
    idx = _natural_gather(plan, dev)
    spec = torch.randn(heads, n, dtype=torch.complex64, generator=g, device=dev)
    s = torch.empty(heads, 2 * n, device=dev)
    s[:, idx] = torch.view_as_real(spec).reshape(heads, 2 * n)
    for keep in (None, freq_mask(n, n // 8, dev).to(torch.float32)):
        got = storage_spectrum(r, order, n, 1.0 / n, keep)
        torch.testing.assert_close(got, storage_spectrum_ref(r, order, n, 1.0 / n, keep))
        assert rel_err(got, monarch_path(k.double(), order, n, keep)) < 1e-5
        h = hermitian_natural(s, idx, n, keep)
        torch.testing.assert_close(h, hermitian_natural_ref(s, idx, n, keep))
        full = spec.to(torch.complex128) * (keep.double() if keep is not None else 1.0)
        want = torch.fft.ifft(full, dim=-1).real
        assert rel_err(torch.fft.irfft(h.to(torch.complex128), n=n, dim=-1), want) < 1e-6
    torch.cuda.synchronize()


def test_storage_spectrum_from_a_float64_fft() -> None:
    """A complex128 real FFT (the CPU's float64 filter spectrum) gives float32 planes, the
    kernel equal to the reference, both equal to the float64 values rounded once."""
    n, heads = 64, 3
    g = torch.Generator().manual_seed(11)
    k = torch.randn(heads, 40, dtype=torch.float64, generator=g)
    r = torch.fft.rfft(k, n=n)
    order = torch.randperm(n, generator=g)
    got = storage_spectrum(r, order, n, 1.0 / n)
    want = storage_spectrum_ref(r, order, n, 1.0 / n)
    assert got.dtype == want.dtype == torch.float32
    full = torch.fft.fft(k, n=n, norm="forward")[:, order]
    exact = torch.stack([full.real, full.imag]).to(torch.float32)
    assert torch.equal(want, exact)
    assert torch.allclose(got, exact, rtol=1e-6, atol=1e-7)
