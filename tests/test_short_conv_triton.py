"""Triton short causal depthwise conv (``dnastream.kernels.short_conv_triton``) against float64.

Without a GPU every kernel runs in Triton's CPU interpreter (conftest sets
``TRITON_INTERPRET=1`` before anything imports Triton), so sizes stay small and the launch
configurations are chosen to cover the code paths: both strategies (``chunk``: aligned 8-wide
chunks split into columns; ``shift``: one load per tap), several L tiles and channel blocks
with ragged tails, several backward segments, the left context on the first tile only, and
strided (channels-last) inputs. The ``gpu``-marked class runs the anchor shapes on CUDA.

Error bars (relative L2 error against the float64 reference on the same rounded inputs):
fp32 1e-6, fp16 1e-3, bf16 8e-3, for the output and for every gradient.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dnastream.kernels.short_conv import short_conv, short_conv_backward_ref, short_conv_streaming
from dnastream.kernels.short_conv_ref import short_conv_ref
from dnastream.kernels.short_conv_triton import (
    short_conv_bwd_triton,
    short_conv_fwd_triton,
    short_conv_triton,
)

BARS = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}
ON_GPU = torch.cuda.is_available()
DEV = "cuda" if ON_GPU else "cpu"

CHUNK_SMALL = {"STRATEGY": 0, "BLOCK_L": 16, "BLOCK_C": 4, "num_warps": 4, "SEG": 32}
SHIFT_SMALL = {"STRATEGY": 1, "BLOCK_L": 32, "BLOCK_C": 4, "num_warps": 4, "SEG": 64}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.double()
    den = b.norm().item()
    return (a.double() - b).norm().item() / (den if den > 0 else 1.0)


def make(B, C, L, W, dtype=torch.float32, *, bias=True, state=True, seed=0, channels_last=False):
    """Random x (B, C, L), weight (C, W), bias (C,), state (B, C, W - 1), rounded to dtype."""
    g = torch.Generator().manual_seed(seed)
    if channels_last:
        x = torch.randn(B, L, C, generator=g).to(dtype).transpose(1, 2)
    else:
        x = torch.randn(B, C, L, generator=g).to(dtype)
    w = (torch.randn(C, W, generator=g) / W**0.5).to(dtype)
    b = torch.randn(C, generator=g).to(dtype) if bias else None
    s = torch.randn(B, C, W - 1, generator=g).to(dtype) if state else None
    move = [t.to(DEV) if t is not None else None for t in (x, w, b, s)]
    return tuple(move)


def ref64(x, w, b, s):
    """float64 reference output of the same (rounded) tensors."""
    d = [t.detach().double() if t is not None else None for t in (x, w, b, s)]
    return short_conv_ref(d[0], d[1], d[2], state=d[3])


def grads_and_ref(x, w, b, s, dy, config=None):
    """(our gradients, float64 autograd gradients) for x, weight, bias, state (those given)."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b, s)]
    y = short_conv_triton(leaves[0], leaves[1], leaves[2], state=leaves[3], config=config)
    given = [t for t in leaves if t is not None]
    ours = torch.autograd.grad(y, given, dy)
    d64 = [t.detach().double().requires_grad_() if t is not None else None for t in leaves]
    y64 = short_conv_ref(d64[0], d64[1], d64[2], state=d64[3])
    theirs = torch.autograd.grad(y64, [t for t in d64 if t is not None], dy.double())
    return y, ours, theirs


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("seq_len", [1, 2, 7, 97, 333])
@pytest.mark.parametrize("extras", [True, False], ids=["bias+state", "plain"])
def test_forward_fp32_matches_reference(width: int, seq_len: int, extras: bool) -> None:
    x, w, b, s = make(2, 5, seq_len, width, bias=extras, state=extras, seed=width * 1000 + seq_len)
    y = short_conv_fwd_triton(x, w, b, s)
    assert y.shape == x.shape and y.dtype == x.dtype and y.is_contiguous()
    assert rel_err(y, ref64(x, w, b, s)) <= 1e-6
    # and the float32 reference (same arithmetic up to FMA contraction)
    assert rel_err(y, short_conv_ref(x, w, b, state=s)) <= 1e-6


