"""Host (CPU) time per call of each piece of a forward+backward step, on CUDA.

At FFT sizes 256-1K the ``padded_bwd`` step of ``bench_conv`` is bound by the host: its CUDA
graph replays in 0.3-0.9 ms, eager it takes 0.8-1.5 ms. This prints, per piece, the host time
to enqueue one call (``iters`` calls back to back, no synchronisation in between: the GPU work
of these pieces is shorter than their host time, so the queue never fills), to say which piece
to cut. Baselines: an empty Triton kernel with 3 and with 24 arguments, ``torch.empty``, a
trivial ``autograd.Function`` forward+backward.

    python benchmarks/profile_host_ops.py --sizes 256,1024
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from dnastream.kernels.fftconv_triton import (  # noqa: E402
    _conv,
    _filter_gradient,
    _xcorr,
    conv_backward,
    fftconv_triton,
    plan_for,
)
from dnastream.kernels.monarch import filter_spectrum, layout_for  # noqa: E402
from dnastream.kernels.spectrum_reorder import storage_spectrum  # noqa: E402


@triton.jit
def _empty3(a_ptr, b_ptr, n):
    pass


@triton.jit
def _empty24(
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11,
    i0, i1, i2, i3, i4, i5, i6, i7,
    C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr, C3: tl.constexpr,
):  # fmt: skip
    pass


class _Identity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g


def host_us(fn: Callable[[], object], iters: int) -> float:
    """Mean host microseconds per call, ``iters`` calls enqueued back to back."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / iters * 1e6


def size_rows(n: int, batch: int, heads: int, iters: int, dev: torch.device) -> list:
    """(N, piece, host µs) rows of one FFT size (``padded_bwd``: L = N / 2, bf16)."""
    rows: list[tuple[str, str, float]] = []
    b, h, seq = batch, heads, n // 2
    u = torch.randn(b, h, seq, device=dev, dtype=torch.bfloat16)
    k = torch.randn(h, seq, device=dev) / seq
    dy = torch.randn_like(u)
    plan = plan_for(seq, seq, True, u.dtype, batch=b)
    assert plan is not None
    spec = filter_spectrum(k, plan)
    r = torch.fft.rfft(k, n=plan.n)
    lay = layout_for(plan, dev)
    ur = u.detach().clone().requires_grad_(True)
    kr = k.detach().clone().requires_grad_(True)
    s_sto, _ = _xcorr(plan, u, None, dy, None, want_dd=False)
    needs = (True, True, False, False, False)
    pieces: dict[str, Callable[[], object]] = {
        "filter_spectrum (as used)": lambda: filter_spectrum(k, plan),
        "rfft + storage_spectrum": lambda: storage_spectrum(
            torch.fft.rfft(k, n=plan.n), lay, 1.0 / plan.n, None
        ),
        "storage_spectrum alone": lambda: storage_spectrum(r, lay, 1.0 / plan.n, None),
        "_conv forward (kernel launch + buffers)": lambda: _conv(
            plan, u, None, spec, False, None, None, None
        ),
        "fftconv_triton forward, spectrum given": lambda: fftconv_triton(
            u, k, plan=plan, k_spectrum=spec
        ),
        "fftconv_triton forward": lambda: fftconv_triton(u, k, plan=plan),
        "conv_backward (du, dk)": lambda: conv_backward(
            plan, dy, u, k, None, None, None, spec, needs
        ),
        "_xcorr": lambda: _xcorr(plan, u, None, dy, None, want_dd=False),
        "_filter_gradient": lambda: _filter_gradient(plan, s_sto, k),
        "full step: fwd + backward": lambda: fftconv_triton(ur, kr, plan=plan).backward(dy),
    }
    for name, fn in pieces.items():
        rows.append((str(n), name, host_us(fn, iters)))
    print(f"# N={n}: {plan.describe()}")
    return rows


