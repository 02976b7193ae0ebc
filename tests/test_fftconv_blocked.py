"""Blocked overlap-save plans (a short filter's "partial convolution", forward only).

A blocked plan cuts the causal convolution of a long sequence into windows of ``n`` samples
that start every ``n - taps + 1`` samples; each window is circularly convolved in one fused
Triton program and its first ``taps - 1`` outputs (which wrap around) are dropped. Windows of
one sequence pair up as the re/im rows of the complex FFT, so B = 1 wastes nothing.

On the CPU the kernels run in Triton's interpreter (conftest sets ``TRITON_INTERPRET=1``):
both kernel families (multi-row tiles for n <= 2048, the one-row "natural" kernel above), odd
window counts and batch sizes, gates, D, ``taps - 1 == n / 2``, streaming with ``context``,
and the backward (which takes the full-length plan).
"""

from __future__ import annotations

import math

import pytest
import torch

from dnastream.kernels import fftconv_op
from dnastream.kernels.fftconv import _blocked_inference
from dnastream.kernels.fftconv_ref import fftconv_ref
from dnastream.kernels.fftconv_triton import conv_backward, fftconv_triton, filter_spectrum
from dnastream.kernels.monarch import FFTPlan, block_plan_for, plan_for
from test_fftconv_triton import BARS, make_inputs, ref64, rel_err

ON_GPU = torch.cuda.is_available()
DEV = "cuda" if ON_GPU else "cpu"


# -- plan selection ---------------------------------------------------------------------------


def test_a_short_filter_on_a_long_sequence_gets_windows():
    plan = block_plan_for(262_144 + 1025, 1026, torch.bfloat16, batch=1)
    assert plan is not None and plan.block and plan.causal and not plan.outer
    assert plan.n == 4096 and plan.taps == 1026 and plan.block_out == 4096 - 1025
    assert plan.blocks() == math.ceil((262_144 + 1025) / plan.block_out)
    assert "blocked x" in plan.describe()
    # the filter's spectrum is the circular one of the window
    assert plan.io_rows == plan.n1


@pytest.mark.parametrize(
    ("seq_len", "filter_len"),
    [
        (4096, 4096),  # a filter as long as the sequence: no window holds it twice
        (300, 3),  # the padded plan is as cheap
        (200, 50),  # one window would be the padded plan itself
        (100_000, 5000),  # taps - 1 > 8192 / 2
    ],
)
def test_no_windows_where_they_do_not_pay(seq_len, filter_len):
    assert block_plan_for(seq_len, filter_len, torch.bfloat16, batch=1) is None


def test_fp32_windows_stop_at_4096():
    assert block_plan_for(100_000, 4097, torch.bfloat16).n == 8192
    assert block_plan_for(100_000, 4097, torch.float32) is None
    assert block_plan_for(100_000, 2049, torch.float32).n == 4096


def test_forced_windows_are_validated():
    with pytest.raises(ValueError, match="taps need a window"):
        block_plan_for(5000, 600, torch.float32, window=1024)
    with pytest.raises(ValueError, match="power of two"):
        block_plan_for(5000, 100, torch.float32, window=1000)
    with pytest.raises(ValueError, match="blocked"):
        FFTPlan(n=512, seq_len=5000, taps=300, causal=True, n1=32, n2=16, block=True)


def test_the_backward_kernels_refuse_a_blocked_plan():
    plan = block_plan_for(2000, 100, torch.float32, window=256)
    x = torch.zeros(1, 1, 2000)
    k = torch.zeros(1, 100)
    with pytest.raises(ValueError, match="forward-only"):
        conv_backward(plan, x, x, k, None, None, None, filter_spectrum(k, plan), (True,) * 5)


# -- forward against float64 -------------------------------------------------------------------

CASES = [
    # B, H, L, Lk, dtype, window, gates: both kernel families, odd window counts and B
    (1, 2, 1000, 100, torch.float32, 256, True),  # multi-row, 7 windows (odd), B = 1
    (3, 2, 1000, 129, torch.bfloat16, 256, True),  # taps - 1 == n / 2, 3 x 8 windows
    (2, 3, 1500, 77, torch.float16, 512, False),
    (1, 2, 3000, 1025, torch.float32, 2048, True),  # two-row tiles at 2048
    (2, 1, 5000, 300, torch.bfloat16, 4096, True),  # the one-row "natural" kernel
    (1, 1, 700, 1, torch.float32, 256, False),  # a single tap (D-like)
]


