"""The command line's shared options (``Annotated`` aliases) and the one way a command builds its config.

Kept apart from :mod:`personalive.cli` so that each command module imports the same aliases; nothing here
imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from personalive.config import RunConfig

# Shared options; None means "keep the config's value". Each maps to one config key in the command's make_config call.
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
BackendOpt = Annotated[
    str | None, typer.Option("--backend", help="Window-step backend: eager, compile, aoti or tensorrt.")
]
EngineOpt = Annotated[
    Path | None,
    typer.Option(
        "--engine",
        help="Engine for --backend tensorrt or aoti, or a compile cache (.ptcache) or precompiled step (.ptstep) for "
        "--backend compile (default: found in engines/).",
    ),
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


def make_config(config: Path | None, sets: list[str] | None, options: dict[str, Any] | None = None) -> RunConfig:
    """The command's one RunConfig: defaults <- ``--config`` <- ``options`` (key -> value, None: not given) <- set."""
    from personalive.config import load_config

    given = {key: str(v) if isinstance(v, Path) else v for key, v in (options or {}).items() if v is not None}
    return load_config(config, sets or (), given)


def run_options(weights, device, dtype, backend, engine, max_frames, seed, audio) -> dict[str, Any]:
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