def breakdown(n: int, batch: int, heads: int, iters: int, dev: torch.device) -> None:
    """Where the host time of one autograd step goes: timers around the autograd Function's
    forward and backward, the filter spectrum and the backward's pieces, against the whole
    step; then torch.profiler's CPU table (self CPU time per op) of the same steps."""
    import dnastream.kernels.fftconv_triton as ft

    seq = n // 2
    ur = torch.randn(batch, heads, seq, device=dev, dtype=torch.bfloat16, requires_grad=True)
    kr = (torch.randn(heads, seq, device=dev) / seq).requires_grad_(True)
    dy = torch.randn(batch, heads, seq, device=dev, dtype=torch.bfloat16)
    plan = plan_for(seq, seq, True, ur.dtype, batch=batch)
    totals: dict[str, float] = {}

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    saved = {
        "Fn.forward": ft._FFTConvFn.forward,
        "Fn.backward": ft._FFTConvFn.backward,
        "filter_spectrum": ft.filter_spectrum,
        "conv_backward": ft.conv_backward,
        "_conv": ft._conv,
        "_xcorr": ft._xcorr,
        "_filter_gradient": ft._filter_gradient,
        "_validate": ft._validate,
    }
    for name, fn in saved.items():
        if name.startswith("Fn."):
            setattr(ft._FFTConvFn, name[3:], staticmethod(timed(name, fn)))
        else:
            setattr(ft, name, timed(name, fn))

    def step() -> None:
        ft.fftconv_triton(ur, kr, plan=plan).backward(dy)

    try:
        whole = host_us(step, iters)
        totals.clear()
        whole = host_us(step, iters)
    finally:
        for name, fn in saved.items():
            if name.startswith("Fn."):
                setattr(ft._FFTConvFn, name[3:], staticmethod(fn))
            else:
                setattr(ft, name, fn)
    u0, k0 = ur.detach(), kr.detach()
    needs = (True, True, False, False, False)

    def manual() -> None:  # the same work, no autograd: all on this thread
        spec = ft.filter_spectrum(k0, plan)
        ft.conv_forward(plan, u0, spec, None, None, None)
        ft.conv_backward(plan, dy, u0, k0, None, None, None, spec, needs)

    def fwd_graph() -> None:  # the autograd forward alone (graph built, no backward)
        ft.fftconv_triton(ur, kr, plan=plan)

    for name, fn in (("manual step (no autograd)", manual), ("autograd forward only", fwd_graph)):
        print(f"## {name}: {host_us(fn, iters):.1f} us")
    # does any piece synchronise with the GPU? (CUDA's sync debug mode: warn with a stack)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    print(f"## synchronising calls in one step: {len(caught)}")
    for w in caught[:5]:
        print(f"##   {w.filename}:{w.lineno}: {str(w.message)[:200]}")
    print(f"## breakdown N={n}: whole step {whole:.1f} us (host); parts, us per step:")
    for name, t in totals.items():
        print(f"##   {name}: {t / (iters + 5) * 1e6:.1f}")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(20):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--heads", type=int, default=768)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--breakdown", type=int, default=0, help="FFT size: where a step's time goes")
    args = ap.parse_args()
    dev = torch.device("cuda")
    print(f"# device: {torch.cuda.get_device_name(dev)} | torch {torch.__version__} | "
          f"triton {triton.__version__}")  # fmt: skip
    if args.breakdown:
        breakdown(args.breakdown, args.batch, args.heads, args.iters, dev)
        return
    rows: list[tuple[str, str, float]] = []
    a = torch.empty(1024, device=dev)
    ptrs = [torch.empty(1024, device=dev) for _ in range(12)]
    base = {
        "triton empty kernel, 3 args": lambda: _empty3[(1,)](a, a, 7),
        "triton empty kernel, 24 args": lambda: _empty24[(1,)](
            *ptrs, *range(3, 11), C0=1, C1=2, C2=3, C3=4
        ),
        "torch.empty (64, 768, 128)": lambda: torch.empty((64, 768, 128), device=dev),
        "autograd.Function fwd+bwd (clone)": None,
    }
    xg = torch.randn(64, 768, 128, device=dev, requires_grad=True)
    gy = torch.randn(64, 768, 128, device=dev)

    def identity_step() -> None:
        _Identity.apply(xg).backward(gy)

    base["autograd.Function fwd+bwd (clone)"] = identity_step
    for name, fn in base.items():
        rows.append(("-", name, host_us(fn, args.iters)))  # type: ignore[arg-type]

    for n in (int(s) for s in args.sizes.split(",")):
        rows += size_rows(n, args.batch, args.heads, args.iters, dev)
    print("N | piece | host_us_per_call")
    for n, name, us in rows:
        print(f"{n} | {name} | {us:.1f}")


if __name__ == "__main__":
    main()
