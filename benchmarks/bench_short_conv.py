"""Benchmark: Triton short causal depthwise conv vs PyTorch Conv1d (and FlashFFTConv's numbers).

Reproduces the "Short depthwise causal convolution, kernel 3, fp16" table of
``../shared/anchors/flashfftconv_h100.md``: shapes (B, C, L) = (1, 768, 1e6), (64, 768, 4096),
(16, 3072, 32768), fp16, width 3. In the same run it measures

* the device-to-device copy bandwidth (bytes read + written, ``Tensor.copy_``),
* PyTorch's depthwise ``conv1d`` (padding W - 1, truncated to L: the anchors' baseline),
* ours: the Triton forward launcher (autotuned) and the public ``short_conv`` (custom op),
* forward + backward (gradients of x, weight, bias) for ours and for PyTorch,

and prints per shape: the memory floor (x read once + y written once, at the copy bandwidth),
PyTorch ms, ours ms, ours / floor, FlashFFTConv's ms from the anchors file, the relative L2
error against a float64 reference (first 2 batch rows x 64 channels) and the autotuned config.
The fwd+bwd floor counts x, y, dy, x (again) and dx: 5 tensors.

Run from the repository root (dnastream need not be installed; ``src`` is put on sys.path)::

    python benchmarks/bench_short_conv.py                       # anchor shapes, fp16, W=3
    python benchmarks/bench_short_conv.py --csv short_conv.csv --dtypes fp16,bf16
    python benchmarks/bench_short_conv.py --layout channels_last  # the model's (B, L, C).mT input
    python benchmarks/bench_short_conv.py --sweep                 # also time every config
    python benchmarks/bench_short_conv.py --graphs                # + fwd+bwd from CUDA graphs
    python benchmarks/bench_short_conv.py --device cpu            # tiny smoke run (interpreter)
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

ANCHORS = REPO.parent / "shared" / "anchors" / "flashfftconv_h100.md"
ANCHOR_SHAPES = [(1, 768, 1_000_000), (64, 768, 4096), (16, 3072, 32768)]
SMOKE_SHAPES = [(1, 8, 300), (2, 6, 64)]


def load_anchor_ms(path: Path) -> dict[tuple[int, int, int], dict[str, float]]:
    """(B, C, L) -> {"floor": ms, "torch": ms, "flash": ms} from the short-conv anchors table."""
    rows: dict[tuple[int, int, int], dict[str, float]] = {}
    if not path.is_file():
        return rows
    in_section = False
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            in_section = "short depthwise" in line.lower()
            continue
        if not in_section or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 6 or not re.fullmatch(r"\d+", cells[0]):
            continue
        try:
            key = (int(cells[0]), int(cells[1]), int(cells[2]))
            rows[key] = {
                "floor": float(cells[3]),
                "torch": float(cells[4]),
                "flash": float(cells[5]),
            }
        except ValueError:
            continue
    return rows


class Timer:
    """Median milliseconds: ``triton.testing.do_bench`` on CUDA, wall clock on CPU."""

    def __init__(self, device: str, rep: int) -> None:
        self.device = device
        self.rep = rep

    def __call__(self, fn) -> float:
        if self.device == "cuda":
            import triton

            return float(triton.testing.do_bench(fn, warmup=25, rep=self.rep, return_mode="median"))
        fn()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return sorted(times)[1]


def copy_bandwidth(torch, device: str, timer: Timer, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/ms (bytes read + bytes written)."""
    if device != "cuda":
        nbytes = 1 << 20
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device).normal_()
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * nbytes / ms


def rel_err(torch, y, ref) -> float:
    ref = ref.double()
    den = ref.norm().item()
    return (y.double() - ref).norm().item() / (den if den > 0 else 1.0)


def make_inputs(torch, shape, width, dtype, device, layout, seed=0):
    batch, channels, seq_len = shape
    g = torch.Generator(device=device).manual_seed(seed)
    if layout == "channels_last":
        x = torch.randn((batch, seq_len, channels), generator=g, device=device, dtype=dtype)
        x = x.transpose(1, 2)
    else:
        x = torch.randn(shape, generator=g, device=device, dtype=dtype)
    w = (torch.randn(channels, width, generator=g, device=device) / width**0.5).to(dtype)
    b = torch.randn(channels, generator=g, device=device).to(dtype)
    return x, w, b


def torch_conv(F, x, w, b):
    """PyTorch's depthwise causal conv: Conv1d(C, C, W, padding=W-1, groups=C)[..., :L]."""
    width = w.shape[1]
    return F.conv1d(x, w.unsqueeze(1), b, padding=width - 1, groups=x.shape[1])[..., : x.shape[2]]


def fmt_ms(v: float | str | None) -> str:
    """A time in ms, or the reason there is none (a CUDA-graph capture that failed)."""
    return format(v, ".3f") if isinstance(v, float) else str(v)


def fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def run_shape(args, torch, F, shape, width, dtype, bw, timer, anchors) -> dict:
    from dnastream.kernels.short_conv import short_conv
    from dnastream.kernels.short_conv_ref import short_conv_ref
    from dnastream.kernels.short_conv_triton import (
        _FWD_TUNED,
        short_conv_fwd_triton,
        short_conv_triton,
    )

    dev = args.device
    x, w, b = make_inputs(torch, shape, width, dtype, dev, args.layout)
    elem = x.element_size()
    numel = x.numel()
    floor = 2 * numel * elem / bw
    floor_fb = 5 * numel * elem / bw

    y = short_conv_fwd_triton(x, w, b)
    sub = (slice(0, 2), slice(0, 64))  # rows of the float64 check (channels are independent)
    ref = short_conv_ref(x[sub].double(), w[sub[1]].double(), b[sub[1]].double())
    err = rel_err(torch, y[sub], ref)
    yt = torch_conv(F, x, w, b)
    err_torch = rel_err(torch, yt[sub], ref)
    del yt
    best = getattr(_FWD_TUNED, "best_config", None) if dev == "cuda" else None

    ms_ours = timer(lambda: short_conv_fwd_triton(x, w, b))
    ms_public = timer(lambda: short_conv(x, w, b))
    ms_torch = timer(lambda: torch_conv(F, x, w, b))

    ms_fb = ms_fb_torch = ms_fb_graph = ms_fb_torch_graph = None
    if not args.no_backward:
        dy = torch.randn_like(y)
        xg, wg, bg = (t.detach().clone().requires_grad_() for t in (x, w, b))

        def fb_ours():
            out = short_conv_triton(xg, wg, bg)
            return torch.autograd.grad(out, (xg, wg, bg), dy)

        def fb_torch():
            out = torch_conv(F, xg, wg, bg)
            return torch.autograd.grad(out, (xg, wg, bg), dy)

        grads = fb_ours()
        xs = x[sub].double().requires_grad_()
        ref_y = short_conv_ref(xs, w[sub[1]].double(), b[sub[1]].double())
        (dx64,) = torch.autograd.grad(ref_y, xs, dy[sub].double())
        err_dx = rel_err(torch, grads[0][sub], dx64)
        ms_fb = timer(fb_ours)
        ms_fb_torch = timer(fb_torch)
        if args.graphs and dev == "cuda":
            from bench_conv import graph_ms  # (this script's folder is on sys.path)

            ms_fb_graph = graph_ms(torch, timer, fb_ours)
            ms_fb_torch_graph = graph_ms(torch, timer, fb_torch)
    else:
        err_dx = None

    anchor = anchors.get(tuple(shape), {})
    row = {
        "card": args.card,
        "dtype": str(dtype).replace("torch.", ""),
        "layout": args.layout,
        "W": width,
        "B": shape[0],
        "C": shape[1],
        "L": shape[2],
        "floor_ms": floor,
        "torch_ms": ms_torch,
        "ours_ms": ms_ours,
        "ours_public_ms": ms_public,
        "ours_over_floor": ms_ours / floor,
        "flash_ms_anchor": anchor.get("flash"),
        "torch_ms_anchor": anchor.get("torch"),
        "speedup_vs_torch": ms_torch / ms_ours,
        "rel_err": err,
        "rel_err_torch": err_torch,
        "fb_floor_ms": floor_fb,
        "fb_ours_ms": ms_fb,
        "fb_torch_ms": ms_fb_torch,
        "fb_over_floor": None if ms_fb is None else ms_fb / floor_fb,
        "fb_graph_ms": ms_fb_graph,
        "fb_graph_over_floor": ms_fb_graph / floor_fb if isinstance(ms_fb_graph, float) else None,
        "fb_torch_graph_ms": ms_fb_torch_graph,
        "rel_err_dx": err_dx,
        "config": "" if best is None else str(best),
    }
    gc.collect()
    if dev == "cuda":
        torch.cuda.empty_cache()
    return row


