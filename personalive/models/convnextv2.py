"""ConvNeXt V2 (Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders") as used by
LivePortrait's motion extractor: the backbone plus LivePortrait's heads for implicit keypoints, head pose bins,
translation, scale (and an unused expression head kept so the checkpoint loads strictly).

Names equal upstream's ``src/liveportrait/convnextv2.py`` (``downsample_layers``, ``stages``, ``norm``, ``fc_*``).
Drop-path is omitted (inference only: it is the identity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NUM_POSE_BINS = 66  # head-pose classification bins of 3 degrees (LivePortrait / Hopenet convention)


class LayerNorm(nn.Module):
    """LayerNorm over channels, for (N, H, W, C) ("channels_last") or (N, C, H, W) ("channels_first") inputs.

    Computed in fp32 whatever the input dtype (upstream keeps these norms in fp32 under fp16/bf16 for accuracy),
    cast back to the input dtype.
    """

    def __init__(self, channels: int, eps: float = 1e-6, channels_first: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps, self.channels_first = eps, channels_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        y = x.float().permute(0, 2, 3, 1) if self.channels_first else x.float()
        y = F.layer_norm(y, (y.shape[-1],), self.weight.float(), self.bias.float(), self.eps)
        return (y.permute(0, 3, 1, 2) if self.channels_first else y).to(dtype)


class GRN(nn.Module):
    """Global Response Normalization on (N, H, W, C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)  # (N, 1, 1, C)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class Block(nn.Module):
    """ConvNeXt V2 block: depthwise 7x7, LayerNorm, MLP x4 with GELU and GRN, residual. (N, C, H, W) kept."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))  # (N, H, W, C)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    """Image (N, 3, 256, 256) in [0, 1] -> dict of raw head outputs (see :meth:`forward`)."""

    def __init__(
        self,
        depths: list[int] | tuple[int, ...] = (3, 3, 9, 3),
        dims: list[int] | tuple[int, ...] = (96, 192, 384, 768),
        num_kp: int = 24,
        num_bins: int = NUM_POSE_BINS,
        in_chans: int = 3,
    ):
        super().__init__()
        # stem (N, 3, H, W) -> (N, d0, H/4, W/4); then 3 downsamplings by 2: -> (N, d3, H/32, W/32)
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm(dims[0], 1e-6, True))]
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm(dims[i], 1e-6, True), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            )
        self.stages = nn.ModuleList([nn.Sequential(*[Block(dims[i]) for _ in range(depths[i])]) for i in range(4)])
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)  # after global average pooling: (N, d3)
        # heads on the pooled (N, d3) feature
        self.fc_kp = nn.Linear(dims[-1], 3 * num_kp)  # canonical keypoints
        self.fc_scale = nn.Linear(dims[-1], 1)
        self.fc_pitch = nn.Linear(dims[-1], num_bins)
        self.fc_yaw = nn.Linear(dims[-1], num_bins)
        self.fc_roll = nn.Linear(dims[-1], num_bins)
        self.fc_t = nn.Linear(dims[-1], 3)
        self.fc_exp = nn.Linear(dims[-1], 3 * num_kp)  # expression deltas: in the checkpoint, unused by PersonaLive

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for downsample, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(downsample(x))
        return self.norm(x.mean([-2, -1]))  # (N, d3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """-> pitch, yaw, roll (N, 66) bin logits; t (N, 3); scale (N, 1); kp (N, 3 * num_kp)."""
        x = self.forward_features(x)
        return {
            "pitch": self.fc_pitch(x),
            "yaw": self.fc_yaw(x),
            "roll": self.fc_roll(x),
            "t": self.fc_t(x),
            "scale": self.fc_scale(x),
            "kp": self.fc_kp(x),
        }
