"""The ``personalive`` command line: Typer commands, rich output, exit codes.

The only module that talks to the terminal. It turns :class:`PersonaLiveError` into one line on stderr and
its exit code (0 success, 1 runtime failure, 2 usage or input error); ``--verbose`` adds the traceback.
Heavy imports (torch, av, ...) happen inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from personalive import __version__
from personalive.errors import PersonaLiveError

log = logging.getLogger("personalive")
err_console = Console(stderr=True)

app = typer.Typer(
    name="personalive",
    help="Animate a reference portrait with the head motion and expressions of a driving video (PersonaLive).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
weights_app = typer.Typer(help="Download, check or generate weights in the official pretrained_weights layout.")
app.add_typer(weights_app, name="weights", no_args_is_help=True)


class _State:
    verbose: bool = False
    quiet: bool = False


state = _State()


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = RichHandler(console=err_console, show_path=verbose, show_time=verbose, markup=False)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("personalive").setLevel(level)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"personalive {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging; tracebacks for errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors; no progress bar."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    state.verbose, state.quiet = verbose, quiet
    _setup_logging(verbose, quiet)


# ------------------------------------------------------------------------------------------------ options
# Shared model/run options of `animate` and `batch`; None means "keep the config's value".
WeightsOpt = typer.Option(None, "--weights", help="Weights root in the official pretrained_weights layout.")
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (ours or upstream's prompt YAML).")
SetOpt = typer.Option([], "--set", help="Override one config key, e.g. --set generation.seed=7 (repeatable).")
DeviceOpt = typer.Option(None, "--device", help="cuda, cuda:N or cpu (default: cuda:0 if available, else cpu).")
DtypeOpt = typer.Option(None, "--dtype", help="fp16, bf16 or fp32.")
BackendOpt = typer.Option(None, "--backend", help="eager, compile or tensorrt.")
EngineOpt = typer.Option(None, "--engine", help="TensorRT engine for --backend tensorrt (default: found in engines/).")
SeedOpt = typer.Option(None, "--seed", help="Seed of all noise; the same seed gives the same frames.")
MaxFramesOpt = typer.Option(None, "--max-frames", help="Animate only the first N driving frames.")
AudioOpt = typer.Option(None, "--audio/--no-audio", help="Mux the driving video's audio (default: on).")
ReportOpt = typer.Option(None, "--report", help="Write a JSON report of the run here.")


def _run(fn, *args, **kwargs):
    """Call a command body; map errors to one line and an exit code."""
    try:
        return fn(*args, **kwargs)
    except PersonaLiveError as exc:
        if state.verbose:
            err_console.print_exception()
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - last resort: no traceback unless asked for
        if state.verbose:
            err_console.print_exception()
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
            "(run with --verbose for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


class _RichProgress:
    """A rich progress bar for one job at a time: frames, fps and ETA (the `jobs.Progress` protocol)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[fps]:.2f} fps"),
            TimeRemainingColumn(),
        )
        self._factory = Progress
        self._bar = None

    def start(self, description: str, total: int | None) -> None:
        import time

        self._bar = self._factory(*self._columns, console=err_console, transient=False)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, fps=0.0)
        self._t0 = time.perf_counter()

    def update(self, done: int) -> None:
        import time

        elapsed = time.perf_counter() - self._t0
        self._bar.update(self._task, completed=done, fps=done / elapsed if elapsed > 0 else 0.0)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _progress_bar() -> _RichProgress | None:
    """A bar when stderr is a terminal and not --quiet; else None (jobs then log a line every N frames)."""
    if state.quiet or not err_console.is_terminal:
        return None
    return _RichProgress()


def _not_implemented(name: str) -> None:
    err_console.print(f"[bold red]error:[/] `personalive {name}` is not implemented yet")
    raise typer.Exit(1)


