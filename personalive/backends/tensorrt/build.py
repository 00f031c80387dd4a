"""Build a TensorRT engine from the exported ONNX graph (TensorRT 10 Python API, imported lazily).

Precision: the network is *strongly typed* (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): every tensor keeps
the type it has in the ONNX graph, which is exported in the engine's precision from the same PyTorch module that
runs eagerly. TensorRT then cannot silently move a layer to another precision (the weakly typed
``BuilderFlag.FP16``/``BF16`` mode, deprecated in TensorRT 10.12 and gone in 11, may run e.g. a softmax or a
normalisation in fp16 where the PyTorch step keeps fp32), so the engine computes what ``verify-engine`` compares
against. The precision flags are therefore not set; TF32 stays at TensorRT's default for fp32 graphs.

Shapes: one optimisation profile; the state inputs are fixed, each reference feature's token axis ranges from the
base length (no keyframe) to ``1 + max_keyframes`` times it, tuned for twice it (one keyframe).

The timing cache lives next to the engines (one file per GPU and TensorRT version) and is reused across builds,
so rebuilding for new weights or another keyframe count skips most tactic timing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from personalive import _optional
from personalive.backends.artifacts import TensorSpec
from personalive.errors import EngineBuildError

log = logging.getLogger(__name__)


def tensorrt_version() -> str:
    return _optional.tensorrt().__version__


def timing_cache_path(engine_dir: str | Path, compute_capability: str, trt_version: str) -> Path:
    return Path(engine_dir) / f"timing-sm{compute_capability.replace('.', '')}-trt{trt_version}.cache"


def _logger(trt):
    level = trt.Logger.INFO if log.isEnabledFor(logging.DEBUG) else trt.Logger.WARNING
    return trt.Logger(level)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    inputs: list[TensorSpec],
    *,
    timing_cache: str | Path | None,
    workspace_bytes: int | None = None,
) -> dict[str, Any]:
    """Parse ``onnx_path``, build a strongly typed engine with one profile from ``inputs``, write ``engine_path``.

    ``inputs`` are the sidecar's input specs: a spec with a ``profile`` gets (min, opt, max) from it, the others
    their fixed shape. Returns facts for the sidecar (``engine_bytes``, ``timing_cache``).
    """
    trt = _optional.tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    # parse_from_file (not parse(bytes)) so the parser finds the external weights file beside the graph
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    _check_network_inputs(network, inputs, onnx_path)

    config = builder.create_builder_config()
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    for spec in inputs:
        if spec.profile is not None:
            profile.set_shape(spec.name, spec.profile["min"], spec.profile["opt"], spec.profile["max"])
        else:
            profile.set_shape(spec.name, spec.shape, spec.shape, spec.shape)
    config.add_optimization_profile(profile)

    cache = None
    if timing_cache is not None:
        timing_cache = Path(timing_cache)
        data = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        # ignore_mismatch=False: a cache from another device or version is not used (the name already separates)
        if not config.set_timing_cache(cache, False):
            log.warning("%s: timing cache not accepted by this TensorRT/GPU; building without it", timing_cache)
            cache = None

    log.info("building TensorRT engine from %s (this takes minutes at full size)", onnx_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"{onnx_path}: TensorRT failed to build the engine (run with --verbose for TensorRT's log)"
        )
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(memoryview(serialized))
    tmp.replace(engine_path)
    if cache is not None and timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        with open(timing_cache, "wb") as f:
            f.write(memoryview(config.get_timing_cache().serialize()))
    log.info("wrote %s (%.1f MB)", engine_path, engine_path.stat().st_size / 1e6)
    return {
        "engine_bytes": engine_path.stat().st_size,
        "timing_cache": str(timing_cache) if cache is not None else None,
    }


def _check_network_inputs(network, inputs: list[TensorSpec], onnx_path: Path) -> None:
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    expected = [spec.name for spec in inputs]
    if names != expected:
        raise EngineBuildError(f"{onnx_path}: network inputs {names} differ from the sidecar's {expected}")
