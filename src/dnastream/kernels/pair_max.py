"""Row-pair maxima of |gate * x|: the scales of the FFT convolution's float16 outer buffers.

The outer levels store each (row pair, channel) of ``gate * x`` divided by its largest
magnitude, so no stored value exceeds 1 (:attr:`dnastream.kernels.monarch.FFTPlan.outer_fp16`).
:func:`pair_max` computes those maxima in one Triton pass that reads ``x`` and the gate once
and forms their product in registers, in float32 as the convolution kernels do. Its twin
:func:`pair_max_ref` is the PyTorch reduction it replaced, which materialises the product
(one more write and read of a tensor the size of ``x`` when gated).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from dnastream.kernels.backend import interpret_requested

__all__ = ["pair_max", "pair_max_ref", "pair_max_triton"]

#: Elements per load; the programs of one row split it into chunks of whole blocks.
BLOCK = 2048
#: Rows times chunks to aim for (enough programs for every SM of an H100 several times).
TARGET_PROGRAMS = 2048


@triton.jit
def _row_absmax_kernel(
    x_ptr,
    g_ptr,
    out_ptr,
    L,
    chunk,
    n_chunks,
    BLOCK: tl.constexpr,
    HAS_G: tl.constexpr,
):
    """Program (row, ch): max |g * x| over samples [ch * chunk, (ch + 1) * chunk) of one row
    of the contiguous (rows, L) inputs, into out[row, ch] (float32 product, as ``_gload``)."""
    row = tl.program_id(0)
    ch = tl.program_id(1)
    base = row.to(tl.int64) * L
    start = ch * chunk
    stop = tl.minimum(start + chunk, L)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for off in range(start, stop, BLOCK):
        offs = off + tl.arange(0, BLOCK)
        m = offs < stop
        x = tl.load(x_ptr + base + offs, mask=m, other=0.0).to(tl.float32)
        if HAS_G:
            x = x * tl.load(g_ptr + base + offs, mask=m, other=0.0).to(tl.float32)
        acc = tl.maximum(acc, tl.abs(x))
    tl.store(out_ptr + row * n_chunks + ch, tl.max(acc, axis=0))


def _pairs(m: Tensor) -> Tensor:
    """(B, H) row maxima -> (ceil(B / 2), H): the larger of each row pair (an odd B's last
    pair has one row), at least the smallest normal float32 (so its inverse is finite)."""
    if m.shape[0] % 2:
        m = torch.cat([m, torch.zeros_like(m[:1])])
    return m.view(-1, 2, m.shape[1]).amax(dim=1).clamp_min_(torch.finfo(torch.float32).tiny)


def pair_max_ref(src: Tensor, gate: Tensor | None) -> Tensor:
    """PyTorch twin of :func:`pair_max`: the product in the inputs' dtype, then one reduction.

    Args:
        src: (B, H, L) float tensor.
        gate: None or like ``src``.

    Returns:
        (ceil(B / 2), H) float32.
    """
    x = src if gate is None else src * gate
    m = torch.linalg.vector_norm(x, ord=float("inf"), dim=-1).float()  # (B, H), exact
    return _pairs(m)


def pair_max(src: Tensor, gate: Tensor | None) -> Tensor:
    """(ceil(B / 2), H) float32: max |gate * src| over both rows of each row pair (rows 2p and
    2p + 1; an odd B's last pair has one) and all samples, the product formed in float32; at
    least the smallest normal float32.

    Args:
        src: (B, H, L) float tensor.
        gate: None or a tensor of ``src``'s shape.

    Runs the Triton pass on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``;
    otherwise, and for non-contiguous inputs, :func:`pair_max_ref` (the product then rounds
    to the inputs' dtype).
    """
    if src.dim() != 3 or (gate is not None and gate.shape != src.shape):
        raise ValueError(
            f"pair_max: src must be (B, H, L) and gate like it, got {tuple(src.shape)} and "
            f"{None if gate is None else tuple(gate.shape)}"
        )
    dev = src.device
    runs = dev.type == "cuda" or (dev.type == "cpu" and interpret_requested())
    contiguous = src.is_contiguous() and (gate is None or gate.is_contiguous())
    if not (runs and contiguous):
        return pair_max_ref(src, gate)
    with torch.cuda.device(dev) if src.is_cuda else contextlib.nullcontext():
        return pair_max_triton(src, gate)


def pair_max_triton(src: Tensor, gate: Tensor | None) -> Tensor:
    """The Triton pass of :func:`pair_max` for contiguous (B, H, L) inputs (no checks)."""
    b, h, length = src.shape
    rows = b * h
    if rows == 0 or length == 0:
        return _pairs(torch.zeros((b, h), dtype=torch.float32, device=src.device))
    blocks = triton.cdiv(length, BLOCK)
    per_row = max(1, min(blocks, triton.cdiv(TARGET_PROGRAMS, rows)))
    chunk = triton.cdiv(blocks, per_row) * BLOCK
    n_chunks = triton.cdiv(length, chunk)
    part = torch.empty((rows, n_chunks), dtype=torch.float32, device=src.device)
    _row_absmax_kernel[(rows, n_chunks)](
        src, gate if gate is not None else src, part, length, chunk, n_chunks,
        BLOCK=BLOCK, HAS_G=gate is not None, num_warps=4,
    )  # fmt: skip
    m = part.amax(dim=1) if n_chunks > 1 else part[:, 0]
    return _pairs(m.view(b, h))
