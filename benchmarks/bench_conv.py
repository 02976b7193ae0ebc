"""Benchmark: Triton Monarch FFT convolution vs PyTorch's rfft convolution (and FlashFFTConv).

Reproduces FlashFFTConv's own workload as measured in ``../shared/anchors/flashfftconv_h100.md``
(B=64, H=768, capped for long FFTs exactly as in that table; bf16 input, fp32 filter (H, L)):

* ``circular``: input length = FFT size (circular convolution),
* ``padded``: input length = FFT size / 2 (causal linear convolution, what Hyena uses),
* ``gated_padded``: ``y = postgate * ((pregate * u) conv k)``, L = FFT size / 2,
* ``padded_bwd``: forward + backward of ``padded`` (gradients w.r.t. u and k).

In the same run it measures the device-to-device copy bandwidth and PyTorch's rfft
convolution, and prints per size: the memory floor (bytes of u read + y written + k read
(+ gates) / copy bandwidth), PyTorch ms, ours ms (filter spectrum precomputed once, as a model
would cache it) and ours including the spectrum computation, ours / floor, our speed-up over
PyTorch, FlashFFTConv's speed-up over PyTorch from the anchors file, our speed-up divided by
FlashFFTConv's (``ours_vs_ffc``; the forward bar is >= 2), FlashFFTConv's time from the
anchors and that time over ours (``ffc_ms_over_ours``: across cards when this one is not the
anchors' card, which the header then says), and our relative error against a float64
convolution of the same rounded inputs (first 2 x 8 rows).

Run from the repository root (dnastream need not be installed; ``src`` is put on sys.path)::

    python benchmarks/bench_conv.py --csv bench_conv.csv
    python benchmarks/bench_conv.py --quick                  # a few sizes, fewer repetitions
    python benchmarks/bench_conv.py --sizes 4096,32768 --modes padded,padded_bwd
    python benchmarks/bench_conv.py --sweep --sizes 1024,4096  # also time plan variants
    python benchmarks/bench_conv.py --graphs --modes padded_bwd # + CUDA-graph replays
    python benchmarks/bench_conv.py --device cpu             # tiny smoke run (Triton interpreter)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import math
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

ANCHORS = REPO.parent / "shared" / "anchors" / "flashfftconv_h100.md"
MODES = ("circular", "padded", "gated_padded", "padded_bwd")
DEFAULT_SIZES = [1 << e for e in range(8, 23)]  # 256 .. 4M, as in the anchors table


# ---------------------------------------------------------------------------------------------
# Anchors (FlashFFTConv measurements on an H100)
# ---------------------------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def load_anchors(path: Path) -> tuple[dict, dict]:
    """Forward rows keyed by (mode, N) and fwd+bwd rows keyed by N (dicts of column -> text)."""
    fwd: dict[tuple[str, int], dict[str, str]] = {}
    bwd: dict[int, dict[str, str]] = {}
    if not path.is_file():
        return fwd, bwd
    header: list[str] | None = None
    section = ""
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip().lower()
            header = None
            continue
        if not line.startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set(line.replace("|", "").strip()) <= set("-: "):
            continue
        row = dict(zip(header, cells, strict=False))
        if section.startswith("fft convolution, forward +"):
            try:
                bwd[int(row["fft size"])] = row
            except (KeyError, ValueError):
                pass
        elif section.startswith("fft convolution, forward"):
            try:
                fwd[(row["mode"], int(row["fft size"]))] = row
            except (KeyError, ValueError):
                pass
    return fwd, bwd


def _num(text: str | None) -> float | None:
    if text is None:
        return None
    m = re.match(r"^\s*([0-9.]+(?:e[-+]?\d+)?)\s*$", text)
    return float(m.group(1)) if m else None


def _anchor_card(path: Path) -> str:
    """The card the anchors file names (``flashfftconv_h100.md``: ``H100``)."""
    tag = path.stem.rsplit("_", 1)[-1]
    return tag.upper() if tag[:1].isalpha() and tag[1:].isdigit() else "other card"


def workload(mode: str, n: int, anchors_fwd: dict) -> tuple[int, int, int]:
    """(B, H, L) for a mode and FFT size: the anchors table's, else FlashFFTConv's rule."""
    base = "padded" if mode == "padded_bwd" else mode
    row = anchors_fwd.get((base, n))
    if row is not None:
        return int(row["b"]), int(row["h"]), int(row["l"])
    if n <= 8192:
        b, h = 64, 768
    elif n <= 65536:
        b, h = max(8, 64 * 8192 // n), 768
    else:
        b, h = 8, max(4, min(768, 768 * 65536 // n)) if n <= (1 << 20) else max(1, (1 << 26) // n)
    return b, h, (n if base == "circular" else n // 2)


# ---------------------------------------------------------------------------------------------
# Implementations
# ---------------------------------------------------------------------------------------------


def torch_rfft_conv(torch, u, k, pregate=None, postgate=None, causal=True):
    """PyTorch baseline: fp32 rfft convolution (as FlashFFTConv's benchmark reference)."""
    seq_len = u.shape[-1]
    n = 2 * seq_len if causal else seq_len
    x = u.float()
    if pregate is not None:
        x = x * pregate.float()
    kf = torch.fft.rfft(k.float(), n=n)
    y = torch.fft.irfft(torch.fft.rfft(x, n=n) * kf, n=n)[..., :seq_len]
    if postgate is not None:
        y = y * postgate.float()
    return y.to(u.dtype)


def ref64(torch, u, k, pregate=None, postgate=None, causal=True, freq_keep=None):
    if freq_keep is not None:  # the frequency-sparse reference, in float64
        from dnastream.kernels.fftconv_ref import fftconv_ref

        g1 = None if pregate is None else pregate.double()
        g2 = None if postgate is None else postgate.double()
        return fftconv_ref(
            u.double(), k.double(), pregate=g1, postgate=g2, causal=causal, freq_keep=freq_keep
        )
    seq_len = u.shape[-1]
    n = 2 * seq_len if causal else seq_len
    x = u.double()
    if pregate is not None:
        x = x * pregate.double()
    y = torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(k.double(), n=n), n=n)
    y = y[..., :seq_len]
    if postgate is not None:
        y = y * postgate.double()
    return y