@settings(max_examples=12, deadline=None)
@given(
    batch=st.integers(1, 2),
    channels=st.integers(1, 9),
    seq_len=st.integers(1, 90),
    width=st.integers(1, 7),
    strategy=st.sampled_from([0, 1]),
    block_l=st.sampled_from([16, 32, 64]),
    block_c=st.sampled_from([1, 2, 8]),
    with_state=st.booleans(),
)
def test_random_shapes_and_configs(
    batch, channels, seq_len, width, strategy, block_l, block_c, with_state
) -> None:
    config = {"STRATEGY": strategy, "BLOCK_L": block_l, "BLOCK_C": block_c, "SEG": 2 * block_l}
    x, w, b, s = make(batch, channels, seq_len, width, state=with_state, seed=seq_len)
    dy = torch.randn(batch, channels, seq_len, generator=torch.Generator().manual_seed(7))
    y, ours, theirs = grads_and_ref(x, w, b, s, dy.to(DEV), config=config)
    assert rel_err(y, ref64(x, w, b, s)) <= 1e-6
    # gradients: dw and db are fp32 sums over batch x length (up to 180 terms, with
    # cancellation): CI drew dw (1 channel, width 2, 2 x 66 terms) 1.23e-6 from float64, so
    # they get the fp32 bar of the issue (1e-5); an indexing bug is off by O(1)
    for a, r in zip(ours, theirs, strict=True):
        assert rel_err(a, r) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("width", [3, 7])
def test_forward_dtypes(dtype: torch.dtype, width: int) -> None:
    x, w, b, s = make(2, 6, 333, width, dtype, seed=width)
    y = short_conv_fwd_triton(x, w, b, s)
    assert y.dtype == dtype
    assert rel_err(y, ref64(x, w, b, s)) <= BARS[dtype]


@pytest.mark.parametrize("config", [CHUNK_SMALL, SHIFT_SMALL], ids=["chunk", "shift"])
@pytest.mark.parametrize("width", [1, 3, 4, 7])
def test_forward_multi_tile_configs(config: dict, width: int) -> None:
    """Several L tiles (the halo crosses tiles), a ragged channel block, both strategies."""
    x, w, b, s = make(1, 3, 97, width, seed=50 + width)
    y = short_conv_fwd_triton(x, w, b, s, config=config)
    assert rel_err(y, ref64(x, w, b, s)) <= 1e-6
    y0 = short_conv_fwd_triton(x, w, None, None, config=config)
    assert rel_err(y0, ref64(x, w, None, None)) <= 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_forward_strided_inputs(dtype: torch.dtype) -> None:
    """Channels-last x (what in_proj(u).transpose(1, 2) gives), strided weight and state."""
    x, w, b, s = make(2, 6, 97, 4, dtype, seed=7, channels_last=True)
    assert x.stride(1) == 1
    w_t = w.t().contiguous().t()  # (C, W) with stride (1, C)
    s_t = s.transpose(1, 2).contiguous().transpose(1, 2)
    y = short_conv_fwd_triton(x, w_t, b, s_t)
    assert y.is_contiguous()
    assert rel_err(y, ref64(x, w, b, s)) <= BARS[dtype]
    y_shift = short_conv_fwd_triton(x, w, b, s, config=SHIFT_SMALL)
    assert rel_err(y_shift, ref64(x, w, b, s)) <= BARS[dtype]


def test_state_in_other_dtype_is_cast_like_the_reference() -> None:
    x, w, b, _ = make(1, 4, 40, 3, torch.bfloat16, seed=8, state=False)
    s32 = torch.randn(1, 4, 2, generator=torch.Generator().manual_seed(9)).to(DEV)
    y = short_conv_fwd_triton(x, w, b, s32)
    assert rel_err(y, short_conv_ref(x.float(), w.float(), b.float(), state=s32.bfloat16())) < 8e-3
    ref = short_conv_ref(x, w, b, state=s32)  # the reference itself rounds s to bf16
    assert rel_err(y, ref) < 8e-3


def test_streaming_chunks_equal_whole_sequence() -> None:
    x, w, b, _ = make(2, 5, 120, 4, seed=10, state=False)
    whole = short_conv_fwd_triton(x, w, b)
    state = torch.zeros(2, 5, 3, device=DEV)
    parts = []
    for chunk in x.split([1, 2, 37, 80], dim=-1):
        parts.append(short_conv_fwd_triton(chunk, w, b, state))
        state = torch.cat([state, chunk], dim=-1)[..., -3:]
    assert rel_err(torch.cat(parts, dim=-1), whole) <= 1e-6