def sweep_shape(args, torch, shape, width, dtype, bw, timer) -> list[dict]:
    """Time every candidate configuration (forced) of the forward and the backward."""
    from dnastream.kernels.short_conv_triton import (
        _CONTIG_CONFIGS,
        _STRIDED_CONFIGS,
        short_conv_bwd_triton,
        short_conv_fwd_triton,
    )

    x, w, b = make_inputs(torch, shape, width, dtype, args.device, args.layout)
    dy = torch.randn(shape, device=args.device, dtype=dtype)
    floor = 2 * x.numel() * x.element_size() / bw
    pool = _CONTIG_CONFIGS if x.stride(2) == 1 else _STRIDED_CONFIGS
    out = []
    for cfg in pool:
        conf = {**cfg.kwargs, "num_warps": cfg.num_warps}
        if conf["BLOCK_L"] > max(128, 1 << (shape[2] - 1).bit_length()):
            continue
        try:
            fwd = timer(lambda conf=conf: short_conv_fwd_triton(x, w, b, config=conf))
            bwd = timer(lambda conf=conf: short_conv_bwd_triton(dy, x, w, config=conf))
        except Exception as exc:  # report and go on
            print(f"  config {conf}: failed: {exc!r}")
            continue
        out.append({"config": conf, "fwd_ms": fwd, "fwd_over_floor": fwd / floor, "bwd_ms": bwd})
        print(
            f"  {conf}: fwd {fwd:.3f} ms ({fwd / floor:.2f}x floor), bwd {bwd:.3f} ms",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--dtypes", default="fp16", help="comma list of fp16,bf16,fp32")
    parser.add_argument("--widths", default="3", help="comma list of filter widths (1..7)")
    parser.add_argument(
        "--shapes", default=None, help="B,C,L;B,C,L;... (default: the anchor shapes)"
    )
    parser.add_argument("--layout", default="contiguous", choices=["contiguous", "channels_last"])
    parser.add_argument("--no-backward", action="store_true", help="skip forward+backward")
    parser.add_argument("--sweep", action="store_true", help="also time every config")
    parser.add_argument(
        "--graphs", action="store_true", help="also time forward+backward from CUDA graphs"
    )
    parser.add_argument("--rep", type=int, default=200, help="do_bench rep (ms)")
    parser.add_argument("--csv", default=None, help="write the rows to this CSV file")
    args = parser.parse_args()

    if args.device == "cpu" or args.device is None and not _cuda_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before dnastream.kernels imports
        args.device = "cpu"
    elif args.device is None:
        args.device = "cuda"
    import torch
    import torch.nn.functional as F

    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        args.card = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    else:
        args.card = "CPU (Triton interpreter smoke run; timings meaningless)"
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]
    else:
        shapes = ANCHOR_SHAPES if args.device == "cuda" else SMOKE_SHAPES
    timer = Timer(args.device, args.rep)
    anchors = load_anchor_ms(ANCHORS)
    bw = copy_bandwidth(torch, args.device, timer)
    import triton

    print(f"card: {args.card}; torch {torch.__version__}, triton {triton.__version__}")
    print(f"device-to-device copy bandwidth: {bw / 1e9:.3f} TB/s (read + write)")
    if anchors:
        print(f"anchors: {ANCHORS}")

    header = (
        f"{'dtype':>8} {'W':>2} {'B':>4} {'C':>5} {'L':>8} | {'floor':>7} {'torch':>7} "
        f"{'ours':>7} {'÷floor':>6} {'public':>7} {'Flash*':>7} {'×torch':>6} {'rel.err':>8} | "
        f"{'fb floor':>8} {'fb ours':>8} {'÷floor':>6} {'fb torch':>8}  config"
    )
    print(f"layout: {args.layout}; times in ms (median); Flash* = FlashDepthWiseConv1d (anchors)")
    print(header)
    rows = []
    for dname in args.dtypes.split(","):
        dtype = dtypes[dname.strip()]
        for width in (int(w) for w in args.widths.split(",")):
            for shape in shapes:
                r = run_shape(args, torch, F, shape, width, dtype, bw, timer, anchors)
                rows.append(r)
                print(
                    f"{r['dtype']:>8} {width:>2} {shape[0]:>4} {shape[1]:>5} {shape[2]:>8} | "
                    f"{r['floor_ms']:7.3f} {r['torch_ms']:7.3f} {r['ours_ms']:7.3f} "
                    f"{r['ours_over_floor']:6.2f} {r['ours_public_ms']:7.3f} "
                    f"{fmt(r['flash_ms_anchor'], '7.2f')} {r['speedup_vs_torch']:6.1f} "
                    f"{r['rel_err']:8.1e} | {r['fb_floor_ms']:8.3f} "
                    f"{fmt(r['fb_ours_ms'], '8.3f')} {fmt(r['fb_over_floor'], '6.2f')} "
                    f"{fmt(r['fb_torch_ms'], '8.3f')}  {r['config']}",
                    flush=True,
                )
                if r["fb_graph_over_floor"] is not None:
                    print(
                        f"{'':>8} {'':>2} {'':>4} {'':>5} {'':>8}   CUDA graphs, forward+backward:"
                        f" ours {r['fb_graph_ms']:.3f} ms = {r['fb_graph_over_floor']:.2f}x floor,"
                        f" torch {fmt_ms(r['fb_torch_graph_ms'])} ms",
                        flush=True,
                    )
                elif r["fb_graph_ms"] is not None:
                    print(f"   CUDA graphs: {r['fb_graph_ms']}", flush=True)
                if args.sweep:
                    sweep_shape(args, torch, shape, width, dtype, bw, timer)
    torch_errs = ", ".join(format(r["rel_err_torch"], ".1e") for r in rows)
    dx_errs = ", ".join(fmt(r["rel_err_dx"], ".1e") for r in rows)
    print(f"rel.err: vs float64 (first 2 x 64 rows); torch Conv1d's: {torch_errs}; dx: {dx_errs}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
