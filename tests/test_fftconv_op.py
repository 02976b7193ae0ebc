"""The ``dnastream::fftconv`` custom operator: opcheck, autograd, torch.compile, both branches.

CPU: the op runs the PyTorch reference (forward) and the explicit reference gradients
(:func:`fftconv_backward_ref`); with ``fftconv_op.INTERPRET_ON_CPU`` the Triton branch runs under
``TRITON_INTERPRET=1``. The ``gpu`` class checks the CUDA (Triton) branch and the dispatch.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from dnastream.kernels import fftconv, fftconv_op
from dnastream.kernels.fftconv_ref import fftconv_backward_ref, fftconv_ref

OP = torch.ops.dnastream.fftconv.default


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def make(B, H, L, Lk, dtype=torch.float32, device="cpu", seed=0, kdtype=torch.float32):
    g = torch.Generator(device=device).manual_seed(seed)

    def r(*s, dt=dtype):
        return torch.randn(*s, generator=g, device=device, dtype=torch.float32).to(dt)

    return (
        r(B, H, L),
        r(H, Lk, dt=kdtype) / Lk**0.5,
        r(H, dt=kdtype),
        r(B, H, L),
        r(B, H, L),
    )


def reference_grads(u, k, D, g1, g2, dy, causal):
    leaves = [t.detach().double().requires_grad_(True) if t is not None else None
              for t in (u, k, D, g1, g2)]  # fmt: skip
    y = fftconv_ref(*leaves[:3], pregate=leaves[3], postgate=leaves[4], causal=causal)
    inputs = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(y, inputs, dy.double()))
    return y, [next(grads) if t is not None else None for t in leaves]


# ---------------------------------------------------------------------------------------------
# The explicit reference backward
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("causal", "L", "Lk"), [(True, 37, 20), (True, 16, 40), (True, 1, 1), (False, 32, 9)]
)
@pytest.mark.parametrize("with_gates", [True, False])
def test_backward_ref_equals_autograd_float64(causal, L, Lk, with_gates) -> None:
    u, k, D, g1, g2 = (t.double() for t in make(3, 4, L, Lk, seed=L + Lk))
    if not with_gates:
        g1 = g2 = None
    dy = torch.randn(3, 4, L, dtype=torch.float64)
    _, want = reference_grads(u, k, D, g1, g2, dy, causal)
    got = fftconv_backward_ref(dy, u, k, D, pregate=g1, postgate=g2, causal=causal)
    for name, a, b in zip(("du", "dk", "dD", "dg1", "dg2"), got, want, strict=True):
        if b is None:
            assert a is None, name
        else:
            assert a.dtype == b.dtype and a.shape == b.shape, name
            assert rel_err(a, b) < 1e-12, name


def test_backward_ref_computes_only_what_is_needed() -> None:
    u, k, D, g1, g2 = (t.double() for t in make(2, 3, 50, 30))
    dy = torch.randn(2, 3, 50, dtype=torch.float64)
    full = fftconv_backward_ref(dy, u, k, D, pregate=g1, postgate=g2)
    for needs in itertools.product((False, True), repeat=5):
        part = fftconv_backward_ref(dy, u, k, D, pregate=g1, postgate=g2, needs=needs)
        for need, a, b in zip(needs, part, full, strict=True):
            assert (a is None) == (not need)
            if need:
                assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# The custom op on the CPU (reference branch)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("causal", "L", "Lk"), [(True, 100, 40), (True, 20, 50), (False, 64, 64)])
def test_opcheck_reference_branch(dtype, causal, L, Lk) -> None:
    u, k, D, g1, g2 = make(2, 3, L, Lk, dtype, kdtype=dtype)
    for t in (u, k, D, g1, g2):
        t.requires_grad_(True)
    torch.library.opcheck(OP, (u, k, D, g1, g2, None, causal))
    torch.library.opcheck(OP, (u, k, None, None, None, None, causal))
    torch.library.opcheck(OP, (u, k, D, None, g2, None, causal))


def test_op_forward_and_gradients_match_the_reference_on_cpu() -> None:
    u, k, D, g1, g2 = make(3, 2, 90, 33)
    leaves = [t.requires_grad_(True) for t in (u, k, D, g1, g2)]
    y = torch.ops.dnastream.fftconv(*leaves, None, True)
    dy = torch.randn_like(y)
    y64, want = reference_grads(u, k, D, g1, g2, dy, True)
    assert rel_err(y, y64) < 1e-5
    got = torch.autograd.grad(y, leaves, dy)
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) < 1e-5


def test_op_gradients_only_for_inputs_that_need_them() -> None:
    u, k, D, g1, g2 = make(2, 2, 60, 20)
    k.requires_grad_(True)
    g2.requires_grad_(True)
    y = torch.ops.dnastream.fftconv(u, k, D, g1, g2, None, True)
    dk, dg2 = torch.autograd.grad(y, [k, g2], torch.ones_like(y))
    _, want = reference_grads(u, k, D, g1, g2, torch.ones_like(y), True)
    assert rel_err(dk, want[1]) < 1e-5 and rel_err(dg2, want[4]) < 1e-5


def test_torch_compile_traces_the_op_fullgraph() -> None:
    u, k, D, g1, g2 = make(2, 3, 80, 30)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(u, k, D, g1, g2):
        return torch.ops.dnastream.fftconv(u, k, D, g1, g2, None, True) * 2.0 + 1.0

    leaves = [t.requires_grad_(True) for t in (u, k, D, g1, g2)]
    yc = f(*leaves)
    ye = torch.ops.dnastream.fftconv(*leaves, None, True) * 2.0 + 1.0
    assert torch.allclose(yc, ye, rtol=1e-6, atol=1e-6)
    gc = torch.autograd.grad(yc.sum(), leaves)
    ge = torch.autograd.grad(ye.sum(), leaves)
    for a, b in zip(gc, ge, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fake_shapes_under_fake_mode() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        u = torch.empty(2, 3, 50, dtype=torch.bfloat16)
        k = torch.empty(3, 20)
        D = torch.empty(3)
        y = torch.ops.dnastream.fftconv(u, k, D, None, None, None, True)
        assert y.shape == u.shape and y.dtype == torch.bfloat16
        grads = torch.ops.dnastream.fftconv_backward(
            u, u, k, D, None, None, None, True, True, True, False, False, False
        )
        assert [tuple(g.shape) for g in grads] == [(2, 3, 50), (3, 20), (0,), (0,), (0,)]
        assert grads[0].dtype == torch.bfloat16 and grads[1].dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# The Triton branch of the op, interpreted on the CPU
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def triton_on_cpu(monkeypatch):
    monkeypatch.setattr(fftconv_op, "INTERPRET_ON_CPU", True)
    from dnastream.kernels.fftconv_triton import uses_triton

    if not uses_triton("cpu"):
        pytest.skip("TRITON_INTERPRET is off (conftest sets it without a GPU)")


BARS = {torch.float32: 1e-5, torch.bfloat16: 3e-3, torch.float16: 1e-3}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("causal", "L", "Lk"), [(True, 97, 40), (False, 256, 100)])
def test_triton_branch_forward_backward(triton_on_cpu, dtype, causal, L, Lk) -> None:
    u, k, D, g1, g2 = make(3, 2, L, Lk, dtype, seed=L)
    assert fftconv_op.triton_plan(u, k, causal) is not None
    leaves = [t.requires_grad_(True) for t in (u, k, D, g1, g2)]
    y = torch.ops.dnastream.fftconv(*leaves, None, causal)
    assert y.dtype == dtype
    dy = torch.randn(y.shape).to(dtype)
    y64, want = reference_grads(u, k, D, g1, g2, dy, causal)
    assert rel_err(y, y64) <= BARS[dtype]
    got = torch.autograd.grad(y, leaves, dy)
    for name, a, b in zip(("du", "dk", "dD", "dg1", "dg2"), got, want, strict=True):
        assert rel_err(a, b) <= BARS[dtype], name


def test_a_plan_that_does_not_fit_the_gpu_falls_back_to_the_reference(
    triton_on_cpu, monkeypatch
) -> None:
    """Triton's launch-time OutOfResources (e.g. a big fused plan on a GPU with less shared
    memory) warns once and runs the PyTorch reference, forward and backward."""
    from dnastream.kernels import fftconv_triton as ft

    class OutOfResources(Exception):  # what triton.runtime.errors raises, by name
        pass

    def no_room(*args, **kwargs):
        raise OutOfResources("out of resource: shared memory, Required: 180224, Limit: 101376")

    monkeypatch.setattr(ft, "conv_forward", no_room)
    monkeypatch.setattr(ft, "conv_backward", no_room)
    monkeypatch.setattr(fftconv_op, "_WARNED", set())
    u, k, D, g1, g2 = make(3, 2, 97, 40, torch.bfloat16)
    leaves = [t.requires_grad_(True) for t in (u, k, D, g1, g2)]
    with pytest.warns(RuntimeWarning, match="does not fit this GPU"):
        y = torch.ops.dnastream.fftconv(*leaves, None, True)
    dy = torch.randn(y.shape).to(torch.bfloat16)
    y64, want = reference_grads(u, k, D, g1, g2, dy, True)
    assert rel_err(y, y64) <= 3e-3
    for a, b in zip(torch.autograd.grad(y, leaves, dy), want, strict=True):
        assert rel_err(a, b) <= 3e-3
    # any other error still surfaces
    monkeypatch.setattr(ft, "conv_forward", lambda *a, **kw: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        torch.ops.dnastream.fftconv(u.detach(), k.detach(), None, None, None, None, True)


def test_triton_branch_opcheck_and_cached_spectrum(triton_on_cpu) -> None:
    from dnastream.kernels.fftconv_triton import filter_spectrum

    u, k, D, g1, g2 = make(2, 2, 120, 50)
    plan = fftconv_op.triton_plan(u, k, True)
    spec = filter_spectrum(k, plan)
    leaves = [t.requires_grad_(True) for t in (u, k, D, g1, g2)]
    torch.library.opcheck(OP, (*leaves, spec, True))
    y_cached = torch.ops.dnastream.fftconv(*leaves, spec, True)
    y_fresh = torch.ops.dnastream.fftconv(*leaves, None, True)
    assert torch.equal(y_cached, y_fresh)
    with pytest.raises(ValueError, match="k_spectrum must be float32"):
        torch.ops.dnastream.fftconv(*leaves, spec[:, :, :-1].contiguous(), True)


# ---------------------------------------------------------------------------------------------
# GPU: the CUDA branch is the Triton kernels, and fftconv() dispatches through the op
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
class TestGPU:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
    def test_op_matches_fftconv_triton_and_opcheck(self, dtype) -> None:
        from dnastream.kernels.fftconv_triton import fftconv_triton

        u, k, D, g1, g2 = make(4, 8, 1000, 1000, dtype, device="cuda")
        leaves = [t.requires_grad_(True) for t in (u, k, D, g1, g2)]
        y = torch.ops.dnastream.fftconv(*leaves, None, True)
        y_fn = fftconv_triton(u, k, D=D, pregate=g1, postgate=g2)
        assert torch.equal(y, y_fn)
        dy = torch.randn(y.shape, device="cuda").to(dtype)
        got = torch.autograd.grad(y, leaves, dy)
        want = torch.autograd.grad(y_fn, leaves, dy)
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)
        torch.library.opcheck(OP, (*leaves, None, True))

    def test_dispatch_goes_through_the_op_and_compiles(self) -> None:
        u, k, D, g1, g2 = make(2, 16, 3000, 3000, torch.bfloat16, device="cuda")
        y = fftconv(u, k, D, pregate=g1, postgate=g2)
        y64 = fftconv_ref(u.double(), k.double(), D.double(), pregate=g1.double(),
                          postgate=g2.double())  # fmt: skip
        assert rel_err(y, y64) <= 3e-3

        @torch.compile(fullgraph=True)
        def f(u, k, D, g1, g2):
            return fftconv(u, k, D, pregate=g1, postgate=g2) * 2.0

        assert rel_err(f(u, k, D, g1, g2), 2.0 * y64) <= 3e-3


def test_dispatch_traces_fullgraph_on_cpu() -> None:
    """The backend choice itself (env, device, Triton lookup) is traceable by torch.compile:
    a graph break there failed fullgraph compilation on a GPU (importlib.util.find_spec)."""
    u, k, D, g1, g2 = make(2, 4, 300, 300)

    @torch.compile(fullgraph=True, backend="eager")
    def f(u, k, D, g1, g2):
        return fftconv(u, k, D, pregate=g1, postgate=g2) * 2.0

    y = fftconv_ref(u, k, D, pregate=g1, postgate=g2)
    assert rel_err(f(u, k, D, g1, g2), 2.0 * y) <= 1e-5


def test_compile_through_fftconv_dispatch_triton_branch(triton_on_cpu, monkeypatch) -> None:
    """fftconv() -> Triton backend -> the op traces as one graph (what a compiled model sees)."""
    import sys

    module = sys.modules["dnastream.kernels.fftconv"]
    monkeypatch.setattr(module, "_select_backend", lambda u, context: module._triton_backend)
    monkeypatch.setenv("DNASTREAM_FFTCONV", "triton")
    u, k, D, g1, g2 = make(2, 4, 300, 300, torch.bfloat16)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(u, k, D, g1, g2):
        return fftconv(u, k, D, pregate=g1, postgate=g2) * 2.0

    y64 = fftconv_ref(u.double(), k.double(), D.double(), pregate=g1.double(),
                      postgate=g2.double())  # fmt: skip
    assert rel_err(f(u, k, D, g1, g2), 2.0 * y64) <= 3e-3


@pytest.fixture
def triton_dispatch(triton_on_cpu, monkeypatch):
    """fftconv() takes the Triton backend at every size (under the interpreter here)."""
    import sys

    module = sys.modules["dnastream.kernels.fftconv"]
    monkeypatch.setattr(module, "_select_backend", lambda u, context: module._triton_backend)
    monkeypatch.setenv("DNASTREAM_FFTCONV", "triton")


def _eager_and_operator_grads(inputs, dy, calls: list) -> tuple[list, list[int]]:
    """Gradients of (u, k, D, pregate, postgate) through fftconv() in eager mode and through
    the operators, and how many entries each pass added to ``calls`` (a spy's list)."""
    grads, counts = [], []
    for eager in (True, False):
        calls.clear()
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        if eager:
            y = fftconv(leaves[0], leaves[1], leaves[2], pregate=leaves[3], postgate=leaves[4])
        else:
            y = torch.ops.dnastream.fftconv(*leaves, None, True, None)
        y.backward(dy)
        grads.append([t.grad for t in leaves])
        counts.append(len(calls))
    return grads, counts


def test_eager_training_computes_the_filter_spectrum_once(triton_dispatch, monkeypatch) -> None:
    """fftconv() with gradients in eager mode and a plain filter tensor: the filter spectrum is
    computed once per step (in the forward, kept for the backward; the operators compute it in
    each pass), and the gradients equal the operators' bit for bit."""
    import dnastream.kernels.fftconv_triton as ft

    calls = []
    real = ft.filter_spectrum
    monkeypatch.setattr(ft, "filter_spectrum", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    inputs = make(2, 4, 300, 300, torch.bfloat16)
    dy = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    grads, counts = _eager_and_operator_grads(inputs, dy, calls)
    assert counts == [1, 2], counts  # operators: forward and backward
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)
    # DNASTREAM_EAGER_OPS=off: fftconv() goes through the operators (two spectra)
    monkeypatch.setenv("DNASTREAM_EAGER_OPS", "off")
    calls.clear()
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    fftconv(leaves[0], leaves[1], leaves[2], pregate=leaves[3], postgate=leaves[4]).backward(dy)
    assert len(calls) == 2


def test_eager_training_keeps_the_pair_maxima(triton_dispatch, monkeypatch) -> None:
    """Under outer levels (scaled float16 buffers) the eager path hands the forward's pair
    maxima of (u, pregate) to the backward, which the operators recompute: here (radix 16 over
    2048-point 2-row tiles, ``shared_bwd_outer`` since stop 17) to the shared outer forward of
    u and to dpostgate's convolution, two reductions less per step (2 against 4), the same
    gradients bit for bit."""
    import dnastream.kernels.fftconv_triton as ft

    calls = []
    real = ft._pair_max
    monkeypatch.setattr(ft, "_pair_max", lambda *a: calls.append(1) or real(*a))
    inputs = make(3, 1, 9000, 9000, torch.bfloat16)  # N = 32768: one outer level
    u, k, _, g1, g2 = inputs
    plan = fftconv_op.triton_plan(u, k, True, g1, g2, tuned=True)
    assert plan.outer and plan.outer_fp16 and plan.shared_bwd_outer
    dy = torch.randn(u.shape, generator=torch.Generator().manual_seed(1)).to(u.dtype)
    grads, counts = _eager_and_operator_grads(inputs, dy, calls)
    assert counts == [2, 4], counts
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


_NO_DYNAMO_SCRIPT = """
import os, sys
os.environ["TRITON_INTERPRET"] = "1"
os.environ["DNASTREAM_FFTCONV"] = "triton"
import torch
from dnastream.kernels import fftconv_op
import dnastream.kernels.fftconv
module = sys.modules["dnastream.kernels.fftconv"]  # (the package exports a function of that name)
fftconv_op.INTERPRET_ON_CPU = True
module._select_backend = lambda u, context: module._triton_backend
g = torch.Generator().manual_seed(0)
u = torch.randn(2, 3, 300, generator=g).to(torch.bfloat16)
k = torch.randn(3, 300, generator=g) / 20
with torch.no_grad():
    y = module.fftconv(u, k)
assert "torch._dynamo" not in sys.modules, "inference went through the operator wrapper"
# eager training: the bodies through a plain autograd.Function, no operator either
kk = k.clone().requires_grad_(True)
uu = u.clone().requires_grad_(True)
y_eager = module.fftconv(uu, kk)
dy = torch.randn(y_eager.shape, generator=g).to(y_eager.dtype)
y_eager.backward(dy)
assert "torch._dynamo" not in sys.modules, "eager training went through the operator wrapper"
# the operators themselves (what torch.compile traces): same outputs and gradients, bit for bit
ko = k.clone().requires_grad_(True)
uo = u.clone().requires_grad_(True)
y_op = torch.ops.dnastream.fftconv(uo, ko, None, None, None, None, True, None)
y_op.backward(dy)
assert "torch._dynamo" in sys.modules  # (so the checks above can fail)
assert torch.equal(y, y_op.detach()), "the direct call and the operator differ"
assert torch.equal(y_eager.detach(), y_op.detach()), "eager training and the operator differ"
assert torch.equal(uu.grad, uo.grad) and torch.equal(kk.grad, ko.grad), "gradients differ"
print("ok")
"""


def test_inference_runs_the_kernels_without_the_operator_wrapper() -> None:
    """Outside torch.compile, fftconv() calls the op's bodies without the operator wrapper:
    directly without gradients, through a plain autograd.Function with them. Same outputs
    and gradients as the operators bit for bit, and no ``torch._dynamo`` import (the custom-op
    wrapper imports it on its first call: seconds of a fresh ``dnastream embed`` process).
    Fresh interpreter."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _NO_DYNAMO_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


@pytest.mark.parametrize(
    ("L", "batch", "dtype", "grad", "want"),
    [
        (100, 4, torch.bfloat16, False, True),  # N = 256, inference: fused, always
        (100, 4, torch.bfloat16, True, False),  # N = 256 with gradients: host bound, torch
        (300, 1, torch.float32, True, True),  # fused 512..8192 with gradients, any dtype
        (4000, 1, torch.bfloat16, True, True),
        (4000, 1, torch.float32, True, False),  # fp32 at 8192 points is multi-pass: torch
        (8000, 4, torch.bfloat16, True, True),  # fused 16K with gradients: half, B >= 2
        (8000, 1, torch.bfloat16, True, False),
        (16000, 4, torch.bfloat16, False, True),
        (16000, 4, torch.float32, False, False),
        (100_000, 2, torch.bfloat16, True, True),  # multi-pass with gradients: 64K..1M, B >= 2
        (100_000, 2, torch.bfloat16, False, True),
        (100_000, 1, torch.bfloat16, False, False),  # B = 1: half of each row pair is zeros
        (100_000, 4, torch.float32, False, False),  # fp32 multi-pass: tf32x3, torch
        (500_000, 8, torch.float16, True, True),  # N = 1M
        (600_000, 8, torch.bfloat16, True, True),  # N = 2M: 1.12-1.19x
        (1_500_000, 8, torch.bfloat16, True, True),  # N = 4M with gradients: 1.28x (64x64)
        (1_500_000, 2, torch.bfloat16, True, True),  # B = 2: 32 x 32 over 4096, 1.09x
        (1_500_000, 8, torch.bfloat16, False, True),  # N = 4M forward: 1.09-1.30x
        (3_000_000, 8, torch.bfloat16, False, False),  # N = 8M: not measured, torch
    ],
)
def test_dispatch_policy_follows_the_measurements(L, batch, dtype, grad, want) -> None:
    """Where the default dispatch takes the Triton kernels (``triton_is_faster``): by FFT size,
    batch, dtype and whether gradients are needed, as measured on an H100 (fp32 plans are
    multi-pass above 4096 points and then stay on torch.fft)."""
    from dnastream.kernels.fftconv import triton_is_faster
    from dnastream.kernels.monarch import plan_for

    plan = plan_for(L, L, True, dtype, batch=batch)
    assert triton_is_faster(plan, batch, dtype, grad) is want, plan.describe()


def test_dispatch_of_circular_4m_with_gradients() -> None:
    """Circular 4M with gradients: Triton on the 64 x 64 plan over 1024 points (B >= 3, 1.20x
    torch.fft), torch.fft on the B = 2 plan, 32 x 16 over 8192 points (that structure lost)."""
    from dnastream.kernels.fftconv import triton_is_faster
    from dnastream.kernels.monarch import plan_for

    n = 1 << 22
    wide = plan_for(n, n, False, torch.bfloat16, batch=8)
    assert (wide.outer, wide.inner) == ((64, 64), 1024)
    assert triton_is_faster(wide, 8, torch.bfloat16, True)
    pair = plan_for(n, n, False, torch.bfloat16, batch=2)
    assert (pair.outer, pair.inner) == ((32, 16), 8192)
    assert not triton_is_faster(pair, 2, torch.bfloat16, True)
    assert triton_is_faster(pair, 2, torch.bfloat16, False)