def test_batch_beyond_the_grid_limit_runs_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    import dnastream.kernels.short_conv_triton as sct

    monkeypatch.setattr(sct, "_MAX_GRID_YZ", 2)
    x, w, b, s = make(5, 2, 20, 3, seed=12)
    dy = torch.randn(5, 2, 20, generator=torch.Generator().manual_seed(6)).to(DEV)
    y, ours, theirs = grads_and_ref(x, w, b, s, dy)
    assert rel_err(y, ref64(x, w, b, s)) <= 1e-6
    for name, a, r in zip(("dx", "dweight", "dbias", "dstate"), ours, theirs, strict=True):
        assert rel_err(a, r) <= 1e-6, name


def test_empty_inputs() -> None:
    x, w, b, s = make(2, 3, 0, 3, seed=11)
    assert short_conv_fwd_triton(x, w, b, s).shape == (2, 3, 0)
    dx, dw, db, ds = short_conv_bwd_triton(x, x, w, s)
    assert dx.shape == (2, 3, 0) and dw.abs().sum() == 0 and db.abs().sum() == 0
    assert ds.shape == (2, 3, 2) and ds.abs().sum() == 0


# ---------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 3, 4, 7])
@pytest.mark.parametrize("seq_len", [1, 7, 97])
def test_backward_fp32_matches_autograd(width: int, seq_len: int) -> None:
    x, w, b, s = make(2, 5, seq_len, width, seed=100 + width * 10 + seq_len)
    dy = torch.randn(2, 5, seq_len, generator=torch.Generator().manual_seed(1)).to(DEV)
    _, ours, theirs = grads_and_ref(x, w, b, s, dy)
    for name, a, r in zip(("dx", "dweight", "dbias", "dstate"), ours, theirs, strict=True):
        assert a.shape == r.shape, name
        assert rel_err(a, r) <= 1e-6, name


@pytest.mark.parametrize("config", [CHUNK_SMALL, SHIFT_SMALL], ids=["chunk", "shift"])
@pytest.mark.parametrize("width", [2, 7])
def test_backward_multi_segment_configs(config: dict, width: int) -> None:
    """Several L tiles per program and several segments (partial sums reduced afterwards)."""
    x, w, b, s = make(2, 3, 97, width, seed=200 + width)
    dy = torch.randn(2, 3, 97, generator=torch.Generator().manual_seed(2)).to(DEV)
    _, ours, theirs = grads_and_ref(x, w, b, s, dy, config=config)
    for name, a, r in zip(("dx", "dweight", "dbias", "dstate"), ours, theirs, strict=True):
        assert rel_err(a, r) <= 1e-6, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_backward_half_dtypes(dtype: torch.dtype) -> None:
    x, w, b, s = make(2, 6, 200, 3, dtype, seed=300)
    dy = torch.randn(2, 6, 200, generator=torch.Generator().manual_seed(3)).to(dtype).to(DEV)
    y, ours, theirs = grads_and_ref(x, w, b, s, dy)
    assert rel_err(y, ref64(x, w, b, s)) <= BARS[dtype]
    for name, a, r in zip(("dx", "dweight", "dbias", "dstate"), ours, theirs, strict=True):
        assert a.dtype == dtype, name
        assert rel_err(a, r) <= BARS[dtype], name


def test_backward_strided_and_without_extras() -> None:
    """Channels-last x, a non-contiguous dy, no bias and no state (dstate not requested)."""
    x, w, _, _ = make(2, 6, 50, 3, seed=400, bias=False, state=False, channels_last=True)
    dy = torch.randn(2, 50, 6, generator=torch.Generator().manual_seed(4)).to(DEV).transpose(1, 2)
    _, ours, theirs = grads_and_ref(x, w, None, None, dy)
    assert len(ours) == 2
    for a, r in zip(ours, theirs, strict=True):
        assert rel_err(a, r) <= 1e-6


def test_backward_only_some_inputs_require_grad() -> None:
    x, w, b, s = make(1, 4, 30, 3, seed=500)
    wl = w.clone().requires_grad_()
    y = short_conv_triton(x, wl, b, state=s)
    (dw,) = torch.autograd.grad(y.sum(), [wl])
    w64 = w.double().requires_grad_()
    (dw64,) = torch.autograd.grad(
        short_conv_ref(x.double(), w64, b.double(), state=s.double()).sum(), [w64]
    )
    assert rel_err(dw, dw64) <= 1e-6


