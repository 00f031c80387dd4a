"""Bodies of ``personalive build-engine`` and ``personalive verify-engine`` (called by cli.py with a built config).

build-engine, in steps: 1. options; 2. models in the engine precision; 3. ONNX export + sidecar; 4. stop here
with --onnx-only, or exit 2 when TensorRT is missing (the ONNX stays); 5. TensorRT build + sidecar; 6. --verify:
verify-engine on what was built.

verify-engine: the artifact's sidecar fixes the resolution and step config (the CLI puts its settings into the
config, :func:`personalive.backends.artifacts.artifact_options`); the PyTorch step runs in fp32 on the same
inputs as the artifact (cast to its precision); per-output errors are logged; a weights-hash mismatch or any
output beyond tolerance is a VerificationError (exit 1). An ``.onnx`` file is verified without TensorRT.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable
from pathlib import Path

from personalive import _optional
from personalive.backends import artifacts
from personalive.config import RunConfig
from personalive.errors import ConfigError, EngineMismatchError, MissingDependencyError, VerificationError

log = logging.getLogger(__name__)


def _load_models(config: RunConfig, dtype: str, device):
    """Every network the window step runs, in ``dtype`` (the pipeline's own networks are not needed)."""
    from personalive.environment import torch_dtype
    from personalive.pipeline.window import WINDOW_STEP_NETWORKS
    from personalive.weights import load_models

    return load_models(
        Path(config.model.weights_dir), torch_dtype(dtype), device, torch_dtype("fp32"), WINDOW_STEP_NETWORKS
    )


def _engine_options(config: RunConfig, max_keyframes: int | None):
    """(precision, keyframes, device) of an engine build, checked: an engine has one precision and k >= 0."""
    from personalive.environment import resolve_device

    precision = str(config.model.dtype)
    if precision == "auto":
        raise ConfigError("--dtype auto: an engine has one precision; pass --dtype fp16, bf16 or fp32")
    k = artifacts.engine_keyframes(config) if max_keyframes is None else max_keyframes
    if k < 0:
        raise ConfigError(f"--max-keyframes {k}: must be >= 0")
    device = resolve_device(config.runtime.device)
    return precision, k, device


def _paths(out: Path | None, engine_dir: str, weights_hash: str, subset: dict, precision: str, k: int):
    """(onnx path, engine path or None when it depends on the GPU and TensorRT version)."""
    if out is None:
        return artifacts.default_onnx_path(engine_dir, weights_hash, subset, precision, k), None
    out = Path(out)
    if out.suffix == ".onnx":
        return out, out.with_suffix(".engine")
    return out.with_suffix(".onnx"), out


ENGINE_FORMATS = ("tensorrt", "aoti", "compile-cache", "precompiled")


def default_engine_format() -> str:
    """TensorRT where it is installed, else AOTInductor (which needs only torch and a C++ compiler)."""
    return "tensorrt" if _optional.is_available("tensorrt") else "aoti"


def build_engine(
    config: RunConfig,
    *,
    out: Path | None = None,
    max_keyframes: int | None = None,
    onnx_only: bool = False,
    verify: bool = False,
    config_file: Path | None = None,
    engine_format: str | None = None,
) -> Path:
    """Build the window step's engine; return the path of the last artifact written.

    ``engine_format``: ``tensorrt`` (ONNX export, then unless ``onnx_only`` a TensorRT build) or ``aoti`` (an
    AOTInductor package); None picks :func:`default_engine_format`. The engine's precision is
    ``config.model.dtype``; ``config_file`` only goes into the rebuild command.
    """
    import torch

    engine_format = engine_format or ("tensorrt" if onnx_only else default_engine_format())
    if engine_format not in ENGINE_FORMATS:
        raise ConfigError(f"--format {engine_format!r}: expected one of {', '.join(ENGINE_FORMATS)}")
    if engine_format != "tensorrt":
        torch_format = _torch_format(engine_format)
        if onnx_only:
            raise ConfigError(f"--onnx-only: only with --format tensorrt ({torch_format['what']} has no ONNX step)")
        return _build_torch_artifact(config, out, max_keyframes, verify, **torch_format)

    from personalive.backends.onnx import export_window_step

    # 1. options
    precision, k, device = _engine_options(config, max_keyframes)
    subset = artifacts.config_subset(config)
    command = artifacts.build_command(config_file, config.model.weights_dir, subset, precision, k)

    # 2. models in the engine's precision
    models = _load_models(config, precision, device)
    onnx_path, engine_path = _paths(out, config.runtime.engine_dir, models.weights_hash, subset, precision, k)

    # 3. ONNX + sidecar
    meta = export_window_step(
        models, config, onnx_path, precision=precision, max_keyframes=k, device=device, build_command=command
    )
    artifacts.write_sidecar(onnx_path, meta)
    log.info("ONNX graph: %s", onnx_path)
    del models
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 4. --onnx-only, or TensorRT missing
    if onnx_only:
        if verify:
            verify_engine(config, onnx_path, meta)
        return onnx_path
    try:
        trt = _optional.tensorrt()
    except MissingDependencyError as exc:
        raise MissingDependencyError(
            f"TensorRT is missing, so only the ONNX graph was written ({onnx_path}): install it with "
            "`pip install 'personalive[tensorrt]'` on a machine with an NVIDIA GPU and rerun, or pass --onnx-only"
        ) from exc

    # 5. TensorRT engine + sidecar
    from personalive.backends.tensorrt.build import build_engine as build_tensorrt_engine
    from personalive.backends.tensorrt.build import timing_cache_path
    from personalive.backends.tensorrt.runtime import gpu_facts

    gpu_name, cc = gpu_facts(device)
    if engine_path is None:
        engine_path = artifacts.default_engine_path(
            config.runtime.engine_dir, meta.weights_hash, subset, precision, k, cc, trt.__version__
        )
    cache = timing_cache_path(config.runtime.engine_dir, cc, trt.__version__)
    with torch.cuda.device(device):
        facts = build_tensorrt_engine(onnx_path, engine_path, meta.inputs, timing_cache=cache)
    engine_meta = dataclasses.replace(
        meta,
        kind="tensorrt",
        tensorrt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=cc,
        extra={**meta.extra, **facts, "onnx": str(onnx_path)},
    )
    artifacts.write_sidecar(engine_path, engine_meta)

    # 6. --verify
    if verify:
        verify_engine(config, engine_path, engine_meta)
    return engine_path


def _torch_format(name: str) -> dict:
    """How ``build-engine --format NAME`` builds its torch artifact (docs/engines.md): the keywords of
    :func:`_build_torch_artifact`, ``before`` a check that takes seconds, before minutes of loading and compiling."""
    if name == "aoti":  # export + AOTInductor package
        from personalive.backends import aoti
        from personalive.backends.aoti_wrapper import check_compiler

        return {
            "what": "an AOTInductor package",
            "suffix": aoti.PACKAGE_SUFFIX,
            "default_path": aoti.default_package_path,
            "rebuild_command": aoti.rebuild_command,
            "build": aoti.build_package,
            "before": check_compiler,
        }
    if name == "precompiled":  # the step compiled ahead of time
        from personalive.backends import precompiled as pc

        return {
            "what": "a precompiled step",
            "suffix": pc.SUFFIX,
            "default_path": pc.default_step_path,
            "rebuild_command": pc.rebuild_command,
            "build": pc.build_step,
            "before": pc.check_supported,
        }
    from personalive.backends import compile_cache_engine as cc  # inductor's compilation of the step, saved

    return {
        "what": "a compile cache",
        "suffix": cc.CACHE_SUFFIX,
        "default_path": cc.default_cache_path,
        "rebuild_command": cc.rebuild_command,
        "build": _build_compile_cache,
    }


def _build_compile_cache(models, config: RunConfig, path: Path, **options) -> artifacts.Sidecar:
    import torch

    from personalive.backends import compile_cache_engine as cc
    from personalive.backends.compiled import CompiledWindowStep

    torch.compiler.reset()  # only this step's compilation goes into the artifacts
    step = CompiledWindowStep.from_models(models, config, options["device"])
    return cc.build_cache(step, models, config, path, **options)


def _build_torch_artifact(
    config: RunConfig,
    out: Path | None,
    max_keyframes: int | None,
    verify: bool,
    *,
    what: str,
    suffix: str,
    default_path: Callable[..., Path],
    rebuild_command: Callable[[RunConfig, int], str],
    build: Callable[..., artifacts.Sidecar],
    before: Callable[[], None] | None = None,
) -> Path:
    """What the torch-built formats share: ``--out`` and ``before`` checked before the models load, the file at
    ``out`` or the run's default path, its sidecar written, ``--verify``."""
    from personalive.backends.torch_artifacts import device_facts

    path = Path(out) if out is not None else None
    if path is not None and path.suffix != suffix:
        raise ConfigError(f"--out {path}: {what} is a {suffix} file")
    precision, k, device = _engine_options(config, max_keyframes)
    if before is not None:
        before()
    models = _load_models(config, precision, device)
    if path is None:
        subset = artifacts.config_subset(config)
        facts = device_facts(device)
        path = default_path(config.runtime.engine_dir, models.weights_hash, subset, precision, k, facts)
    command = rebuild_command(config, k)
    meta = build(models, config, path, precision=precision, k=k, device=device, build_command=command)
    artifacts.write_sidecar(path, meta)
    del models
    if verify:
        verify_engine(config, path, meta)
    return path


def _open_compile_cache(path: Path, config: RunConfig, precision: str, device):
    """--backend compile on freshly loaded networks in ``precision``, with the cache at ``path`` loaded."""
    from personalive.backends.compiled import CompiledWindowStep

    models = _load_models(config, precision, device)
    return CompiledWindowStep.from_models(models, config, device, engine=path)


def _open_runner(path: Path, meta: artifacts.Sidecar, device):
    """A callable running the artifact, checked against this machine first (before any model loads)."""
    if path.suffix == ".ptcache":
        from personalive.backends import compile_cache_engine

        compile_cache_engine.check_cache(meta, path, device, rebuild=meta.build_command)
        return lambda config: _open_compile_cache(path, config, meta.precision, device)
    if path.suffix == ".ptstep":
        from personalive.backends import precompiled

        precompiled.check_step(meta, path, device, rebuild=meta.build_command)
        return lambda config: precompiled.open_step(path, config, meta.precision, device)
    if path.suffix == ".pt2":
        from personalive.backends import aoti

        aoti.check_package(meta, path, device, rebuild=meta.build_command)
        return lambda config: aoti.open_package(path, config, meta.precision, device)
    if path.suffix == ".engine":
        from personalive.backends.tensorrt.runtime import TensorRTRunner, gpu_facts

        trt = _optional.tensorrt()
        gpu_name, cc = gpu_facts(device)
        artifacts.check_sidecar(
            meta,
            path,
            rebuild=meta.build_command,
            tensorrt_version=trt.__version__,
            gpu_name=gpu_name,
            compute_capability=cc,
        )
        return lambda _config: TensorRTRunner(path, device)
    from personalive.backends.onnx import OnnxRunner

    _optional.onnxruntime()  # fail early, before loading models, when it is missing
    return lambda _config: OnnxRunner(path, device)


def _named_outputs(module):
    from personalive.pipeline.window import OUTPUT_NAMES

    return lambda inputs: dict(zip(OUTPUT_NAMES, module(*inputs.values()), strict=True))


def verify_engine(
    config: RunConfig,
    path: Path,
    meta: artifacts.Sidecar,
    *,
    tolerance: float | None = None,
    draws: int = 3,
):
    """Compare a ``.onnx`` (onnxruntime) or ``.engine`` (TensorRT) with the fp32 PyTorch step; raise on failure."""
    import torch

    from personalive.backends.verify import (
        DEFAULT_TOLERANCE,
        VerificationInputs,
        compare_runs,
        own_error,
        reference_cases,
    )
    from personalive.environment import resolve_device, torch_dtype
    from personalive.pipeline.window import OUTPUT_NAMES, build_window_module

    path = Path(path)
    diff = artifacts.first_difference("config", meta.config, artifacts.config_subset(config))
    if diff:
        name, built, current = diff
        raise EngineMismatchError(
            f"{path}: {name} differs: built for {built!r}, --set asks for {current!r}; verify with the artifact's "
            f"settings or rebuild with `{meta.build_command}`"
        )
    device = resolve_device(config.runtime.device)
    open_runner = _open_runner(path, meta, device)
    if path.suffix == ".onnx":
        _check_onnx_memory(path, meta, config, device)

    # 1. the fp32 PyTorch reference on every draw first; then it is freed
    models = _load_models(config, "fp32", device)
    hash_note = ""
    if models.weights_hash != meta.weights_hash:
        hash_note = (
            f"weights hash differs: built from {meta.weights_hash[:12]}, given {models.weights_hash[:12]} "
            f"({config.model.weights_dir})"
        )
        log.error("%s: %s", path, hash_note)
    module = build_window_module(models, config).eval()
    generator = torch.Generator(device=device).manual_seed(config.generation.seed)
    make_inputs = VerificationInputs(models, config, device)
    cases = reference_cases(_named_outputs(module), make_inputs, draws, meta.max_keyframes, generator)
    del module, models, make_inputs
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 2. the artifact on the same inputs
    tol = DEFAULT_TOLERANCE[meta.precision] if tolerance is None else tolerance
    result = compare_runs(
        open_runner(config), cases, output_names=OUTPUT_NAMES, tolerance=tol, input_dtype=torch_dtype(meta.precision)
    )
    if result.failed and meta.precision != "fp32":  # the artifact's error, or its precision's?
        gc.collect()  # the artifact's runner is gone: its memory too, before the step in its precision loads
        step = build_window_module(_load_models(config, meta.precision, device), config).eval()
        result.own_error = own_error(_named_outputs(step), cases, torch_dtype(meta.precision))
    log.info("%s vs the fp32 PyTorch step, %d draws with %s keyframes", path, draws, result.keyframes)
    for line in result.lines():
        log.info("%s", line)
    failed = [r.name for r in result.failed]
    if failed or hash_note:
        parts = [hash_note] if hash_note else []
        if failed:
            parts.append(
                f"{len(failed)} of {len(result.reports)} outputs beyond tolerance {tol:g}: {', '.join(failed)}"
            )
        raise VerificationError(f"{path}: verification failed: {'; '.join(parts)}")
    own = f" or the {meta.precision} PyTorch step's own error" if any(map(result.excused, result.reports)) else ""
    log.info("%s: all %d outputs within tolerance %g%s", path, len(result.reports), tol, own)
    return result


def _check_onnx_memory(path: Path, meta: artifacts.Sidecar, config: RunConfig, device) -> None:
    """Refuse, before loading anything, an onnxruntime CPU check that would not fit in host memory."""
    from personalive.backends import onnx_memory
    from personalive.weights import WeightsLayout, read_sizes

    ort = _optional.onnxruntime()
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return  # the attention matrices live on the GPU
    sizes = read_sizes(WeightsLayout(Path(config.model.weights_dir)))
    data = path.with_name(path.name + ".data")
    g = config.generation
    needed = onnx_memory.verify_memory_bytes(
        sizes.unet,
        height=g.height,
        width=g.width,
        vae_factor=2 ** (len(sizes.vae.get("block_out_channels", [0] * 4)) - 1),
        frames=g.adaptive_steps * g.window,
        keyframes=meta.max_keyframes,
        element_bytes=2 if meta.precision in ("fp16", "bf16") else 4,
        weight_bytes=path.stat().st_size + (data.stat().st_size if data.is_file() else 0),
    )
    onnx_memory.check_verify_memory(path, needed, onnx_memory.available_memory_bytes(), height=g.height, width=g.width)
