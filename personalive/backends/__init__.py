"""Runners of the per-window step (one contract): eager, torch.compile and TensorRT."""

from __future__ import annotations

from typing import Any

BACKEND_NAMES = ("eager", "compile", "tensorrt")


def make_step(models: Any, config: Any, device: Any, dtype: Any, backend: str, engine_path: Any = None) -> Any:
    """The :class:`~personalive.backends.base.WindowStep` named ``backend`` for a loaded model set.

    ``eager`` and ``compile`` wrap :class:`personalive.pipeline.window.WindowStepModule`; ``tensorrt`` loads the
    engine at ``engine_path`` (or the default one for these weights and config) through
    :mod:`personalive.backends.tensorrt.runtime`. Imports are lazy: choosing a backend never imports another's
    dependencies. ``dtype`` is the models' (the module runs in the dtype its weights were loaded in).
    """
    from personalive.errors import ConfigError

    if backend == "eager":
        from personalive.backends.eager import EagerWindowStep

        return EagerWindowStep.from_models(models, config)
    if backend == "compile":
        from personalive.backends.compiled import CompiledWindowStep

        return CompiledWindowStep.from_models(models, config)
    if backend == "tensorrt":
        import torch

        from personalive.backends.tensorrt.runtime import TensorRTStep

        return TensorRTStep(engine_path, models, config, torch.device(device))
    raise ConfigError(f"runtime.backend={backend!r}: expected one of {', '.join(BACKEND_NAMES)}")
