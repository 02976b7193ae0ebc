"""The ``dnastream`` command's basics: version, doctor, help; in-process and as a process."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from dnastream import __version__
from dnastream.cli.main import app
from dnastream.kernels.backend import kernel_mode
from dnastream.pipelines.doctor import collect_environment

runner = CliRunner()


def test_version_flag() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"dnastream {__version__}"


def test_doctor_reports_versions_and_kernel_mode() -> None:
    import torch

    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert torch.__version__ in result.stdout
    env = collect_environment()
    assert env.packages["torch"] is not None
    assert env.kernel_mode in result.stdout
    assert env.kernel_mode == kernel_mode()
    if not torch.cuda.is_available():
        assert "none visible" in result.stdout
    assert "FFT-conv plans" in result.stdout and "fftconv_plans.json" in env.plan_tuning


def test_kernel_mode_follows_interpreter_flag(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernel_mode("cpu") == "interpreted"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert kernel_mode("cpu") == "reference"


def test_console_script_runs_as_a_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dnastream", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert __version__ in proc.stdout


def test_no_arguments_prints_help() -> None:
    result = runner.invoke(app, [])
    assert "doctor" in result.output


def test_chunk_help_states_the_real_defaults() -> None:
    """``--chunk``'s help of ``embed`` and ``score`` names the defaults the pipelines use."""
    import inspect

    from dnastream.cli.main import app
    from dnastream.pipelines.runner import DEFAULT_CHUNK

    want = f"default {DEFAULT_CHUNK['cpu']} on CPU, {DEFAULT_CHUNK['cuda']} on CUDA"
    seen = 0
    for cmd in app.registered_commands:
        chunk = inspect.signature(cmd.callback).parameters.get("chunk")
        if chunk is not None:
            assert want in chunk.default.help, (cmd.callback.__name__, chunk.default.help)
            seen += 1
    assert seen >= 2
