"""Run a HyenaDNA model over token chunks with exact streaming and OOM back-off.

:class:`ModelRunner` feeds the :class:`~dnastream.pipelines.source.TokenChunk` s of one region
(or, with :meth:`ModelRunner.run_batch`, of several regions of equal length) through
:class:`~dnastream.models.streaming.StreamingHyenaDNA`: the outputs equal a whole-sequence
forward with the same K-tap filters, for any length, in memory bounded by the chunk size and K.
K defaults to the model's ``filter_len`` or ``l_max``: a region longer than ``l_max`` needs no
flag, streaming with K = l_max is the partial convolution a full forward with
``filter_len=l_max`` computes.

OOM back-off: when CUDA runs out of memory inside a step, the streaming state is put back as
it was before the step (a step only ever replaces state tensors, never writes into them, so
keeping the old references is an exact snapshot), the step size is halved and the same tokens
are fed again in smaller pieces; the smaller size is kept for the rest of the run. Each
back-off is logged (logger ``dnastream.pipelines``) and counted in :attr:`ModelRunner.backoffs`.

Overlap (CUDA): a step only *launches* the chunk's kernels; its outputs are copied to freshly
allocated pinned host buffers with non-blocking copies on a side stream, which records an
event. The runner then launches the next chunk before it waits for that event and hands the
previous chunk to the caller, so the host post-processes and writes chunk i while the GPU
computes chunk i + 1 (double buffering: at most two chunks' outputs are alive on the GPU, and
every chunk has its own host buffer, so a consumer may keep the arrays). The values are the
same as with a synchronous ``.cpu()`` (same kernels, same stream order, exact copies; a
conversion to float32 happens on the GPU, IEEE rounding as on the host). On CPU the runner
steps and hands over each chunk in turn (``overlap=True`` there runs the same look-ahead
bookkeeping without streams, which is how the CPU tests cover it; ``DNASTREAM_OVERLAP=0/1``
sets the default).

Timing: :attr:`ModelRunner.stats` (:class:`~dnastream.pipelines.stats.PhaseStats`) sums the
time spent launching steps, waiting for outputs, waiting for input and in the consumer.

Test hook: the environment variable ``DNASTREAM_TEST_SLEEP_PER_CHUNK`` (seconds, float) makes
the runner sleep after every chunk, so tests can interrupt a run at a known point.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from dnastream.models import HyenaDNAModel
from dnastream.models.streaming import StreamingChunkOutput, StreamingHyenaDNA, StreamingState
from dnastream.pipelines.source import TokenChunk
from dnastream.pipelines.stats import PhaseStats

__all__ = [
    "DEFAULT_CHUNK",
    "MIN_CHUNK",
    "ModelRunner",
    "RegionChunkResult",
    "is_out_of_memory",
    "resolve_device",
    "tune_malloc",
]

log = logging.getLogger("dnastream.pipelines")

DEFAULT_CHUNK = {"cpu": 4096, "cuda": 1 << 18}
"""Tokens per streaming step when ``--chunk`` is not given, per device type (``embed`` and
``score``)."""

MIN_CHUNK = 64
"""Smallest step size the OOM back-off goes down to before giving up."""

SLEEP_ENV = "DNASTREAM_TEST_SLEEP_PER_CHUNK"
OVERLAP_ENV = "DNASTREAM_OVERLAP"
"""``1``/``0`` forces the look-ahead on or off (default: on for CUDA only), e.g. to compare."""

_OOM_NAMES = (
    getattr(torch, "OutOfMemoryError", None),
    getattr(torch.cuda, "OutOfMemoryError", None),
)
_OOM_TYPES: tuple[type[BaseException], ...] = tuple(t for t in _OOM_NAMES if isinstance(t, type))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a (CUDA) out-of-memory error."""
    if _OOM_TYPES and isinstance(exc, _OOM_TYPES):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MALLOC_TUNED = False


