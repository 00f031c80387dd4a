"""Bodies of ``personalive build-engine`` and ``personalive verify-engine`` (called by cli.py).

build-engine, in steps: 1. config and options; 2. models in the engine precision; 3. ONNX export + sidecar;
4. stop here with --onnx-only, or exit 2 when TensorRT is missing (the ONNX stays); 5. TensorRT build + sidecar;
6. --verify: verify-engine on what was built.

verify-engine: the artifact's sidecar fixes the resolution and step config; the PyTorch step runs in fp32 on the
same inputs as the artifact (cast to its precision); per-output errors are logged; a weights-hash mismatch or
any output beyond tolerance is a VerificationError (exit 1).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from pathlib import Path
from typing import Any

from personalive import _optional
from personalive.backends.tensorrt import sidecar as sc
from personalive.errors import ConfigError, EngineMismatchError, InputError, MissingDependencyError, VerificationError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")


def _load_models(weights_dir: str, precision: str, device):
    from personalive.environment import torch_dtype
    from personalive.weights import load_models

    return load_models(Path(weights_dir), torch_dtype(precision), device, torch_dtype("fp32"))


def _paths(out: Path | None, engine_dir: str, weights_hash: str, subset: dict, precision: str, k: int):
    """(onnx path, engine path or None when it depends on the GPU and TensorRT version)."""
    if out is None:
        return sc.default_onnx_path(engine_dir, weights_hash, subset, precision, k), None
    out = Path(out)
    if out.suffix == ".onnx":
        return out, out.with_suffix(".engine")
    return out.with_suffix(".onnx"), out


def build_engine_command(
    *,
    weights: Path | None,
    config: Path | None,
    overrides: list[str],
    out: Path | None,
    height: int | None,
    width: int | None,
    max_keyframes: int | None,
    precision: str,
    onnx_only: bool,
    verify: bool,
    device: str | None,
) -> Path:
    """Export (and unless --onnx-only, build) the window step; return the path of the last artifact written."""
    import torch

    from personalive.backends.tensorrt.export import export_window_step
    from personalive.config import load_config
    from personalive.environment import resolve_device

    # 1. config and options
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    extra: dict[str, Any] = {
        "model.weights_dir": str(weights) if weights is not None else None,
        "generation.height": height,
        "generation.width": width,
        "model.dtype": precision,
    }
    cfg = load_config(config, overrides, extra)
    k = sc.engine_keyframes(cfg) if max_keyframes is None else max_keyframes
    if k < 0:
        raise ConfigError(f"--max-keyframes {k}: must be >= 0")
    dev = resolve_device(device)
    subset = sc.config_subset(cfg)
    command = sc.build_command(config, cfg.model.weights_dir, subset, precision, k)

    # 2. models in the engine's precision
    models = _load_models(cfg.model.weights_dir, precision, dev)
    onnx_path, engine_path = _paths(out, cfg.runtime.engine_dir, models.weights_hash, subset, precision, k)

    # 3. ONNX + sidecar
    meta = export_window_step(
        models, cfg, onnx_path, precision=precision, max_keyframes=k, device=dev, build_command=command
    )
    sc.write_sidecar(onnx_path, meta)
    log.info("ONNX graph: %s", onnx_path)
    del models
    if dev.type == "cuda":
        torch.cuda.empty_cache()

    # 4. --onnx-only, or TensorRT missing
    if onnx_only:
        if verify:
            verify_engine_command(path=onnx_path, weights=weights, config=config, overrides=overrides, device=device)
        return onnx_path
    try:
        trt = _optional.tensorrt()
    except MissingDependencyError as exc:
        raise MissingDependencyError(
            f"TensorRT is missing, so only the ONNX graph was written ({onnx_path}): install it with "
            "`pip install 'personalive[tensorrt]'` on a machine with an NVIDIA GPU and rerun, or pass --onnx-only"
        ) from exc

    # 5. TensorRT engine + sidecar
    from personalive.backends.tensorrt.build import build_engine, timing_cache_path
    from personalive.backends.tensorrt.runtime import gpu_facts

    gpu_name, cc = gpu_facts(dev)
    if engine_path is None:
        engine_path = sc.default_engine_path(
            cfg.runtime.engine_dir, meta.weights_hash, subset, precision, k, cc, trt.__version__
        )
    cache = timing_cache_path(cfg.runtime.engine_dir, cc, trt.__version__)
    with torch.cuda.device(dev):
        facts = build_engine(onnx_path, engine_path, meta.inputs, timing_cache=cache)
    engine_meta = dataclasses.replace(
        meta,
        kind="tensorrt",
        tensorrt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=cc,
        extra={**meta.extra, **facts, "onnx": str(onnx_path)},
    )
    sc.write_sidecar(engine_path, engine_meta)

    # 6. --verify
    if verify:
        verify_engine_command(path=engine_path, weights=weights, config=config, overrides=overrides, device=device)
    return engine_path


def verify_engine_command(
    *,
    path: Path,
    weights: Path | None = None,
    config: Path | None = None,
    overrides: list[str] = (),  # type: ignore[assignment]
    device: str | None = None,
    tolerance: float | None = None,
    draws: int = 3,
):
    """Compare a ``.onnx`` (onnxruntime) or ``.engine`` (TensorRT) with the fp32 PyTorch step; raise on failure."""
    import torch

    from personalive.backends.base import OUTPUT_NAMES
    from personalive.backends.tensorrt.export import window_step_module
    from personalive.backends.tensorrt.verify import DEFAULT_TOLERANCE, OnnxRunner, compare_runs, keyframe_schedule
    from personalive.environment import resolve_device, torch_dtype

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.suffix not in (".onnx", ".engine"):
        raise InputError(f"{path}: expected a .onnx (onnxruntime) or .engine (TensorRT) file")
    meta = sc.read_sidecar(path)
    cfg = _config_for(meta, path, weights, config, list(overrides))
    dev = resolve_device(device)

    if path.suffix == ".engine":
        from personalive.backends.tensorrt.runtime import TensorRTRunner, gpu_facts

        trt = _optional.tensorrt()
        gpu_name, cc = gpu_facts(dev)
        rebuild = meta.build_command
        sc.check_sidecar(
            meta, path, rebuild=rebuild, tensorrt_version=trt.__version__, gpu_name=gpu_name, compute_capability=cc
        )

        def open_runner():
            return TensorRTRunner(path, dev)
    else:
        _optional.onnxruntime()  # fail early, before loading models, when it is missing

        def open_runner():
            return OnnxRunner(path, dev)

    # 1. the fp32 PyTorch reference on every draw first; then it is freed, so that the reference and the artifact
    #    (each several GB at full size) never sit in memory together
    models = _load_models(cfg.model.weights_dir, "fp32", dev)
    hash_note = ""
    if models.weights_hash != meta.weights_hash:
        hash_note = (
            f"weights hash differs: built from {meta.weights_hash[:12]}, given {models.weights_hash[:12]} "
            f"({cfg.model.weights_dir})"
        )
        log.error("%s: %s", path, hash_note)
    module = window_step_module(models, cfg).eval()
    make_inputs = VerificationInputs(models, cfg, dev)
    generator = torch.Generator(device=dev).manual_seed(cfg.generation.seed)
    cases = []
    with torch.no_grad():
        for keyframes in keyframe_schedule(draws, meta.max_keyframes):
            inputs = make_inputs(keyframes, generator)
            expected = dict(zip(OUTPUT_NAMES, module(*inputs.values()), strict=True))
            cases.append((inputs, expected))
    del module, models, make_inputs
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()

    # 2. the artifact on the same inputs
    runner = open_runner()
    pending = iter(cases)
    current: dict[str, dict] = {}

    def stored_inputs(_keyframes, _generator):
        current["inputs"], current["expected"] = next(pending)
        return current["inputs"]

    tol = DEFAULT_TOLERANCE[meta.precision] if tolerance is None else tolerance
    result = compare_runs(
        runner,
        lambda _inputs: current["expected"],
        stored_inputs,
        output_names=OUTPUT_NAMES,
        draws=draws,
        max_keyframes=meta.max_keyframes,
        tolerance=tol,
        seed=cfg.generation.seed,
        input_dtype=torch_dtype(meta.precision),
        generator_device=dev,
    )
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
    log.info("%s: all %d outputs within tolerance %g", path, len(result.reports), tol)
    return result


def _config_for(meta: sc.Sidecar, path: Path, weights: Path | None, config: Path | None, overrides: list[str]):
    """The run config with the artifact's resolution and step settings; --set may not contradict them."""
    from personalive.config import load_config

    extra: dict[str, Any] = {f"generation.{k}": v for k, v in meta.config.items() if k != "scheduler"}
    extra.update({f"scheduler.{k}": v for k, v in meta.config.get("scheduler", {}).items()})
    extra["model.weights_dir"] = str(weights) if weights is not None else None
    extra["model.dtype"] = meta.precision
    cfg = load_config(config, overrides, extra)
    diff = sc.first_difference("config", meta.config, sc.config_subset(cfg))
    if diff:
        name, built, current = diff
        raise EngineMismatchError(
            f"{path}: {name} differs: built for {built!r}, --set asks for {current!r}; verify with the artifact's "
            f"settings or rebuild with `{meta.build_command}`"
        )
    return cfg


