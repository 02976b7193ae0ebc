"""Per-GPU autotuning of FFT-convolution plans, cached on disk like Triton's autotuner.

:func:`~dnastream.kernels.monarch.plan_for` picks launch settings (warps, register caps,
programs per SM, tile sizes) measured on one H200. Other cards and Triton versions can prefer
others, so this module searches them on the running GPU and remembers the winners:

* :func:`plan_key` names a tuning problem. It holds what decides the default launch settings
  and the kernels that run: the FFT size ``N`` and the plan structure (``n1 x n2`` inner FFT
  and outer radices, from :func:`plan_for`), causal or circular, the I/O dtype, gated or not,
  and the batch bucket (next power of two of ``B``, capped at :data:`BATCH_BUCKET_CAP`;
  every ``B`` of one bucket gets the same default ``rows``). The sequence and filter lengths
  enter only through ``N``; the number of heads ``H`` is left out (far too many values, and
  it only scales the grid of the persistent kernels, which the settings are chosen to fill).
* :func:`tuned_plan` is the hot-path lookup: ``plan_for(...)`` with its launch fields replaced
  by the stored ones for this GPU and key (or the default plan). The cache file is read once
  per process; results are memoised, so a lookup is a dict access after the first call.
* :func:`tune` runs a coordinate search (inner-kernel fields first, then the outer kernels'
  when the plan has outer levels), checks every variant's output against a float64
  convolution on a slice (relative L2 error <= 3e-3 for bf16/fp16, 1e-5 for fp32; a wrong or
  failing variant is never chosen), stores the winner and returns it.
* :func:`maybe_tune` is the opt-in runtime hook: with ``DNASTREAM_AUTOTUNE=1`` on a CUDA
  device it tunes once per key per process when no cached entry exists.

The cache is ``$DNASTREAM_CACHE_DIR/fftconv_plans.json`` (default ``~/.cache/dnastream/``)::

    {"_version": 1,
     "<gpu id>": {"<key>": {"num_warps": 4, ..., "ms": 1.16, "default_ms": 1.77, ...}}}

The GPU id is the device name, compute capability and Triton version, e.g. ``NVIDIA H100 80GB
HBM3|sm90|triton-3.6.0``. Writes merge with the file on disk under a lock and replace it
atomically (temporary file + ``os.replace``). A corrupt or unknown-version file is ignored
with a warning. Only the launch fields in :data:`LAUNCH_FIELDS` are ever applied (never the
sizes, structure, dtype or mode of a plan); an entry that :class:`FFTPlan` rejects is ignored.
Delete the file to forget all tuning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from dnastream.kernels.monarch import FFTPlan, filter_spectrum, plan_for

__all__ = [
    "BACKWARD_FIELDS",
    "BATCH_BUCKET_CAP",
    "CACHE_VERSION",
    "LAUNCH_FIELDS",
    "apply_entry",
    "batch_bucket",
    "cache_path",
    "clear_memory",
    "device_id",
    "inner_grid",
    "launch_fields",
    "lookup",
    "maybe_tune",
    "outer_grid",
    "packaged_entry",
    "plan_key",
    "plan_key_for",
    "store",
    "stored_counts",
    "tune",
    "tuned_plan",
]

CACHE_VERSION = 1
CACHE_FILE = "fftconv_plans.json"
BATCH_BUCKET_CAP = 64  # plan_for's rows stop depending on B from B = 31 on

# FFTPlan fields that only change how the kernels are launched, never what they compute.
# value checks beyond FFTPlan.__post_init__ (which validates rows / outer_block itself)
_POW2_WARPS = (1, 2, 4, 8, 16, 32)
LAUNCH_FIELDS: tuple[str, ...] = (
    "num_warps",
    "maxnreg",
    "chunk",
    "rows",
    "ctas_per_sm",
    "num_stages",
    "hoist",
    "outer_warps",
    "outer_maxnreg",
    "outer_block",
    "outer_ctas_per_sm",
    "outer_stages",
    "bwd_chunk",
    "bwd_warps",
    "bwd_maxnreg",
    "hoist_f2",
    "fused_bwd",
    "outer_tw_split",
    "bwd_rows",
    "outer_bf16",
    "outer_fp16",
    "static_scale",
    "shared_bwd_outer",
    "bounded_fwd",
    "static_inv",
    "nat_transposed",
    "nat_transposed_bwd",
    "acc_dot",
    "two_phase",
)

# settings that change only the backward: applied from an entry only when the backward was
# tuned too (``bwd_ms``). A forward-only tuning stores them as the defaults of its day, and
# they must not pin those once plan_for's change (stop 17: two shipped 32K entries held the
# one-row filter gradient, 16.1 against 12.2 ms forward+backward on an H100).
BACKWARD_FIELDS: frozenset[str] = frozenset(
    {
        "bwd_chunk",
        "bwd_warps",
        "bwd_maxnreg",
        "fused_bwd",
        "bwd_rows",
        "shared_bwd_outer",
        "nat_transposed_bwd",
    }
)

BARS = {torch.bfloat16: 3e-3, torch.float16: 3e-3, torch.float32: 1e-5}

Timer = Callable[[Callable[[], Tensor], FFTPlan], float]


# ---------------------------------------------------------------------------------------------
# keys and ids
# ---------------------------------------------------------------------------------------------


def batch_bucket(batch: int) -> int:
    """Next power of two of ``batch`` (>= 1), capped at :data:`BATCH_BUCKET_CAP`."""
    b = max(1, int(batch))
    return min(BATCH_BUCKET_CAP, 1 << (b - 1).bit_length())


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def plan_key_for(plan: FFTPlan, dtype: torch.dtype, batch: int, gated: bool) -> str:
    """The tuning key of an existing plan (see :func:`plan_key`)."""
    outer = "x".join(str(p) for p in plan.outer) or "-"
    mode = "causal" if plan.causal else "circular"
    gate = "gated" if gated else "plain"
    return (
        f"N{plan.n}|{plan.n1}x{plan.n2}|outer{outer}|{mode}|{_dtype_name(dtype)}|{gate}"
        f"|B{batch_bucket(batch)}"
    )


def plan_key(
    seq_len: int, filter_len: int, causal: bool, dtype: torch.dtype, batch: int, gated: bool
) -> str | None:
    """Tuning key, e.g. ``N4096|64x64|outer-|causal|bfloat16|plain|B4``; ``None`` without plan.

    It holds the FFT size and the plan structure from :func:`plan_for` (not ``L`` or ``Lk``
    themselves: every length with the same FFT shares settings), causal/circular, the dtype,
    gated or not, and the batch bucket :func:`batch_bucket`. The number of heads is not part of
    it. Everything that sets plan_for's default launch fields is in the key, so one key has
    one default plan (up to ``seq_len``/``taps``/``io_rows``, which tuning never changes).
    """
    plan = plan_for(seq_len, filter_len, causal, dtype, batch=batch)
    if plan is None:
        return None
    return plan_key_for(plan, dtype, batch, gated)


_DEVICE_IDS: dict[Any, str] = {}


def _triton_version() -> str:
    try:
        import triton

        return str(triton.__version__)
    except Exception:  # noqa: BLE001 - triton missing or broken: still a usable id
        return "none"


def device_id(device: torch.device | str | int | None = None) -> str:
    """``<name>|sm<major><minor>|triton-<version>`` for a CUDA device, ``cpu|triton-<v>`` else."""
    cached = _DEVICE_IDS.get(device)
    if cached is not None:
        return cached
    dev = torch.device("cuda" if device is None else device)
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(idx)
        ident = f"{torch.cuda.get_device_name(idx)}|sm{major}{minor}|triton-{_triton_version()}"
    else:
        ident = f"{dev.type}|triton-{_triton_version()}"
    if device is not None and not (dev.type == "cuda" and dev.index is None):
        _DEVICE_IDS[device] = ident  # "cuda" alone follows the current device: not cached
    return ident


def launch_fields(plan: FFTPlan) -> dict[str, Any]:
    """The launch fields (:data:`LAUNCH_FIELDS`) of ``plan`` as a plain dict."""
    return {f: getattr(plan, f) for f in LAUNCH_FIELDS}


# ---------------------------------------------------------------------------------------------
# the cache file
# ---------------------------------------------------------------------------------------------

_FILES: dict[str, dict[str, dict[str, dict]]] = {}  # path -> {gpu id: {key: entry}}
_MEMO: dict[tuple, FFTPlan | None] = {}
_MEMO_MAX = 4096
_TRIED: set[tuple[str, str, str]] = set()  # (path, gpu id, key) maybe_tune has handled


def cache_path() -> str:
    """``$DNASTREAM_CACHE_DIR/fftconv_plans.json`` (default ``~/.cache/dnastream/``)."""
    root = os.environ.get("DNASTREAM_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "dnastream"
    )
    return os.path.join(root, CACHE_FILE)


def clear_memory() -> None:
    """Forget everything loaded or memoised in this process (the file is read again)."""
    _FILES.clear()
    _MEMO.clear()
    _TRIED.clear()


def _read_file(path: str) -> dict[str, dict[str, dict]]:
    """Entries of the cache file; ``{}`` (with a warning) when it is corrupt or unknown."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        warnings.warn(f"dnastream autotune: ignoring unreadable cache {path}: {e}", stacklevel=3)
        return {}
    if not isinstance(data, dict) or data.get("_version") != CACHE_VERSION:
        version = data.get("_version") if isinstance(data, dict) else type(data).__name__
        warnings.warn(
            f"dnastream autotune: ignoring cache {path} of unknown version {version!r} "
            f"(expected {CACHE_VERSION})",
            stacklevel=3,
        )
        return {}
    out: dict[str, dict[str, dict]] = {}
    for gpu, entries in data.items():
        if gpu == "_version" or not isinstance(entries, dict):
            continue
        out[gpu] = {k: v for k, v in entries.items() if isinstance(v, dict)}
    return out


