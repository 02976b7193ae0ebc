"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(hyenadna_fixtures, monkeypatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README has no Python example"
    monkeypatch.chdir(README.parent)
    scope: dict[str, object] = {}
    exec(compile(blocks[0], str(README), "exec"), scope)  # noqa: S102
    engine = scope["engine"]
    assert engine.state.position == 200_000  # the whole shipped E. coli slice was streamed
    assert scope["out"].last_hidden_state.shape[-1] == 128