class VerificationInputs:
    """fp32 random window inputs (``example_window_inputs``) with the older frames' motion tokens at the scale the
    loaded motion encoder produces, measured once on random face crops.

    Tokens at a fixed RMS can be far from what the weights produce (RMS 40 against about 4 for the tiny random
    encoder), which makes the UNet ill-conditioned: the fp32 PyTorch step then differs from its own fp64 run by
    ~1e-2 and no exported graph could be checked to 1e-4. At the encoder's own scale the two agree to ~1e-7.
    """

    def __init__(self, models, cfg, device):
        self.models, self.cfg, self.device = models, cfg, device
        self.token_rms: float | None = None

    def __call__(self, num_keyframes: int, generator) -> dict:
        import torch

        from personalive.pipeline.window import example_window_inputs

        inputs = example_window_inputs(
            self.models, self.cfg, self.device, torch.float32, num_keyframes=num_keyframes, generator=generator
        )
        if self.token_rms is None:
            with torch.no_grad():
                tokens = self.models.motion_encoder(inputs["motion"].to(self.models.dtype)).float()
            self.token_rms = float(tokens.pow(2).mean().sqrt())
        old = inputs["motion_hidden_states"]
        inputs["motion_hidden_states"] = old * (self.token_rms / float(old.pow(2).mean().sqrt()))
        return inputs
