"""The torch.compile backend: inductor-compiled networks, and on a GPU the whole window step in CUDA graphs.

Compilation: the denoising UNet and the VAE decode are compiled separately, each in its own inductor mode
(``runtime.compile_unet_mode`` / ``runtime.compile_vae_mode``, both ``default`` by default: in that mode the
compiled step with graphs took 116 / 138 ms at 0 / 3 keyframes on an H200, 2.0x / 1.8x upstream's window; a probe on
upstream's decoder gained 67 -> 29 ms for 4 frames from ``max-autotune-no-cudagraphs``, but its search took over 5
minutes at full size), the pose guider and motion encoder in the default mode. The UNet is compiled block by block
(``runtime.compile_unet_scope`` ``regional``, the default; :mod:`personalive.backends.regions`: dynamo traces each
repeated block shape once, and its tracing is what a warm start pays) or as one graph (``whole``). Only the
reference features' token axis is dynamic (it grows by one reference image per history keyframe), so one
compilation serves every keyframe count.

CUDA graphs (CUDA devices, ``runtime.cuda_graphs`` ``auto`` or ``on``): the whole compiled step -- conditioning,
every UNet call and DDIM jump, the decode and the shift -- is captured once per keyframe count and replayed
(:mod:`personalive.backends.graphs`, shared with the eager and AOTInductor backends); inductor's own CUDA graphs
stay off, since the step is captured whole.

Precompiled: with a file of ``build-engine --format precompiled`` for the run, the step is loaded from it and
nothing is traced (:mod:`personalive.backends.precompiled`).

Cache: inductor's on-disk caches (FX graphs, autotuning results, Triton kernels) are kept in
:func:`personalive.environment.compile_cache_dir` (under the user's cache folder, or ``TORCHINDUCTOR_CACHE_DIR``
when set), so a second process skips code generation and autotuning: it pays dynamo's tracing and the loading of
cached kernels only (at full size on an H200's host 27 s with the regional UNet, 37 s with the whole, call AT).
The job passes inference tensors only (docs/architecture.md): dynamo guards on that, and a mix recompiled the UNet
mid-run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from personalive.backends.eager import EagerWindowStep
from personalive.backends.graphs import use_graphs
from personalive.backends.regions import compile_unet_regions
from personalive.pipeline.window import WindowStepModule, build_window_module

if TYPE_CHECKING:
    from personalive.config import RunConfig

# runtime.compile_*_mode -> torch.compile's mode; inductor's own CUDA graphs stay off: the step is captured whole
INDUCTOR_MODES: dict[str, str | None] = {"default": None, "max_autotune": "max-autotune-no-cudagraphs"}


class CompiledWindowStep(EagerWindowStep):
    """Compiled networks (see the module docstring); ``cuda_graphs`` captures the step on CUDA devices."""

    name = "compile"

    def __init__(
        self,
        module: WindowStepModule,
        *,
        unet_mode: str = "default",
        vae_mode: str = "default",
        cuda_graphs: bool = True,
        unet_scope: str = "regional",
    ) -> None:
        super().__init__(module, cuda_graphs=cuda_graphs)
        from personalive.compile_cache import use_compile_cache

        use_compile_cache()
        m = self.module
        if str(unet_scope) == "regional":
            m.denoising_unet = compile_unet_regions(m.denoising_unet, INDUCTOR_MODES[str(unet_mode)])
        else:
            m.denoising_unet = torch.compile(m.denoising_unet, mode=INDUCTOR_MODES[str(unet_mode)], dynamic=False)
        m.pose_guider = torch.compile(m.pose_guider, dynamic=False)
        m.motion_encoder = torch.compile(m.motion_encoder, dynamic=False)
        m.decode = torch.compile(
            m.decode, mode=INDUCTOR_MODES[str(vae_mode)], dynamic=False
        )  # instance attribute shadows it

    @classmethod
    def from_models(
        cls, models: Any, config: RunConfig, device: torch.device, engine: str | Path | None = None
    ) -> EagerWindowStep:
        from personalive.backends import precompiled
        from personalive.backends.compile_cache_engine import find_cache, load_cache

        r = config.runtime
        gpu = torch.device(device).type == "cuda"  # max-autotune: a GPU probe (VAE decode 67 -> 29 ms); CPU: default
        # build-engine --format precompiled: no tracing at all; preferred to a compile cache when both are there
        # (an --engine FILE is taken by its suffix; only without one is the default path looked up)
        step_path = None
        if engine is None or Path(engine).suffix == precompiled.SUFFIX:
            step_path = precompiled.find_step(models, config, torch.device(device), engine)
        if step_path is not None:
            return precompiled.PrecompiledWindowStep.from_path(step_path, models, config, device)
        cache = find_cache(models, config, torch.device(device), engine)  # build-engine --format compile-cache
        if cache is not None:
            load_cache(cache)
        return cls(
            build_window_module(models, config),
            unet_mode=r.compile_unet_mode if gpu else "default",
            vae_mode=r.compile_vae_mode if gpu else "default",
            unet_scope=r.compile_unet_scope,
            # inductor's step still launches ~1,500 kernels from Python: graphs took it from 128.0 to 120.7 ms a window
            # (second session), more than the captures cost over a clip
            cuda_graphs=use_graphs(r.cuda_graphs, pays=True),
        )

    def _plain_call(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name in self.feature_names:
            torch._dynamo.mark_dynamic(inputs[name], 1)  # tokens x (1 + keyframes)
        return self._run(self.module, inputs)