@pytest.mark.parametrize(("B", "H", "L", "Lk", "dtype", "window", "gates"), CASES)
def test_blocked_forward_matches_float64(B, H, L, Lk, dtype, window, gates):
    u, k, d, g1, g2 = make_inputs(B, H, L, Lk, dtype, gates=gates, decay=True, seed=L + Lk)
    plan = block_plan_for(L, Lk, dtype, batch=B, window=window)
    assert plan.blocks() > 1
    y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=plan)
    assert y.shape == u.shape and y.dtype == u.dtype
    err = rel_err(y, ref64(u, k, d, g1, g2))
    assert err <= BARS[dtype], f"{plan.describe()}: rel. error {err:.2e}"


def test_blocked_forward_rows_stay_apart():
    """Each batch row and channel sees only its own windows: a row of zeros stays zero up to
    the rounding of the complex row it shares with another window (re/im packing)."""
    u, k, d, _, _ = make_inputs(3, 2, 900, 60, torch.float32, gates=False)
    u[1] = 0.0
    plan = block_plan_for(900, 60, torch.float32, batch=3, window=256)
    y = fftconv_triton(u, k, D=d, plan=plan)
    assert y[1].abs().max() <= 1e-6 * y.abs().max()
    assert rel_err(y, ref64(u, k, d)) <= BARS[torch.float32]


def test_filter_taps_beyond_the_sequence_are_ignored():
    u, k, _, _, _ = make_inputs(1, 2, 600, 900, torch.float32, gates=False, D=False)
    plan = block_plan_for(600, 900, torch.float32, window=2048)
    assert plan.taps == 600
    y = fftconv_triton(u, k, plan=plan)
    assert rel_err(y, ref64(u, k)) <= BARS[torch.float32]


def test_gradients_through_a_blocked_forward_take_the_full_plan():
    u, k, d, g1, g2 = make_inputs(2, 2, 800, 70, torch.float32, seed=3)
    plan = block_plan_for(800, 70, torch.float32, batch=2, window=256)
    leaves = [t.clone().requires_grad_(True) for t in (u, k, d, g1, g2)]
    y = fftconv_triton(leaves[0], leaves[1], D=leaves[2], pregate=leaves[3],
                       postgate=leaves[4], plan=plan)  # fmt: skip
    dy = torch.randn_like(y)
    y.backward(dy)
    refs = [t.double().requires_grad_(True) for t in (u, k, d, g1, g2)]
    ref64(*refs).backward(dy.double())
    for name, a, b in zip(("u", "k", "D", "pregate", "postgate"), leaves, refs, strict=True):
        assert rel_err(a.grad, b.grad) <= BARS[torch.float32], name


# -- the inference dispatch and streaming -------------------------------------------------------


def _forced(monkeypatch, window):
    real = block_plan_for

    def forced(seq_len, filter_len, dtype, *, batch=None, context=0, **_):
        return real(seq_len, filter_len, dtype, batch=batch, window=window, context=context)

    monkeypatch.setattr("dnastream.kernels.monarch.block_plan_for", forced)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streaming_with_context_matches_the_reference(monkeypatch, dtype):
    """``context`` (the gated inputs before the chunk, as the streaming engine keeps them):
    the first windows read their start from it (not gated), the rest from pregate * u."""
    _forced(monkeypatch, 512)
    B, H, C, L, Lk = 1, 3, 199, 1400, 200
    u, k, d, g1, g2 = make_inputs(B, H, L, Lk, dtype, seed=11)
    ctx = make_inputs(B, H, C, Lk, dtype, seed=12)[0]
    y = _blocked_inference(u, k, d, g1, g2, ctx)
    assert y is not None and y.shape == u.shape and y.dtype == u.dtype
    full = torch.cat([ctx.double(), u.double() * g1.double()], dim=-1)
    want = ref64(full, k, d)[..., C:] * g2.double()
    assert rel_err(y, want) <= BARS[dtype]
    if dtype == torch.float32:  # and the reference twin with context agrees
        ref = fftconv_ref(u, k, d, pregate=g1, postgate=g2, context=ctx)
        assert rel_err(y, ref.double()) <= BARS[dtype]


def test_blocked_inference_declines_when_no_window_pays():
    u, k, d, _, _ = make_inputs(1, 2, 300, 300, torch.float32, gates=False)
    assert _blocked_inference(u, k, d, None, None, None) is None


def test_forward_with_plan_without_a_plan_is_the_reference():
    u, k, d, g1, g2 = make_inputs(1, 2, 300, 40, torch.float32)
    y = fftconv_op.forward_with_plan(None, u, k, d, g1, g2, None, True)
    assert torch.equal(y, fftconv_ref(u, k, d, pregate=g1, postgate=g2).contiguous())


