"""Engine artifacts (an exported ONNX graph, a TensorRT engine, ...): the JSON sidecar, its checks, file names.

Nothing here depends on an engine runtime; every backend that runs an artifact reads and checks it here.

Every artifact ``X`` (``.onnx`` or ``.engine``) has a sidecar ``X.json`` that says what it was built from and
for: weights hash, the config values the step depends on, precision, I/O names with shapes and profiles, and for
engines the TensorRT version, GPU name and compute capability. :func:`check_sidecar` compares it with the current
run and raises :class:`EngineMismatchError` naming the first field that differs, both values and the rebuild
command. :func:`default_engine_path` derives a file name from the same facts, so ``build-engine`` and
``animate --backend tensorrt`` agree on where an engine lives and a change of any fact leads to a new name.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from personalive.errors import EngineMismatchError, InputError

log = logging.getLogger(__name__)

# 2: the reference inputs are each block's reference keys | values (2C channels), not the raw features (C)
SIDECAR_FORMAT = 2
ARTIFACT_STEM = "window_step"
ARTIFACT_SUFFIXES = (".onnx", ".engine", ".pt2", ".ptcache", ".ptstep")


@dataclass
class TensorSpec:
    """One named input or output: dtype and shape; dynamic axes as ``-1`` with the profile (min, opt, max)."""

    name: str
    dtype: str
    shape: list[int]
    profile: dict[str, list[int]] | None = None  # {"min": [...], "opt": [...], "max": [...]} for dynamic inputs


@dataclass
class Sidecar:
    """What an artifact was built from and for (see the module docstring)."""

    kind: str  # "onnx" | "tensorrt" | "aoti" | "compile-cache" | "precompiled"
    precision: str  # fp32 | fp16 | bf16: the dtype of the graph's inputs, outputs and weights
    weights_hash: str
    config: dict[str, Any]  # see config_subset()
    max_keyframes: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    personalive_version: str
    build_command: str
    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    onnx_opset: int | None = None
    torch_version: str | None = None  # AOTInductor packages: compiled code is specific to torch, CUDA and device
    cuda_version: str | None = None
    device_type: str | None = None  # "cuda" | "cpu"
    extra: dict[str, Any] = field(default_factory=dict)
    format: int = SIDECAR_FORMAT

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sidecar:
        data = dict(data)
        data["inputs"] = [TensorSpec(**spec) for spec in data["inputs"]]
        data["outputs"] = [TensorSpec(**spec) for spec in data["outputs"]]
        return cls(**data)


def sidecar_path(artifact: str | Path) -> Path:
    """``engines/x.engine`` -> ``engines/x.engine.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_sidecar(artifact: str | Path, sidecar: Sidecar) -> Path:
    path = sidecar_path(artifact)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(sidecar.to_json())
    tmp.replace(path)
    log.debug("wrote %s", path)
    return path


def read_sidecar(artifact: str | Path) -> Sidecar:
    """Read the sidecar of ``artifact``; a missing or unreadable one is an InputError that says how to rebuild."""
    path = sidecar_path(artifact)
    if not path.is_file():
        raise InputError(
            f"{path}: sidecar JSON not found next to {Path(artifact).name}; "
            "rebuild the artifact with `personalive build-engine` (it writes both)"
        )
    try:
        data = json.loads(path.read_text())
        if data.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"sidecar format {data.get('format')!r}, expected {SIDECAR_FORMAT}")
        return Sidecar.from_dict(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(
            f"{path}: not a valid engine sidecar ({exc}); rebuild with `personalive build-engine`"
        ) from exc


def read_artifact_sidecar(artifact: str | Path) -> Sidecar:
    """The sidecar of an artifact file given by the user (InputError if either is missing)."""
    artifact = Path(artifact)
    if not artifact.is_file():
        raise InputError(f"{artifact}: file not found")
    if artifact.suffix not in ARTIFACT_SUFFIXES:
        raise InputError(
            f"{artifact}: expected a .onnx (onnxruntime), .engine (TensorRT), .pt2 (AOTInductor), .ptcache (compile "
            "cache) or .ptstep (precompiled step) file"
        )
    return read_sidecar(artifact)


def artifact_options(sidecar: Sidecar) -> dict[str, Any]:
    """The config keys an artifact fixes (resolution, step settings, scheduler, precision), as flat options."""
    nested = ("scheduler", "decoder")
    options: dict[str, Any] = {f"generation.{k}": v for k, v in sidecar.config.items() if k not in nested}
    options.update({f"scheduler.{k}": v for k, v in sidecar.config.get("scheduler", {}).items()})
    options["model.decoder"] = sidecar.config.get("decoder", "vae")
    options["model.dtype"] = sidecar.precision
    return options


# ----------------------------------------------------------------------------------- what an engine depends on


def config_subset(config) -> dict[str, Any]:
    """The config values baked into the step graph: resolution, window, adaptive and inference steps, scheduler,
    and the decoder when it is not the default VAE (so artifacts built before the choice existed still match)."""
    g = config.generation
    subset = {
        "height": g.height,
        "width": g.width,
        "window": g.window,
        "adaptive_steps": g.adaptive_steps,
        "inference_steps": g.inference_steps,
        "scheduler": asdict(config.scheduler),
    }
    if str(config.model.decoder) != "vae":
        subset["decoder"] = str(config.model.decoder)
    return subset


def engine_keyframes(config) -> int:
    """History keyframes an engine must accept for this config (0 when history keyframes are off)."""
    return config.generation.max_keyframes if config.generation.history_keyframes else 0


def config_digest(subset: dict[str, Any]) -> str:
    """8 hex digits of the config subset minus the resolution (which is spelled out in the name)."""
    rest = {k: v for k, v in subset.items() if k not in ("height", "width")}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:8]


