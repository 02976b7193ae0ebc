"""HyenaDNA language model: embedding, pre-norm Hyena blocks, final LayerNorm, tied LM head.

Block i (pre-norm; ``r`` is the residual stream, kept in float32 when residual_in_fp32):

    r = drop(h) + r;   h = mixer(norm1(r));   r = fp32(r)
    r = drop(h) + r;   h = mlp(norm2(r));     r = fp32(r)

"residual after block i" is ``h + r`` at the block's end (the input of the next block).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dnastream.kernels import short_conv_state_ref
from dnastream.models.config import HyenaDNAConfig
from dnastream.models.operator import HyenaOperator

__all__ = ["Block", "HyenaDNAModel", "HyenaDNAOutput", "Mlp", "next_token_logprobs"]

#: Inference over more than this many tokens (B x L) runs the position-wise parts of each block
#: tile by tile (see :meth:`HyenaDNAModel._forward_tiled`): same numbers, a fraction of the
#: memory, since only the residual stream, the projections and the long-conv output are ever
#: whole-sequence tensors.
TILED_INFERENCE_TOKENS = 1 << 17
INFERENCE_TILE = 1 << 16


class Mlp(nn.Module):
    """fc1 -> GELU (tanh approximation) -> fc2."""

    def __init__(self, d_model: int, d_inner: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_inner)
        self.fc2 = nn.Linear(d_inner, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., d) -> (..., d)."""
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm residual block: Hyena mixer then MLP."""

    def __init__(self, config: HyenaDNAConfig) -> None:
        super().__init__()
        d, eps = config.d_model, config.layer_norm_epsilon
        self.residual_in_fp32 = config.residual_in_fp32
        self.dropout1 = nn.Dropout(config.resid_dropout)
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.mixer = HyenaOperator(
            d,
            config.layer,
            modulation_shift=config.modulation_shift,
            filter_len=config.filter_len,
        )
        self.dropout2 = nn.Dropout(config.resid_dropout)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = Mlp(d, config.inner_dim)

    def _add_norm(
        self, h: Tensor, residual: Tensor | None, drop: nn.Dropout, norm: nn.LayerNorm
    ) -> tuple[Tensor, Tensor]:
        residual = drop(h) if residual is None else drop(h) + residual
        normed = norm(residual.to(norm.weight.dtype))
        if self.residual_in_fp32:
            residual = residual.to(torch.float32)
        return normed, residual

    def forward(self, h: Tensor, residual: Tensor | None) -> tuple[Tensor, Tensor]:
        """(h, residual) (B, L, d) each -> (h, residual) for the next block."""
        x, residual = self._add_norm(h, residual, self.dropout1, self.norm1)
        x, residual = self._add_norm(self.mixer(x), residual, self.dropout2, self.norm2)
        return self.mlp(x), residual


@dataclass
class HyenaDNAOutput:
    """Model outputs; tensors not requested are None / empty.

    last_hidden_state: (B, L, d) after ln_f.
    hidden_states: {i: (B, L, d)} residual stream after block i, for the requested layers.
    logits: (B, L, V) over all padded vocabulary rows.
    next_token_logprobs: (B, L - 1), entry i = log p(ids[i + 1] | ids[:i + 1]).
    """

    last_hidden_state: Tensor
    hidden_states: dict[int, Tensor] = field(default_factory=dict)
    logits: Tensor | None = None
    next_token_logprobs: Tensor | None = None


class HyenaDNAModel(nn.Module):
    """HyenaDNA backbone with its (by default tied) LM head."""

    def __init__(self, config: HyenaDNAConfig) -> None:
        super().__init__()
        self.config = config
        d, vocab = config.d_model, config.padded_vocab_size
        self.embedding = nn.Embedding(vocab, d)
        self.embed_dropout = nn.Dropout(config.embed_dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.final_dropout = nn.Dropout(config.resid_dropout)
        self.ln_f = nn.LayerNorm(d, eps=config.layer_norm_epsilon)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embedding.weight
        #: Training option: recompute each block's activations in the backward pass instead of
        #: storing them (memory O(L d) per block boundary instead of O(L d_inner) per block).
        self.gradient_checkpointing = False

    # -- properties and settings ------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype."""
        return self.embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        """Parameter device."""
        return self.embedding.weight.device

    @property
    def tied(self) -> bool:
        """Whether the LM head shares the embedding matrix."""
        return self.lm_head.weight is self.embedding.weight

    def set_modulation_shift(self, shift: float) -> None:
        """Change the filter modulation shift of every layer (0.05 inference, 0.0 training)."""
        self.config = self.config.replace(modulation_shift=float(shift))
        for block in self.blocks:
            block.mixer.filter.modulation_shift = shift

    def set_filter_len(self, filter_len: int | None) -> None:
        """Truncate every long filter to ``filter_len`` taps (None: full l_max)."""
        self.config = self.config.replace(filter_len=filter_len)
        for block in self.blocks:
            block.mixer.filter.set_filter_len(filter_len)

    def clear_filter_cache(self) -> None:
        """Forget all materialised long filters."""
        for block in self.blocks:
            block.mixer.filter.clear_cache()

    # -- forward ----------------------------------------------------------------------------

    def _check_ids(self, input_ids: Tensor) -> None:
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else None
            raise ValueError(f"input_ids must be a (B, L) tensor, got shape {shape}")
        if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex:
            raise TypeError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
        if input_ids.numel() == 0:
            raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)})")
        lo, hi = int(input_ids.min()), int(input_ids.max())
        vocab = self.config.padded_vocab_size
        if lo < 0 or hi >= vocab:
            raise ValueError(f"token ids must be in [0, {vocab}), got range [{lo}, {hi}]")
        self.blocks[0].mixer.filter.taps_for(input_ids.shape[1])  # raises if too long

    def _layer_indices(self, output_layers: Sequence[int] | None) -> set[int]:
        n = len(self.blocks)
        chosen: set[int] = set()
        for i in output_layers or ():
            if not -n <= i < n:
                raise ValueError(f"output layer {i} out of range for {n} blocks")
            chosen.add(i % n)
        return chosen

    def forward(
        self,
        input_ids: Tensor,
        *,
        output_layers: Sequence[int] | None = None,
        return_logits: bool = True,
        return_logprobs: bool = False,
    ) -> HyenaDNAOutput:
        """Run the model on token ids (B, L).

        ``output_layers``: block indices (negative allowed) whose output residual stream to
        return. ``return_logprobs`` adds the per-position next-token log-likelihoods.
        """
        self._check_ids(input_ids)
        wanted = self._layer_indices(output_layers)
        h = self.embed_dropout(self.embedding(input_ids))
        residual: Tensor | None = None
        hidden_states: dict[int, Tensor] = {}
        lean = not torch.is_grad_enabled() and not self.training
        if lean and input_ids.numel() > TILED_INFERENCE_TOKENS:
            h, residual = self._forward_tiled(h, wanted, hidden_states, INFERENCE_TILE)
        else:
            recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
            for i, block in enumerate(self.blocks):
                if recompute:
                    h, residual = checkpoint(block, h, residual, use_reentrant=False)
                else:
                    h, residual = block(h, residual)
                if i in wanted:
                    hidden_states[i] = h + residual
        dropped = self.final_dropout(h)
        residual = dropped if residual is None else dropped + residual
        final = self.ln_f(residual.to(self.ln_f.weight.dtype))
        out = HyenaDNAOutput(last_hidden_state=final, hidden_states=hidden_states)
        if return_logits or return_logprobs:
            out.logits = self.lm_head(final)
        if return_logprobs:
            assert out.logits is not None
            out.next_token_logprobs = next_token_logprobs(out.logits, input_ids)
        return out

    def _forward_tiled(
        self, h: Tensor, wanted: set[int], hidden_states: dict[int, Tensor], tile: int
    ) -> tuple[Tensor, Tensor]:
        """Blocks for inference (no grad, eval), position-wise work in tiles of ``tile``.

        h: embeddings (B, L, d). Per block, tile by tile: residual add, norm1, in_proj and the
        short conv (its W - 1 left inputs carried across tiles) fill z (B, (N + 1) d, L); the
        long convolutions run once over the whole length (channel-grouped FFTs); then, tile by
        tile: out_proj, residual add, norm2, MLP. Returns (h, residual) like the blocks.
        """
        batch, length, _ = h.shape
        residual: Tensor | None = None
        for i, block in enumerate(self.blocks):
            mixer = block.mixer
            filters = mixer.filter.fft_filters(mixer.filter.taps_for(length))
            z: Tensor | None = None
            state: Tensor | None = None
            first_block = residual is None
            for s in range(0, length, tile):
                e = min(length, s + tile)
                r = h[:, s:e] if first_block else h[:, s:e] + residual[:, s:e]
                normed = block.norm1(r.to(block.norm1.weight.dtype))
                if block.residual_in_fp32:
                    r = r.to(torch.float32)
                if first_block and residual is None:
                    residual = r.new_empty(batch, length, r.shape[-1])
                assert residual is not None
                residual[:, s:e] = r
                z_in = mixer.project_in(normed)
                z_tile = mixer.short_filter(z_in, state)
                state = short_conv_state_ref(
                    z_in[..., -mixer.short_conv.width :], mixer.short_conv.width, state
                )
                if z is None:
                    z = z_tile.new_empty(batch, z_tile.shape[1], length)
                z[..., s:e] = z_tile
            del h
            assert z is not None and residual is not None
            xs, v = mixer.split(z)
            y = mixer.long_conv(xs, v, filters)
            del z, xs, v
            h_next: Tensor | None = None
            for s in range(0, length, tile):
                e = min(length, s + tile)
                r = mixer.project_out(y[..., s:e]) + residual[:, s:e]
                normed = block.norm2(r.to(block.norm2.weight.dtype))
                residual[:, s:e] = r
                out = block.mlp(normed)
                if h_next is None:
                    h_next = out.new_empty(batch, length, out.shape[-1])
                h_next[:, s:e] = out
            del y
            assert h_next is not None
            h = h_next
            if i in wanted:
                hidden_states[i] = h + residual
        assert residual is not None
        return h, residual


def next_token_logprobs(logits: Tensor, input_ids: Tensor) -> Tensor:
    """log p(ids[:, i + 1] | ids[:, :i + 1]) (B, L - 1) from logits (B, L, V).

    Softmax over all V rows, computed in float32 at least.
    """
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logp = torch.log_softmax(logits[:, :-1].to(dtype), dim=-1)
    return logp.gather(-1, input_ids[:, 1:].unsqueeze(-1).long()).squeeze(-1)
