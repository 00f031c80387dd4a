"""The ``personalive`` command line: Typer commands, rich output, exit codes.

The only module that talks to the terminal. Each command builds its :class:`~personalive.config.RunConfig` once
(defaults <- ``--config`` <- its options <- ``--set``) and hands it to the library (:mod:`personalive.jobs`,
:mod:`personalive.batch`, :mod:`personalive.engines`, ...). Errors are turned into one line on stderr and an exit
code in one place (:class:`_Commands`): 0 success, 1 runtime failure, 2 usage or input error; ``--verbose`` adds
the traceback. Heavy imports (torch, av, ...) happen inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from personalive import __version__, cli_engines, cli_tools
from personalive.cli_options import (
    AudioOpt,
    BackendOpt,
    ConfigOpt,
    DeviceOpt,
    DtypeOpt,
    EngineOpt,
    MaxFramesOpt,
    ReportOpt,
    SeedOpt,
    SetOpt,
    WeightsOpt,
    make_config,
    run_options,
)
from personalive.errors import PersonaLiveError
from personalive.terminal import OneLineErrors, OneLineFormatter, click_errors

if TYPE_CHECKING:
    pass

log = logging.getLogger("personalive")
err_console = Console(stderr=True)


class _State:
    verbose: bool = False
    quiet: bool = False
    own_process: bool = False  # run by main(), not inside a test runner: signal handling is ours


state = _State()


def _one_line(exc: BaseException) -> str:
    """An error message on one line, whatever a library put into it (scripts grep the log line by line)."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


class _Commands(OneLineErrors):
    """Runs a command; the one place where errors become one line on stderr and an exit code (usage errors too:
    :class:`~personalive.terminal.OneLineErrors`)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PersonaLiveError as exc:
            if state.verbose:
                err_console.print_exception()
            err_console.print(f"[bold red]error:[/] {escape(_one_line(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if state.own_process:  # cleanup is done; further Ctrl-C must not interrupt the exit (threading._shutdown)
                from personalive.signals import ignore_stop_signals

                ignore_stop_signals()
            err_console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, click_errors.ClickException, click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - last resort: no traceback unless asked for
            if state.verbose:
                err_console.print_exception()
            err_console.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {escape(_one_line(exc))} "
                "(run with --verbose for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None


app = typer.Typer(
    name="personalive",
    cls=_Commands,
    help="Animate a reference portrait with the head motion and expressions of a driving video (PersonaLive).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
weights_app = typer.Typer(help="Download, check or generate weights in the official pretrained_weights layout.")
app.add_typer(weights_app, name="weights", no_args_is_help=True)
config_app = typer.Typer(help="Show the configuration a run would use.")
app.add_typer(config_app, name="config", no_args_is_help=True)
motion_app = typer.Typer(help="Motion templates: a driving video's motion extracted once, reused for any reference.")
app.add_typer(motion_app, name="motion", no_args_is_help=True)


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler: logging.Handler
    if err_console.is_terminal:
        handler = RichHandler(console=err_console, show_path=verbose, show_time=verbose, markup=False)
    else:  # read by scripts: one message, one line, never wrapped at 80 columns
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(OneLineFormatter())
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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging; tracebacks for errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress bar.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    state.verbose, state.quiet = verbose, quiet
    _setup_logging(verbose, quiet)


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


# ----------------------------------------------------------------------------------------------- commands
@app.command()
def animate(
    ref: Annotated[
        Path, typer.Option("--ref", help="Reference portrait (PNG, JPEG, WebP, BMP, or a video's 1st frame).")
    ],
    drive: Annotated[Path, typer.Option("--drive", help="Driving video whose head motion and expressions are used.")],
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Output .mp4 (default: <ref>_<drive>.mp4 here).")
    ] = None,
    weights: WeightsOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    backend: BackendOpt = None,
    engine: EngineOpt = None,
    max_frames: MaxFramesOpt = None,
    seed: SeedOpt = None,
    audio: AudioOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
    report: ReportOpt = None,
    paste_back: Annotated[
        bool, typer.Option("--paste-back", help="Paste the face back into the whole photo.")
    ] = False,
    compare: Annotated[Path | None, typer.Option("--compare", help="Also write ref | driving | output here.")] = None,
) -> None:
    """Animate REF with the motion of DRIVE (a video or a .motion template) at DRIVE's frame rate, with its audio."""
    from personalive import jobs

    options = run_options(weights, device, dtype, backend, engine, max_frames, seed, audio)
    options["media.paste_back"] = True if paste_back else None
    cfg = make_config(config, set_, options)
    jobs.animate(cfg, ref, drive, out, overwrite=overwrite, report=report, progress=_progress_bar(), compare=compare)


