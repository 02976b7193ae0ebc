"""The ``dnastream`` command: a thin typer layer over :mod:`dnastream.pipelines`."""

from __future__ import annotations

import functools
import gc
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from dnastream import __version__

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, ProgressColumn

# rich (~30 ms of imports) is loaded only when something is printed: a --quiet score or
# embed never needs it (tests/test_import_cost.py).

app = typer.Typer(
    name="dnastream",
    help="Run HyenaDNA-style long-convolution DNA language models over multi-megabase DNA.",
    no_args_is_help=True,
    add_completion=False,
)


@functools.cache
def _console() -> Console:
    """Standard output's console (created on first use)."""
    from rich.console import Console

    return Console()


@functools.cache
def _err_console() -> Console:
    """Standard error's console: errors, warnings and the progress bar."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def escape(text: str) -> str:
    """:func:`rich.markup.escape` (rich imported on first use)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _error(message: str) -> None:
    """Print ``message`` (rich markup) on standard error, without highlighting."""
    _err_console().print(message, highlight=False)


def _progress_bar(*columns: ProgressColumn) -> Progress:
    """A transient progress bar on standard error: description, bar, ``done/total bp``, the
    extra ``columns``, time remaining."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} bp"),
        *columns,
        TimeRemainingColumn(),
        console=_err_console(),
        transient=True,
    )


def _rate_column() -> ProgressColumn:
    """A progress column showing the speed in kbp/s."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class _Rate(ProgressColumn):
        def render(self, task: object) -> Text:
            speed = getattr(task, "speed", None)
            return Text("-- kbp/s" if speed is None else f"{speed / 1e3:,.1f} kbp/s")

    return _Rate()


# Set by run() when it paused the cyclic garbage collector for the start-up (see there).
_gc_paused = False


def _startup_done() -> None:
    """End the start-up pause of the garbage collector begun by :func:`run`, once a command
    has imported what it needs: the objects alive now (modules, torch's operator tables) are
    moved to the permanent generation (:func:`gc.freeze`), then collection resumes. Later
    collections, e.g. ``embed``'s ``gc.collect()`` before its writer thread starts, then skip
    those objects. A no-op unless :func:`run` paused the collector (in-process callers such as
    typer's ``CliRunner`` keep their collector as it was)."""
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()


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
    from rich.table import Table

    from dnastream.pipelines.doctor import collect_environment

    _startup_done()
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
    table.add_row("FFT-conv plans", env.plan_tuning)
    _console().print(table)


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

    _startup_done()
    try:
        report = convert_checkpoint(src, dst, modulation_shift=shift, dtype=dtype, force=force)
    except (OSError, ValueError, RuntimeError) as err:
        _error(f"[red]error:[/red] {escape(str(err))}")
        raise typer.Exit(code=2) from err
    _console().print(
        f"converted {report.source} ({report.source_format}) -> {report.destination}: "
        f"{report.n_parameters:,} parameters, modulation shift {report.modulation_shift}"
    )