def _entries(path: str) -> dict[str, dict[str, dict]]:
    got = _FILES.get(path)
    if got is None:
        got = _FILES[path] = _read_file(path)
    return got


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """Exclusive advisory lock on ``path + '.lock'`` (POSIX; no lock elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path + ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_atomic(path: str, data: dict) -> None:
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".fftconv_plans.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def store(gpu: str, key: str, entry: dict[str, Any], path: str | None = None) -> None:
    """Save ``entry`` for ``(gpu, key)``: merged into the file on disk (re-read under a lock,
    so concurrent writers keep each other's entries), written atomically, and applied in this
    process at once. An unwritable folder only warns (the entry still holds in memory)."""
    path = path or cache_path()
    entry = json.loads(json.dumps(entry))  # plain JSON values, detached from the caller's dict
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with _locked(path):
            on_disk = _read_file(path)
            on_disk.setdefault(gpu, {})[key] = entry
            _write_atomic(path, {"_version": CACHE_VERSION, **on_disk})
        _FILES[path] = on_disk
    except OSError as e:
        warnings.warn(f"dnastream autotune: could not write {path}: {e}", stacklevel=2)
        _entries(path).setdefault(gpu, {})[key] = entry
    _MEMO.clear()


def lookup(gpu: str, key: str, path: str | None = None) -> dict[str, Any] | None:
    """The stored entry for ``(gpu, key)``, or ``None``."""
    return _entries(path or cache_path()).get(gpu, {}).get(key)


# ---------------------------------------------------------------------------------------------
# applying stored settings
# ---------------------------------------------------------------------------------------------


def _valid_value(name: str, value: Any, plan: FFTPlan) -> bool:
    if name in (
        "hoist",
        "hoist_f2",
        "fused_bwd",
        "outer_tw_split",
        "outer_bf16",
        "outer_fp16",
        "static_scale",
        "shared_bwd_outer",
        "bounded_fwd",
        "static_inv",
        "nat_transposed",
        "nat_transposed_bwd",
        "acc_dot",
        "two_phase",
    ):
        return isinstance(value, bool)
    if name in ("maxnreg", "outer_maxnreg", "bwd_maxnreg"):
        if name == "bwd_maxnreg" and value == 0 and type(value) is int:  # 0: no cap
            return True
        return value is None or (type(value) is int and 16 <= value <= 255)
    if type(value) is not int:
        return False
    if name in ("num_warps", "outer_warps"):
        return value in _POW2_WARPS
    if name == "bwd_warps":
        return value == 0 or value in _POW2_WARPS
    if name == "bwd_chunk":
        return value == 0 or (16 <= value <= plan.n1 and value & (value - 1) == 0)
    if name == "chunk":
        return 16 <= value <= plan.n1 and value & (value - 1) == 0
    if name == "outer_ctas_per_sm":
        return 0 <= value <= 64
    if name == "ctas_per_sm":
        return 1 <= value <= 64
    if name == "bwd_rows":
        return value == 0 or (1 <= value <= max(1, 8192 // plan.inner) and value & (value - 1) == 0)
    if name == "rows":  # powers of two: FFTPlan checks
        return 1 <= value <= max(1, 8192 // plan.inner)
    if name == "outer_block":
        return 16 <= value <= 256
    return 1 <= value <= 8  # num_stages, outer_stages


def apply_entry(plan: FFTPlan, entry: dict[str, Any]) -> FFTPlan:
    """``plan`` with the whitelisted, valid launch fields of ``entry`` (others are ignored;
    the :data:`BACKWARD_FIELDS` unless the entry's backward was tuned, ``bwd_ms``); ``plan``
    itself when the combination makes :class:`FFTPlan` raise."""
    kw: dict[str, Any] = {}
    backward_tuned = "bwd_ms" in entry
    for name, value in entry.items():
        if name in BACKWARD_FIELDS and not backward_tuned:
            continue
        if name in LAUNCH_FIELDS and _valid_value(name, value, plan):
            kw[name] = value
    if not kw:
        return plan
    try:
        return dataclasses.replace(plan, **kw)
    except (ValueError, TypeError) as e:
        warnings.warn(f"dnastream autotune: ignoring stored settings {kw}: {e}", stacklevel=3)
        return plan


def tuned_plan(
    seq_len: int,
    filter_len: int,
    causal: bool,
    dtype: torch.dtype,
    *,
    batch: int,
    gated: bool,
    device: torch.device | str,
) -> FFTPlan | None:
    """``plan_for(seq_len, filter_len, causal, dtype, batch=batch)`` with the launch settings
    tuned for this GPU and :func:`plan_key` (the default plan when none are stored; ``None``
    when no Triton plan exists). Memoised: after the first call per shape it is a dict lookup.
    Never tunes by itself (see :func:`maybe_tune`)."""
    path = cache_path()
    memo_key = (seq_len, filter_len, causal, dtype, batch, gated, device, path)
    try:
        return _MEMO[memo_key]
    except KeyError:
        pass
    plan = plan_for(seq_len, filter_len, causal, dtype, batch=batch)
    if plan is not None:
        gpu = device_id(device)
        key = plan_key_for(plan, dtype, batch, gated)
        entry = _entries(path).get(gpu, {}).get(key)
        if entry is None:
            entry = packaged_entry(gpu, key)
        if entry is not None:
            plan = apply_entry(plan, entry)
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[memo_key] = plan
    return plan


PACKAGED_FILE = "tuned_plans.json"
_PACKAGED: dict[str, dict[str, dict]] | None = None


def _card(gpu: str) -> str:
    """A GPU id without its Triton version (``name|smXY``)."""
    return "|".join(p for p in gpu.split("|") if not p.startswith("triton-"))


def _chip(gpu: str) -> str | None:
    """The compute capability of a GPU id (``smXY``), or ``None`` (CPU ids)."""
    return next((p for p in gpu.split("|") if p.startswith("sm")), None)


def _packaged() -> dict[str, dict[str, dict]]:
    global _PACKAGED
    if _PACKAGED is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), PACKAGED_FILE)
        _PACKAGED = _read_file(path) if os.path.exists(path) else {}
    return _PACKAGED


def packaged_entry(gpu: str, key: str) -> dict[str, Any] | None:
    """Settings shipped with dnastream (``kernels/tuned_plans.json``, written from
    ``benchmarks/tune_conv.py --write-cache`` runs on lent GPUs) for this card and key; used
    when the user's cache has none. Matched on the card (name and compute capability) when
    the Triton version differs, then on the compute capability alone: the launch settings
    (warps, register caps, tiles, programs per SM) follow the SM's design, which cards of one
    capability share (an H200 is an H100's chip with faster memory)."""
    table = _packaged()
    exact = table.get(gpu, {}).get(key)
    if exact is not None:
        return exact
    chip = _chip(gpu)
    for same_card in (True, False):
        for other, entries in table.items():
            if key not in entries:
                continue
            match = _card(other) == _card(gpu) if same_card else _chip(other) == chip
            if match and (same_card or chip is not None):
                return entries[key]
    return None


def stored_counts(gpu: str) -> tuple[int, int]:
    """(entries in the user's cache, keys shipped with dnastream that apply to this card:
    its own and its compute capability's, as :func:`packaged_entry` finds them)."""
    user = len(_entries(cache_path()).get(gpu, {}))
    chip = _chip(gpu)
    shipped = {
        k
        for g, e in _packaged().items()
        if _card(g) == _card(gpu) or (chip is not None and _chip(g) == chip)
        for k in e
    }
    return user, len(shipped)


# ---------------------------------------------------------------------------------------------
# the search
# ---------------------------------------------------------------------------------------------


def inner_grid(plan: FFTPlan) -> list[dict[str, Any]]:
    """Variants of the inner kernel's launch fields (benchmarks/tune_conv.py's grid)."""
    out: list[dict[str, Any]] = []
    if plan.rows == 1:
        chunks = sorted({c for c in (16, 32, plan.chunk) if c <= plan.n1})
        # (168 registers: 3 programs of 4 warps per SM. Stop 20's Nsight Compute on the H200 read
        # the fused 4K-16K kernels at 8 warps per SM, issue 19.5-28% busy: latency bound)
        for reg, nw, ch in itertools.product((128, 168, None), (8, 4), chunks):
            for c in (1, 2, 4) if reg is None else (2, 3, 4):
                out.append(dict(num_warps=nw, maxnreg=reg, chunk=ch, ctas_per_sm=c))
        for nw, ch in itertools.product((4, 8), chunks):  # step-2 tables loaded once
            out.append(dict(hoist_f2=True, num_warps=nw, maxnreg=None, chunk=ch, ctas_per_sm=2))
        if plan.static_scale:  # the last product accumulated in the dots (fewer spills)
            for hoist, reg, c in ((False, None, 2), (True, None, 2), (False, 168, 3)):
                out.append(dict(acc_dot=True, hoist_f2=hoist, num_warps=4, maxnreg=reg,
                                chunk=plan.chunk, ctas_per_sm=c))  # fmt: skip
                out.append(dict(two_phase=True, nat_transposed=False, hoist_f2=hoist,
                                num_warps=4, maxnreg=reg, chunk=plan.chunk,
                                ctas_per_sm=c))  # fmt: skip
        # the transposed orientation (every product n2 rows: wgmma on sm_90)
        for reg, nw, ch in itertools.product((128, None), (4, 8) if plan.n2 >= 128 else (4,),
                                             chunks):  # fmt: skip
            out.append(dict(nat_transposed=True, num_warps=nw, maxnreg=reg, chunk=ch,
                            ctas_per_sm=2))  # fmt: skip
        # two-row tiles (the transposed kernel). At 4096 points with 8 warps every product
        # is a wgmma (sm_90 compile: 56, no mma.sync, 264 B of spills, 80 KB of shared
        # memory); at 8192 it spills 2.8 KB over 184 KB of shared memory
        if plan.inner <= 4096:
            for nw in (4, 8):
                out.append(dict(rows=2, num_warps=nw, maxnreg=None, ctas_per_sm=2))
    else:
        rows = sorted({r for r in (plan.rows // 2, plan.rows) if r >= 2})
        for reg, nw, r in itertools.product((128, None), (8, 4), rows):
            for c in (1, 2, 4) if reg is None else (2, 3, 4):
                out.append(dict(num_warps=nw, maxnreg=reg, rows=r, ctas_per_sm=c))
        if plan.mma == "fp16" and not plan.static_scale:  # L1-norm / derived operand scales
            out += [dict(static_scale=True, num_warps=nw) for nw in (4, 8)]
        if plan.mma == "fp16" and plan.outer and not plan.bounded_fwd:  # unscaled forward
            out += [dict(bounded_fwd=True, num_warps=nw) for nw in (4, 8)]
        if plan.mma == "fp16" and not plan.static_inv:  # inverse scaled by known bounds
            out += [dict(static_scale=True, static_inv=True, num_warps=nw) for nw in (4, 8)]
        if plan.inner == 4096 and not plan.outer:  # the one-row kernel it replaced (stop 21)
            for hoist in (False, True):
                out.append(dict(rows=1, num_warps=4, maxnreg=None, ctas_per_sm=2, hoist_f2=hoist))
    return out


def outer_grid(plan: FFTPlan) -> list[dict[str, Any]]:
    """Variants of the outer kernels' launch fields (only for plans with outer levels)."""
    out: list[dict[str, Any]] = []
    blocks = sorted({b for b in (plan.outer_block // 2, plan.outer_block) if b >= 16})
    for reg, nw, blk in itertools.product((168, 128, None), (4, 8), blocks):
        for c in (2, 3, 4):
            out.append(
                dict(outer_warps=nw, outer_maxnreg=reg, outer_block=blk, outer_ctas_per_sm=c)
            )
    return out


def _default_timer(fn: Callable[[], Tensor], plan: FFTPlan) -> float:
    """Median milliseconds: ``triton.testing.do_bench`` on CUDA, wall clock elsewhere."""
    del plan
    if torch.cuda.is_available():
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median"))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[1]


def _execute(u, k, plan, spectrum, pregate, postgate, causal) -> Tensor:
    """One convolution with ``plan`` (a seam the tests replace to inject wrong variants)."""
    from dnastream.kernels.fftconv_triton import fftconv_triton

    return fftconv_triton(
        u, k, pregate=pregate, postgate=postgate, causal=causal, plan=plan, k_spectrum=spectrum
    )


def _ref64(u, k, pregate, postgate, causal) -> Tensor:
    seq_len = u.shape[-1]
    x = u.double() * (pregate.double() if pregate is not None else 1.0)
    kd = k.double()
    if causal:
        taps, n = min(kd.shape[1], seq_len), 2 * seq_len
    else:
        taps, n = kd.shape[1], seq_len
    y = torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(kd[:, :taps], n=n), n=n)
    y = y[..., :seq_len]
    return y * postgate.double() if postgate is not None else y


def _rel_err(a: Tensor, b: Tensor) -> float:
    den = b.norm().item()
    return (a.double() - b).norm().item() / (den if den > 0 else 1.0)


def tune(
    u: Tensor,
    k: Tensor,
    *,
    causal: bool,
    pregate: Tensor | None = None,
    postgate: Tensor | None = None,
    timer: Timer | None = None,
    budget_s: float = 30.0,
    plan: FFTPlan | None = None,
    save: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Search launch settings for this problem on ``u``'s device; store and return the winner.

    Coordinate search: the inner kernel's fields (:func:`inner_grid`), then, with the best
    inner choice, the outer kernels' (:func:`outer_grid`) when the plan has outer levels. Each
    variant's output is compared with a float64 convolution on a slice (2 batch rows, 8 heads)
    and must be within :data:`BARS` (bf16/fp16 3e-3, fp32 1e-5); variants that are wrong or
    raise are skipped. The best variant and the default are then timed once more; the best is
    kept only if its two timings add up to less than the default's (noise guard).

    Args:
        u, k, pregate, postgate, causal: a representative call (B, H, L) / (H, Lk).
        timer: ``timer(fn, plan) -> ms`` (default: ``triton.testing.do_bench`` median on CUDA).
        budget_s: stop searching after this many seconds (the best so far is kept).
        plan: the base plan (default ``plan_for(L, Lk, causal, u.dtype, batch=B)``).
        save: store the winner in the cache file (:func:`store`).
        log: called with one line per variant.

    Returns:
        The entry: every launch field of the winner, ``ms``, ``default_ms``, ``plan``
        (description), ``key``, ``gpu``, ``shape`` and ``variants`` (how many were timed);
        ``{}`` when no variant, not even the default, was correct.
    """
    timer = timer or _default_timer
    say = log or (lambda msg: None)
    t0 = time.perf_counter()
    batch, heads, seq_len = u.shape
    gated = pregate is not None or postgate is not None
    base = plan or plan_for(seq_len, k.shape[1], causal, u.dtype, batch=batch)
    if base is None:
        raise ValueError(f"autotune.tune: no Triton plan for L={seq_len}, causal={causal}")
    bar = BARS.get(u.dtype, 1e-5)
    spectrum = filter_spectrum(k, base)  # same storage order for every launch variant
    sl = (slice(0, 2), slice(0, 8))
    g1 = pregate[sl] if pregate is not None else None
    g2 = postgate[sl] if postgate is not None else None
    with torch.no_grad():
        y64 = _ref64(u[sl], k[:8], g1, g2, causal)

    def run(p: FFTPlan) -> Tensor:
        return _execute(u, k, p, spectrum, pregate, postgate, causal)

    def measure(kw: dict, p: FFTPlan) -> float | None:
        try:
            with torch.no_grad():
                err = _rel_err(run(p)[sl], y64)
                if not math.isfinite(err) or err > bar:
                    say(f"{kw}: WRONG (rel err {err:.2e})")
                    return None
                ms = float(timer(lambda: run(p), p))
        except Exception as e:  # noqa: BLE001 - e.g. out of shared memory / registers
            say(f"{kw}: fails ({type(e).__name__}: {str(e)[:100]})")
            return None
        if not math.isfinite(ms):
            return None
        say(f"{kw}: {ms:.4f} ms")
        return ms

    default_ms = measure({}, base)
    best, best_ms = (base, default_ms) if default_ms is not None else (None, None)
    timed = 1
    stages = [inner_grid] + ([outer_grid] if base.outer else [])
    for stage in stages:
        cur = best or base
        for kw in stage(cur):
            if time.perf_counter() - t0 > budget_s:
                say("budget spent; stopping the search")
                break
            try:
                cand = dataclasses.replace(cur, **kw)
            except ValueError:
                continue
            if cand == cur:
                continue
            ms = measure(kw, cand)
            timed += 1
            if ms is not None and (best_ms is None or ms < best_ms):
                best, best_ms = cand, ms
    if best is None or best_ms is None:
        warnings.warn(
            f"dnastream autotune: no correct variant for {base.describe()}; nothing stored",
            stacklevel=2,
        )
        return {}
    if best != base and default_ms is not None:
        # confirm against a second timing of both (noise must not pick a slower plan)
        with torch.no_grad():
            again_best = float(timer(lambda: run(best), best))
            again_base = float(timer(lambda: run(base), base))
        if not best_ms + again_best < default_ms + again_base:
            say(f"re-timed: default {again_base:.4f} ms, best {again_best:.4f} ms; keeping default")
            best, best_ms = base, default_ms
    gpu = device_id(u.device)
    key = plan_key_for(base, u.dtype, batch, gated)
    entry: dict[str, Any] = {
        **launch_fields(best),
        "ms": best_ms,
        "default_ms": default_ms,
        "plan": base.describe(),
        "shape": [batch, heads, seq_len],
        "variants": timed,
    }
    if save:
        store(gpu, key, entry)
    return {**entry, "key": key, "gpu": gpu}


def _autotune_enabled(u: Tensor) -> bool:
    """``DNASTREAM_AUTOTUNE=1``, ``u`` on CUDA and no CUDA graph being captured."""
    if os.environ.get("DNASTREAM_AUTOTUNE", "0").strip() != "1" or u.device.type != "cuda":
        return False
    return not torch.cuda.is_current_stream_capturing()


def maybe_tune(
    u: Tensor,
    k: Tensor,
    causal: bool,
    pregate: Tensor | None = None,
    postgate: Tensor | None = None,
) -> None:
    """Opt-in runtime tuning before a convolution (call it, then :func:`tuned_plan`).

    Does nothing unless ``DNASTREAM_AUTOTUNE=1``, ``u`` is on CUDA, no CUDA graph is being
    captured, a Triton plan exists and no entry is stored for this GPU and key; then it runs
    :func:`tune` on these inputs once per key per process (budget
    ``DNASTREAM_AUTOTUNE_BUDGET_S``, default 30 s). Failures only warn.
    """
    if not _autotune_enabled(u):
        return
    batch, _, seq_len = u.shape
    gated = pregate is not None or postgate is not None
    base = plan_for(seq_len, k.shape[1], causal, u.dtype, batch=batch)
    if base is None:
        return
    path = cache_path()
    gpu = device_id(u.device)
    key = plan_key_for(base, u.dtype, batch, gated)
    if (path, gpu, key) in _TRIED:
        return
    _TRIED.add((path, gpu, key))
    if lookup(gpu, key, path) is not None:
        return
    try:
        budget = float(os.environ.get("DNASTREAM_AUTOTUNE_BUDGET_S", "30"))
    except ValueError:
        budget = 30.0
    try:
        with torch.no_grad():
            tune(
                u.detach(), k.detach(), causal=causal, plan=base, budget_s=budget,
                pregate=None if pregate is None else pregate.detach(),
                postgate=None if postgate is None else postgate.detach(),
            )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - tuning must never break a forward pass
        warnings.warn(f"dnastream autotune: tuning {key} failed: {e}", stacklevel=2)
