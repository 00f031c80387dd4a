"""The denoising UNet's reference key/value projections alone, for engine backends.

An engine (TensorRT, AOTInductor with its own constants) runs the whole window step, but the step takes the
reference features already projected to keys and values (``DenoisingUNet.project_reference``, computed once per
reference image and keyframe, not per window). Those projections are the ``to_k``/``to_v`` layers of the 16 spatial
self-attentions: about 1 % of the 1.7 B-parameter UNet. Loading the whole UNet onto the GPU for them would defeat
the point of an engine, so this module builds the UNet on the meta device (no memory), keeps only those layers,
and loads their keys strictly from ``denoising_unet.pth`` (memory-mapped: only their bytes are read).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

NAME = "reference_projections"


class ReferenceProjections(nn.Module):
    """``project_reference(features)`` of the denoising UNet with only its reference keys/values layers.

    ``keys[i]`` is the UNet state-dict prefix of the i-th reference self-attention (reference_feature_specs order).
    """

    def __init__(self, attentions: list[nn.Module], prefixes: list[str]) -> None:
        super().__init__()
        # a ModuleDict per attention: project_reference reads only .to_k and .to_v
        self.attentions = nn.ModuleList(nn.ModuleDict({"to_k": a.to_k, "to_v": a.to_v}) for a in attentions)
        self.prefixes = list(prefixes)

    def unet_keys(self) -> dict[str, str]:
        """Own state-dict key -> the denoising UNet's key for the same tensor."""
        mapping = {}
        for i, prefix in enumerate(self.prefixes):
            for own in self.attentions[i].state_dict():
                mapping[f"attentions.{i}.{own}"] = f"{prefix}.{own}"
        return mapping

    def project_reference(self, reference_features: list[torch.Tensor]) -> list[torch.Tensor]:
        # imported here: the weights package stays free of diffusers until a network is imported (see
        # personalive.device_warmup: the imports run on a thread while the device warms up)
        from personalive.models.attention_3d import project_reference

        return [project_reference(a, f) for a, f in zip(self.attentions, reference_features, strict=True)]


def build_projections(unet_builder, device: torch.device, dtype: torch.dtype) -> ReferenceProjections:
    """The projections of a UNet built by ``unet_builder()`` on the meta device, materialised on ``device``."""
    with torch.device("meta"):
        unet = unet_builder()
    names = {id(m): n for n, m in unet.named_modules()}
    attentions = unet.reference_attentions()
    module = ReferenceProjections(attentions, [names[id(a)] for a in attentions])
    return module.to_empty(device=device).to(dtype)


def select_state(
    module: ReferenceProjections, unet_state: dict[str, torch.Tensor], origin: dict[str, Path]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Path]]:
    """(the module's state taken from the UNet's, the UNet keys asked for -> tensors, their origins)."""
    mapping = module.unet_keys()
    wanted = {unet_key: unet_state[unet_key] for unet_key in mapping.values() if unet_key in unet_state}
    own = {own: unet_state[unet_key] for own, unet_key in mapping.items() if unet_key in unet_state}
    return own, wanted, {k: origin[k] for k in wanted if k in origin}
