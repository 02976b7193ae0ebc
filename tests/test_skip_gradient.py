"""Triton reduction for the skip-weight gradient (``dnastream.kernels.skip_gradient``).

Without a GPU the kernel runs in Triton's CPU interpreter (conftest sets ``TRITON_INTERPRET=1``
before anything imports Triton). The kernel sums in another order than the reference, so results
are compared within ``1e-5 * sum |products|``; the ``gpu`` tests run the real sizes against
float64.
"""

from __future__ import annotations

import pytest
import torch

from dnastream.kernels import skip_gradient as sg
from dnastream.kernels.backend import interpret_requested
from dnastream.kernels.skip_gradient import _tile_shape, skip_gradient, skip_gradient_ref

ON_GPU = torch.cuda.is_available()
DEV = "cuda" if ON_GPU else "cpu"
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
GATES = ["none", "g1", "g2", "both"]

needs_triton = pytest.mark.skipif(
    not ON_GPU and not interpret_requested(),
    reason="the kernel needs TRITON_INTERPRET=1 (set by conftest without a GPU) or CUDA",
)


@pytest.fixture
def kernel_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if skip_gradient falls back to the reference instead of running the kernel."""

    def _no_fallback(*args: object) -> None:
        raise AssertionError("skip_gradient fell back to the reference")

    monkeypatch.setattr(sg, "skip_gradient_ref", _no_fallback)


def make(B, H, L, dtype, gates="both", *, seed=0, device=DEV):
    g = torch.Generator().manual_seed(seed)
    u, dy, g1, g2 = (torch.randn(B, H, L, generator=g).to(device, dtype) for _ in range(4))
    return (
        u,
        g1 if gates in ("g1", "both") else None,
        dy,
        g2 if gates in ("g2", "both") else None,
    )


def abs_sum(u, g1, dy, g2) -> torch.Tensor:
    """(H,) float64 sum over (b, t) of |(g1 u)(g2 dy)| with fp32 products: the error scale."""
    x = u.float() * (g1.float() if g1 is not None else 1.0)
    z = dy.float() * (g2.float() if g2 is not None else 1.0)
    return (x * z).abs().double().sum(dim=(0, 2))


def assert_close(got, want, scale, rtol=1e-5) -> None:
    assert got.dtype == torch.float32 and got.shape == want.shape
    err = (got.double() - want.double()).abs()
    bound = rtol * scale.double() + 1e-30
    assert bool((err <= bound).all()), f"err {err.tolist()} > bound {bound.tolist()}"


def check(B, H, L, dtype, gates, **kw) -> torch.Tensor:
    args = make(B, H, L, dtype, gates, seed=B * 1000 + H * 100 + L)
    got = skip_gradient(*args, **kw)
    assert_close(got, skip_gradient_ref(*args), abs_sum(*args))
    return got


# ---------------------------------------------------------------------------------------------
# the kernel (interpreter on the CPU)
# ---------------------------------------------------------------------------------------------


@needs_triton
@pytest.mark.usefixtures("kernel_only")
@pytest.mark.parametrize("gates", GATES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 1), (3, 5, 7), (1, 5, 97), (3, 1, 97)])
def test_matches_reference(shape, dtype, gates) -> None:
    check(*shape, dtype, gates)


@needs_triton
@pytest.mark.usefixtures("kernel_only")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rows_longer_than_a_block(dtype) -> None:
    """B * L not a multiple of BLOCK; rows of 1025 (padding rule) and 3000 (several tiles)."""
    check(3, 2, 1025, dtype, "both")
    check(2, 3, 3000, dtype, "g1")


@needs_triton
@pytest.mark.usefixtures("kernel_only")
@pytest.mark.parametrize("gates", GATES)
@pytest.mark.parametrize(
    ("block", "spans"),
    [(64, 5), (64, 1), (64, None), (64, 1000), (128, 3), (16, 7)],
)
def test_several_tiles_and_spans_per_channel(block, spans, gates) -> None:
    """A small block gives many tiles per channel; the spans split them (last one shorter)."""
    check(3, 2, 1000, torch.bfloat16, gates, block=block, spans=spans)
    check(5, 1, 7, torch.float32, gates, block=block, spans=spans)  # 2-D tiles (rows x 8)


TILE_CASES = [
    (1, 1, 1024), (3, 7, 1024), (8, 2**19, 1024), (4, 1025, 1024), (1, 97, 1024),
    (100, 97, 1024), (3, 1000, 64), (5, 7, 16), (2, 2**20 + 1, 1024),
]  # fmt: skip


def test_tile_shape() -> None:
    for batch, seq_len, block in TILE_CASES:
        bb, bt = _tile_shape(batch, seq_len, block)
        assert bb * bt <= block and bb & (bb - 1) == 0 and bt & (bt - 1) == 0
        assert bb < 2 * batch and bt < 2 * seq_len
        padded = -(-seq_len // bt) * bt
        assert bt <= 32 or padded * 8 <= seq_len * 9
    assert _tile_shape(8, 2**19, 1024) == (1, 1024)
    assert _tile_shape(4, 1025, 1024) == (4, 128)


@needs_triton
@pytest.mark.usefixtures("kernel_only")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_zero_products_give_exactly_zero(dtype) -> None:
    u, g1, dy, g2 = make(3, 4, 97, dtype, "both")
    u[:, 1] = 0
    g2[:, 2] = 0
    dy[:, 3, ::2] = 0
    g1[:, 3, 1::2] = 0
    got = skip_gradient(u, g1, dy, g2, block=32, spans=3)
    assert got[1:].tolist() == [0.0, 0.0, 0.0]
    assert got[0] != 0
    assert_close(got, skip_gradient_ref(u, g1, dy, g2), abs_sum(u, g1, dy, g2))


@needs_triton
@pytest.mark.usefixtures("kernel_only")
def test_deterministic_and_non_contiguous() -> None:
    u, g1, dy, g2 = make(3, 4, 300, torch.bfloat16, "both")
    first = skip_gradient(u, g1, dy, g2, block=64, spans=3)
    assert torch.equal(first, skip_gradient(u, g1, dy, g2, block=64, spans=3))
    # (B, L, H) storage seen as (B, H, L): copied to contiguous first
    ut = u.transpose(1, 2).contiguous().transpose(1, 2)
    assert not ut.is_contiguous()
    assert torch.equal(first, skip_gradient(ut, g1, dy, g2, block=64, spans=3))


@needs_triton
@pytest.mark.usefixtures("kernel_only")
def test_empty_inputs() -> None:
    for shape in [(0, 3, 5), (2, 3, 0)]:
        got = skip_gradient(torch.ones(shape), None, torch.ones(shape), None)
        assert got.dtype == torch.float32 and got.tolist() == [0.0, 0.0, 0.0]
    assert skip_gradient(torch.ones(2, 0, 5), None, torch.ones(2, 0, 5), None).shape == (0,)


# ---------------------------------------------------------------------------------------------
# fallback and validation
# ---------------------------------------------------------------------------------------------


def test_reference_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    args = make(2, 3, 50, torch.float32, "both", device="cpu")
    want = skip_gradient_ref(*args)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert torch.equal(skip_gradient(*args), want)  # CPU without the interpreter
    monkeypatch.undo()
    args64 = tuple(t.double() for t in args)  # float64: not a kernel dtype
    assert torch.equal(skip_gradient(*args64), skip_gradient_ref(*args64))


def test_reference_twin_formula() -> None:
    u, g1, dy, g2 = make(2, 3, 20, torch.bfloat16, "both", device="cpu")
    want = ((u.double() * g1.double()) * (dy.double() * g2.double())).sum(dim=(0, 2))
    got = skip_gradient_ref(u, g1, dy, g2)
    assert got.dtype == torch.float32 and got.shape == (3,)
    assert_close(got, want, abs_sum(u, g1, dy, g2))
    assert torch.equal(skip_gradient_ref(u, None, dy, None), (u.float() * dy.float()).sum((0, 2)))


def test_validation_errors() -> None:
    u = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="u must be 3-D"):
        skip_gradient(torch.zeros(3, 4), None, torch.zeros(3, 4), None)
    with pytest.raises(ValueError, match=r"dy must have the shape of u \(2, 3, 4\)"):
        skip_gradient(u, None, torch.zeros(2, 3, 5), None)
    with pytest.raises(ValueError, match="g1 must have the shape of u"):
        skip_gradient(u, torch.zeros(1, 3, 4), u, None)
    with pytest.raises(ValueError, match="g2 must have the shape of u"):
        skip_gradient(u, None, u, torch.zeros(2, 3))


@needs_triton
def test_bad_block_or_spans() -> None:
    u = torch.zeros(2, 3, 4, device=DEV)
    with pytest.raises(ValueError, match="block must be a power of two"):
        skip_gradient(u, None, u, None, block=48)
    with pytest.raises(ValueError, match="spans must be >= 1"):
        skip_gradient(u, None, u, None, spans=0)


# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------


def exact64(u, g1, dy, g2, chunk=4) -> torch.Tensor:
    """(H,) float64 sum of (g1 u)(g2 dy), computed a few channels at a time (bounded memory)."""
    out = []
    for h in range(0, u.shape[1], chunk):
        sl = slice(h, h + chunk)
        x = u[:, sl].double()
        if g1 is not None:
            x *= g1[:, sl]
        z = dy[:, sl].double()
        if g2 is not None:
            z *= g2[:, sl]
        out.append((x * z).sum(dim=(0, 2)))
        del x, z
    return torch.cat(out)


def abs64(u, g1, dy, g2, chunk=4) -> torch.Tensor:
    return torch.cat([
        abs_sum(u[:, h : h + chunk], None if g1 is None else g1[:, h : h + chunk],
                dy[:, h : h + chunk], None if g2 is None else g2[:, h : h + chunk])
        for h in range(0, u.shape[1], chunk)
    ])  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs CUDA")
@pytest.mark.usefixtures("kernel_only")
def test_gpu_large_bf16_with_gates() -> None:
    B, H, L = 8, 48, 2**19
    g = torch.Generator(device="cuda").manual_seed(0)
    u, g1, dy, g2 = (
        torch.randn(B, H, L, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(4)
    )
    want = exact64(u, g1, dy, g2)
    scale = abs64(u, g1, dy, g2)
    got = skip_gradient(u, g1, dy, g2)
    assert got.device.type == "cuda"
    assert_close(got, want, scale)
    assert_close(skip_gradient_ref(u, g1, dy, g2), want, scale)
    assert torch.equal(got, skip_gradient(u, g1, dy, g2))  # deterministic


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs CUDA")
@pytest.mark.usefixtures("kernel_only")
def test_gpu_offsets_past_2_31() -> None:
    """B * H * L > 2**31 elements (rows b = 2 lie past 2**31): int64 offsets; 12.9 GB."""
    B, H, L = 3, 16, 2**26
    g = torch.Generator(device="cuda").manual_seed(1)
    u = torch.randn(B, H, L, device="cuda", generator=g, dtype=torch.bfloat16)
    dy = torch.randn(B, H, L, device="cuda", generator=g, dtype=torch.bfloat16)
    got = skip_gradient(u, None, dy, None)
    assert_close(got, exact64(u, None, dy, None, chunk=1), abs64(u, None, dy, None, chunk=1))