def tune_malloc(threshold: int = 1 << 30) -> bool:
    """Keep freed large buffers in the heap for reuse (Linux glibc only; once per process).

    glibc serves blocks above ``M_MMAP_THRESHOLD`` (at most 32 MiB, adjusted dynamically) with
    fresh ``mmap`` s and unmaps them on free, so every chunk's activations page-fault in anew
    (heavy ``sys`` time for 4-64k-token chunks). Raising the mmap and trim thresholds makes
    them reused instead. Peak memory stays bounded by the chunk size. Returns whether it was
    applied; set ``DNASTREAM_NO_MALLOPT=1`` to skip it.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("DNASTREAM_NO_MALLOPT"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, threshold) == 1
        if not ok:  # older glibc caps the threshold at 32 MiB
            ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, threshold) == 1 and ok
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    _MALLOC_TUNED = ok
    return ok


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> cuda if available else cpu; checks that a CUDA device exists."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA GPU is visible (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: use cpu, cuda or cuda:N")
    return dev


@dataclass
class RegionChunkResult:
    """Model outputs for one :class:`TokenChunk` of C tokens (CPU numpy arrays).

    offset: the chunk's offset in the region, reading order.
    hidden: (C, d) float32 final hidden state (after ln_f), or None if not requested.
    layers: {i: (C, d) float32} residual stream after block i, for the requested layers.
    logprobs: (C,) float32 log p(token_t | tokens before t in the region), NaN at the
        region's first token; None unless requested.
    mask: (C,) bool soft-masked or N, from the chunk.
    flags: (C,) uint8 bit flags from the chunk (1 N, 2 soft-masked).
    """

    offset: int
    hidden: np.ndarray | None
    layers: dict[int, np.ndarray] = field(default_factory=dict)
    logprobs: np.ndarray | None = None
    mask: np.ndarray | None = None
    flags: np.ndarray | None = None


def _snapshot(state: StreamingState) -> tuple[object, ...]:
    layers = [(layer.short, list(layer.long)) for layer in state.layers]
    return layers, state.position, state.last_logprobs


def _restore(state: StreamingState, snap: tuple[object, ...]) -> None:
    layers, position, last = snap
    for layer, (short, long) in zip(state.layers, layers, strict=True):  # type: ignore[call-overload]
        layer.short = short
        layer.long = list(long)
    state.position = position  # type: ignore[assignment]
    state.last_logprobs = last  # type: ignore[assignment]


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


_END = object()
_I = TypeVar("_I")
_R = TypeVar("_R")


class _Outputs:
    """One step's outputs on their way to the host: ``hidden``, ``logprobs`` and the
    requested layers, as float32 numpy arrays once :meth:`wait` returns."""

    def __init__(
        self,
        arrays: dict[object, np.ndarray | None],
        event: torch.cuda.Event | None = None,
        keep: list[Tensor] | None = None,
    ) -> None:
        self._arrays = arrays
        self._event = event
        self._keep = keep  # device tensors read by the copies: alive until they are done

    def wait(self) -> dict[object, np.ndarray | None]:
        if self._event is not None:
            self._event.synchronize()
            self._event = None
            self._keep = None
        return self._arrays


def _host_outputs(
    out: StreamingChunkOutput, device: torch.device, stream: torch.cuda.Stream | None
) -> _Outputs:
    """Start bringing ``out`` to the host: synchronous on CPU, on ``stream`` on CUDA."""
    named: dict[object, Tensor | None] = {
        "hidden": out.last_hidden_state,
        "logprobs": out.token_logprobs,
    }
    named.update(out.hidden_states)
    if stream is None:
        return _Outputs({k: None if t is None else _numpy(t) for k, t in named.items()})
    compute = torch.cuda.current_stream(device)
    stream.wait_stream(compute)  # the copies start once the chunk's kernels are done
    arrays: dict[object, np.ndarray | None] = {}
    keep: list[Tensor] = []
    with torch.cuda.stream(stream):
        for key, t in named.items():
            if t is None:
                arrays[key] = None
                continue
            src = t.detach()
            if src.dtype != torch.float32:
                src = src.to(torch.float32)  # on the GPU, in the copy stream
            host = torch.empty(src.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(src, non_blocking=True)
            keep += [t, src]
            arrays[key] = host.numpy()  # the array keeps its pinned buffer alive
        event = torch.cuda.Event()
        event.record(stream)
    return _Outputs(arrays, event, keep)


class ModelRunner:
    """Streams regions through a model, chunk by chunk, exactly.

    Args:
        model: the HyenaDNA model (moved to ``device``/``dtype``, set to eval mode).
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``...).
        dtype: compute dtype of the model (float32 unless a GPU run wants bfloat16/float16).
        chunk: tokens per streaming step (halved on CUDA OOM, see the module docstring).
        filter_len: long-filter taps K (default: the model's filter_len, else l_max).
        overlap: hand chunk i to the caller only after chunk i + 1 is launched (default: on
            CUDA only; see the module docstring).
        stats: where to sum the loop timings (default: a fresh, unsaved one).
    """

    def __init__(
        self,
        model: HyenaDNAModel,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        chunk: int,
        filter_len: int | None = None,
        overlap: bool | None = None,
        stats: PhaseStats | None = None,
    ) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.device = resolve_device(device)
        self.model = model.to(device=self.device, dtype=dtype).eval()
        if filter_len is None:
            filter_len = model.config.filter_len or model.config.layer.l_max
        self.engine = StreamingHyenaDNA(self.model, filter_len=filter_len)
        self.filter_len: int = self.engine.taps
        self.chunk = int(chunk)
        self.backoffs = 0
        self.sleep = float(os.environ.get(SLEEP_ENV, "0") or 0)
        if overlap is None:
            env = os.environ.get(OVERLAP_ENV, "").strip()
            overlap = env == "1" if env in ("0", "1") else self.device.type == "cuda"
        self.overlap = bool(overlap)
        self.stats = stats if stats is not None else PhaseStats()
        self._copy_stream: torch.cuda.Stream | None = None

    @property
    def d_model(self) -> int:
        """Width d of the hidden states."""
        return self.model.config.d_model

    @property
    def n_layer(self) -> int:
        """Number of blocks."""
        return self.model.config.n_layer

    # -- one region -------------------------------------------------------------------------

    def run_region(
        self,
        token_chunks: Iterable[TokenChunk],
        *,
        layers: Sequence[int] = (),
        logprobs: bool = False,
        hidden: bool = True,
    ) -> Iterator[RegionChunkResult]:
        """Outputs of one region, one :class:`RegionChunkResult` per input chunk, in order.

        The chunks must be consecutive pieces of one region (as from ``iter_token_chunks``);
        the stream starts fresh at the first one.
        """
        self.engine.reset(1)

        def launch(tc: TokenChunk) -> _Outputs:
            ids = self._device_ids(tc.ids[None])
            return self._launch(ids, layers, logprobs, hidden)

        def finish(tc: TokenChunk, arrays: dict[object, np.ndarray | None]) -> RegionChunkResult:
            hid, lp = arrays.pop("hidden"), arrays.pop("logprobs")
            return RegionChunkResult(
                offset=tc.offset,
                hidden=None if hid is None else hid[0],
                layers={i: h[0] for i, h in arrays.items()},  # type: ignore[misc,index]
                logprobs=None if lp is None else lp[0],
                mask=tc.mask,
                flags=tc.flags,
            )

        yield from self._pipeline(token_chunks, launch, finish, lambda tc: len(tc.ids))

    # -- several regions of equal length at once -------------------------------------------

    def run_batch(
        self,
        token_batches: Iterable[Sequence[TokenChunk]],
        *,
        layers: Sequence[int] = (),
        logprobs: bool = False,
        hidden: bool = True,
    ) -> Iterator[list[RegionChunkResult]]:
        """Run B regions of equal length as one (B, C) stream (see ``iter_batch_chunks``).

        Each item of ``token_batches`` holds the next chunk of every region (same sizes).
        Yields, per step, one result per region.
        """
        started = False

        def launch(tcs: Sequence[TokenChunk]) -> _Outputs:
            nonlocal started
            if not started:
                self.engine.reset(len(tcs))
                started = True
            if len({len(tc.ids) for tc in tcs}) != 1:
                raise ValueError("batched chunks must have equal lengths")
            ids = self._device_ids(np.stack([tc.ids for tc in tcs]))
            return self._launch(ids, layers, logprobs, hidden)

        def finish(
            tcs: Sequence[TokenChunk], arrays: dict[object, np.ndarray | None]
        ) -> list[RegionChunkResult]:
            hid, lp = arrays.pop("hidden"), arrays.pop("logprobs")
            return [
                RegionChunkResult(
                    offset=tc.offset,
                    hidden=None if hid is None else hid[b],
                    layers={i: h[b] for i, h in arrays.items()},  # type: ignore[misc,index]
                    logprobs=None if lp is None else lp[b],
                    mask=tc.mask,
                    flags=tc.flags,
                )
                for b, tc in enumerate(tcs)
            ]

        yield from self._pipeline(
            token_batches, launch, finish, lambda tcs: len(tcs) * len(tcs[0].ids)
        )

    # -- the loop: launch, fetch, hand over (overlapped on CUDA) ---------------------------

    def _device_ids(self, ids: np.ndarray) -> Tensor:
        t = torch.from_numpy(np.ascontiguousarray(ids))
        if self.device.type == "cuda":
            # from pinned memory the copy is asynchronous: no wait for the previous chunk
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _launch(self, ids: Tensor, layers: Sequence[int], logprobs: bool, hidden: bool) -> _Outputs:
        out = self._step(ids, layers, logprobs, hidden)
        stream = None
        if self.device.type == "cuda":
            if self._copy_stream is None:
                self._copy_stream = torch.cuda.Stream(self.device)
            stream = self._copy_stream
        return _host_outputs(out, self.device, stream)

    def _pipeline(
        self,
        items: Iterable[_I],
        launch: Callable[[_I], _Outputs],
        finish: Callable[[_I, dict[object, np.ndarray | None]], _R],
        size: Callable[[_I], int],
    ) -> Iterator[_R]:
        """``launch(item)`` each item, then yield ``finish(item, host arrays)`` in order; with
        :attr:`overlap`, item i is finished after item i + 1 is launched."""
        stats, clock = self.stats, time.perf_counter
        pending: tuple[_I, _Outputs] | None = None
        source = iter(items)
        while True:
            t0 = clock()
            got = next(source, _END)
            t1 = clock()
            stats.add("input_wait", t1 - t0)
            if got is _END:
                break
            item: _I = got  # type: ignore[assignment]
            fetched = launch(item)
            stats.add("step", clock() - t1)
            if not self.overlap:
                yield from self._hand_over(item, fetched, finish, size)
                continue
            previous, pending = pending, (item, fetched)
            if previous is not None:
                yield from self._hand_over(*previous, finish, size)
        if pending is not None:
            yield from self._hand_over(*pending, finish, size)

    def _hand_over(
        self,
        item: _I,
        fetched: _Outputs,
        finish: Callable[[_I, dict[object, np.ndarray | None]], _R],
        size: Callable[[_I], int],
    ) -> Iterator[_R]:
        stats, clock = self.stats, time.perf_counter
        t0 = clock()
        arrays = fetched.wait()
        stats.add("d2h_wait", clock() - t0)
        result = finish(item, arrays)
        stats.chunk_done(size(item))
        t1 = clock()
        yield result
        stats.add("host", clock() - t1)
        if self.sleep:
            time.sleep(self.sleep)

    # -- stepping with back-off ------------------------------------------------------------

    def _step(
        self, ids: Tensor, layers: Sequence[int], logprobs: bool, hidden: bool
    ) -> StreamingChunkOutput:
        """Feed ids (B, C) in steps of at most ``self.chunk``; outputs concatenated on dim 1."""
        total = ids.shape[1]
        pieces: list[StreamingChunkOutput] = []
        pos = 0
        while pos < total:
            n = min(self.chunk, total - pos)
            state = self.engine.state
            assert state is not None
            snap = _snapshot(state)
            try:
                with torch.inference_mode():
                    out = self.engine.step(
                        ids[:, pos : pos + n],
                        output_layers=list(layers),
                        return_logprobs=logprobs,
                    )
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                _restore(state, snap)
                del exc
                self._back_off(n)
                continue
            if not hidden:
                out.last_hidden_state = None  # type: ignore[assignment]
            out.logits = None
            pieces.append(out)
            pos += n
        if len(pieces) == 1:
            return pieces[0]
        return _concat(pieces)

    def _back_off(self, failed: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if failed <= MIN_CHUNK:
            raise MemoryError(
                f"out of memory on {self.device} even with {failed}-token steps "
                f"(K={self.filter_len}); use a smaller --filter-len or another device"
            )
        self.chunk = max(MIN_CHUNK, failed // 2)
        self.backoffs += 1
        log.warning(
            "out of memory on %s with %d-token steps: retrying with %d-token steps",
            self.device,
            failed,
            self.chunk,
        )


def _concat(pieces: list[StreamingChunkOutput]) -> StreamingChunkOutput:
    def cat(ts: list[Tensor | None]) -> Tensor | None:
        return None if ts[0] is None else torch.cat(ts, dim=1)  # type: ignore[arg-type]

    return StreamingChunkOutput(
        start=pieces[0].start,
        last_hidden_state=cat([p.last_hidden_state for p in pieces]),  # type: ignore[arg-type]
        hidden_states={
            i: torch.cat([p.hidden_states[i] for p in pieces], dim=1)
            for i in pieces[0].hidden_states
        },
        token_logprobs=cat([p.token_logprobs for p in pieces]),
    )