# -- GPU ----------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs CUDA")
@pytest.mark.parametrize(
    ("window", "dtype"),
    [(w, torch.bfloat16) for w in (256, 512, 1024, 2048, 4096, 8192)]
    + [(w, torch.float32) for w in (256, 512, 1024, 2048, 4096)],  # fp32 windows stop at 4096
)
def test_gpu_blocked_every_window(window, dtype):
    taps = window // 2 + 1
    L = 5 * window + 17
    u, k, d, g1, g2 = make_inputs(2, 16, L, taps, dtype, decay=True, seed=window)
    plan = block_plan_for(L, taps, dtype, batch=2, window=window)
    y = fftconv_triton(u, k, D=d, pregate=g1, postgate=g2, plan=plan)
    err = rel_err(y, ref64(u, k, d, g1, g2))
    assert err <= BARS[dtype], f"{plan.describe()}: {err:.2e}"


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs CUDA")
def test_gpu_streaming_dispatch_uses_windows():
    """The public fftconv with context on CUDA takes the blocked path and matches float64."""
    from dnastream.kernels import fftconv

    B, H, C, L, Lk = 1, 64, 1025, 262_144, 1026
    u = torch.randn(B, H, L, device="cuda")
    k = torch.randn(H, Lk, device="cuda") * torch.exp(-0.01 * torch.arange(Lk, device="cuda"))
    ctx = torch.randn(B, H, C, device="cuda")
    d = torch.randn(H, device="cuda")
    assert block_plan_for(C + L, Lk, torch.float32, batch=B) is not None
    with torch.no_grad():
        y = fftconv(u, k, d, context=ctx)
    full = torch.cat([ctx.double(), u.double()], dim=-1)
    assert rel_err(y, ref64(full, k, d)[..., C:]) <= BARS[torch.float32]
    assert plan_for(C + L, Lk, True, torch.float32).outer  # the full plan is multi-pass


def test_model_streaming_through_windows_equals_the_full_forward(hyenadna_fixtures, monkeypatch):
    """The streaming engine's long convolutions (fp32, with context) through blocked windows in
    the interpreter, as on CUDA: chunk outputs equal the whole-sequence forward."""
    import importlib

    from dnastream.models import load_model
    from dnastream.models.streaming import StreamingHyenaDNA

    fftconv_mod = importlib.import_module("dnastream.kernels.fftconv")
    calls = []
    real = fftconv_mod._blocked_inference

    def counted(*args):
        y = real(*args)
        calls.append(y is not None)
        return y

    monkeypatch.setattr(fftconv_mod, "_blocked_inference", counted)
    monkeypatch.setattr(fftconv_mod, "_select_backend", lambda u, ctx: fftconv_mod._triton_backend)
    model = load_model(hyenadna_fixtures / "hf_tiny", filter_len=300).eval()
    ids = torch.randint(7, 12, (1, 1800), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = model(ids, return_logprobs=True)
        eng = StreamingHyenaDNA(model)
        outs = list(eng.run(ids.split(600, dim=1), return_logprobs=True))
    assert any(calls), "no long convolution took the blocked path"
    hidden = torch.cat([o.last_hidden_state for o in outs], dim=1)
    err = (hidden - full.last_hidden_state).abs().max() / full.last_hidden_state.abs().max()
    assert err.item() <= 1e-5


@pytest.mark.parametrize(
    ("ctx_len", "L", "Lk", "window"),
    [(0, 900, 100, 256), (1, 900, 100, 256), (57, 900, 100, 256), (640, 900, 100, 256),
     (150, 60, 200, 512), (199, 7, 200, 512)],
)  # fmt: skip
def test_streaming_context_of_any_length(monkeypatch, ctx_len, L, Lk, window):
    """An empty context (a stream's first chunk), a short one, one longer than the filter
    (only its last taps - 1 samples reach an output), and chunks shorter than the filter (its
    taps reach back into the context) all match the reference."""
    _forced(monkeypatch, window)
    B, H = 2, 2
    u, k, d, g1, g2 = make_inputs(B, H, L, Lk, torch.float32, seed=ctx_len)
    ctx = make_inputs(B, H, max(ctx_len, 1), Lk, torch.float32, seed=ctx_len + 1)[0]
    ctx = ctx[..., :ctx_len]
    y = _blocked_inference(u, k, d, g1, g2, ctx)
    assert y is not None
    ref = fftconv_ref(u, k, d, pregate=g1, postgate=g2, context=ctx)
    assert rel_err(y, ref.double()) <= BARS[torch.float32]
