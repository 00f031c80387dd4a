"""The ``personalive`` command line: Typer commands, rich output, exit codes.

The only module that talks to the terminal. Each command builds its :class:`~personalive.config.RunConfig` once
(defaults <- ``--config`` <- its options <- ``--set``) and hands it to the library (:mod:`personalive.jobs`,
:mod:`personalive.batch`, :mod:`personalive.engines`, ...). Errors are turned into one line on stderr and an exit
code in one place (:class:`_Commands`): 0 success, 1 runtime failure, 2 usage or input error; ``--verbose`` adds
the traceback. Heavy imports (torch, av, ...) happen inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from personalive import __version__
from personalive.errors import PersonaLiveError
from personalive.terminal import OneLineErrors, OneLineFormatter, click_errors

if TYPE_CHECKING:
    from personalive.config import RunConfig

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


# ------------------------------------------------------------------------------------------------ options
# Shared options; None means "keep the config's value". Each maps to one config key in the command's _config call.
WeightsOpt = Annotated[
    Path | None, typer.Option("--weights", help="Weights root in the official pretrained_weights layout.")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (ours or upstream's prompt YAML).")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override one config key, e.g. --set generation.seed=7 (repeatable).")
]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="cuda, cuda:N or cpu (default: cuda:0 if available, else cpu).")
]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="fp16, bf16 or fp32.")]
BackendOpt = Annotated[str | None, typer.Option("--backend", help="Window-step backend: eager, compile or tensorrt.")]
EngineOpt = Annotated[
    Path | None, typer.Option("--engine", help="TensorRT engine for --backend tensorrt (default: found in engines/).")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed of all noise; the same seed gives the same frames.")]
MaxFramesOpt = Annotated[int | None, typer.Option("--max-frames", help="Animate only the first N driving frames.")]
AudioOpt = Annotated[
    bool | None, typer.Option("--audio/--no-audio", help="Mux the driving video's audio (default: on).")
]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="Write a JSON report of the run here.")]
WeightsDirArg = Annotated[
    Path | None, typer.Argument(help="Weights root (default: $PERSONALIVE_WEIGHTS or ./pretrained_weights).")
]


def _config(config: Path | None, sets: list[str] | None, options: dict[str, Any] | None = None) -> RunConfig:
    """The command's one RunConfig: defaults <- ``--config`` <- ``options`` (key -> value, None: not given) <- set."""
    from personalive.config import load_config

    given = {key: str(v) if isinstance(v, Path) else v for key, v in (options or {}).items() if v is not None}
    return load_config(config, sets or (), given)


def _run_options(weights, device, dtype, backend, engine, max_frames, seed, audio) -> dict[str, Any]:
    """The config keys of the run options shared by ``animate`` and ``batch``."""
    return {
        "model.weights_dir": weights,
        "runtime.device": device,
        "model.dtype": dtype,
        "runtime.backend": backend,
        "runtime.engine": engine,
        "media.max_frames": max_frames,
        "generation.seed": seed,
        "media.audio": audio,
    }


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

    options = _run_options(weights, device, dtype, backend, engine, max_frames, seed, audio)
    options["media.paste_back"] = True if paste_back else None
    cfg = _config(config, set_, options)
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

    cfg = _config(config, set_, _run_options(weights, device, dtype, None, None, None, None, None))
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

    options = _run_options(weights, device, dtype, backend, engine, max_frames, seed, audio)
    cfg = _config(config, set_, options)
    bar = _progress_bar() if devices is None else None  # workers log their progress instead
    batch_run.run(cfg, manifest, shard=shard, devices=devices, overwrite=overwrite, report=report, progress=bar)


@app.command("build-engine")
def build_engine(
    weights: WeightsOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Engine path (default: engines/<derived name>.engine or .pt2).")
    ] = None,
    height: Annotated[int | None, typer.Option("--height", help="Output height (default: config, 512).")] = None,
    width: Annotated[int | None, typer.Option("--width", help="Output width (default: config, 512).")] = None,
    max_keyframes: Annotated[
        int | None, typer.Option("--max-keyframes", help="History keyframes the engine takes.")
    ] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="fp16 (default), bf16 or fp32.")] = None,
    precision: Annotated[str | None, typer.Option("--precision", hidden=True, help="Old name of --dtype.")] = None,
    onnx_only: Annotated[
        bool, typer.Option("--onnx-only", help="Stop after exporting and checking the ONNX graph.")
    ] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Run verify-engine on the result.")] = False,
    device: DeviceOpt = None,
    engine_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="tensorrt (ONNX export + TensorRT; the default where TensorRT is installed) or aoti "
            "(an AOTInductor package, the default elsewhere).",
        ),
    ] = None,
) -> None:
    """Compile the per-window denoising step into an engine: TensorRT (via ONNX) or AOTInductor."""
    from personalive import engines

    options = {
        "model.weights_dir": weights,
        "generation.height": height,
        "generation.width": width,
        "model.dtype": dtype or precision or "fp16",
        "runtime.device": device,
    }
    cfg = _config(config, set_, options)
    engines.build_engine(
        cfg,
        out=out,
        max_keyframes=max_keyframes,
        onnx_only=onnx_only,
        verify=verify,
        config_file=config,
        engine_format=engine_format,
    )