@app.command("score")
def score_cmd(
    ctx: typer.Context,
    fasta: Path = typer.Argument(..., help="FASTA file: plain, gzip or bgzip (+ .fai/.gzi)."),
    genes: Path | None = typer.Option(
        None, "--genes", help="Annotation: BED (3-12 columns), GTF or GFF3 (optionally .gz)."
    ),
    gene: list[str] | None = typer.Option(
        None, "--gene", help="Score only this gene (name or ID in --genes). Repeatable."
    ),
    region: list[str] | None = typer.Option(
        None,
        "--region",
        help="Also score a region: chr:start-end[:strand] (1-based, inclusive) or a whole "
        "record name. Repeatable.",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="HDF5 output (per-base tracks)."),
    tsv: Path | None = typer.Option(None, "--tsv", help="Per-gene summary table (TSV)."),
    bedgraph: Path | None = typer.Option(
        None,
        "--bedgraph",
        help="bedGraph track of the per-base logprob (where genes overlap, the one starting "
        "leftmost, then the longest, gives the value).",
    ),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="PNG: binned track and exons, one panel per gene (first 20). Needs matplotlib: "
        "pip install 'dnastream[plot]'.",
    ),
    model: Path = typer.Option(..., "--model", help="Checkpoint folder (official, -hf, native)."),
    chunk: int | None = typer.Option(
        None,
        "--chunk",
        help="Tokens per streaming step (default 4096 on CPU, 262144 on CUDA; memory grows "
        "with it).",
    ),
    filter_len: int | None = typer.Option(
        None,
        "--filter-len",
        help="Long-filter taps K (default: the model's l_max; any length works).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    dtype: str = typer.Option(
        "float32",
        "--dtype",
        help="Model precision: float32, float64, bfloat16, float16 (tracks are float32).",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary output."),
    stats_json: Path | None = typer.Option(
        None, "--stats-json", hidden=True, help="Write phase timings (JSON) to this file."
    ),
) -> None:
    """Per-base next-token log-likelihood of genes (whole span, both strands) or regions.

    Each gene is read in transcription direction (a '-' gene on its reverse complement) as its
    own stream; value = ln p(base | bases before it in reading direction), NaN at its first
    base and at N; the track is stored in + strand order. Exit codes: 0 ok, 2 bad input,
    3 an output exists (use --force).
    """
    import contextlib
    import warnings

    from dnastream.pipelines.score import OutputExistsError, ScoreTarget, run_score
    from dnastream.pipelines.tracks import PlotDependencyError

    _startup_done()
    # --quiet: no bar at all (nor rich); otherwise a transient bar on standard error
    progress_bar = None if quiet else _progress_bar()
    task: list[object] = []
    done_before: dict[str, int] = {}

    def on_start(targets: Sequence[ScoreTarget]) -> None:
        assert progress_bar is not None
        total = sum(t.length for t in targets)
        task.append(progress_bar.add_task(f"{len(targets)} targets", total=total))
        acc = 0
        for t in targets:
            done_before[t.key] = acc
            acc += t.length

    def on_progress(target: ScoreTarget, done: int) -> None:
        assert progress_bar is not None
        progress_bar.update(
            task[0], completed=done_before[target.key] + done, description=escape(target.name)
        )

    def show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
        if not quiet:
            _error(f"[yellow]warning:[/yellow] {escape(str(message))}")

    try:
        with (
            progress_bar if progress_bar is not None else contextlib.nullcontext(),
            warnings.catch_warnings(),
        ):
            warnings.showwarning = show_warning
            report = run_score(
                fasta,
                model,
                output=output,
                annotation=genes,
                genes=gene or (),
                regions=region or (),
                tsv=tsv,
                bedgraph=bedgraph,
                plot=plot,
                chunk=chunk,
                filter_len=filter_len,
                device=device,
                dtype=dtype,
                force=force,
                progress=None if progress_bar is None else on_progress,
                on_start=None if progress_bar is None else on_start,
                command=_command_line(ctx, "score"),
                stats_path=stats_json,
            )
    except OutputExistsError as err:
        _error(f"[red]error:[/red] {escape(str(err))}")
        raise typer.Exit(code=3) from err
    except (OSError, ValueError, PlotDependencyError) as err:
        _error(f"[red]error:[/red] {escape(str(err))}")
        raise typer.Exit(code=2) from err
    except KeyboardInterrupt as err:
        _error("interrupted: no output was written")
        raise typer.Exit(code=130) from err
    except Exception as err:  # noqa: BLE001 - reported as an unexpected failure
        _error(f"[red]unexpected error ({type(err).__name__}):[/red] {escape(str(err))}")
        raise typer.Exit(code=1) from err
    if quiet:
        return
    from rich.table import Table

    table = Table(title=f"dnastream score: {len(report.summaries)} targets")
    table.add_column("name", overflow="fold", min_width=17)
    table.add_column("region (1-based)", overflow="fold", min_width=16)
    for col in ("length", "N", "mean NLL", "ppl"):
        table.add_column(col, justify="right", no_wrap=True)
    for s in report.summaries[:20]:
        table.add_row(
            escape(s.name),
            f"{s.chrom}:{s.start + 1}-{s.end}:{s.strand}",
            f"{s.length:,}",
            f"{s.n_fraction:.0%}",
            f"{s.mean_nll:.4f}",
            f"{s.perplexity:.3f}",
        )
    if len(report.summaries) > 20:
        table.add_row(f"... {len(report.summaries) - 20} more", "", "", "", "", "")
    console = _console()
    console.print(table)
    written = ", ".join(str(p) for p in report.outputs.values())
    console.print(
        f"{report.total_bases:,} bp in {report.seconds:.1f} s "
        f"({report.bases_per_second / 1e3:.1f} kbp/s, K={report.filter_len}, "
        f"{report.device}) -> {escape(written)}",
        highlight=False,
    )


