"""Reference kernels against direct (non-FFT) computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dnastream.kernels import (
    FFTConv,
    fft_size,
    fftconv,
    fftconv_ref,
    next_fast_len,
    short_conv,
    short_conv_ref,
    short_conv_state_ref,
    short_conv_streaming,
)

# -- direct references -------------------------------------------------------------------------


def direct_conv(g: torch.Tensor, k: torch.Tensor, *, causal: bool = True) -> torch.Tensor:
    """O(L * Lk) convolution in float64: causal zero-padded, or circular of length L."""
    g, k = g.double(), k.double()
    seq_len = g.shape[-1]
    y = torch.zeros_like(g)
    for j in range(k.shape[-1]):
        if causal:
            if j >= seq_len:
                break
            shifted = F.pad(g[..., : seq_len - j], (j, 0))
        else:
            shifted = torch.roll(g, j, dims=-1)
        y = y + k[:, j : j + 1] * shifted
    return y


def direct_fftconv(u, k, D=None, pregate=None, postgate=None, causal=True):
    g = u.double() if pregate is None else u.double() * pregate.double()
    y = direct_conv(g, k, causal=causal)
    if D is not None:
        y = y + D.double()[:, None] * g
    return y if postgate is None else y * postgate.double()


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref).abs().max() / ref.abs().max()).item()


def rand(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=dtype)


# -- FFT sizes ---------------------------------------------------------------------------------


def _is_5_smooth(n: int) -> bool:
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def test_next_fast_len_is_smallest_5_smooth() -> None:
    for n in range(1, 3000):
        m = next_fast_len(n)
        assert m >= n and _is_5_smooth(m)
        assert all(not _is_5_smooth(x) for x in range(n, m))


def test_fft_size_causal_avoids_wraparound() -> None:
    assert fft_size(1000, 1000) >= 1999
    assert fft_size(1000, 7) >= 1006
    assert fft_size(97, 97, causal=False) == 97
    with pytest.raises(ValueError):
        next_fast_len(0)


# -- fftconv_ref -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seq_len", "taps"),
    [(1, 1), (2, 1), (16, 16), (97, 97), (101, 13), (127, 1), (64, 200), (1000, 1000)],
)
def test_fftconv_ref_causal_matches_direct(seq_len: int, taps: int) -> None:
    u, k = rand(2, 3, seq_len, seed=1), rand(3, taps, seed=2)
    y = fftconv_ref(u, k)
    assert y.shape == u.shape and y.dtype == torch.float64
    assert rel_err(y, direct_fftconv(u, k)) < 1e-12


@pytest.mark.parametrize(("seq_len", "taps"), [(1, 1), (31, 31), (97, 10), (128, 64)])
def test_fftconv_ref_circular_matches_direct(seq_len: int, taps: int) -> None:
    u, k = rand(2, 4, seq_len, seed=3), rand(4, taps, seed=4)
    y = fftconv_ref(u, k, causal=False)
    assert rel_err(y, direct_fftconv(u, k, causal=False)) < 1e-12
    if taps > 1 and seq_len > taps:  # circular differs from causal when outputs wrap
        assert rel_err(y, direct_fftconv(u, k)) > 1e-3


def test_fftconv_ref_skip_and_gates() -> None:
    u, k, D = rand(2, 5, 89, seed=5), rand(5, 40, seed=6), rand(5, seed=7)
    pre, post = rand(2, 5, 89, seed=8), rand(2, 5, 89, seed=9)
    y = fftconv_ref(u, k, D, pregate=pre, postgate=post)
    assert rel_err(y, direct_fftconv(u, k, D, pre, post)) < 1e-12
    y_circ = fftconv_ref(u, k, D, pregate=pre, postgate=post, causal=False)
    assert rel_err(y_circ, direct_fftconv(u, k, D, pre, post, causal=False)) < 1e-12


def test_fftconv_ref_float32_and_bfloat16() -> None:
    u, k, D = rand(1, 8, 1001, seed=10), rand(8, 1001, seed=11), rand(8, seed=12)
    ref = direct_fftconv(u, k, D)
    y32 = fftconv_ref(u.float(), k.float(), D.float())
    assert y32.dtype == torch.float32 and rel_err(y32, ref) < 1e-5
    y16 = fftconv_ref(u.bfloat16(), k.float(), D.float())
    assert y16.dtype == torch.bfloat16 and rel_err(y16, ref) < 2e-2


def test_fftconv_ref_context_equals_whole_sequence() -> None:
    u, pre = rand(2, 3, 150, seed=13), rand(2, 3, 150, seed=14)
    k, D = rand(3, 20, seed=15), rand(3, seed=16)
    whole = fftconv_ref(u, k, D, pregate=pre)
    g = u * pre
    for start in (1, 19, 60, 149):
        ctx = g[..., max(0, start - 19) : start]  # last K - 1 gated inputs
        tail = fftconv_ref(u[..., start:], k, D, pregate=pre[..., start:], context=ctx)
        assert rel_err(tail, whole[..., start:]) < 1e-12


def test_fftconv_ref_gradients_match_direct() -> None:
    args = [rand(2, 3, 37, seed=s) for s in (17, 18, 19)] + [rand(3, 11, seed=20), rand(3, seed=21)]
    u, pre, post, k, D = (a.clone().requires_grad_() for a in args)
    weights = rand(2, 3, 37, seed=22)
    (fftconv_ref(u, k, D, pregate=pre, postgate=post) * weights).sum().backward()
    got = [t.grad.clone() for t in (u, pre, post, k, D)]
    for t in (u, pre, post, k, D):
        t.grad = None
    (direct_fftconv(u, k, D, pre, post) * weights).sum().backward()
    for g, t in zip(got, (u, pre, post, k, D), strict=True):
        assert rel_err(g, t.grad) < 1e-11


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 2),
    channels=st.integers(1, 4),
    seq_len=st.integers(1, 90),
    taps=st.integers(1, 90),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fftconv_ref_property(batch, channels, seq_len, taps, causal, seed) -> None:
    if not causal:
        taps = min(taps, seq_len)
    u, k = rand(batch, channels, seq_len, seed=seed), rand(channels, taps, seed=seed + 1)
    D = rand(channels, seed=seed + 2)
    ref = direct_fftconv(u, k, D, causal=causal)
    assert rel_err(fftconv_ref(u, k, D, causal=causal), ref) < 1e-11


def test_fftconv_object_caches_spectra() -> None:
    u, k = rand(1, 2, 50, seed=23), rand(2, 50, seed=24)
    conv = FFTConv(k)
    y1 = fftconv(u, conv)
    assert len(conv._spectra) == 1
    spec = next(iter(conv._spectra.values()))
    y2 = fftconv(u, conv)
    assert next(iter(conv._spectra.values())) is spec and len(conv._spectra) == 1
    assert torch.equal(y1, y2) and rel_err(y1, direct_fftconv(u, k)) < 1e-12
    fftconv(u[..., :10], conv)  # other length -> another spectrum (first 10 taps)
    assert len(conv._spectra) == 2
    kg = k.clone().requires_grad_()
    conv_g = FFTConv(kg)
    fftconv(u, conv_g).sum().backward()
    assert not conv_g._spectra and kg.grad is not None  # no stale graph is cached


def test_fftconv_validation_errors() -> None:
    u, k = rand(2, 3, 10, seed=25), rand(3, 4, seed=26)
    with pytest.raises(ValueError, match=r"u must be \(B, H, L\)"):
        fftconv(u[0], k)
    with pytest.raises(ValueError, match="k must be"):
        fftconv(u, rand(4, 4, seed=0))
    with pytest.raises(ValueError, match="circular"):
        fftconv(u, rand(3, 11, seed=0), causal=False)
    with pytest.raises(ValueError, match="D must be"):
        fftconv(u, k, rand(4, seed=0))
    with pytest.raises(ValueError, match="pregate"):
        fftconv(u, k, pregate=u[:, :2])
    with pytest.raises(TypeError, match="floating"):
        fftconv(u.long(), k)
    with pytest.raises(ValueError, match="context"):
        fftconv(u, k, context=u, causal=False)
    with pytest.raises(ValueError, match="context"):
        fftconv(u, k, context=u[0])


# -- short conv --------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("seq_len", [1, 2, 5, 64])
def test_short_conv_ref_matches_torch_conv1d(width: int, seq_len: int) -> None:
    x, w, b = rand(2, 6, seq_len, seed=27), rand(6, width, seed=28), rand(6, seed=29)
    conv = F.conv1d(x, w[:, None, :], b, padding=width - 1, groups=6)[..., :seq_len]
    assert rel_err(short_conv_ref(x, w, b), conv) < 1e-14
    conv_nb = F.conv1d(x, w[:, None, :], None, padding=width - 1, groups=6)[..., :seq_len]
    assert rel_err(short_conv(x, w), conv_nb) < 1e-14


def test_short_conv_streaming_equals_whole() -> None:
    x, w, b = rand(2, 5, 40, seed=30), rand(5, 3, seed=31), rand(5, seed=32)
    whole = short_conv(x, w, b)
    state, parts = None, []
    for chunk in x.split([1, 2, 7, 30], dim=-1):
        y, state = short_conv_streaming(chunk, w, b, state)
        assert state.shape == (2, 5, 2)
        parts.append(y)
    assert torch.equal(torch.cat(parts, dim=-1), whole)
    assert torch.equal(state, x[..., -2:])
    assert torch.equal(short_conv_state_ref(x[..., :1], 3), F.pad(x[..., :1], (1, 0)))


def test_short_conv_float32_and_validation() -> None:
    x, w = rand(1, 4, 9, seed=33), rand(4, 3, seed=34)
    y = short_conv(x.float(), w.float())
    assert y.dtype == torch.float32 and rel_err(y, short_conv_ref(x, w)) < 1e-6
    with pytest.raises(ValueError, match="width"):
        short_conv(x, rand(4, 8, seed=0))
    with pytest.raises(ValueError, match="weight"):
        short_conv(x, rand(3, 3, seed=0))
    with pytest.raises(ValueError, match="state"):
        short_conv(x, w, state=rand(1, 4, 3, seed=0))
    with pytest.raises(ValueError, match="bias"):
        short_conv(x, w, rand(5, seed=0))
