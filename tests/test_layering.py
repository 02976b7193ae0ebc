"""The direction of imports between dnastream's rooms (genomics, kernels, models, ...)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dnastream"

# room -> rooms of ours it may import (besides itself and the top-level package)
ALLOWED = {
    "genomics": set(),
    "kernels": set(),
    "models": {"kernels"},
    "pipelines": {"models", "genomics", "kernels"},
    "cli": {"pipelines"},
}


def _imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "dnastream" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_room_imports_only_what_it_may(room: str) -> None:
    files = sorted((SRC / room).rglob("*.py"))
    assert files, f"no modules found in {room}"
    for path in files:
        bad = _imported_rooms(path) - ALLOWED[room] - {room} - {"__version__"}
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"
