"""Runners of the window step (the contract of :mod:`personalive.pipeline.window`): one table, name -> class.

Each class named here has

* ``name``: its key in :data:`BACKENDS` (the value of ``runtime.backend``);
* ``networks``: the PyTorch networks it runs itself (``load_models`` loads these plus the pipeline's own,
  :data:`personalive.pipeline.animate.PIPELINE_NETWORKS`), e.g. none for a compiled engine;
* ``check_available(device)``: raises a :class:`~personalive.errors.PersonaLiveError` when this machine cannot run
  it (missing package, no GPU), before any network is loaded;
* ``from_models(models, config, device, engine=None)``: the step for a loaded model set (``engine``: an artifact
  path, for backends that run one).

Classes are named as ``"module:Class"`` and imported on use, so choosing a backend never imports another's
dependencies, and importing this package imports nothing. A new backend is one module plus one entry here.
"""

from __future__ import annotations

import importlib

BACKENDS: dict[str, str] = {
    "eager": "personalive.backends.eager:EagerWindowStep",
    "compile": "personalive.backends.compiled:CompiledWindowStep",
    "tensorrt": "personalive.backends.tensorrt.runtime:TensorRTStep",
    "aoti": "personalive.backends.aoti:AOTIStep",
}


def backend_class(name: str) -> type:
    """The class of backend ``name`` (imported now)."""
    from personalive.errors import ConfigError

    if name not in BACKENDS:
        raise ConfigError(f"runtime.backend={name!r}: expected one of {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)
