"""The reference UNet: a 2D Stable Diffusion UNet that encodes the reference image's latent into attention features.

PersonaLive (like Animate Anyone) runs the reference latent once through a copy of the image-variations UNet at
timestep 0 and keeps, for every transformer block, the hidden states entering its self-attention. The denoising UNet
attends to them (see :mod:`personalive.models.reference_features`). The network is diffusers'
``UNet2DConditionModel``; upstream's copy of it has no output head (``conv_norm_out`` and ``conv_out`` were removed,
so ``reference_unet.pth`` has no such keys), and :func:`build_reference_unet` removes them the same way.
"""

from __future__ import annotations

import logging

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from personalive.errors import ConfigError, PersonaLiveError
from personalive.models.reference_features import FeatureSpec, reference_feature_specs

__all__ = [
    "ReferenceFeatureExtractor",
    "build_reference_unet",
    "reference_cross_attentions",
    "reference_self_attentions",
    "set_single_key_shortcut",
]

logger = logging.getLogger(__name__)


def build_reference_unet(unet_config: dict) -> UNet2DConditionModel:
    """The reference UNet from the ``sd-image-variations-diffusers/unet/config.json`` dict, without weights.

    ``conv_norm_out``, ``conv_act`` and ``conv_out`` are dropped because the official ``reference_unet.pth`` has no
    such keys (upstream deleted the output head: only the attention features are used). Its output is therefore the
    last up-block feature map, (B, block_out_channels[0], H, W), not a noise prediction.
    """
    unet = UNet2DConditionModel.from_config(dict(unet_config))
    unet.conv_norm_out = None
    unet.conv_act = None
    unet.conv_out = torch.nn.Identity()
    return unet


def reference_self_attentions(unet: UNet2DConditionModel) -> list[tuple[str, Attention]]:
    """(feature name, ``attn1``) of every transformer block, in :func:`reference_feature_specs` order."""
    places: list[tuple[str, torch.nn.Module]] = []
    for i, block in enumerate(unet.down_blocks):
        places += [(f"ref_down{i}_{j}", t) for j, t in enumerate(getattr(block, "attentions", None) or [])]
    if unet.mid_block is not None:
        places += [(f"ref_mid_{j}", t) for j, t in enumerate(getattr(unet.mid_block, "attentions", None) or [])]
    for i, block in enumerate(unet.up_blocks):
        places += [(f"ref_up{i}_{j}", t) for j, t in enumerate(getattr(block, "attentions", None) or [])]
    found = []
    for name, transformer in places:
        blocks = transformer.transformer_blocks
        if len(blocks) != 1:
            raise ConfigError(
                f"reference UNet transformer {name} has {len(blocks)} transformer blocks; PersonaLive's UNets have "
                "transformer_layers_per_block=1"
            )
        found.append((name, blocks[0].attn1))
    return found


def reference_cross_attentions(unet: UNet2DConditionModel) -> list[Attention]:
    """The cross-attention (``attn2``) of every transformer block of the UNet."""
    return [m.attn2 for m in unet.modules() if isinstance(getattr(m, "attn2", None), Attention)]


