"""The fixed cost of a fresh ``dnastream score`` / ``dnastream embed`` process: modules that a
``--quiet`` run does not use are not imported, and the start-up pause of the garbage
collector (``dnastream.cli.main.run``) has ended by the time the model runs.

Each check runs in a fresh interpreter: this test process has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

TEST_DATA = Path(__file__).resolve().parent / "data"
FASTA = TEST_DATA / "ecoli_K12_W3110_first200kb.fa.gz"
MODEL = TEST_DATA / "hyenadna_tiny_random_hf"

# Not needed by a quiet score/embed of regions of an indexed FASTA, and deferred to their
# place of use: rich (progress bar, tables, messages), matplotlib (--plot), the GTF/GFF3
# parser (--genes/--regions with an annotation), the window planner (library API only).
DEFERRED = ("rich", "matplotlib", "dnastream.genomics.gff", "dnastream.genomics.windows")
# score does not need the embed pipeline
DEFERRED_SCORE = (*DEFERRED, "dnastream.pipelines.embed")


def _loaded(modules: list[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == r or m.startswith(r + ".") for r in roots))


def _fresh(code: str, *args: str) -> Any:
    """Run ``code`` in a fresh interpreter; it prints one JSON line prefixed ``RESULT=``."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("RESULT=")]
    assert len(lines) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(lines[0][len("RESULT=") :])


def test_importing_the_cli_and_pipelines_loads_no_deferred_module() -> None:
    res = _fresh(
        """
        import json, sys
        import dnastream.cli.main
        import dnastream.pipelines.score
        import dnastream.pipelines.distributed
        print("RESULT=" + json.dumps(sorted(sys.modules)))
        """
    )
    assert _loaded(res, DEFERRED) == []


def test_importing_score_does_not_load_embed() -> None:
    res = _fresh(
        """
        import json, sys
        import dnastream.cli.main
        import dnastream.pipelines.score
        print("RESULT=" + json.dumps(sorted(sys.modules)))
        """
    )
    assert _loaded(res, DEFERRED_SCORE) == []


# The console entry point (run(), as `python -m dnastream`), the modules loaded when the
# process ends (its atexit handlers still run on the quick exit) and the collector's state.
_RUN = """
import atexit, gc, json, sys

def report():
    print("RESULT=" + json.dumps({
        "modules": sorted(sys.modules),
        "gc_enabled": gc.isenabled(),
        "frozen": gc.get_freeze_count(),
    }), file=sys.stderr, flush=True)

atexit.register(report)
sys.argv = ["dnastream", *sys.argv[1:]]
import runpy
runpy.run_module("dnastream", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("command", ["score", "embed"])
def test_quiet_run_loads_no_deferred_module(tmp_path: Path, command: str) -> None:
    out = tmp_path / f"{command}.h5"
    res = _fresh(
        _RUN,
        command,
        str(FASTA),
        "--region",
        "NC_007779.1:1001-3000",
        "-o",
        str(out),
        "--model",
        str(MODEL),
        "--device",
        "cpu",
        "--quiet",
    )
    assert out.is_file()
    modules = res["modules"]
    assert "dnastream.pipelines." + command in modules  # the run happened in this process
    assert _loaded(modules, DEFERRED_SCORE if command == "score" else DEFERRED) == []
    # the start-up pause ended before the run: collector on, start-up objects frozen
    assert res["gc_enabled"]
    assert res["frozen"] > 100_000


def test_genomics_names_load_on_first_use() -> None:
    res = _fresh(
        """
        import json, sys
        import dnastream.genomics as g
        before = sorted(m for m in sys.modules if m.startswith("dnastream.genomics."))
        from dnastream.genomics import FastaFile, parse_region
        after = sorted(m for m in sys.modules if m.startswith("dnastream.genomics."))
        missing = [n for n in g.__all__ if getattr(g, n, None) is None]
        ns = {}
        exec("from dnastream.genomics import *", ns)
        star = sorted(n for n in ns if not n.startswith("__"))
        print("RESULT=" + json.dumps({
            "before": before, "after": after, "missing": missing, "star": star,
            "all": sorted(g.__all__), "lazy": sorted(g._SUBMODULE),
            "dir_ok": set(g.__all__) <= set(dir(g)),
            "module": FastaFile.__module__,
        }))
        """
    )
    assert res["before"] == []
    assert "dnastream.genomics.gff" not in res["after"]
    assert "dnastream.genomics.fasta" in res["after"]
    assert res["missing"] == []
    assert res["star"] == res["all"] == res["lazy"]
    assert res["dir_ok"]
    assert res["module"] == "dnastream.genomics.fasta"
    import dnastream.genomics as g

    with pytest.raises(AttributeError):
        g.no_such_name  # noqa: B018