def test_backward_is_deterministic() -> None:
    x, w, _, s = make(2, 3, 97, 3, seed=600, bias=False)
    dy = torch.randn(2, 3, 97, generator=torch.Generator().manual_seed(5)).to(DEV)
    first = short_conv_bwd_triton(dy, x, w, s)
    second = short_conv_bwd_triton(dy, x, w, s)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# Validation, the public function and the custom operator
# ---------------------------------------------------------------------------------------------


def test_validation_errors() -> None:
    x, w, b, s = make(1, 4, 9, 3, seed=700)
    with pytest.raises(ValueError, match="width"):
        short_conv_triton(x, torch.zeros(4, 8, device=DEV))
    with pytest.raises(ValueError, match="width"):
        short_conv_triton(x, torch.zeros(4, 0, device=DEV))
    with pytest.raises(ValueError, match="weight"):
        short_conv_triton(x, torch.zeros(3, 3, device=DEV))
    with pytest.raises(ValueError, match="bias"):
        short_conv_triton(x, w, torch.zeros(5, device=DEV))
    with pytest.raises(ValueError, match="state"):
        short_conv_triton(x, w, b, state=torch.zeros(1, 4, 3, device=DEV))
    with pytest.raises(ValueError, match="x must be"):
        short_conv_triton(x[0], w)
    with pytest.raises(TypeError, match="bf16/fp16/fp32"):
        short_conv_triton(x.double(), w)
    with pytest.raises(TypeError, match="bf16/fp16/fp32"):
        short_conv_triton(x.long(), w)
    with pytest.raises(TypeError, match="floating"):
        short_conv_triton(x, w.long())
    with pytest.raises(ValueError, match="STRATEGY"):
        short_conv_fwd_triton(x, w, config={"STRATEGY": 2, "BLOCK_L": 16, "BLOCK_C": 1})
    with pytest.raises(ValueError, match="powers of two"):
        short_conv_fwd_triton(x, w, config={"STRATEGY": 0, "BLOCK_L": 24, "BLOCK_C": 1})
    with pytest.raises(ValueError, match="dy shape"):
        short_conv_bwd_triton(x[..., :5], x, w)
    # the public function validates before dispatching
    with pytest.raises(ValueError, match="width"):
        short_conv(x.cpu(), torch.zeros(4, 8))
    with pytest.raises(ValueError, match="state"):
        short_conv(x.cpu(), w.cpu(), state=torch.zeros(1, 4, 1))


def test_backward_reference_formula_matches_autograd() -> None:
    """short_conv_backward_ref (the custom op's CPU backward) against float64 autograd."""
    g = torch.Generator().manual_seed(12)
    for width, state in ((1, False), (3, True), (7, True), (4, False)):
        x = torch.randn(2, 3, 11, dtype=torch.float64, generator=g).requires_grad_()
        w = torch.randn(3, width, dtype=torch.float64, generator=g).requires_grad_()
        s = torch.randn(2, 3, width - 1, dtype=torch.float64, generator=g).requires_grad_()
        dy = torch.randn(2, 3, 11, dtype=torch.float64, generator=g)
        y = short_conv_ref(x, w, None, state=s if state else None)
        dx, dw, ds = torch.autograd.grad(y, [x, w, s], dy, allow_unused=True)
        rx, rw, rb, rs = short_conv_backward_ref(
            dy, x.detach(), w.detach(), s.detach() if state else None
        )
        assert torch.allclose(rx, dx) and torch.allclose(rw, dw)
        assert torch.allclose(rb, dy.sum((0, 2)))
        if state:
            assert torch.allclose(rs, ds)
        assert rs.shape == (2, 3, width - 1)


def test_custom_op_opcheck_cpu() -> None:
    """torch.library.opcheck of both custom ops (CPU: the reference implementations)."""
    g = torch.Generator().manual_seed(13)
    x = torch.randn(2, 3, 10, generator=g).requires_grad_()
    w = torch.randn(3, 3, generator=g).requires_grad_()
    b = torch.randn(3, generator=g).requires_grad_()
    s = torch.randn(2, 3, 2, generator=g).requires_grad_()
    torch.library.opcheck(torch.ops.dnastream.short_conv.default, (x, w, b, s))
    torch.library.opcheck(torch.ops.dnastream.short_conv.default, (x, w, None, None))
    dy = torch.randn(2, 3, 10, generator=g)
    torch.library.opcheck(
        torch.ops.dnastream.short_conv_backward.default, (dy, x.detach(), w.detach(), None)
    )