# ----------------------------------------------------------------------------------------------- commands
@app.command()
def animate(
    ref: Path = typer.Option(..., "--ref", help="Reference portrait (PNG, JPEG, WebP, BMP, or a video's 1st frame)."),
    drive: Path = typer.Option(..., "--drive", help="Driving video whose head motion and expressions are used."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output .mp4 (default: <ref>_<drive>.mp4 here)."),
    weights: Optional[Path] = WeightsOpt,
    config: Optional[Path] = ConfigOpt,
    set_: list[str] = SetOpt,
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
    backend: Optional[str] = BackendOpt,
    engine: Optional[Path] = EngineOpt,
    max_frames: Optional[int] = MaxFramesOpt,
    seed: Optional[int] = SeedOpt,
    audio: Optional[bool] = AudioOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    report: Optional[Path] = ReportOpt,
) -> None:
    """Animate REF with the motion of DRIVE and write an H.264 video at DRIVE's frame rate, with its audio."""
    from personalive import jobs

    _run(
        jobs.animate_command,
        ref=ref,
        drive=drive,
        out=out,
        weights=weights,
        config=config,
        overrides=set_,
        device=device,
        dtype=dtype,
        backend=backend,
        engine=engine,
        max_frames=max_frames,
        seed=seed,
        audio=audio,
        overwrite=overwrite,
        report=report,
        quiet=state.quiet,
        progress=_progress_bar(),
    )


@app.command()
def batch(
    manifest: Path = typer.Argument(..., help="YAML (jobs: [{ref, drive, out, set}]) or CSV (ref,drive,out)."),
    report: Optional[Path] = ReportOpt,
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: take every N-th job starting at I (0-based)."),
    weights: Optional[Path] = WeightsOpt,
    config: Optional[Path] = ConfigOpt,
    set_: list[str] = SetOpt,
    device: Optional[str] = DeviceOpt,
    dtype: Optional[str] = DtypeOpt,
    backend: Optional[str] = BackendOpt,
    engine: Optional[Path] = EngineOpt,
    max_frames: Optional[int] = MaxFramesOpt,
    seed: Optional[int] = SeedOpt,
    audio: Optional[bool] = AudioOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo jobs whose output exists (default: skip)."),
) -> None:
    """Run every job of MANIFEST with models loaded once; skip finished jobs; exit 1 if any job failed."""
    from personalive import jobs

    _run(
        jobs.batch_command,
        manifest=manifest,
        report=report,
        shard=shard,
        weights=weights,
        config=config,
        overrides=set_,
        device=device,
        dtype=dtype,
        backend=backend,
        engine=engine,
        max_frames=max_frames,
        seed=seed,
        audio=audio,
        overwrite=overwrite,
        quiet=state.quiet,
        progress=_progress_bar(),
    )


@app.command("build-engine")
def build_engine(
    weights: Optional[Path] = WeightsOpt,
    config: Optional[Path] = ConfigOpt,
    set_: list[str] = SetOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="Engine path (default: engines/<derived name>.engine)."),
    height: Optional[int] = typer.Option(None, "--height", help="Output height (default: config, 512)."),
    width: Optional[int] = typer.Option(None, "--width", help="Output width (default: config, 512)."),
    max_keyframes: Optional[int] = typer.Option(None, "--max-keyframes", help="History keyframes the engine takes."),
    precision: str = typer.Option("fp16", "--precision", help="fp16, bf16 or fp32."),
    onnx_only: bool = typer.Option(False, "--onnx-only", help="Stop after exporting and checking the ONNX graph."),
    verify: bool = typer.Option(False, "--verify", help="Run verify-engine on the result."),
    device: Optional[str] = DeviceOpt,
) -> None:
    """Export the per-window denoising step to ONNX and build a TensorRT engine for it."""
    from personalive.backends.tensorrt import commands

    _run(
        commands.build_engine_command,
        weights=weights,
        config=config,
        overrides=set_,
        out=out,
        height=height,
        width=width,
        max_keyframes=max_keyframes,
        precision=precision,
        onnx_only=onnx_only,
        verify=verify,
        device=device,
    )


@app.command("verify-engine")
def verify_engine(
    path: Path = typer.Argument(..., help="A .engine (TensorRT) or .onnx (onnxruntime) file."),
    weights: Optional[Path] = WeightsOpt,
    config: Optional[Path] = ConfigOpt,
    set_: list[str] = SetOpt,
    device: Optional[str] = DeviceOpt,
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Relative error allowed per output."),
    draws: int = typer.Option(3, "--draws", help="Random input draws to compare."),
) -> None:
    """Run an engine or ONNX graph and the PyTorch step on the same random inputs and compare every output."""
    from personalive.backends.tensorrt import commands

    _run(
        commands.verify_engine_command,
        path=path,
        weights=weights,
        config=config,
        overrides=set_,
        device=device,
        tolerance=tolerance,
        draws=draws,
    )


@weights_app.command("download")
def weights_download(
    directory: Optional[Path] = typer.Argument(
        None, help="Target root (default: $PERSONALIVE_WEIGHTS or ./pretrained_weights)."
    ),
) -> None:
    """Fetch the official weights from the Hugging Face Hub into the official layout (resumable), then check."""
    from personalive import download

    _run(download.download_command, directory)


@weights_app.command("check")
def weights_check(
    directory: Optional[Path] = typer.Argument(
        None, help="Weights root (default: $PERSONALIVE_WEIGHTS or ./pretrained_weights)."
    ),
) -> None:
    """Validate a weights layout (files, keys, shapes) without running models; exit 2 naming every problem."""
    from personalive import weights

    _run(weights.check_command, directory)


@weights_app.command("init-random")
def weights_init_random(
    directory: Path = typer.Argument(..., help="Where to write the layout."),
    size: str = typer.Option("tiny", "--size", help="tiny (CPU tests, demo) or full (real sizes, benchmarks)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
) -> None:
    """Write random weights in the official layout (same files, keys, formats; tiny or full size)."""
    from personalive import weights

    _run(weights.init_random_command, directory, size=size, seed=seed)


@app.command()
def info() -> None:
    """Print versions (python, torch, diffusers, transformers, av, onnx, tensorrt) and the CUDA devices."""
    from personalive import environment

    for line in _run(environment.describe):
        typer.echo(line)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
