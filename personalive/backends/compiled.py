"""The torch.compile backend: the same window-step module, compiled once.

Only the reference features' token axis is dynamic (it grows by one reference image per history keyframe), so
adding a keyframe does not recompile; everything else has the static shapes of the config, which lets inductor
specialise the UNet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from personalive.backends.eager import EagerWindowStep
from personalive.pipeline.window import WindowStepModule, build_window_module

if TYPE_CHECKING:
    from pathlib import Path

    from personalive.config import RunConfig


class CompiledWindowStep(EagerWindowStep):
    """``torch.compile(WindowStepModule)``; ``mode`` is torch.compile's (None = default, "max-autotune", ...)."""

    name = "compile"

    def __init__(self, module: WindowStepModule, mode: str | None = None, fullgraph: bool = False) -> None:
        super().__init__(module)
        self.mode = mode
        self.compiled = torch.compile(self.module, mode=mode, fullgraph=fullgraph, dynamic=False)

    @classmethod
    def from_models(
        cls, models: Any, config: RunConfig, device: torch.device, engine: str | Path | None = None
    ) -> CompiledWindowStep:
        return cls(build_window_module(models, config))

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name in self.feature_names:
            torch._dynamo.mark_dynamic(inputs[name], 1)  # tokens x (1 + keyframes)
        return self._run(self.compiled, inputs)