def test_custom_op_gradients_cpu() -> None:
    g = torch.Generator().manual_seed(14)
    x = torch.randn(2, 3, 10, dtype=torch.float64, generator=g).requires_grad_()
    w = torch.randn(3, 4, dtype=torch.float64, generator=g).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, generator=g).requires_grad_()
    s = torch.randn(2, 3, 3, generator=g).requires_grad_()  # float32 state, float64 x
    dy = torch.randn(2, 3, 10, dtype=torch.float64, generator=g)
    ours = torch.autograd.grad(torch.ops.dnastream.short_conv(x, w, b, s), [x, w, b, s], dy)
    theirs = torch.autograd.grad(short_conv_ref(x, w, b, state=s), [x, w, b, s], dy)
    for a, r in zip(ours, theirs, strict=True):
        assert a.dtype == r.dtype and torch.allclose(a, r)


def test_public_short_conv_on_cpu_is_the_reference() -> None:
    x, w, b, s = (t.cpu() for t in make(1, 4, 20, 3, seed=15))
    assert torch.equal(short_conv(x, w, b, state=s), short_conv_ref(x, w, b, state=s))
    y, nxt = short_conv_streaming(x, w, b, s)
    assert torch.equal(y, short_conv_ref(x, w, b, state=s)) and torch.equal(nxt, x[..., -2:])


# ---------------------------------------------------------------------------------------------
# GPU: anchor shapes, autotuned path, custom op, torch.compile
# ---------------------------------------------------------------------------------------------

ANCHOR_SHAPES = [(1, 768, 1_000_000), (64, 768, 4096), (16, 3072, 32768)]


@pytest.mark.gpu
class TestGPU:
    @pytest.mark.parametrize("shape", ANCHOR_SHAPES, ids=lambda s: "x".join(map(str, s)))
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_anchor_shapes_forward(self, shape: tuple[int, int, int], dtype: torch.dtype) -> None:
        batch, channels, seq_len = shape
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(shape, device="cuda", dtype=dtype, generator=g)
        w = torch.randn(channels, 3, device="cuda", generator=g).to(dtype)
        b = torch.randn(channels, device="cuda", generator=g).to(dtype)
        y = short_conv(x, w, b)
        torch.cuda.synchronize()
        rows = (slice(0, 2), slice(0, 64))  # float64 reference on a slice of rows (exact)
        ref = short_conv_ref(x[rows].double(), w[rows[1]].double(), b[rows[1]].double())
        assert rel_err(y[rows], ref) <= BARS[dtype]
        # the last channels too (ragged / last channel blocks)
        tail = (slice(batch - 1, batch), slice(channels - 8, channels))
        ref_t = short_conv_ref(x[tail].double(), w[tail[1]].double(), b[tail[1]].double())
        assert rel_err(y[tail], ref_t) <= BARS[dtype]

    @pytest.mark.parametrize("width", [1, 3, 7])
    @pytest.mark.parametrize("seq_len", [1, 97, 4096, 40_000])
    def test_autotuned_forward_backward(self, width: int, seq_len: int) -> None:
        x, w, b, s = make(3, 70, seq_len, width, torch.bfloat16, seed=width + seq_len)
        dy = torch.randn(3, 70, seq_len, device="cuda").to(torch.bfloat16)
        y, ours, theirs = grads_and_ref(x, w, b, s, dy)
        assert rel_err(y, ref64(x, w, b, s)) <= BARS[torch.bfloat16]
        for name, a, r in zip(("dx", "dweight", "dbias", "dstate"), ours, theirs, strict=True):
            assert rel_err(a, r) <= BARS[torch.bfloat16], name

    @pytest.mark.parametrize("config", [CHUNK_SMALL, SHIFT_SMALL], ids=["chunk", "shift"])
    def test_forced_configs_fp32(self, config: dict) -> None:
        x, w, b, s = make(2, 5, 1000, 7, seed=1)
        dy = torch.randn(2, 5, 1000, device="cuda")
        y, ours, theirs = grads_and_ref(x, w, b, s, dy, config=config)
        assert rel_err(y, ref64(x, w, b, s)) <= 1e-6
        for a, r in zip(ours, theirs, strict=True):
            assert rel_err(a, r) <= 1e-6

    @pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
    def test_channels_last_model_layout(self, dtype: torch.dtype) -> None:
        x, w, b, s = make(2, 768, 5000, 3, dtype, seed=3, channels_last=True)
        dy = torch.randn(2, 768, 5000, device="cuda").to(dtype)
        y, ours, theirs = grads_and_ref(x, w, b, s, dy)
        assert rel_err(y, ref64(x, w, b, s)) <= BARS[dtype]
        for a, r in zip(ours, theirs, strict=True):
            assert rel_err(a, r) <= BARS[dtype]

    def test_custom_op_dispatch_opcheck_and_compile(self, monkeypatch) -> None:
        monkeypatch.delenv("DNASTREAM_SHORT_CONV", raising=False)  # Triton is the CUDA default
        x, w, b, s = make(2, 16, 300, 3, torch.float16, seed=4)
        x, w, b, s = (t.requires_grad_() for t in (x, w, b, s))
        torch.library.opcheck(torch.ops.dnastream.short_conv.default, (x, w, b, s))
        y = short_conv(x, w, b, state=s)
        assert rel_err(y, ref64(x, w, b, s)) <= 1e-3
        dy = torch.randn_like(y)
        eager = torch.autograd.grad(y, [x, w, b, s], dy)

        @torch.compile(fullgraph=True)
        def f(x, w, b, s):
            return short_conv(x, w, b, state=s) * 2.0

        yc = f(x, w, b, s)
        assert rel_err(yc, 2.0 * y.detach().double()) <= 1e-3
        compiled = torch.autograd.grad(yc, [x, w, b, s], dy * 0.5)
        for a, r in zip(compiled, eager, strict=True):
            assert rel_err(a, r) <= 1e-3


