"""The torch.compile backend: inductor-compiled networks, and on a GPU the whole window step in CUDA graphs.

Compilation: the denoising UNet and the VAE decode are compiled separately, each in its own inductor mode
(``runtime.compile_unet_mode`` / ``runtime.compile_vae_mode``: the decoder's convolutions gain from
``max-autotune-no-cudagraphs`` in a probe on an H200, 67 -> 29 ms for 4 frames; the UNet's matmuls go to cuBLAS
either way; the separate timing in benchmarks/engine_gpu.py did not run yet), the
pose guider and motion encoder in the default mode. Only the reference features' token axis is dynamic (it grows
by one reference image per history keyframe), so one compilation serves every keyframe count.

CUDA graphs (CUDA devices only): the first call with a given reference length (keyframe count) captures the whole
step -- conditioning, every UNet call and DDIM jump, the decode and the shift -- into one ``torch.cuda.CUDAGraph``
reading static input buffers; later calls copy their inputs into those buffers, replay, and return clones of the
static outputs (a caller keeps outputs across calls: the keyframe bank, the next window's latents). A window is
then one graph launch: the ~3,000 kernel launches of a UNet call no longer cost host time. Graphs of all keyframe
counts share one memory pool, since they never run concurrently.

Cache: inductor's on-disk caches (FX graphs, autotuning results, Triton kernels) are kept in
:func:`personalive.environment.compile_cache_dir` (under the user's cache folder, or ``TORCHINDUCTOR_CACHE_DIR``
when set), so a second process skips code generation and autotuning: it pays dynamo's tracing and the loading of
cached kernels only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from personalive.backends.eager import EagerWindowStep
from personalive.pipeline.window import WindowStepModule, build_window_module

if TYPE_CHECKING:
    from pathlib import Path

    from personalive.config import RunConfig

log = logging.getLogger(__name__)

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
    ) -> None:
        super().__init__(module)
        from personalive.compile_cache import use_compile_cache

        use_compile_cache()
        m = self.module
        m.denoising_unet = torch.compile(m.denoising_unet, mode=INDUCTOR_MODES[str(unet_mode)], dynamic=False)
        m.pose_guider = torch.compile(m.pose_guider, dynamic=False)
        m.motion_encoder = torch.compile(m.motion_encoder, dynamic=False)
        m.decode = torch.compile(
            m.decode, mode=INDUCTOR_MODES[str(vae_mode)], dynamic=False
        )  # instance attribute shadows it
        self.cuda_graphs = cuda_graphs
        self.graphs: dict[tuple[int, ...], _Captured] = {}
        self.pool: Any = None

    @classmethod
    def from_models(
        cls, models: Any, config: RunConfig, device: torch.device, engine: str | Path | None = None
    ) -> CompiledWindowStep:
        r = config.runtime
        gpu = torch.device(device).type == "cuda"  # max-autotune: a GPU probe (VAE decode 67 -> 29 ms); CPU: default
        return cls(
            build_window_module(models, config),
            unet_mode=r.compile_unet_mode if gpu else "default",
            vae_mode=r.compile_vae_mode if gpu else "default",
            cuda_graphs=r.cuda_graphs,
        )

    def _eager_call(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name in self.feature_names:
            torch._dynamo.mark_dynamic(inputs[name], 1)  # tokens x (1 + keyframes)
        return self._run(self.module, inputs)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = inputs["latents"].device
        if not (self.cuda_graphs and device.type == "cuda"):
            return self._eager_call(inputs)
        key = tuple(inputs[name].shape[1] for name in self.feature_names)
        captured = self.graphs.get(key)
        if captured is None:
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            try:
                captured = _Captured.capture(self, inputs, self.pool)
            except RuntimeError as exc:  # an op that cannot be captured: run uncaptured rather than fail the job
                log.warning("CUDA graph capture failed (%s); running the compiled step without graphs", exc)
                self.cuda_graphs = False
                return self._eager_call(inputs)
            self.graphs[key] = captured
            log.info("captured the window step in a CUDA graph (reference tokens %s)", key[:1])
        return captured.replay(inputs)


class _Captured:
    """One CUDA graph of the step for one set of input shapes: static inputs in, static outputs out."""

    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: dict, outputs: dict) -> None:
        self.graph, self.inputs, self.outputs = graph, inputs, outputs

    @classmethod
    def capture(cls, step: CompiledWindowStep, inputs: dict[str, torch.Tensor], pool: Any) -> _Captured:
        static = {name: tensor.detach().clone() for name, tensor in inputs.items()}
        side = torch.cuda.Stream(device=static["latents"].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture: compilation, autotuning, cuBLAS workspaces
            for _ in range(2):
                step._eager_call(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            outputs = step._eager_call(static)
        return cls(graph, static, outputs)

    def replay(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name, buffer in self.inputs.items():
            buffer.copy_(inputs[name], non_blocking=True)
        self.graph.replay()
        return {name: tensor.clone() for name, tensor in self.outputs.items()}
