"""PoseGuider: the pose encoder of PersonaLive (paper: "pose guider", the ControlNet-style condition encoder).

It turns the keypoint canvas drawn from the implicit 3D keypoints (an RGB image in [0, 1]) into a feature map
with the channels of the denoising UNet's first block; the pipeline adds it to the UNet's ``conv_in`` output.
Every convolution is applied frame by frame ("inflated" 2D convolution over a (B, C, F, H, W) video).
Parameter names equal upstream's (``conv_in``, ``blocks.N``, ``conv_out_modify``) so ``pose_guider.pth`` loads
strictly. Released sizes: 3 stride-2 stages, 320 output channels (512 canvas -> 64x64 latents).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FramewiseConv2d(nn.Conv2d):
    """A 2D convolution applied to every frame of a (B, C, F, H, W) tensor (upstream: ``InflatedConv3d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, f, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, -1, h, w)  # (B*F, C, H, W)
        out = super().forward(frames)
        return out.reshape(b, f, *out.shape[1:]).permute(0, 2, 1, 3, 4)  # (B, C', F, H', W')


class PoseGuider(nn.Module):
    """Keypoint canvas (B, 3, F, H, W) in [0, 1] -> pose features (B, C0, F, H / 2^S, W / 2^S).

    ``S = len(block_out_channels) - 1`` stride-2 stages; ``C0 = conditioning_embedding_channels``.
    """

    def __init__(
        self,
        conditioning_embedding_channels: int = 320,
        conditioning_channels: int = 3,
        block_out_channels: tuple[int, ...] | list[int] = (16, 32, 96, 256),
    ):
        super().__init__()
        channels = list(block_out_channels)
        self.block_out_channels = channels
        # (B, 3, F, H, W) -> (B, c0, F, H, W)
        self.conv_in = FramewiseConv2d(conditioning_channels, channels[0], kernel_size=3, padding=1)
        # per stage i: same-size conv, then stride-2 conv: (B, c_i, F, H, W) -> (B, c_{i+1}, F, H/2, W/2)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=False):
            self.blocks.append(FramewiseConv2d(c_in, c_in, kernel_size=3, padding=1))
            self.blocks.append(FramewiseConv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
        # (B, c_last, F, h, w) -> (B, C0, F, h, w); zero-initialised upstream (trained weights are not zero)
        self.conv_out_modify = FramewiseConv2d(channels[-1], conditioning_embedding_channels, kernel_size=3, padding=1)

    @property
    def downscale_factor(self) -> int:
        """Canvas size / feature size: 2 ** (number of stride-2 stages)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv_in(conditioning))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out_modify(x)