def _command_line(ctx: typer.Context, name: str) -> str:
    """This invocation as a shell command: ``sys.argv``, or the parsed options when the
    command runs in-process (e.g. typer's CliRunner)."""
    import shlex
    import sys

    if sys.argv[1:2] == [name]:
        return shlex.join(["dnastream", *sys.argv[1:]])
    words = ["dnastream", name]
    for key, value in ctx.params.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            words += [flag] if value else []
        elif isinstance(value, list | tuple):
            for v in value:
                words += [flag, str(v)]
        elif value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


@app.command("embed")
def embed_cmd(
    ctx: typer.Context,
    fasta: Path = typer.Argument(
        ..., help="FASTA: plain, gzip or bgzip (an existing .fai/.gzi is used)."
    ),
    output: Path = typer.Option(
        ..., "-o", "--output", help="HDF5 output (written as OUTPUT.part until complete)."
    ),
    model: Path = typer.Option(..., "--model", help="Checkpoint folder (official, -hf, native)."),
    regions: Path | None = typer.Option(
        None, "--regions", help="Embed the intervals of a BED, GTF or GFF3 file (.gz allowed)."
    ),
    region: list[str] | None = typer.Option(
        None,
        "--region",
        help="Embed chr:start-end[:strand] (1-based, inclusive) or a whole record. Repeatable.",
    ),
    gene: list[str] | None = typer.Option(
        None, "--gene", help="Only this name/gene of --regions. Repeatable."
    ),
    layers: str = typer.Option(
        "", "--layers", help="Also store the residual stream after these blocks, e.g. 0,1."
    ),
    pool: str = typer.Option("none", "--pool", help="none (per base), mean, or bin:N."),
    strand: str = typer.Option("+", "--strand", help="+, - (reverse complement) or both."),
    rc_average: bool = typer.Option(
        False, "--rc-average", help="Store the mean of the + and (re-flipped) - embeddings."
    ),
    chunk: int | None = typer.Option(
        None, "--chunk", help="Tokens per streaming step (default 4096 on CPU, 262144 on CUDA)."
    ),
    filter_len: int | None = typer.Option(
        None,
        "--filter-len",
        help="Long-filter taps K (default: the model's l_max; any length works).",
    ),
    dtype: str = typer.Option("float32", "--dtype", help="Stored precision: float32, float16."),
    compute_dtype: str = typer.Option(
        "float32", "--compute-dtype", help="Model precision: float32, bfloat16, float16."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(
        1, "--batch-size", help="Run up to N regions of equal length together."
    ),
    compression: str = typer.Option("lzf", "--compression", help="lzf, gzip or none."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for the model."),
    force: bool = typer.Option(False, "--force", help="Replace a finished or other output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
    stats_json: Path | None = typer.Option(
        None, "--stats-json", hidden=True, help="Write phase timings (JSON) to this file."
    ),
) -> None:
    """Embed FASTA records or regions with a HyenaDNA model into HDF5, streamed and resumable.

    Any length runs in bounded memory (exact streaming with K-tap filters). Rerunning an
    interrupted command resumes it. Exit codes: 0 ok, 1 unexpected error, 2 bad input
    (FASTA, regions, checkpoint or options), 3 the output exists (finished: use --force) or
    was started with other settings. Several GPUs: torchrun --nproc-per-node N -m dnastream
    embed ... shards the regions over N processes and merges (see dnastream.pipelines.distributed).
    """
    import os
    import warnings

    # Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning, so the reader
    # and writer threads get CPU time without stalling the model (measured: +15% on 2 cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import contextlib

    from dnastream.pipelines.distributed import is_main_process, run_embed_auto
    from dnastream.pipelines.embed import EmbedOptions, OutputExistsError

    _startup_done()
    quiet = quiet or not is_main_process()  # under torchrun, rank 0 speaks for the run
    # --quiet: no bar at all (nor rich); otherwise a transient bar on standard error
    bar = None if quiet else _progress_bar(_rate_column())

    class _Progress:
        task: object = None

        def start(self, total_bases: int, n_regions: int, n_skipped: int) -> None:
            assert bar is not None
            done = f" ({n_skipped} already done)" if n_skipped else ""
            self.task = bar.add_task(f"{n_regions} regions{done}", total=total_bases)

        def advance(self, region: str, bases: int) -> None:
            assert bar is not None
            bar.update(self.task, advance=bases, description=escape(region))  # type: ignore[arg-type]

    def show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
        if not quiet:
            _error(f"[yellow]warning:[/yellow] {escape(str(message))}")

    options = EmbedOptions(
        pool=pool,
        layers=layers,
        strand=strand,
        rc_average=rc_average,
        chunk=chunk,
        filter_len=filter_len,
        dtype=dtype,
        compute_dtype=compute_dtype,
        device=device,
        batch_size=batch_size,
        compression=compression,
        force=force,
        threads=threads,
    )

    def fail(code: int, err: BaseException, prefix: str = "error") -> typer.Exit:
        _error(f"[red]{prefix}:[/red] {escape(str(err))}")
        return typer.Exit(code=code)

    try:
        with (
            bar if bar is not None else contextlib.nullcontext(),
            warnings.catch_warnings(),
        ):
            warnings.showwarning = show_warning
            report = run_embed_auto(
                fasta,
                model,
                output,
                regions_path=regions,
                region_strings=region or (),
                genes=gene or (),
                options=options,
                command=_command_line(ctx, "embed"),
                progress=None if bar is None else _Progress(),
                stats_path=stats_json,
            )
    except OutputExistsError as err:
        raise fail(3, err) from err
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        raise fail(2, err) from err
    except KeyboardInterrupt as err:
        _error("interrupted: rerun the same command to resume")
        raise typer.Exit(code=130) from err
    except Exception as err:  # noqa: BLE001 - reported as an unexpected failure
        raise fail(1, err, f"unexpected error ({type(err).__name__})") from err
    if not quiet:
        resumed = " (resumed)" if report.resumed else ""
        _console().print(
            f"{report.n_regions} regions{resumed}, {report.bases:,} bp embedded in "
            f"{report.seconds:.1f} s ({report.kbp_per_s:.1f} kbp/s, K={report.filter_len}, "
            f"chunk {report.chunk:,}, {report.device}) -> {escape(str(report.output))}",
            highlight=False,
            soft_wrap=True,
        )


def run() -> None:
    """Console entry point (``dnastream``, ``python -m dnastream``): the typer app, then a quick
    exit after a successful command (see :mod:`dnastream.cli.exit`).

    The cyclic garbage collector is paused until the command has imported what it needs
    (:func:`_startup_done`): importing torch and the pipelines allocates about a million
    long-lived objects, and each full collection during that start-up walks all of them
    (0.2-0.3 s of collections on a 2-core CPU for ``score``/``embed``, about three times that
    on the GPU host), to free next to nothing.
    """
    global _gc_paused
    from dnastream.cli.exit import exit_now

    if gc.isenabled():
        gc.disable()
        _gc_paused = True
    try:
        app()
    except SystemExit as exc:
        exit_now(exc.code)
    exit_now(0)
