"""The README's quickstart command and Python examples run as written."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)


def _block(marker: str) -> str:
    found = [b for b in PYTHON_BLOCKS if marker in b]
    assert found, f"README has no Python example using {marker}"
    return found[0]


def test_quickstart_embed_then_h5py_example(tmp_path, monkeypatch) -> None:
    """The main-job line (minus clone/install) runs on the shipped demo data, needing no ../shared;
    the h5py example then reads what it wrote."""
    line = next(ln for ln in TEXT.splitlines() if "&& dnastream embed" in ln)
    command = shlex.split(line[line.index("dnastream embed") :])
    for rel in ("tests",):
        shutil.copytree(README.parent / rel / "data", tmp_path / rel / "data")
    proc = subprocess.run(
        [sys.executable, "-m", "dnastream", *command[1:], "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(_block("h5py.File"), str(README), "exec"), scope)  # noqa: S102
    assert scope["emb"].shape == (200, 128)


def test_readme_streaming_example_runs(monkeypatch) -> None:
    monkeypatch.chdir(README.parent)
    scope: dict[str, object] = {}
    exec(compile(_block("StreamingHyenaDNA"), str(README), "exec"), scope)  # noqa: S102
    engine = scope["engine"]
    assert engine.state.position == 200_000  # the whole shipped E. coli slice was streamed
    assert scope["out"].last_hidden_state.shape[-1] == 128


def test_readme_kernels_example_runs() -> None:
    import torch

    scope: dict[str, object] = {"torch": torch}
    exec(compile(_block("freq_keep"), str(README), "exec"), scope)  # noqa: S102
    u = scope["u"]
    for name in ("y", "y_part", "y_sparse", "y_short"):
        assert scope[name].shape == u.shape, name
    assert not torch.allclose(scope["y"], scope["y_sparse"])
