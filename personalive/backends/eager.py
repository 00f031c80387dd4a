"""The eager backend: the window-step module called as plain PyTorch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from personalive.backends.graphs import GraphedStep, use_graphs
from personalive.errors import PersonaLiveError
from personalive.pipeline.window import OUTPUT_NAMES, WINDOW_STEP_NETWORKS, WindowStepModule, build_window_module

if TYPE_CHECKING:
    from pathlib import Path

    from personalive.config import RunConfig


class EagerWindowStep:
    """A :class:`~personalive.pipeline.window.WindowStep` that runs :class:`WindowStepModule` eagerly; on a CUDA
    device with ``cuda_graphs`` (``runtime.cuda_graphs``, ``auto`` = on) replayed from CUDA
    graphs (:mod:`personalive.backends.graphs`): the same kernels, without the host's launch cost."""

    name = "eager"
    networks: tuple[str, ...] = WINDOW_STEP_NETWORKS

    def __init__(self, module: WindowStepModule, *, cuda_graphs: bool = False) -> None:
        self.module = module.eval()
        self.graphed = GraphedStep(self._plain_call, f"{self.name} window step") if cuda_graphs else None

    @classmethod
    def check_available(cls, device: torch.device) -> None:
        """Plain PyTorch runs wherever the models do."""

    @classmethod
    def from_models(
        cls, models: Any, config: RunConfig, device: torch.device, engine: str | Path | None = None
    ) -> EagerWindowStep:
        # auto: on. With the capture made cheap (0.1-0.17 s, no discarded warm-up) graphs took a 10 s clip's job
        # 0.35-0.5 s below the uncaptured one's, its steady windows ~176 against ~181 ms (calls AD and AE of the
        # eleventh session; in the eighth the captures cost what the replays saved)
        graphs = use_graphs(config.runtime.cuda_graphs, pays=True)
        # cuDNN's NHWC convolutions without layout transposes in the decoder (memory_layout.set_decoder_layout)
        channels_last = torch.device(device).type == "cuda"
        return cls(build_window_module(models, config, channels_last_decoder=channels_last), cuda_graphs=graphs)

    @property
    def feature_names(self) -> list[str]:
        return self.module.feature_names

    @property
    def input_names(self) -> list[str]:
        return self.module.input_names

    def project_reference(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        with torch.inference_mode():
            return self.module.denoising_unet.project_reference(features)

    def _run(self, module: Any, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise PersonaLiveError(f"window step inputs lack {missing}: pass every name of window_input_names()")
        with torch.inference_mode():
            outputs = module(*(inputs[n] for n in self.input_names))
        return dict(zip(OUTPUT_NAMES, outputs, strict=True))

    def _plain_call(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._run(self.module, inputs)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return (self.graphed or self._plain_call)(inputs)
