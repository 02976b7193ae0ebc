"""Gradient of the skip term ``D`` of the FFT convolution: a one-pass Triton reduction.

For ``y = g2 * (conv(g1 * u, k) + D * (g1 * u))`` the gradient of the per-channel skip weight
``D`` (H,) is

    dD[h] = sum over b, t of (g1 * u)[b, h, t] * (g2 * dy)[b, h, t]

with every operand upcast to fp32 and every product formed in fp32. The PyTorch twin
(:func:`skip_gradient_ref`) makes two full-size fp32 temporaries; the kernel reads each input
once (bf16 without gates: 4 bytes per element) and writes ``H * S`` fp32 partial sums.

Kernel layout
-------------
* **Grid** ``(H, S)``: program ``(h, s)`` reduces span ``s`` of channel ``h``. The ``B * L``
  elements of a channel are cut into 2-D tiles ``(BLOCK_B, BLOCK_T)`` (rows ``b``, positions
  ``t``), numbered row-block-major; the ``S`` spans are contiguous runs of ``ceil(T / S)``
  tiles. No per-element division: a tile index gives its row block and time block with two
  scalar operations, so odd, prime and tiny ``L`` (1, 7, ...) cost nothing extra.
* **Tile shape**: ``BLOCK_B * BLOCK_T <= BLOCK`` (1024). ``BLOCK_T`` is the largest power of two
  ``<= min(BLOCK, next_pow2(L))`` whose padding of ``L`` stays within 1/8 (down to 32), so rows
  of length e.g. 1025 do not run half-empty tiles; ``BLOCK_B`` fills the rest (at most
  ``next_pow2(B)``). For long rows a tile is one contiguous 1024-element run: 16-byte vector
  loads when ``L`` is a multiple of 16 (Triton specialises such arguments; sm_90 PTX checked).
* **Spans**: on CUDA ``S = ceil(8 * SMs / H)`` (about 8 programs of 4 warps per SM: with
  16-byte loads of up to four operands that keeps enough bytes in flight for HBM), capped by
  the tile count and trimmed so that no span is empty; under the interpreter a small constant
  (4 programs in all) so that the multi-span path is exercised on the CPU.
* **Accumulation**: an fp32 register tile (on the GPU the last product is fused into the
  accumulation, an FMA), summed (tree) at the end into ``partial[h, s]``; the
  launcher returns ``partial.sum(1)``. Deterministic: no atomics. Offsets are int64 (``b * H *
  L`` can exceed 2**31); the tile index and ``t`` are int32 (``B * L`` of one channel must fit).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from dnastream.kernels.backend import interpret_requested

__all__ = ["BLOCK", "skip_gradient", "skip_gradient_ref"]

#: Elements per tile (``BLOCK_B * BLOCK_T``).
BLOCK = 1024
#: Programs per SM aimed for on CUDA (the grid is ``H * S`` programs).
_PROGRAMS_PER_SM = 8
#: Programs in all under the CPU interpreter (small: the interpreter is slow per program).
_INTERPRETER_PROGRAMS = 4
_NUM_WARPS = 4
_SUPPORTED = (torch.bfloat16, torch.float16, torch.float32)


def skip_gradient_ref(u: Tensor, g1: Tensor | None, dy: Tensor, g2: Tensor | None) -> Tensor:
    """PyTorch twin of :func:`skip_gradient`.

    Args:
        u: (B, H, L) input of the convolution.
        g1: (B, H, L) pre-gate, or None.
        dy: (B, H, L) gradient of the output.
        g2: (B, H, L) post-gate, or None.

    Returns:
        (H,) float32: ``sum over (b, t) of (g1 * u) * (g2 * dy)``, each operand upcast to fp32
        and every product formed in fp32 (two full-size fp32 temporaries).
    """
    x = u.to(torch.float32, copy=True)
    if g1 is not None:
        x.mul_(g1)
    z = dy.to(torch.float32, copy=True)
    if g2 is not None:
        z.mul_(g2)
    return x.mul_(z).sum(dim=(0, 2))


@triton.jit
def _skip_gradient_kernel(
    u_ptr,
    g1_ptr,
    dy_ptr,
    g2_ptr,
    part_ptr,
    B,
    L,
    row,
    n_t,
    tiles_per_span,
    n_tiles,
    HAS_G1: tl.constexpr,
    HAS_G2: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """partial[h, s] = sum of (g1 u)(g2 dy) over tiles [s * tiles_per_span, ...) of channel h.

    Tile ``k`` of a channel covers rows ``(k // n_t) * BLOCK_B + [0, BLOCK_B)`` and positions
    ``(k % n_t) * BLOCK_T + [0, BLOCK_T)``; element ``(b, h, t)`` sits at ``b * row + h * L + t``
    (``row = H * L``; int64 offsets).
    """
    h = tl.program_id(0)
    s = tl.program_id(1)
    n_s = tl.num_programs(1)
    ch = h.to(tl.int64) * L
    rb = tl.arange(0, BLOCK_B)
    rt = tl.arange(0, BLOCK_T)
    acc = tl.zeros((BLOCK_B, BLOCK_T), dtype=tl.float32)
    k0 = s * tiles_per_span
    k1 = tl.minimum(k0 + tiles_per_span, n_tiles)
    for k in range(k0, k1):
        b = (k // n_t) * BLOCK_B + rb
        t = (k % n_t) * BLOCK_T + rt
        offs = (b.to(tl.int64) * row + ch)[:, None] + t[None, :]
        mask = (b < B)[:, None] & (t < L)[None, :]
        x = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_G1:
            x = x * tl.load(g1_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        z = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_G2:
            z = z * tl.load(g2_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        acc += x * z
    tl.store(part_ptr + h * n_s + s, tl.sum(tl.sum(acc, axis=1), axis=0))


def _uses_triton(device: torch.device) -> bool:
    """CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1`` (as ``fftconv_triton``)."""
    return device.type == "cuda" or (device.type == "cpu" and interpret_requested())


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _tile_shape(batch: int, seq_len: int, block: int) -> tuple[int, int]:
    """(BLOCK_B, BLOCK_T) for (batch, seq_len) rows: BLOCK_T a power of two <= block that pads
    seq_len by at most 1/8 (or 32 at the least), BLOCK_B the rest of the block (<= batch)."""
    bt = min(block, _pow2_at_least(seq_len))
    while bt > 32 and -(-seq_len // bt) * bt * 8 > seq_len * 9:
        bt //= 2
    bb = min(block // bt, _pow2_at_least(batch))
    return bb, bt


_SM_COUNT: dict[int, int] = {}


def _target_programs(device: torch.device) -> int:
    if device.type != "cuda":
        return _INTERPRETER_PROGRAMS
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx] * _PROGRAMS_PER_SM


def _check(u: Tensor, g1: Tensor | None, dy: Tensor, g2: Tensor | None) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be 3-D (B, H, L), got shape {tuple(u.shape)}")
    for name, t in (("dy", dy), ("g1", g1), ("g2", g2)):
        if t is None:
            continue
        if t.shape != u.shape:
            raise ValueError(
                f"{name} must have the shape of u {tuple(u.shape)}, got {tuple(t.shape)}"
            )
        if t.device != u.device:
            raise ValueError(f"{name} is on {t.device}, u on {u.device}: same device needed")


def skip_gradient(
    u: Tensor,
    g1: Tensor | None,
    dy: Tensor,
    g2: Tensor | None,
    *,
    spans: int | None = None,
    block: int = BLOCK,
) -> Tensor:
    """Gradient of the skip weight D: ``sum over (b, t) of (g1 * u) * (g2 * dy)`` in fp32.

    Runs the Triton reduction on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``;
    otherwise (or for dtypes other than bf16/fp16/fp32) :func:`skip_gradient_ref`.

    Args:
        u: (B, H, L) input of the convolution (bf16, fp16 or fp32).
        g1: (B, H, L) pre-gate, or None.
        dy: (B, H, L) gradient of the output.
        g2: (B, H, L) post-gate, or None.
        spans: spans per channel (the grid's second dimension); None chooses from the SM count
            (tests force it).
        block: elements per tile, a power of two (tests lower it to reach many tiles).

    Returns:
        (H,) float32 on the device of ``u``.

    Raises:
        ValueError: if a tensor is not 3-D, shapes or devices differ, or spans/block are bad.
    """
    _check(u, g1, dy, g2)
    given = [t for t in (u, g1, dy, g2) if t is not None]
    if not _uses_triton(u.device) or any(t.dtype not in _SUPPORTED for t in given):
        return skip_gradient_ref(u, g1, dy, g2)
    if block < 1 or block & (block - 1):
        raise ValueError(f"block must be a power of two, got {block}")
    if spans is not None and spans < 1:
        raise ValueError(f"spans must be >= 1, got {spans}")
    batch, heads, seq_len = u.shape
    if heads == 0 or batch * seq_len == 0:
        return torch.zeros(heads, dtype=torch.float32, device=u.device)
    u, dy = u.contiguous(), dy.contiguous()
    g1 = g1.contiguous() if g1 is not None else None
    g2 = g2.contiguous() if g2 is not None else None

    bb, bt = _tile_shape(batch, seq_len, block)
    n_t = -(-seq_len // bt)
    n_tiles = -(-batch // bb) * n_t
    if spans is None:
        spans = -(-_target_programs(u.device) // heads)
    spans = min(spans, n_tiles)
    per = -(-n_tiles // spans)
    spans = -(-n_tiles // per)  # no empty span
    part = torch.empty(heads, spans, dtype=torch.float32, device=u.device)
    args = (u, g1 if g1 is not None else u, dy, g2 if g2 is not None else dy, part)
    with torch.cuda.device(u.device) if u.is_cuda else contextlib.nullcontext():
        _skip_gradient_kernel[(heads, spans)](
            *args,
            batch,
            seq_len,
            heads * seq_len,
            n_t,
            per,
            n_tiles,
            HAS_G1=g1 is not None,
            HAS_G2=g2 is not None,
            BLOCK_B=bb,
            BLOCK_T=bt,
            num_warps=_NUM_WARPS,
        )
    return part.sum(dim=1)
