"""Exact streaming: run HyenaDNA over a sequence of any length, chunk by chunk.

Every operation in the model is position-wise except two causal convolutions per block: the
short depthwise conv (width W) and the long FFT conv with a filter truncated to K taps. So a
chunk's outputs only depend on the chunk itself plus, per block,

* the last W - 1 inputs of the short conv (``in_proj`` outputs), and
* per long conv, the last K - 1 gated inputs ``x_i * v``.

:class:`StreamingState` carries exactly that; :class:`StreamingHyenaDNA` feeds chunks through
the model with it, and the outputs equal a whole-sequence forward with the same truncated
filters (up to floating-point rounding). Memory is O(layers x d x (K + chunk)), independent of
the total length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from dnastream.kernels import fftconv, short_conv_state_ref
from dnastream.models.hyenadna import Block, HyenaDNAModel

__all__ = ["LayerState", "StreamingChunkOutput", "StreamingHyenaDNA", "StreamingState"]


@dataclass
class LayerState:
    """Left context of one block.

    short: (B, (N + 1) d, W - 1) last in_proj outputs (zeros before the sequence start).
    long: per long conv, (B, d, C) with C <= K - 1 last gated inputs (fp32 at least).
    """

    short: Tensor
    long: list[Tensor]

    def nbytes(self) -> int:
        """Bytes held by this state."""
        return sum(t.numel() * t.element_size() for t in [self.short, *self.long])


@dataclass
class StreamingState:
    """Per-block left context plus what a chunk boundary needs for next-token likelihoods.

    ``position`` counts tokens consumed so far; ``last_logprobs`` (B, V) are the log-softmax
    of the last position's logits (predicting the next chunk's first token).
    """

    layers: list[LayerState]
    position: int = 0
    last_logprobs: Tensor | None = None

    def nbytes(self) -> int:
        """Bytes held by the whole state."""
        extra = 0 if self.last_logprobs is None else self.last_logprobs.numel() * 8
        return sum(layer.nbytes() for layer in self.layers) + extra


@dataclass
class StreamingChunkOutput:
    """Outputs for one chunk of C tokens starting at ``start`` (0-based token position).

    last_hidden_state: (B, C, d) after ln_f.
    hidden_states: {i: (B, C, d)} residual stream after block i, for requested layers.
    logits: (B, C, V) or None.
    token_logprobs: (B, C) log p(token_t | tokens_<t); NaN at the stream's first token
        (nothing predicts it). None unless requested.
    """

    start: int
    last_hidden_state: Tensor
    hidden_states: dict[int, Tensor] = field(default_factory=dict)
    logits: Tensor | None = None
    token_logprobs: Tensor | None = None


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class StreamingHyenaDNA:
    """Runs a :class:`HyenaDNAModel` over consecutive chunks with carried state.

    Args:
        model: the model (its ``filter_len`` or ``l_max`` sets K, the taps of the long filters).
        filter_len: optional K to set on the model (partial convolution). Required when the
            total length may exceed ``l_max``: without it the filters are ``l_max`` taps long
            and any length still works, but K - 1 = l_max - 1 context columns are carried.

    Use :meth:`reset` then :meth:`step` per chunk, or :meth:`run` over an iterable of chunks.
    """

    def __init__(self, model: HyenaDNAModel, *, filter_len: int | None = None) -> None:
        if filter_len is not None:
            model.set_filter_len(filter_len)
        self.model = model
        first = model.blocks[0].mixer.filter
        self.taps = first.filter_len if first.filter_len is not None else first.l_max
        self.state: StreamingState | None = None

    # -- state ------------------------------------------------------------------------------

    def init_state(self, batch_size: int) -> StreamingState:
        """Empty state (the sequence start) for ``batch_size`` rows."""
        layers = []
        for block in self.model.blocks:
            mixer = block.mixer
            width = mixer.short_conv.width
            channels = mixer.in_proj.out_features
            dtype, device = mixer.in_proj.weight.dtype, mixer.in_proj.weight.device
            short = torch.zeros(batch_size, channels, width - 1, dtype=dtype, device=device)
            empty = torch.zeros(
                batch_size, mixer.d_model, 0, dtype=_work_dtype(dtype), device=device
            )
            layers.append(LayerState(short, [empty] * (mixer.order - 1)))
        return StreamingState(layers)

    def reset(self, batch_size: int = 1) -> None:
        """Start a new sequence."""
        self.state = self.init_state(batch_size)

    # -- one chunk --------------------------------------------------------------------------

    def _mixer_step(self, block: Block, x: Tensor, layer: LayerState) -> Tensor:
        mixer = block.mixer
        z_in = mixer.project_in(x)  # (B, (N + 1) d, C)
        z = mixer.short_filter(z_in, layer.short)
        width = mixer.short_conv.width
        layer.short = short_conv_state_ref(z_in[..., -width:], width, layer.short)
        xs, v = mixer.split(z)
        filters = mixer.filter.fft_filters(self.taps)
        n_steps = mixer.order - 1
        d_skip = mixer.filter.bias.view(n_steps, mixer.d_model)
        work = _work_dtype(v.dtype)
        keep = self.taps - 1
        for o, x_i in enumerate(reversed(xs[1:])):
            g = v.to(work) * x_i.to(work)
            context = layer.long[o]
            post = xs[0] if o == n_steps - 1 else None
            v = fftconv(g, filters[o], d_skip[o], postgate=post, context=context).to(x_i.dtype)
            joined = torch.cat([context, g[..., max(0, g.shape[-1] - keep) :]], dim=-1)
            layer.long[o] = joined[..., max(0, joined.shape[-1] - keep) :].contiguous()
        return mixer.project_out(v)

    @torch.no_grad()
    def step(
        self,
        input_ids: Tensor,
        *,
        output_layers: Sequence[int] | None = None,
        return_logits: bool = False,
        return_logprobs: bool = False,
    ) -> StreamingChunkOutput:
        """Consume the next chunk of token ids (B, C) and return its outputs.

        The result equals the slice [position, position + C) of a whole-sequence forward with
        the same filters. Call :meth:`reset` first (or it is called for you on first use).
        """
        model = self.model
        if input_ids.dim() != 2 or input_ids.shape[1] < 1:
            raise ValueError(f"chunk must be (B, C>=1) token ids, got {tuple(input_ids.shape)}")
        if self.state is None:
            self.reset(input_ids.shape[0])
        state = self.state
        assert state is not None
        if state.layers[0].short.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"chunk batch size {input_ids.shape[0]} differs from the stream's "
                f"{state.layers[0].short.shape[0]}; call reset(batch_size) for a new stream"
            )
        wanted = model._layer_indices(output_layers)
        h = model.embed_dropout(model.embedding(input_ids))
        residual: Tensor | None = None
        hidden: dict[int, Tensor] = {}
        for i, (block, layer) in enumerate(zip(model.blocks, state.layers, strict=True)):
            x, residual = block._add_norm(h, residual, block.dropout1, block.norm1)
            mixed = self._mixer_step(block, x, layer)
            x, residual = block._add_norm(mixed, residual, block.dropout2, block.norm2)
            h = block.mlp(x)
            if i in wanted:
                hidden[i] = h + residual
        dropped = model.final_dropout(h)
        residual = dropped if residual is None else dropped + residual
        final = model.ln_f(residual.to(model.ln_f.weight.dtype))
        out = StreamingChunkOutput(
            start=state.position, last_hidden_state=final, hidden_states=hidden
        )
        if return_logits or return_logprobs:
            out.logits = model.lm_head(final)
        if return_logprobs:
            assert out.logits is not None
            out.token_logprobs = self._token_logprobs(out.logits, input_ids, state)
        state.position += input_ids.shape[1]
        return out

    @staticmethod
    def _token_logprobs(logits: Tensor, ids: Tensor, state: StreamingState) -> Tensor:
        dtype = _work_dtype(logits.dtype)
        logp = torch.log_softmax(logits.to(dtype), dim=-1)  # (B, C, V)
        prev = logp[:, :-1]
        if state.last_logprobs is not None:
            prev = torch.cat([state.last_logprobs.unsqueeze(1), prev], dim=1)
            picked = prev.gather(-1, ids.unsqueeze(-1).long()).squeeze(-1)
        else:
            first = torch.full((ids.shape[0], 1), float("nan"), dtype=dtype, device=ids.device)
            rest = prev.gather(-1, ids[:, 1:].unsqueeze(-1).long()).squeeze(-1)
            picked = torch.cat([first, rest], dim=1)
        state.last_logprobs = logp[:, -1]
        return picked

    def run(
        self,
        chunks: Iterable[Tensor],
        **kwargs: object,
    ) -> Iterator[StreamingChunkOutput]:
        """Reset, then yield :meth:`step` outputs for each chunk (B, C_i) in order."""
        first = True
        for chunk in chunks:
            if first:
                self.reset(chunk.shape[0])
                first = False
            yield self.step(chunk, **kwargs)  # type: ignore[arg-type]