def rel_err(torch, y, y64) -> float:
    return ((y.double() - y64).norm() / y64.norm()).item()


# ---------------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------------


def graph_ms(torch, timer, fn) -> float | str:
    """Median ms of replaying ``fn`` captured in a CUDA graph (no host work per call: what
    the GPU itself takes). Warmed up on a side stream first, as capture requires."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return timer(graph.replay)
    except Exception as e:  # noqa: BLE001 - reported in the table
        return f"capture fails ({type(e).__name__}: {str(e)[:80]})"
    finally:
        graph = None
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


class Timer:
    def __init__(self, torch, device: str, quick: bool) -> None:
        self.torch = torch
        self.device = device
        self.quick = quick

    def __call__(self, fn) -> float:
        """Median milliseconds of fn()."""
        torch = self.torch
        if self.device == "cuda":
            import triton.testing

            rep = 40 if self.quick else 100
            return float(triton.testing.do_bench(fn, warmup=10, rep=rep, return_mode="median"))
        ts = []
        for _ in range(2):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1e3)
        del torch
        return sorted(ts)[len(ts) // 2]

    def peak_mb(self, fn) -> float | None:
        torch = self.torch
        if self.device != "cuda":
            return None
        torch.cuda.synchronize()
        gc.collect()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        del out
        return peak / 2**20


def copy_bandwidth(torch, device: str, timer: Timer) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + bytes written)."""
    nbytes = (1 << 30) if device == "cuda" else (1 << 24)
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device)
    dst = torch.empty_like(src)

    def copy() -> None:
        dst.copy_(src)

    ms = timer(copy)
    return 2 * nbytes / (ms * 1e-3)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def fmt(x, spec: str = ".3f") -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return format(x, spec)


