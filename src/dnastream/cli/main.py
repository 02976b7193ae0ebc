"""The ``dnastream`` command: a thin typer layer over :mod:`dnastream.pipelines`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dnastream import __version__

app = typer.Typer(
    name="dnastream",
    help="Run HyenaDNA-style long-convolution DNA language models over multi-megabase DNA.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dnastream {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """dnastream: long-context DNA language models, fast and exact."""


@app.command()
def doctor() -> None:
    """Print the versions of torch, Triton and CUDA, the GPUs seen, and the kernels' mode."""
    from dnastream.pipelines.doctor import collect_environment

    env = collect_environment()
    table = Table(title=f"dnastream {env.dnastream}", show_header=False)
    table.add_row("python", f"{env.python} ({env.platform})")
    for name, ver in env.packages.items():
        table.add_row(name, ver or "[red]not installed[/red]")
    table.add_row("CUDA runtime (torch)", env.cuda_runtime or "none (CPU build of torch)")
    if env.gpus:
        for g in env.gpus:
            table.add_row(f"GPU {g.index}", f"{g.name}, sm_{g.capability}, {g.memory_gib:.1f} GiB")
    else:
        table.add_row("GPU", "none visible")
    table.add_row("Triton kernels", f"{env.kernel_mode}: {env.kernel_mode_reason}")
    console.print(table)


@app.command("convert")
def convert_cmd(
    src: Path = typer.Argument(..., help="Checkpoint folder: official Lightning, -hf, or native."),
    dst: Path = typer.Argument(
        ..., help="Output folder (native: config.json + model.safetensors)."
    ),
    shift: float | None = typer.Option(
        None,
        "--shift",
        help="Filter modulation shift: 0.05 (LongSafari inference code, the default for "
        "official and -hf checkpoints) or 0.0 (Lightning training code).",
    ),
    dtype: str = typer.Option("float32", help="float32, float64 or bfloat16."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty DST."),
) -> None:
    """Convert a HyenaDNA checkpoint to dnastream's native format (safetensors + config.json)."""
    from dnastream.pipelines.convert import convert_checkpoint

    try:
        report = convert_checkpoint(src, dst, modulation_shift=shift, dtype=dtype, force=force)
    except (OSError, ValueError, RuntimeError) as err:
        err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        raise typer.Exit(code=2) from err
    console.print(
        f"converted {report.source} ({report.source_format}) -> {report.destination}: "
        f"{report.n_parameters:,} parameters, modulation shift {report.modulation_shift}"
    )
