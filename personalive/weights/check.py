"""``personalive weights check``: every problem of a layout (files, keys, shapes, CRCs of every byte, non-finite
values), without running a network."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from personalive.errors import WeightsError
from personalive.weights.configs import FIX, read_sizes
from personalive.weights.integrity import nonfinite_tensors, verify_archive
from personalive.weights.layout import NETWORKS, WeightsLayout
from personalive.weights.load import (
    _expected_shapes,
    _read_network_state,
    build_network,
    compare_state,
    config_file,
    summarize_problems,
    weights_hash,
)

logger = logging.getLogger(__name__)


def check_layout(directory: str | os.PathLike) -> list[str]:
    """Every problem of a layout (files present and readable, keys and shapes versus the architecture built on the
    meta device); no network is run. An empty list means the layout loads."""
    layout = WeightsLayout(Path(directory))
    if not layout.root.is_dir():
        return [f"{layout.root}: weights directory not found"]
    problems = [f"{p}: missing" for p in layout.required_files() if not p.is_file()]
    try:
        sizes = read_sizes(layout)
    except WeightsError as exc:
        problem = _problem(exc)  # a config file already listed as missing is not listed twice
        return problems + ([] if problem in problems else [problem])
    for name in NETWORKS:
        files = layout.network_files(name)
        if not all(p.is_file() for p in files):
            continue
        problems += [p for path in files for p in verify_archive(path)]  # every byte against its CRC
        try:
            with torch.device("meta"):
                module = build_network(name, sizes, config_file(name, layout, sizes))
            state, origin = _read_network_state(name, layout)
        except WeightsError as exc:
            problems.append(_problem(exc))
            continue
        problems += compare_state(_expected_shapes(module), state, origin, files)
        problems += [
            f"{origin[key]}: {key} holds {count} non-finite values (NaN or inf) of {total}"
            for key, count, total in nonfinite_tensors(state)
        ]
    return problems


def _problem(exc: WeightsError) -> str:
    """A loader's error as one problem of the list: without its advice, which the summary line gives once."""
    return str(exc).removesuffix(f"; {FIX}")


def check_command(directory: str | os.PathLike | None = None) -> None:
    """``personalive weights check``: log a summary, or raise a WeightsError naming every problem."""
    from personalive.config import default_weights_dir

    root = Path(directory if directory is not None else default_weights_dir())
    problems = check_layout(root)
    if problems:
        if len(problems) > 1:  # one line each, then the command's own line naming them all (read by scripts)
            for problem in problems:
                logger.error("%s", problem)
        raise WeightsError(summarize_problems(root, problems, shown=len(problems)))
    sizes = read_sizes(WeightsLayout(root))
    logger.info("%s: all %d networks match their architecture (sizes: %s)", root, len(NETWORKS), sizes.source)
    logger.info("weights hash %s", weights_hash(root, use_cache=False))