class _SingleKeyCrossAttention:
    """Attention processor wrapper: with a one-token context, the output is ``to_out(to_v(context))`` for every query.

    Softmax over a single key is exactly 1 (see :func:`personalive.models.attention_3d.single_key_attention`); the
    reference UNet's cross-attention context is the CLIP image embedding, one token. Any other case (several tokens,
    a mask, the options SD 1.x does not use) goes to the wrapped processor unchanged.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.enabled = True

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        plain = attn.norm_cross is None and attn.spatial_norm is None and attn.group_norm is None
        plain = plain and not attn.residual_connection and attn.rescale_output_factor == 1.0
        if (
            self.enabled
            and plain
            and attention_mask is None
            and hidden_states.ndim == 3
            and encoder_hidden_states is not None
            and encoder_hidden_states.shape[1] == 1
        ):
            out = attn.to_out[1](attn.to_out[0](attn.to_v(encoder_hidden_states)))
            return out.expand(hidden_states.shape[0], hidden_states.shape[1], out.shape[-1])
        return self.inner(
            attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask
        )


def set_single_key_shortcut(unet: UNet2DConditionModel, enabled: bool) -> None:
    """Switch the single-key cross-attention shortcut on (default) or off (full attention, for measurements)."""
    for attn in reference_cross_attentions(unet):
        if isinstance(attn.processor, _SingleKeyCrossAttention):
            attn.processor.enabled = enabled


class _CaptureSelfAttention:
    """Attention processor wrapper: stores the self-attention input (the block's ``norm1`` output) in ``sink``."""

    def __init__(self, inner, name: str) -> None:
        self.inner = inner
        self.name = name
        self.sink: dict[str, torch.Tensor] | None = None

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.sink is not None:
            self.sink[self.name] = hidden_states
        return self.inner(
            attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask
        )


class ReferenceFeatureExtractor(torch.nn.Module):
    """Runs the reference UNet and returns its self-attention inputs, one (B, tokens, C) tensor per transformer block.

    The features come back as a list in :func:`reference_feature_specs` order, which is the order
    :class:`~personalive.models.denoising_unet.DenoisingUNet` takes them in. Capturing uses attention processors set
    on this UNet's ``attn1`` modules only (no global patching); they record only during this module's ``forward``.
    Its ``attn2`` modules get the single-key shortcut (:class:`_SingleKeyCrossAttention`).
    """

    def __init__(self, unet: UNet2DConditionModel) -> None:
        super().__init__()
        self.unet = unet
        self._captures: list[_CaptureSelfAttention] = []
        for name, attn in reference_self_attentions(unet):
            inner = attn.processor.inner if isinstance(attn.processor, _CaptureSelfAttention) else attn.processor
            capture = _CaptureSelfAttention(inner, name)
            attn.set_processor(capture)
            self._captures.append(capture)
        for attn in reference_cross_attentions(unet):
            if not isinstance(attn.processor, _SingleKeyCrossAttention):
                attn.set_processor(_SingleKeyCrossAttention(attn.processor))

    def specs(self, height_latent: int, width_latent: int) -> list[FeatureSpec]:
        return reference_feature_specs(dict(self.unet.config), height_latent, width_latent)

    def forward(
        self,
        latents: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: float = 0.0,
    ) -> list[torch.Tensor]:
        """latents (B, 4, h, w) scaled VAE latents, encoder_hidden_states (B, 1, D) CLIP image embeddings.

        The timestep tensor is made on the UNet's device in float32: the sinusoidal embedding is computed in float32
        by diffusers and cast to the UNet's dtype afterwards (bf16 could not even hold 999 exactly).
        """
        if latents.ndim != 4:
            raise PersonaLiveError(f"reference latents must be (B, C, h, w), got shape {tuple(latents.shape)}")
        param = next(self.unet.parameters())
        latents = latents.to(device=param.device, dtype=param.dtype)
        encoder_hidden_states = encoder_hidden_states.to(device=param.device, dtype=param.dtype)
        t = torch.full((latents.shape[0],), float(timestep), device=param.device, dtype=torch.float32)
        captured: dict[str, torch.Tensor] = {}
        for capture in self._captures:
            capture.sink = captured
        try:
            self.unet(latents, t, encoder_hidden_states=encoder_hidden_states, return_dict=False)
        finally:
            for capture in self._captures:
                capture.sink = None
        specs = self.specs(latents.shape[-2], latents.shape[-1])
        missing = [s.name for s in specs if s.name not in captured]
        if missing:
            raise PersonaLiveError(
                f"reference UNet recorded no features for {missing[:3]}...: its attention processors were replaced "
                "after ReferenceFeatureExtractor was built; build the extractor again"
            )
        return [captured[s.name] for s in specs]
