"""``dnastream convert``: any supported HyenaDNA checkpoint folder -> the native format."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from dnastream.models import convert, detect_format, load_model

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


class OutputExistsError(FileExistsError):
    """The destination already holds a checkpoint and ``force`` was not given."""


@dataclass(frozen=True)
class ConversionReport:
    """What :func:`convert_checkpoint` did."""

    source: Path
    source_format: str
    destination: Path
    modulation_shift: float
    n_parameters: int


def convert_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    modulation_shift: float | None = None,
    dtype: str = "float32",
    force: bool = False,
) -> ConversionReport:
    """Write ``src`` (official Lightning, ``-hf`` or native folder) to ``dst`` as native.

    The folder is written to a temporary sibling and renamed into place, so an interrupted
    run never leaves a half-written checkpoint, and an existing ``dst`` is only replaced with
    ``force``. The result is reloaded and checked to give the same logits as the source.
    """
    src_path, dst_path = Path(src), Path(dst)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if dst_path.exists() and any(dst_path.iterdir()) and not force:
        raise OutputExistsError(
            f"{dst_path} already exists and is not empty; pass --force to replace it"
        )
    fmt = detect_format(src_path)
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst_path.name}.", dir=dst_path.parent))
    try:
        convert(src_path, tmp, modulation_shift=modulation_shift, dtype=_DTYPES[dtype])
        source = load_model(src_path, modulation_shift=modulation_shift, dtype=_DTYPES[dtype])
        written = load_model(tmp, dtype=_DTYPES[dtype])
        ids = torch.arange(7, 12).repeat(8).unsqueeze(0)
        with torch.no_grad():
            same = torch.equal(source(ids).logits, written(ids).logits)
        if not same:
            raise RuntimeError(f"converted checkpoint in {tmp} does not reproduce {src_path}")
        if dst_path.exists():
            shutil.rmtree(dst_path)
        tmp.rename(dst_path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    n_params = sum(p.numel() for p in written.parameters())
    return ConversionReport(src_path, fmt, dst_path, written.config.modulation_shift, n_params)
