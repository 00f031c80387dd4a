"""Down, mid and up blocks of the denoising UNet (upstream ``unet_3d_blocks.py``, same parameter names).

Every layer is: ResNet -> spatial transformer with reference attention (cross-attention blocks only) -> motion
module -> temporal module. The ResNets, down- and up-samplers are diffusers' 2D blocks applied to frames folded into
the batch, (B*F, C, H, W), which is exactly what upstream's "inflated" 3D versions compute (per-frame convolutions
and, with ``use_inflated_groupnorm``, per-frame GroupNorm; the time embedding is per frame, (B*F, C_t)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from personalive.models.attention_3d import SpatialTransformer
from personalive.models.motion_module import MotionModule, build_motion_module

__all__ = ["BlockSettings", "DownBlock3D", "FrameContext", "MidBlock3D", "UpBlock3D"]


@dataclass(frozen=True)
class BlockSettings:
    """What every block of one UNet shares."""

    temb_channels: int
    eps: float
    groups: int
    act_fn: str
    cross_attention_dim: int
    use_linear_projection: bool
    resnet_time_scale_shift: str
    motion_module_type: str
    motion_module_kwargs: dict
    temporal_module_type: str
    temporal_module_kwargs: dict


@dataclass
class FrameContext:
    """Per-call inputs of every layer: (B*F, C_t) time embedding, (B*F, S, D) image and (B*F, M, Dm) motion tokens."""

    temb: torch.Tensor
    image_tokens: torch.Tensor
    motion_tokens: torch.Tensor
    num_frames: int


def _resnet(settings: BlockSettings, in_channels: int, out_channels: int, scale: float = 1.0) -> ResnetBlock2D:
    return ResnetBlock2D(
        in_channels=in_channels,
        out_channels=out_channels,
        temb_channels=settings.temb_channels,
        eps=settings.eps,
        groups=settings.groups,
        time_embedding_norm=settings.resnet_time_scale_shift,
        non_linearity=settings.act_fn,
        output_scale_factor=scale,
    )


def _attentions(settings: BlockSettings, channels: int, heads: int, count: int) -> nn.ModuleList:
    """``count`` spatial transformers (with reference attention) of one block."""
    return nn.ModuleList(
        [
            SpatialTransformer(
                channels, heads, settings.cross_attention_dim, settings.groups, settings.use_linear_projection
            )
            for _ in range(count)
        ]
    )


def _modules(settings: BlockSettings, channels: int, count: int, motion: bool, temporal: bool) -> list[nn.ModuleList]:
    # None entries keep upstream's indices when a block has no motion/temporal modules
    def make(kind: str, kwargs: dict, used: bool) -> nn.ModuleList:
        return nn.ModuleList([build_motion_module(channels, kind, kwargs) if used else None for _ in range(count)])

    return [
        make(settings.motion_module_type, settings.motion_module_kwargs, motion),
        make(settings.temporal_module_type, settings.temporal_module_kwargs, temporal),
    ]


def _after_resnet(
    hidden_states: torch.Tensor,
    ctx: FrameContext,
    attention: SpatialTransformer | None,
    reference: torch.Tensor | None,
    motion_module: MotionModule | None,
    temporal_module: MotionModule | None,
) -> torch.Tensor:
    if attention is not None:
        hidden_states = attention(hidden_states, ctx.image_tokens, reference, ctx.num_frames)
    if motion_module is not None:
        hidden_states = motion_module(hidden_states, ctx.num_frames, ctx.motion_tokens)
    if temporal_module is not None:
        hidden_states = temporal_module(hidden_states, ctx.num_frames, None)
    return hidden_states


class DownBlock3D(nn.Module):
    """``CrossAttnDownBlock3D`` (with ``heads``) or ``DownBlock3D`` (``heads=None``)."""

    def __init__(
        self,
        settings: BlockSettings,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        heads: int | None,
        add_downsample: bool,
        downsample_padding: int,
        motion: bool,
        temporal: bool,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [_resnet(settings, in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)]
        )
        self.attentions = _attentions(settings, out_channels, heads, num_layers if heads else 0)
        self.motion_modules, self.temporal_modules = _modules(settings, out_channels, num_layers, motion, temporal)
        self.downsamplers = None
        if add_downsample:
            self.downsamplers = nn.ModuleList(
                [
                    Downsample2D(
                        out_channels, use_conv=True, out_channels=out_channels, padding=downsample_padding, name="op"
                    )
                ]
            )

    def forward(
        self, hidden_states: torch.Tensor, ctx: FrameContext, references: list[torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        skips = ()
        for i, resnet in enumerate(self.resnets):
            hidden_states = resnet(hidden_states, ctx.temb)
            attention = self.attentions[i] if len(self.attentions) else None
            reference = references[i] if references and attention is not None else None
            hidden_states = _after_resnet(
                hidden_states, ctx, attention, reference, self.motion_modules[i], self.temporal_modules[i]
            )
            skips += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            skips += (hidden_states,)
        return hidden_states, skips


class MidBlock3D(nn.Module):
    """``UNetMidBlock3DCrossAttn``: ResNet, then (transformer, motion, temporal, ResNet) per layer."""

    def __init__(
        self, settings: BlockSettings, channels: int, heads: int, scale: float, motion: bool, temporal: bool
    ) -> None:
        super().__init__()
        num_layers = 1
        self.attentions = _attentions(settings, channels, heads, num_layers)
        self.resnets = nn.ModuleList([_resnet(settings, channels, channels, scale) for _ in range(num_layers + 1)])
        self.motion_modules, self.temporal_modules = _modules(settings, channels, num_layers, motion, temporal)

    def forward(
        self, hidden_states: torch.Tensor, ctx: FrameContext, references: list[torch.Tensor] | None
    ) -> torch.Tensor:
        hidden_states = self.resnets[0](hidden_states, ctx.temb)
        for i, attention in enumerate(self.attentions):
            reference = references[i] if references else None
            hidden_states = _after_resnet(
                hidden_states, ctx, attention, reference, self.motion_modules[i], self.temporal_modules[i]
            )
            hidden_states = self.resnets[i + 1](hidden_states, ctx.temb)
        return hidden_states


class UpBlock3D(nn.Module):
    """``CrossAttnUpBlock3D`` (with ``heads``) or ``UpBlock3D`` (``heads=None``); each layer eats one skip tensor."""

    def __init__(
        self,
        settings: BlockSettings,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        num_layers: int,
        heads: int | None,
        add_upsample: bool,
        motion: bool,
        temporal: bool,
    ) -> None:
        super().__init__()
        resnets = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in = prev_output_channels if i == 0 else out_channels
            resnets.append(_resnet(settings, resnet_in + skip_channels, out_channels))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = _attentions(settings, out_channels, heads, num_layers if heads else 0)
        self.motion_modules, self.temporal_modules = _modules(settings, out_channels, num_layers, motion, temporal)
        self.upsamplers = None
        if add_upsample:
            self.upsamplers = nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])

    def forward(
        self,
        hidden_states: torch.Tensor,
        skips: tuple[torch.Tensor, ...],
        ctx: FrameContext,
        references: list[torch.Tensor] | None,
        upsample_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            hidden_states = torch.cat([hidden_states, skips[-1 - i]], dim=1)
            hidden_states = resnet(hidden_states, ctx.temb)
            attention = self.attentions[i] if len(self.attentions) else None
            reference = references[i] if references and attention is not None else None
            hidden_states = _after_resnet(
                hidden_states, ctx, attention, reference, self.motion_modules[i], self.temporal_modules[i]
            )
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states, upsample_size)
        return hidden_states