def artifact_stem(weights_hash: str, subset: dict[str, Any], precision: str, max_keyframes: int) -> str:
    """The device-independent part of a name: ``window_step-<hash12>-<H>x<W>-<precision>-k<K>-c<digest>``."""
    return (
        f"{ARTIFACT_STEM}-{weights_hash[:12]}-{subset['height']}x{subset['width']}-{precision}"
        f"-k{max_keyframes}-c{config_digest(subset)}"
    )


def default_onnx_path(
    engine_dir: str | Path, weights_hash: str, subset: dict[str, Any], precision: str, max_keyframes: int
) -> Path:
    """``engines/onnx/<stem>/window_step.onnx``: one folder per graph, as its external data sits beside it."""
    stem = artifact_stem(weights_hash, subset, precision, max_keyframes)
    return Path(engine_dir) / "onnx" / stem / f"{ARTIFACT_STEM}.onnx"


def default_engine_path(
    engine_dir: str | Path,
    weights_hash: str,
    subset: dict[str, Any],
    precision: str,
    max_keyframes: int,
    compute_capability: str,
    tensorrt_version: str,
) -> Path:
    """``engines/<stem>-sm<cc>-trt<version>.engine``; used by build-engine and by the runtime's lookup."""
    stem = artifact_stem(weights_hash, subset, precision, max_keyframes)
    sm = compute_capability.replace(".", "")
    return Path(engine_dir) / f"{stem}-sm{sm}-trt{tensorrt_version}.engine"


def build_command(config_path: str | Path | None, weights_dir: str, subset: dict[str, Any], precision: str, k: int):
    """The ``personalive build-engine`` command line that rebuilds an artifact for this run."""
    parts = ["personalive build-engine", f"--weights {weights_dir}"]
    if config_path is not None:
        parts.append(f"--config {config_path}")
    parts += [f"--height {subset['height']}", f"--width {subset['width']}", f"--max-keyframes {k}"]
    parts.append(f"--dtype {precision}")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------------------ checks


def first_difference(prefix: str, built: Any, current: Any) -> tuple[str, Any, Any] | None:
    if isinstance(built, dict) and isinstance(current, dict):
        for key in sorted(set(built) | set(current)):
            diff = first_difference(f"{prefix}.{key}", built.get(key), current.get(key))
            if diff:
                return diff
        return None
    return None if built == current else (prefix, built, current)


def check_sidecar(
    sidecar: Sidecar,
    artifact: str | Path,
    *,
    rebuild: str,
    weights_hash: str | None = None,
    config: dict[str, Any] | None = None,
    precision: str | None = None,
    max_keyframes: int | None = None,
    tensorrt_version: str | None = None,
    gpu_name: str | None = None,
    compute_capability: str | None = None,
    device_type: str | None = None,
    torch_version: str | None = None,
    cuda_version: str | None = None,
) -> None:
    """Raise EngineMismatchError at the first field where ``sidecar`` differs from the current run.

    Only the facts given (not None) are compared; ``max_keyframes`` passes when the artifact takes at least as
    many keyframes as the run may add.
    """
    checks: list[tuple[str, Any, Any]] = [
        ("device_type", sidecar.device_type, device_type),
        ("torch_version", sidecar.torch_version, torch_version),
        ("cuda_version", sidecar.cuda_version, cuda_version),
        ("tensorrt_version", sidecar.tensorrt_version, tensorrt_version),
        ("compute_capability", sidecar.compute_capability, compute_capability),
        ("gpu_name", sidecar.gpu_name, gpu_name),
        ("weights_hash", sidecar.weights_hash, weights_hash),
        ("precision", sidecar.precision, precision),
    ]
    for name, built, current in checks:
        if current is not None and built != current:
            _mismatch(artifact, name, built, current, rebuild)
    if config is not None:
        diff = first_difference("config", sidecar.config, config)
        if diff:
            _mismatch(artifact, *diff, rebuild)
    if max_keyframes is not None and sidecar.max_keyframes < max_keyframes:
        raise EngineMismatchError(
            f"{artifact}: built for at most {sidecar.max_keyframes} history keyframes, the config allows "
            f"{max_keyframes}; rebuild with `{rebuild}` or set generation.max_keyframes={sidecar.max_keyframes}"
        )


def _mismatch(artifact: str | Path, name: str, built: Any, current: Any, rebuild: str) -> None:
    raise EngineMismatchError(
        f"{artifact}: {name} differs: built for {built!r}, current {current!r}; rebuild with `{rebuild}`"
    )
