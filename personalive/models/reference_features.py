"""Names, order and sizes of the reference-attention features that flow from the reference UNet to the denoising UNet.

PersonaLive's "reference attention": every transformer block of the 2D reference UNet records the hidden states that
enter its self-attention (the ``norm1`` output); the transformer block at the same place in the 3D denoising UNet
appends them to the keys and values of its own self-attention. Upstream pairs writer and reader blocks by sorting
both UNets' blocks by channel count; since the two UNets share one block layout, that is the same as pairing them by
position, which is what the names below say.

This module is the single source of truth for those names and their order: the denoising UNet's ``forward``, the
reference feature extractor, the ONNX export, TensorRT profiles and the runtime all call
:func:`reference_feature_specs`. The window step's inputs of those names carry each block's keys and values of the
reference tokens (``FeatureSpec.kv_channels``), projected once per reference image instead of once per window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from personalive.errors import ConfigError

__all__ = ["FeatureSpec", "reference_feature_specs", "transformer_layout"]


@dataclass(frozen=True)
class FeatureSpec:
    """One transformer block's reference input.

    The reference UNet records (B, tokens * (1 + keyframes), channels) there; the window step takes the same
    tokens projected to the denoising block's keys and values, ``[keys | values]``, (B, tokens * (1 + keyframes),
    kv_channels), under the same name (``DenoisingUNet.project_reference``, once per reference image).
    """

    name: str
    channels: int
    tokens: int

    @property
    def kv_channels(self) -> int:
        return 2 * self.channels  # the blocks' attention width equals their channel count (heads * head_dim)


def transformer_layout(unet_config: dict) -> list[tuple[str, int, int, int]]:
    """Where the UNet's transformer blocks are, in forward (execution) order.

    Returns ``(place, block_index, channels, downsample_level)`` per transformer, with ``place`` one of
    ``"down"``, ``"mid"``, ``"up"`` and ``downsample_level`` the number of stride-2 steps above it.
    """
    try:
        channels = list(unet_config["block_out_channels"])
        down_types = list(unet_config["down_block_types"])
        up_types = list(unet_config["up_block_types"])
        layers = int(unet_config["layers_per_block"])
    except KeyError as err:
        raise ConfigError(
            f"UNet config lacks key {err}: use the sd-image-variations-diffusers unet/config.json"
        ) from err
    mid_type = unet_config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    depth = len(channels)
    if len(down_types) != depth or len(up_types) != depth:
        raise ConfigError(
            f"UNet config: {len(down_types)} down / {len(up_types)} up block types for {depth} block_out_channels; "
            "they must be equal"
        )
    layout: list[tuple[str, int, int, int]] = []
    for i, block_type in enumerate(down_types):
        if "CrossAttn" in block_type:
            layout += [("down", i, channels[i], i)] * layers
    if mid_type is not None and "CrossAttn" in mid_type:
        layout.append(("mid", 0, channels[-1], depth - 1))
    reversed_channels = channels[::-1]
    for i, block_type in enumerate(up_types):
        if "CrossAttn" in block_type:
            layout += [("up", i, reversed_channels[i], depth - 1 - i)] * (layers + 1)
    return layout


def reference_feature_specs(unet_config: dict, height_latent: int, width_latent: int) -> list[FeatureSpec]:
    """The reference features in the order the denoising UNet consumes them (down blocks, mid block, up blocks).

    Names are ``ref_down{block}_{layer}``, ``ref_mid_{layer}``, ``ref_up{block}_{layer}``; ``tokens`` is the number of
    latent positions at that block's resolution for one reference image (stride-2 convolutions with padding 1 give
    ``ceil(size / 2)`` per step).
    """
    if height_latent <= 0 or width_latent <= 0:
        raise ConfigError(f"latent size must be positive, got {height_latent}x{width_latent}")
    specs: list[FeatureSpec] = []
    counters: dict[tuple[str, int], int] = {}
    for place, block, channels, level in transformer_layout(unet_config):
        layer = counters.get((place, block), 0)
        counters[(place, block)] = layer + 1
        height, width = height_latent, width_latent
        for _ in range(level):
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        name = f"ref_mid_{layer}" if place == "mid" else f"ref_{place}{block}_{layer}"
        specs.append(FeatureSpec(name=name, channels=channels, tokens=height * width))
    return specs