@motion_app.command("extract")
def motion_extract(
    drive: Annotated[Path, typer.Argument(help="Driving video.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Template to write (.motion: safetensors + JSON header).")],
    weights: WeightsOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing template.")] = False,
) -> None:
    """Extract DRIVE's motion (keypoints, face crops) once; `animate --drive OUT` reuses it for any reference."""
    from personalive import jobs

    cfg = make_config(config, set_, run_options(weights, device, dtype, None, None, None, None, None))
    jobs.motion_extract(cfg, drive, out, overwrite=overwrite)


@app.command()
def batch(
    manifest: Annotated[Path, typer.Argument(help="YAML (jobs: [{ref, drive, out, compare, set}]) or CSV.")],
    report: ReportOpt = None,
    shard: Annotated[
        str | None, typer.Option("--shard", help="I/N: take every N-th job starting at I (0-based).")
    ] = None,
    devices: Annotated[
        str | None, typer.Option("--devices", help="all, 0,1,3 or cpu:N: one worker process per device.")
    ] = None,
    weights: WeightsOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    backend: BackendOpt = None,
    engine: EngineOpt = None,
    max_frames: MaxFramesOpt = None,
    seed: SeedOpt = None,
    audio: AudioOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Redo jobs whose output exists (default: skip).")
    ] = False,
) -> None:
    """Run every job of MANIFEST with models loaded once; skip finished jobs; exit 1 if any job failed."""
    from personalive import batch as batch_run

    options = run_options(weights, device, dtype, backend, engine, max_frames, seed, audio)
    cfg = make_config(config, set_, options)
    bar = _progress_bar() if devices is None else None  # workers log their progress instead
    batch_run.run(cfg, manifest, shard=shard, devices=devices, overwrite=overwrite, report=report, progress=bar)


# ------------------------------------------------------------------------------ commands in other modules
app.command("build-engine")(cli_engines.build_engine)
app.command("verify-engine")(cli_engines.verify_engine)
app.command("bench")(cli_engines.bench)
config_app.command("show")(cli_tools.config_show)
weights_app.command("download")(cli_tools.weights_download)
weights_app.command("check")(cli_tools.weights_check)
weights_app.command("init-random")(cli_tools.weights_init_random)
app.command("info")(cli_tools.info)


def main() -> None:
    from personalive.signals import ignore_stop_signals

    state.own_process = True
    try:
        app()
        code: Any = 0
    except SystemExit as exc:  # click ends every command with one, the status in it
        code = exc.code
    finally:
        ignore_stop_signals()  # only exiting is left: a late Ctrl-C must not change the exit code
    exit_now(code)


def exit_now(code: Any) -> NoReturn:
    """End the process with ``sys.exit``'s status for ``code``, skipping the interpreter's teardown.

    Why: tearing down torch, diffusers and transformers module by module took ~2 s after every command on the
    2-core CPU machine (``main`` returned 19.8 s after the start, the process was gone at 21.7 s), and shell
    scripts run many.
    By now the command has closed everything it opened (outputs published or removed, threads and child
    processes joined, the models released when the job returned); what is left is memory, which the OS takes
    back. Objects in reference cycles are still collected first, so finalizers holding temporary folders run.
    """
    import gc

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): the message on stderr, status 1
        print(code, file=sys.stderr)
        status = 1
    gc.collect()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be written anyway
            pass
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
