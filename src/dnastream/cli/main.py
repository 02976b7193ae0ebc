"""The ``dnastream`` command: a thin typer layer over :mod:`dnastream.pipelines`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from dnastream import __version__

app = typer.Typer(
    name="dnastream",
    help="Run HyenaDNA-style long-convolution DNA language models over multi-megabase DNA.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


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
