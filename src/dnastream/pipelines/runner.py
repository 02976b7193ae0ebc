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

Test hook: the environment variable ``DNASTREAM_TEST_SLEEP_PER_CHUNK`` (seconds, float) makes
the runner sleep after every chunk, so tests can interrupt a run at a known point.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from dnastream.models import HyenaDNAModel
from dnastream.models.streaming import StreamingChunkOutput, StreamingHyenaDNA, StreamingState
from dnastream.pipelines.source import TokenChunk

__all__ = [
    "MIN_CHUNK",
    "ModelRunner",
    "RegionChunkResult",
    "is_out_of_memory",
    "resolve_device",
    "tune_malloc",
]

log = logging.getLogger("dnastream.pipelines")

MIN_CHUNK = 64
"""Smallest step size the OOM back-off goes down to before giving up."""

SLEEP_ENV = "DNASTREAM_TEST_SLEEP_PER_CHUNK"

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


class ModelRunner:
    """Streams regions through a model, chunk by chunk, exactly.

    Args:
        model: the HyenaDNA model (moved to ``device``/``dtype``, set to eval mode).
        device: where to run (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``...).
        dtype: compute dtype of the model (float32 unless a GPU run wants bfloat16/float16).
        chunk: tokens per streaming step (halved on CUDA OOM, see the module docstring).
        filter_len: long-filter taps K (default: the model's filter_len, else l_max).
    """

    def __init__(
        self,
        model: HyenaDNAModel,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        chunk: int,
        filter_len: int | None = None,
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
        for tc in token_chunks:
            ids = torch.from_numpy(np.ascontiguousarray(tc.ids)).to(self.device).unsqueeze(0)
            out = self._step(ids, layers, logprobs, hidden)
            yield RegionChunkResult(
                offset=tc.offset,
                hidden=None if out.last_hidden_state is None else _numpy(out.last_hidden_state[0]),
                layers={i: _numpy(h[0]) for i, h in out.hidden_states.items()},
                logprobs=None if out.token_logprobs is None else _numpy(out.token_logprobs[0]),
                mask=tc.mask,
                flags=tc.flags,
            )
            if self.sleep:
                time.sleep(self.sleep)

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
        for tcs in token_batches:
            if not started:
                self.engine.reset(len(tcs))
                started = True
            if len({len(tc.ids) for tc in tcs}) != 1:
                raise ValueError("batched chunks must have equal lengths")
            ids = torch.from_numpy(np.stack([tc.ids for tc in tcs])).to(self.device)
            out = self._step(ids, layers, logprobs, hidden)
            hid = None if out.last_hidden_state is None else _numpy(out.last_hidden_state)
            lay = {i: _numpy(h) for i, h in out.hidden_states.items()}
            lp = None if out.token_logprobs is None else _numpy(out.token_logprobs)
            yield [
                RegionChunkResult(
                    offset=tc.offset,
                    hidden=None if hid is None else hid[b],
                    layers={i: h[b] for i, h in lay.items()},
                    logprobs=None if lp is None else lp[b],
                    mask=tc.mask,
                    flags=tc.flags,
                )
                for b, tc in enumerate(tcs)
            ]
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