@app.command("verify-engine")
def verify_engine(
    path: Annotated[
        Path, typer.Argument(help="A .engine (TensorRT), .onnx (onnxruntime) or .pt2 (AOTInductor) file.")
    ],
    weights: WeightsOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    tolerance: Annotated[float | None, typer.Option("--tolerance", help="Relative error allowed per output.")] = None,
    draws: Annotated[int, typer.Option("--draws", help="Random input draws to compare.")] = 3,
) -> None:
    """Run an engine or ONNX graph and the PyTorch step on the same random inputs and compare every output."""
    from personalive import engines
    from personalive.backends.artifacts import artifact_options, read_artifact_sidecar

    meta = read_artifact_sidecar(path)
    options = {**artifact_options(meta), "model.weights_dir": weights, "runtime.device": device}
    cfg = _config(config, set_, options)
    engines.verify_engine(cfg, path, meta, tolerance=tolerance, draws=draws)


@app.command()
def bench(
    weights: WeightsOpt = None,
    random: Annotated[
        str | None, typer.Option("--random", help="full or tiny: random weights built in memory instead of --weights.")
    ] = None,
    backend: BackendOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    frames: Annotated[
        int, typer.Option("--frames", help="Synthetic device frames for the stream run (0: skip).")
    ] = 48,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls before timing.")] = 3,
    iters: Annotated[int, typer.Option("--iters", help="Timed window-step calls (medians reported).")] = 10,
    keyframes: Annotated[str, typer.Option("--keyframes", help="History-keyframe counts for the step.")] = "0,3",
    video_frames: Annotated[
        int, typer.Option("--video-frames", help="Frames of a generated 29.97 fps clip run through PyAV (0: skip).")
    ] = 0,
    video_size: Annotated[str, typer.Option("--video-size", help="WIDTHxHEIGHT of that clip.")] = "640x480",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here (default: stdout).")] = None,
) -> None:
    """Measure loading, the window step, the stream and a real decode/animate/encode run; print JSON."""
    import json

    from personalive.bench import BenchOptions, run_bench

    if weights is None and random is None:
        random = "tiny"  # nothing to load: the quickest meaningful run
    counts = tuple(int(k) for k in keyframes.split(",") if k.strip())
    options = BenchOptions(
        weights=weights,
        random=random,
        backend=backend or "eager",
        dtype=dtype or "auto",
        device=device,
        frames=frames,
        warmup=warmup,
        iters=iters,
        keyframes=counts,
        video_frames=video_frames,
        video_size=tuple(int(v) for v in video_size.lower().split("x")),
    )
    text = json.dumps(run_bench(options), indent=2, default=str)
    if json_out is None:
        typer.echo(text)
    else:
        json_out.write_text(text + "\n")


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the merged configuration (defaults <- --config <- --set) as YAML."""
    from personalive.config import config_yaml

    typer.echo(config_yaml(_config(config, set_)), nl=False)


@weights_app.command("download")
def weights_download(directory: WeightsDirArg = None) -> None:
    """Fetch the official weights from the Hugging Face Hub into the official layout (resumable), then check."""
    from personalive import download

    download.download_command(directory)


@weights_app.command("check")
def weights_check(directory: WeightsDirArg = None) -> None:
    """Validate a weights layout (files, keys, shapes) without running models; exit 2 naming every problem."""
    from personalive.weights import check

    check.check_command(directory)


@weights_app.command("init-random")
def weights_init_random(
    directory: Annotated[Path, typer.Argument(help="Where to write the layout.")],
    size: Annotated[
        str, typer.Option("--size", help="tiny (CPU tests, demo) or full (real sizes, benchmarks).")
    ] = "tiny",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights.")] = 0,
) -> None:
    """Write random weights in the official layout (same files, keys, formats; tiny or full size)."""
    from personalive import random_weights

    random_weights.init_random_command(directory, size=size, seed=seed)


@app.command()
def info() -> None:
    """Print versions (python, torch, diffusers, transformers, av, onnx, tensorrt), the CUDA devices and the
    folder of --backend compile's compilation cache."""
    from personalive import environment
    from personalive.compile_cache import describe_compile_cache

    for line in environment.describe():
        typer.echo(line)
    typer.echo(f"compile cache {describe_compile_cache()}")


def main() -> None:
    from personalive.signals import ignore_stop_signals

    state.own_process = True
    try:
        app()
    finally:
        ignore_stop_signals()  # only exiting is left: a late Ctrl-C must not change the exit code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
