"""Precompiled caches for ``--backend compile``: inductor's compilation results, made portable.

Written when AOTInductor packages could not be loaded on the H200 this project measures on (every CUDA package
segfaulted there; the cause, found later, was the machine's default C++ compiler linking libstdc++ statically
into the package's wrapper -- see :mod:`personalive.backends.aoti`). It stays the engine for ``--backend
compile``: a new process, or a new machine of the same kind, skips inductor's code generation and autotuning.

``personalive build-engine --format compile-cache`` compiles the window step once (``--backend compile``'s
networks, one window with 0 and one with 1 history keyframe: the token axis is dynamic, so one compilation serves
every count) and writes what inductor produced -- FX graphs, generated kernels, autotuning results -- as one file
(``torch.compiler.save_cache_artifacts``) under ``engines/``, with the sidecar every engine has (torch and CUDA
versions, device, GPU, precision, weights hash, config, keyframes). ``--backend compile`` finds it (or takes
``--engine FILE``), checks the sidecar like any engine's and hands the file to ``torch.compiler.
load_cache_artifacts`` before its first compilation: a new process, on another machine of the same kind too, then
skips code generation and autotuning. The networks still trace once per process (dynamo), and the cache holds
no weights (the step's parameters are ordinary inputs to the compiled graphs).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from personalive.backends import artifacts, torch_artifacts
from personalive.errors import InputError, PersonaLiveError

log = logging.getLogger(__name__)

CACHE_SUFFIX = ".ptcache"
KIND = "compile-cache"


class CompileCacheError(PersonaLiveError):
    """A compile cache could not be built or loaded."""


def default_cache_path(engine_dir: str | Path, weights_hash: str, subset: dict, precision: str, k: int, facts: dict):
    """``engines/<stem>-<sm90|cpu>-torch<version>.ptcache``; used by build-engine and by the backend's lookup."""
    return torch_artifacts.artifact_path(engine_dir, weights_hash, subset, precision, k, facts, CACHE_SUFFIX)


def rebuild_command(config: Any, k: int) -> str:

    return torch_artifacts.rebuild_command(config, k, KIND)


def build_cache(
    step: Any, models: Any, config: Any, path: Path, *, precision: str, k: int, device, build_command: str
):
    """Compile ``step`` (a fresh ``CompiledWindowStep`` of ``models``, in ``precision`` on ``device``; passed in so
    that this module does not import the backend that imports it) and write inductor's artifacts to ``path``
    (atomically). Returns the sidecar (not yet written)."""
    import torch

    from personalive.backends.onnx import window_step_io
    from personalive.environment import torch_dtype
    from personalive.pipeline.window import example_window_inputs

    dtype = torch_dtype(precision)
    step.graphed = None  # graphs are per process; the cache holds the compiled code
    generator = torch.Generator(device=device).manual_seed(0)
    base = example_window_inputs(models, config, device, dtype, num_keyframes=0, generator=generator)
    t0 = time.perf_counter()
    outputs = step(base)
    if k > 0:  # the first call with more reference tokens marks the axis dynamic; compile that graph too
        step(example_window_inputs(models, config, device, dtype, num_keyframes=1, generator=generator))
    compile_s = time.perf_counter() - t0
    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        raise CompileCacheError(f"{path}: torch.compiler.save_cache_artifacts returned nothing to save")
    data, _info = saved
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    log.info("compiled the window step in %.0f s; wrote %s (%.1f MB)", compile_s, path, len(data) / 1e6)
    specs = [artifacts.TensorSpec(n, str(t.dtype).removeprefix("torch."), list(t.shape)) for n, t in outputs.items()]
    extra = {
        "compile_s": round(compile_s, 1),
        "cache_bytes": len(data),
        "unet_mode": str(config.runtime.compile_unet_mode),
        "unet_scope": str(config.runtime.compile_unet_scope),
        "vae_mode": str(config.runtime.compile_vae_mode),
    }
    io = window_step_io(base, specs, k)
    return torch_artifacts.sidecar(
        KIND, models, config, precision=precision, k=k, io=io, device=device, build_command=build_command, extra=extra
    )


def check_cache(meta, path: Path, device, *, rebuild: str, **facts_of_run: Any) -> None:
    """The sidecar against this machine (device, torch, CUDA, GPU) and, when given, the run (weights, config...)."""
    torch_artifacts.check(meta, path, device, kind=KIND, what="a compile cache", rebuild=rebuild, **facts_of_run)


def load_cache(path: Path) -> None:
    """Hand the artifacts to inductor (before the first compilation of the process)."""
    import torch

    t0 = time.perf_counter()
    quiet = logging.getLogger("torch.compiler._cache")  # it logs a traceback for a damaged file, then returns None
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        info = torch.compiler.load_cache_artifacts(Path(path).read_bytes())
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise CompileCacheError(f"{path}: not a compile cache torch can load ({reason}); rebuild it") from exc
    finally:
        quiet.setLevel(level)
    if info is None:  # torch's own reading failed (damaged, truncated, or written by another version)
        raise CompileCacheError(f"{path}: not a compile cache torch can load (damaged or truncated); rebuild it")
    log.info("compile cache %s loaded in %.1f s", path, time.perf_counter() - t0)


def find_cache(models: Any, config: Any, device, engine: str | Path | None) -> Path | None:
    """The cache for this run: ``engine`` when given (it must exist and match), else the default path when a file
    is there (checked the same way), else None (the backend compiles from scratch, as without caches)."""
    rebuild = rebuild_command(config, artifacts.engine_keyframes(config))
    return torch_artifacts.find(
        models, config, device, engine, default_path=default_cache_path, check_file=check_cache, rebuild=rebuild
    )
