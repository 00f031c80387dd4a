"""What the engines PyTorch builds share -- AOTInductor packages (``aoti.py``), compile caches
(``compile_cache_engine.py``), precompiled steps (``precompiled.py``): the sidecar of one built on this machine,
its check against the machine and run that would load it, and the lookup of a run's file.

Their compiled code is specific to the torch and CUDA versions, the device type and the GPU
(:func:`device_facts`); the run's facts (weights, config, precision, keyframes) are
checked as for every engine (:func:`personalive.backends.artifacts.check_sidecar`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from personalive.backends import artifacts
from personalive.errors import InputError


def device_facts(device) -> dict[str, str | None]:
    """What a torch-built engine is specific to: torch and CUDA versions, device type, GPU, compute capability."""
    import torch

    facts: dict[str, str | None] = {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "device_type": device.type,
        "gpu_name": None,
        "compute_capability": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts["gpu_name"] = props.name
        facts["compute_capability"] = f"{props.major}.{props.minor}"
    return facts


def device_tag(facts: dict[str, str | None]) -> str:
    """``sm90`` for a GPU of compute capability 9.0, ``cpu`` for the CPU."""
    cc = facts.get("compute_capability")
    return f"sm{cc.replace('.', '')}" if cc else str(facts["device_type"])


def artifact_path(
    engine_dir: str | Path, weights_hash: str, subset: dict, precision: str, k: int, facts: dict, tail: str
) -> Path:
    """``engines/<stem>-<sm90|cpu>-torch<version><tail>``: the default file of a torch-built artifact."""
    stem = artifacts.artifact_stem(weights_hash, subset, precision, k)
    version = str(facts["torch_version"]).replace("+", "-")
    return Path(engine_dir) / f"{stem}-{device_tag(facts)}-torch{version}{tail}"


def rebuild_command(config: Any, k: int, engine_format: str) -> str:
    """The ``build-engine`` command that rebuilds a torch-built artifact for ``config`` on its device."""
    subset = artifacts.config_subset(config)
    command = artifacts.build_command(None, config.model.weights_dir, subset, str(config.model.dtype), k)
    return f"{command} --format {engine_format} --device {config.runtime.device}"


def sidecar(
    kind: str,
    models: Any,
    config: Any,
    *,
    precision: str,
    k: int,
    io: tuple[list[artifacts.TensorSpec], list[artifacts.TensorSpec]],
    device,
    build_command: str,
    extra: dict[str, Any],
) -> artifacts.Sidecar:
    """The sidecar of an artifact of ``kind`` just built here from ``models`` for ``config`` (``io``: its input
    and output specs)."""
    from personalive import __version__

    facts = device_facts(device)
    return artifacts.Sidecar(
        kind=kind,
        precision=precision,
        weights_hash=models.weights_hash,
        config=artifacts.config_subset(config),
        max_keyframes=k,
        inputs=io[0],
        outputs=io[1],
        personalive_version=__version__,
        build_command=build_command,
        gpu_name=facts["gpu_name"],
        compute_capability=facts["compute_capability"],
        torch_version=facts["torch_version"],
        cuda_version=facts["cuda_version"],
        device_type=facts["device_type"],
        extra=extra,
    )


def check(meta: artifacts.Sidecar, path: Path, device, *, kind: str, what: str, rebuild: str, **facts_of_run) -> None:
    """``meta`` against this machine (device, torch, CUDA, GPU) and, when given, the run (weights, config...);
    ``what`` names the kind in the error (``"an AOTInductor package"``)."""
    if meta.kind != kind:
        raise InputError(f"{path}: the sidecar describes a {meta.kind!r} artifact, not {what}")
    facts = device_facts(device)
    artifacts.check_sidecar(
        meta,
        path,
        rebuild=rebuild,
        device_type=facts["device_type"],
        torch_version=facts["torch_version"],
        cuda_version=facts["cuda_version"] if facts["device_type"] == "cuda" else None,
        compute_capability=facts["compute_capability"],
        gpu_name=facts["gpu_name"],
        **facts_of_run,
    )


def find(
    models: Any,
    config: Any,
    device,
    engine: str | Path | None,
    *,
    default_path: Callable[..., Path],
    check_file: Callable[..., None],
    rebuild: str,
) -> Path | None:
    """The file for this run: ``engine`` when given (it must exist), else ``default_path(engine_dir, weights
    hash, config subset, precision, keyframes, device facts)`` when a file is there, else None; a file found is
    checked with ``check_file(meta, path, device, rebuild=..., **the run's facts)`` (raises on a mismatch)."""
    k = artifacts.engine_keyframes(config)
    subset = artifacts.config_subset(config)
    if engine is not None:
        path = Path(engine)
        if not path.is_file():
            raise InputError(f"--engine {path}: file not found; build one with `{rebuild}`")
    elif getattr(models, "weights_hash", None) is None:
        return None  # a model set that did not come from a weights folder has no engines
    else:
        precision, facts = str(config.model.dtype), device_facts(device)
        path = default_path(config.runtime.engine_dir, models.weights_hash, subset, precision, k, facts)
        if not path.is_file():
            return None
    check_file(
        artifacts.read_sidecar(path),
        path,
        device,
        rebuild=rebuild,
        weights_hash=models.weights_hash,
        config=subset,
        precision=str(config.model.dtype),
        max_keyframes=k,
    )
    return path
