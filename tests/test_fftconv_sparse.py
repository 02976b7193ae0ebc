"""Frequency-sparse FFT convolution (``freq_keep``): reference, Triton kernels, op, public API.

The filter keeps only its lowest frequencies (``min(f, N - f) < cut``) on the power-of-two FFT
size of the Triton plans; the one-row fused kernel skips the spectrum columns that are all zero.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dnastream.kernels import fftconv, fftconv_op
from dnastream.kernels.fftconv_ref import fftconv_backward_ref, fftconv_ref
from dnastream.kernels.fftconv_triton import fftconv_triton, uses_triton
from dnastream.kernels.monarch import freq_cutoff, freq_mask, plan_for, sparse_fft_size


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def make(B, H, L, Lk, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator(device=device).manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, device=device)

    return (r(B, H, L).to(dtype), r(H, Lk) / Lk**0.5, r(H), r(B, H, L).to(dtype),
            r(B, H, L).to(dtype))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Definitions
# ---------------------------------------------------------------------------------------------


def test_cutoff_and_mask_are_a_symmetric_low_pass() -> None:
    assert freq_cutoff(4096, 1.0) == 2049  # everything, Nyquist included
    assert freq_cutoff(4096, 0.5) == 1024
    assert freq_cutoff(4096, 0.25) == 512
    assert freq_cutoff(4096, 1e-9) == 1
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="freq_keep"):
            freq_cutoff(4096, bad)
    m = freq_mask(64, 10)
    f = torch.arange(64)
    assert torch.equal(m, m[(-f) % 64])  # symmetric: the band-limited filter stays real
    assert m.sum() == 2 * 10 - 1
    assert freq_mask(64, 0).all()


def test_plans_skip_whole_blocks_only_where_they_can() -> None:
    dense = plan_for(2048, 2048, True, torch.bfloat16, batch=8)
    assert dense.freq_cut == 0 and dense.n2_kept == dense.n2
    p = plan_for(2048, 2048, True, torch.bfloat16, batch=8, freq_keep=0.25)  # N = 4096, 64x64
    assert p.n == 4096 and p.freq_cut == 512 and p.n2_kept == 16
    assert p.n2_kept < p.n2 and "cols=16" in p.describe()
    assert plan_for(2048, 2048, True, torch.bfloat16, batch=8, freq_keep=0.5).n2_kept == 32
    assert plan_for(2048, 2048, True, torch.bfloat16, batch=8, freq_keep=1.0).freq_cut == 0
    # small FFTs tile several rows (transposed kernel) and outer plans stay dense (spectrum
    # masked, nothing skipped)
    assert plan_for(200, 200, True, torch.bfloat16, batch=8, freq_keep=0.25).n2_kept == 16
    small = plan_for(200, 200, True, torch.bfloat16, batch=8, freq_keep=0.25)
    assert small.rows > 1 and small.n2_kept == small.n2
    outer = plan_for(2048, 2048, True, torch.bfloat16, batch=8, max_fused=1024, freq_keep=0.25)
    assert outer.outer and outer.n2_kept == outer.n2
    assert sparse_fft_size(1000, 50, True) == 2048 and sparse_fft_size(512, 512, False) == 512


# ---------------------------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
def test_reference_is_convolution_with_the_band_limited_filter(causal) -> None:
    """Independent check: an explicit length-N circular convolution with the band-limited
    filter irfft(mask * rfft(k, N)), on the zero-padded input, first L outputs."""
    L, Lk, keep = (100, 60, 0.3) if causal else (256, 256, 0.2)
    u, k, D, _, _ = (t.double() for t in make(2, 3, L, Lk, seed=1))
    n = sparse_fft_size(L, Lk, causal)
    kb = torch.fft.irfft(torch.fft.rfft(k[:, : min(Lk, L)], n=n) * freq_mask(n, 0)[: n // 2 + 1]
                         * (torch.arange(n // 2 + 1) < freq_cutoff(n, keep)), n=n)  # fmt: skip
    x = torch.zeros(2, 3, n, dtype=torch.float64)
    x[..., :L] = u
    idx = (torch.arange(n)[:, None] - torch.arange(n)[None, :]) % n  # [t, s] -> t - s
    want = torch.einsum("bhs,hts->bht", x, kb[:, idx])[..., :L] + D[:, None] * u
    got = fftconv_ref(u, k, D, causal=causal, freq_keep=keep)
    assert rel_err(got, want) < 1e-12
    assert rel_err(fftconv_ref(u, k, D, causal=causal), want) > 1e-3  # and it is not dense


@pytest.mark.parametrize("causal", [True, False])
def test_reference_backward_equals_autograd(causal) -> None:
    L, Lk = (90, 40) if causal else (128, 128)
    u, k, D, g1, g2 = (t.double().requires_grad_() for t in make(2, 3, L, Lk, seed=2))
    y = fftconv_ref(u, k, D, pregate=g1, postgate=g2, causal=causal, freq_keep=0.3)
    dy = torch.randn_like(y)
    want = torch.autograd.grad(y, [u, k, D, g1, g2], dy)
    got = fftconv_backward_ref(dy, *(t.detach() for t in (u, k, D)), pregate=g1.detach(),
                               postgate=g2.detach(), causal=causal, freq_keep=0.3)  # fmt: skip
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) < 1e-12


# ---------------------------------------------------------------------------------------------
# Triton kernels (interpreted on the CPU)
# ---------------------------------------------------------------------------------------------

BARS = {torch.float32: 1e-5, torch.bfloat16: 3e-3, torch.float16: 1e-3}


def check(B, H, L, Lk, dtype, keep, causal=True, plan=None, gates=True, seed=0) -> None:
    u, k, D, g1, g2 = make(B, H, L, Lk, dtype, seed=seed)
    if not gates:
        g1 = g2 = None
    leaves = [t.requires_grad_() for t in (u, k, D, g1, g2) if t is not None]
    y = fftconv_triton(u, k, D=D, pregate=g1, postgate=g2, causal=causal, freq_keep=keep,
                       plan=plan)  # fmt: skip
    ref = [t.detach().double().requires_grad_() if t is not None else None
           for t in (u, k, D, g1, g2)]  # fmt: skip
    y64 = fftconv_ref(ref[0], ref[1], ref[2], pregate=ref[3], postgate=ref[4], causal=causal,
                      freq_keep=keep)  # fmt: skip
    assert rel_err(y, y64) <= BARS[dtype]
    dy = torch.randn(y.shape).to(dtype)
    got = torch.autograd.grad(y, leaves, dy)
    want = torch.autograd.grad(y64, [t for t in ref if t is not None], dy.double())
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) <= BARS[dtype]


needs_interpreter = pytest.mark.skipif(
    not uses_triton("cpu") and not torch.cuda.is_available(),
    reason="Triton kernels need TRITON_INTERPRET=1 (set by conftest without a GPU) or CUDA",
)


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("keep", [0.25, 0.5, 0.3, 1.0])
def test_skipping_kernel_matches_reference(dtype, keep) -> None:
    """N = 2048 (64 x 32, one row per tile): the kernel computes only the kept columns."""
    check(3, 2, 1000, 1000, dtype, keep, seed=int(keep * 100))


@needs_interpreter
def test_skipping_kernel_circular_and_without_gates() -> None:
    check(2, 2, 2048, 300, torch.float32, 0.25, causal=False, gates=False)
    check(1, 3, 1500, 700, torch.float32, 0.125, gates=False)  # odd B: a zero pair row


@needs_interpreter
@pytest.mark.parametrize("kind", ["rows", "outer"])
def test_dense_kernels_with_a_masked_spectrum(kind) -> None:
    if kind == "rows":
        check(4, 2, 200, 150, torch.float32, 0.25)
    else:
        plan = plan_for(1500, 1500, True, torch.float32, batch=2, max_fused=256, freq_keep=0.25)
        assert plan.outer and plan.freq_cut
        check(2, 2, 1500, 1500, torch.float32, 0.25, plan=plan)


@needs_interpreter
def test_op_and_public_api(monkeypatch) -> None:
    monkeypatch.setattr(fftconv_op, "INTERPRET_ON_CPU", True)
    u, k, D, g1, g2 = make(2, 2, 1000, 1000, torch.float32)
    leaves = [t.requires_grad_() for t in (u, k, D, g1, g2)]
    torch.library.opcheck(torch.ops.dnastream.fftconv.default, (*leaves, None, True, 0.25))
    y_op = torch.ops.dnastream.fftconv(*leaves, None, True, 0.25)
    y_ref = fftconv_ref(u.double(), k.double(), D.double(), pregate=g1.double(),
                        postgate=g2.double(), freq_keep=0.25)  # fmt: skip
    assert rel_err(y_op, y_ref) <= 1e-5
    # the public function on the CPU: the reference, same numbers
    y_pub = fftconv(u, k, D, pregate=g1, postgate=g2, freq_keep=0.25)
    assert rel_err(y_pub, y_ref) <= 1e-5
    with pytest.raises(ValueError, match="freq_keep must be in"):
        fftconv(u, k, D, freq_keep=0.0)
    with pytest.raises(ValueError, match="cannot stream"):
        fftconv(u, k, D, freq_keep=0.5, context=torch.zeros(2, 2, 4))


def test_op_reference_branch_opcheck() -> None:
    u, k, D, g1, g2 = make(2, 3, 300, 200, torch.float64)
    leaves = [t.double().requires_grad_() for t in (u, k, D, g1, g2)]
    torch.library.opcheck(torch.ops.dnastream.fftconv.default, (*leaves, None, True, 0.4))


# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("n", [2048, 4096, 8192])
@pytest.mark.parametrize("keep", [0.125, 0.25, 0.5])
def test_gpu_sparse_sizes(n, keep) -> None:
    u, k, D, g1, g2 = make(8, 64, n // 2, n // 2, torch.bfloat16, device="cuda")
    plan = plan_for(n // 2, n // 2, True, torch.bfloat16, batch=8, freq_keep=keep)
    # one-row plans skip the zero blocks (2048 runs the faster 2-row tiles, which do not)
    assert plan.n2_kept < plan.n2 if plan.rows == 1 else plan.n == 2048
    y = fftconv_triton(u, k, D=D, pregate=g1, postgate=g2, freq_keep=keep)
    sl = (slice(0, 2), slice(0, 8))
    y64 = fftconv_ref(u[sl].double(), k[:8].double(), D[:8].double(), pregate=g1[sl].double(),
                      postgate=g2[sl].double(), freq_keep=keep)  # fmt: skip
    assert rel_err(y[sl], y64) <= 3e-3
    dense = dataclasses.replace(plan, freq_cut=0)
    assert dense.n2_kept == dense.n2


@needs_interpreter
def test_cached_spectra_keep_dense_and_sparse_apart(monkeypatch) -> None:
    """One FFTConv used dense and frequency-sparse: each plan caches its own spectrum."""
    import sys

    from dnastream.kernels import FFTConv

    module = sys.modules["dnastream.kernels.fftconv"]
    monkeypatch.setattr(fftconv_op, "INTERPRET_ON_CPU", True)
    monkeypatch.setattr(module, "_select_backend", lambda u, context: module._triton_backend)
    monkeypatch.setenv("DNASTREAM_FFTCONV", "triton")
    u, k, D, _, _ = make(2, 2, 1000, 600, torch.float32, seed=5)
    f = FFTConv(k)
    for keep in (None, 0.25, None, 0.25, 0.5):
        got = fftconv(u, f, D, freq_keep=keep)
        want = fftconv_ref(u.double(), k.double(), D.double(), freq_keep=keep)
        assert rel_err(got, want) <= 1e-5, keep