_NO_DYNAMO_SCRIPT = """
import os, sys
os.environ["TRITON_INTERPRET"] = "1"
import torch
import dnastream.kernels.short_conv
sc = sys.modules["dnastream.kernels.short_conv"]  # (the package exports a function of that name)
sc._use_triton = lambda x, weight: True  # as on CUDA (the interpreter runs the kernels here)
g = torch.Generator().manual_seed(0)
x = torch.randn(2, 8, 100, generator=g)
w = torch.randn(8, 3, generator=g)
b = torch.randn(8, generator=g)
with torch.no_grad():
    y = sc.short_conv(x, w, b)
assert "torch._dynamo" not in sys.modules, "inference went through the operator wrapper"
# eager training: the kernels through a plain autograd.Function, no operator either
s = torch.randn(2, 8, 2, generator=g)
leaves = [t.clone().requires_grad_(True) for t in (x, w, b, s)]
y_eager = sc.short_conv(*leaves[:3], state=leaves[3])
dy = torch.randn(y_eager.shape, generator=g)
y_eager.backward(dy)
assert "torch._dynamo" not in sys.modules, "eager training went through the operator wrapper"
# the operators (what torch.compile traces): same outputs and gradients, bit for bit
ops = [t.clone().requires_grad_(True) for t in (x, w, b, s)]
y_op = torch.ops.dnastream.short_conv(*ops)
y_op.backward(dy)
assert "torch._dynamo" in sys.modules  # (so the checks above can fail)
assert torch.equal(y, sc.short_conv(x, w, b).detach()), "inference and training differ"
assert torch.equal(y_eager.detach(), y_op.detach()), "eager training and the operator differ"
for a, o in zip(leaves, ops):
    assert a.grad.dtype == o.grad.dtype and torch.equal(a.grad, o.grad), "gradients differ"
# DNASTREAM_EAGER_OPS=off: training through the operator
os.environ["DNASTREAM_EAGER_OPS"] = "off"
calls = []
real = sc._EagerShortConv.apply
sc._EagerShortConv.apply = lambda *a: calls.append(1) or real(*a)
sc.short_conv(x.clone().requires_grad_(True), w, b).sum().backward()
del os.environ["DNASTREAM_EAGER_OPS"]
assert not calls
sc.short_conv(x.clone().requires_grad_(True), w, b).sum().backward()
assert calls
print("ok")
"""


def test_inference_runs_the_kernel_without_the_operator_wrapper() -> None:
    """Outside torch.compile, short_conv() runs the Triton kernels without the operator
    wrapper: the forward directly without gradients, forward and backward through a plain
    autograd.Function with them (``DNASTREAM_EAGER_OPS=off``: the operator). Same outputs and
    gradients as the operators bit for bit, and no ``torch._dynamo`` import (the custom-op
    wrapper imports it on its first call). Fresh interpreter."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _NO_DYNAMO_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