def plan_variants(base):
    """A few alternative plans around the default, for --sweep."""
    out = []
    seen = set()

    def add(**kw):
        try:
            p = dataclasses.replace(base, **kw)
        except ValueError:
            return
        key = tuple(sorted(kw.items()))
        if key not in seen:
            seen.add(key)
            out.append((kw, p))

    add()
    for w in (4, 8):
        add(num_warps=w)
    if base.rows == 1:
        for c in (16, 32, 64):
            if c <= base.n1:
                add(chunk=c)
                add(chunk=c, num_warps=4 if base.num_warps == 8 else 8)
    else:
        add(hoist=not base.hoist)
        for r in (base.rows // 2, base.rows * 2):
            if r >= 2:
                add(rows=r)
        add(rows=1, chunk=min(32, base.n1))
    for c in (1, 4):
        add(ctas_per_sm=c)
    add(num_stages=2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default=None, help="comma-separated FFT sizes (default 256..4M)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    ap.add_argument("--quick", action="store_true", help="sizes 1K, 4K, 32K, 1M; fewer reps")
    ap.add_argument("--csv", default=None, help="write the rows to this CSV file")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--sweep", action="store_true", help="also time plan variants per size")
    ap.add_argument("--anchors", default=str(ANCHORS))
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    ap.add_argument(
        "--graphs",
        action="store_true",
        help="also time ours and PyTorch replayed from CUDA graphs (the GPU's time alone)",
    )
    ap.add_argument(
        "--graphs-max",
        type=int,
        default=32768,
        help="largest FFT size timed with --graphs (host overhead only matters below; a "
        "graph's private memory pool at the long sizes crowds out the next cases)",
    )
    ap.add_argument(
        "--untuned",
        action="store_true",
        help="use plan_for's defaults even where benchmarks/tune_conv.py --write-cache stored "
        "settings for this GPU",
    )
    ap.add_argument(
        "--freq-keep",
        type=float,
        default=None,
        help="frequency-sparse convolution: keep this fraction of the filter's frequencies "
        "(ours and the float64 reference; PyTorch stays dense)",
    )
    args = ap.parse_args(argv)

    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench_conv: no CUDA GPU visible; use --device cpu for a (tiny) interpreter smoke run"
        )
        return 2

    from dnastream.kernels.fftconv_triton import fftconv_triton, filter_spectrum, plan_for

    dev = args.device
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"unknown modes {bad}")
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    elif args.quick:
        sizes = [1024, 4096, 32768, 1 << 20]
    else:
        sizes = DEFAULT_SIZES
    if dev == "cpu":
        sizes = [n for n in sizes if n <= 1024] or [256, 512]
    anchors_fwd, anchors_bwd = load_anchors(Path(args.anchors))
    timer = Timer(torch, dev, args.quick)

    card = torch.cuda.get_device_name() if dev == "cuda" else "CPU (Triton interpreter)"
    bw = copy_bandwidth(torch, dev, timer)
    import triton

    print(f"# device: {card} | torch {torch.__version__} | triton {triton.__version__}")
    print(f"# device-to-device copy bandwidth: {bw / 1e12:.3f} TB/s (read + write)")
    print(f"# anchors: {args.anchors if anchors_fwd else 'not found'}")
    anchor_card = _anchor_card(Path(args.anchors))
    if anchors_fwd and dev == "cuda" and anchor_card not in torch.cuda.get_device_name():
        print(
            f"# the anchors were measured on an {anchor_card}, not on this card: ours_vs_ffc "
            "sets our speed-up over PyTorch here beside FlashFFTConv's over PyTorch there, and "
            "ffc_ms_over_ours FlashFFTConv's time there over ours here"
        )
    cols = [
        "mode",
        "N",
        "B",
        "H",
        "L",
        "floor_ms",
        "torch_ms",
        "ours_ms",
        "ours+spec_ms",
        "ours/floor",
        "speedup_vs_torch",
        "ffc_speedup_vs_torch",
        "ours_vs_ffc",
        "ffc_ms",
        "ffc_ms_over_ours",
        "ours_rel_err",
        "torch_rel_err",
        "ours_peak_MB",
        "torch_peak_MB",
        "plan",
    ]
    if args.graphs:  # CUDA-graph replays: the GPU's time without Python/launch overhead
        cols += ["ours_graph_ms", "torch_graph_ms", "graph_speedup_vs_torch"]
    print(" | ".join(cols))
    rows_out: list[dict] = []
    gen = torch.Generator(device=dev).manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=dev)

    def bench_case(mode: str, n: int) -> dict:
        B, H, L = workload(mode, n, anchors_fwd)
        if dev == "cpu":
            B, H = 2, 4
        causal = mode != "circular"
        gated = mode == "gated_padded"
        bwd = mode == "padded_bwd"
        row: dict = dict(mode=mode, N=n, B=B, H=H, L=L)
        u = randn(B, H, L).to(torch.bfloat16)
        k = randn(H, L) / math.sqrt(L)
        g1 = g2 = None
        if gated:
            g1 = randn(B, H, L).to(torch.bfloat16)
            g2 = randn(B, H, L).to(torch.bfloat16)
        plan = plan_for(L, L, causal, u.dtype, batch=B, freq_keep=args.freq_keep)
        tuned = False
        if plan is not None and args.freq_keep is None and not args.untuned:
            from dnastream.kernels import autotune

            tplan = autotune.tuned_plan(L, L, causal, u.dtype, batch=B, gated=gated, device=dev)
            tuned, plan = tplan != plan, tplan
        row["plan"] = plan.describe() if plan is not None else "torch fallback"
        if tuned:
            row["plan"] += " (tuned: stored settings for this card or its chip)"
        spec = filter_spectrum(k, plan) if plan is not None else None
        act = B * H * L * u.element_size()
        if bwd:  # fwd: u, y, k; bwd: dy, u, k in, du, dk out
            nbytes = 5 * act + 3 * k.numel() * 4
        else:
            nbytes = act * (2 + (2 if gated else 0)) + k.numel() * 4
        row["floor_ms"] = nbytes / bw * 1e3

        def ours():
            return fftconv_triton(
                u, k, pregate=g1, postgate=g2, causal=causal, k_spectrum=spec, plan=plan
            )

        def ours_spec():
            return fftconv_triton(
                u, k, pregate=g1, postgate=g2, causal=causal, freq_keep=args.freq_keep
            )

        def theirs():
            return torch_rfft_conv(torch, u, k, g1, g2, causal)

        sl = (slice(0, 2), slice(0, 8))
        if bwd:
            ur = u.clone().requires_grad_(True)
            kr = k.clone().requires_grad_(True)
            dy = randn(B, H, L).to(torch.bfloat16)

            def ours_fb():
                ur.grad = kr.grad = None
                fftconv_triton(ur, kr, causal=True, plan=plan).backward(dy)

            def theirs_fb():
                ur.grad = kr.grad = None
                torch_rfft_conv(torch, ur, kr, causal=True).backward(dy)

            ours_fb()  # compile, and the gradients checked below
            u64 = u[sl].double().requires_grad_(True)
            ref64(torch, u64, k[:8], freq_keep=args.freq_keep).backward(dy[sl].double())
            row["ours_rel_err"] = rel_err(torch, ur.grad[sl], u64.grad)
            row["ours_ms"] = timer(ours_fb)
            row["ours+spec_ms"] = row["ours_ms"]
            row["ours_peak_MB"] = timer.peak_mb(ours_fb)
            if not args.no_torch:
                row["torch_ms"] = timer(theirs_fb)
                row["torch_peak_MB"] = timer.peak_mb(theirs_fb)
            anchor = anchors_bwd.get(n)
            if anchor is not None:
                t_ms = _num(anchor.get("torch rfft ms"))
                f_ms = _num(anchor.get("flashfftconv ms"))
                if t_ms and f_ms:
                    row["ffc_speedup_vs_torch"] = t_ms / f_ms
                    row["ffc_ms"] = f_ms
        else:
            y = ours()  # compile + warm
            y64 = ref64(
                torch,
                u[sl],
                k[:8],
                g1[sl] if g1 is not None else None,
                g2[sl] if g2 is not None else None,
                causal,
                args.freq_keep,
            )
            row["ours_rel_err"] = rel_err(torch, y[sl], y64)
            del y
            row["ours_ms"] = timer(ours)
            row["ours+spec_ms"] = timer(ours_spec)
            row["ours_peak_MB"] = timer.peak_mb(ours_spec)
            if not args.no_torch:
                yt = theirs()
                row["torch_rel_err"] = rel_err(torch, yt[sl], y64)
                del yt
                row["torch_ms"] = timer(theirs)
                row["torch_peak_MB"] = timer.peak_mb(theirs)
            anchor = anchors_fwd.get((mode, n))
            if anchor is not None:
                row["ffc_speedup_vs_torch"] = _num(anchor.get("flashfftconv speed-up vs rfft"))
                row["ffc_ms"] = _num(anchor.get("flashfftconv ms"))
            if args.sweep and plan is not None:
                for kw, p in plan_variants(plan):
                    try:

                        def fn(p=p):
                            return fftconv_triton(
                                u,
                                k,
                                pregate=g1,
                                postgate=g2,
                                causal=causal,
                                k_spectrum=spec,
                                plan=p,
                            )

                        fn()
                        print(f"#   sweep N={n} {mode} {kw or 'default'}: {timer(fn):.4f} ms")
                    except Exception as e:  # noqa: BLE001
                        print(f"#   sweep N={n} {mode} {kw}: fails ({type(e).__name__}: {e})")
        if args.graphs and dev == "cuda" and n <= args.graphs_max:
            fo, ft = (ours_fb, theirs_fb) if bwd else (ours, theirs)
            row["ours_graph_ms"] = graph_ms(torch, timer, fo)
            if not args.no_torch:
                row["torch_graph_ms"] = graph_ms(torch, timer, ft)
                if isinstance(row["ours_graph_ms"], float) and isinstance(
                    row["torch_graph_ms"], float
                ):
                    row["graph_speedup_vs_torch"] = row["torch_graph_ms"] / row["ours_graph_ms"]
        row["ours/floor"] = row["ours_ms"] / row["floor_ms"]
        if row.get("ffc_ms"):  # FlashFFTConv's time on the anchors' card over ours on this one
            row["ffc_ms_over_ours"] = row["ffc_ms"] / row["ours_ms"]
        if row.get("torch_ms"):
            row["speedup_vs_torch"] = row["torch_ms"] / row["ours_ms"]
            if row.get("ffc_speedup_vs_torch"):  # the bar: >= 2 (forward)
                row["ours_vs_ffc"] = row["speedup_vs_torch"] / row["ffc_speedup_vs_torch"]
        return row

    for mode in modes:
        for n in sizes:
            try:
                row = bench_case(mode, n)
            except Exception as e:  # noqa: BLE001 - report and go on with the next size
                B, H, L = workload(mode, n, anchors_fwd)
                msg = f"fails ({type(e).__name__}: {str(e)[:160]})"
                row = dict(mode=mode, N=n, B=B, H=H, L=L, ours_ms=msg)
            gc.collect()
            if dev == "cuda":
                torch.cuda.empty_cache()
            rows_out.append(row)
            print(
                " | ".join(
                    fmt(row.get(c), ".2e" if "err" in c else ".3f")
                    if c not in ("mode", "N", "B", "H", "L", "plan")
                    else str(row.get(c, "-"))
                    for c in cols
                ),
                flush=True,
            )

    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols + ["device", "copy_TBps"])
            w.writeheader()
            for r in rows_out:
                w.writerow({**r, "device": card, "copy_TBps": bw / 1e12})
        print(f"# wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
