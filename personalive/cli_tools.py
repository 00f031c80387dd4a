"""The small commands' bodies: ``config show``, ``weights download|check|init-random`` and ``info``
(registered in :mod:`.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from personalive.cli_options import ConfigOpt, SetOpt, WeightsDirArg, make_config


def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the merged configuration (defaults <- --config <- --set) as YAML."""
    from personalive.config import config_yaml

    typer.echo(config_yaml(make_config(config, set_)), nl=False)


def weights_download(directory: WeightsDirArg = None) -> None:
    """Fetch the official weights from the Hugging Face Hub into the official layout (resumable), then check."""
    from personalive import download

    download.download_command(directory)


def weights_check(directory: WeightsDirArg = None) -> None:
    """Validate a weights layout (files, keys, shapes) without running models; exit 2 naming every problem."""
    from personalive.weights import check

    check.check_command(directory)


def weights_init_random(
    directory: Annotated[Path, typer.Argument(help="Where to write the layout.")],
    size: Annotated[
        str, typer.Option("--size", help="tiny (CPU tests, demo) or full (real sizes, benchmarks).")
    ] = "tiny",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace weights files already in the folder.")
    ] = False,
) -> None:
    """Write random weights in the official layout (same files, keys, formats; tiny or full size)."""
    from personalive import random_weights

    random_weights.init_random_command(directory, size=size, seed=seed, overwrite=overwrite)


def info() -> None:
    """Print versions (python, torch, diffusers, transformers, av, onnx, tensorrt), the CUDA devices, the folder
    of --backend compile's compilation cache and that of the cuDNN plan books (runtime.plan_cache)."""
    from personalive import environment
    from personalive.compile_cache import describe_compile_cache
    from personalive.device_plans import describe_plan_cache

    for line in environment.describe():
        typer.echo(line)
    typer.echo(f"compile cache {describe_compile_cache()}")
    typer.echo(f"plan cache {describe_plan_cache()}")
