"""The FAN backbone of the motion encoder: a face-alignment hourglass network (Bulat & Tzimiropoulos, "How far
are we from solving the 2D & 3D face alignment problem?") with three patch self-attention blocks added by
PersonaLive (``att_1``..``att_3``, upstream ``TemporalTransformer3DModel`` in spatial self-attention mode).

Module and parameter names equal upstream's ``FAN_SA`` so that ``motion_encoder.pth`` loads strictly. Upstream's
hourglass dropout (p=0.5) is omitted: the encoder only runs in eval mode, where it is the identity.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn

from personalive.models.feed_forward import geglu_feed_forward

FAN_FEATURES = 256  # hourglass width, fixed in upstream's FAN
FAN_LANDMARKS = 68  # heatmap channels of the landmark head
FAN_TOKEN_GRID = 28  # the landmark heatmaps are pooled to 28x28 = 784 values before the final fc


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=False)


class ConvBlock(nn.Module):
    """FAN's multi-scale residual block: three BN-ReLU-conv3x3 (c/2, c/4, c/4) concatenated, plus the input."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        half, quarter = out_planes // 2, out_planes // 4
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = conv3x3(half, quarter)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = conv3x3(quarter, quarter)
        self.downsample = None
        if in_planes != out_planes:
            # eps 1e-4 as in upstream FAN_feature_extractor.ConvBlock
            self.downsample = nn.Sequential(
                nn.BatchNorm2d(in_planes, eps=1e-4),
                nn.ReLU(True),
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, in, H, W) -> (N, out, H, W)
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat((out1, out2, out3), 1) + residual


class HourGlass(nn.Module):
    """Recursive hourglass of ``depth`` levels; modules ``b1_L``, ``b2_L``, ``b3_L`` per level, ``b2_plus_1``."""

    def __init__(self, depth: int, features: int = FAN_FEATURES):
        super().__init__()
        self.depth = depth
        self._add_level(depth, features)

    def _add_level(self, level: int, features: int) -> None:  # registration order as upstream
        self.add_module(f"b1_{level}", ConvBlock(features, features))
        self.add_module(f"b2_{level}", ConvBlock(features, features))
        if level > 1:
            self._add_level(level - 1, features)
        else:
            self.add_module("b2_plus_1", ConvBlock(features, features))
        self.add_module(f"b3_{level}", ConvBlock(features, features))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        upper = self._modules[f"b1_{level}"](x)  # (N, C, H, W)
        lower = self._modules[f"b2_{level}"](F.max_pool2d(x, 2, stride=2))  # (N, C, H/2, W/2)
        lower = self._level(level - 1, lower) if level > 1 else self._modules["b2_plus_1"](lower)
        lower = self._modules[f"b3_{level}"](lower)
        return upper + F.interpolate(lower, size=upper.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


def sincos_2d_table(embed_dim: int, grid_size: int) -> torch.Tensor:
    """2D sin-cos positional table (grid_size^2, embed_dim), computed in float64 like upstream's diffusers 0.27
    ``get_2d_sincos_pos_embed`` (first half encodes the row index h... of the (w, h) meshgrid), then float32."""

    def one_axis(dim: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    coords = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(coords, coords), axis=0).reshape(2, 1, grid_size, grid_size)  # w first
    table = np.concatenate([one_axis(embed_dim // 2, grid[0]), one_axis(embed_dim // 2, grid[1])], axis=1)
    return torch.from_numpy(table).float()


class PatchEmbed(nn.Module):
    """Conv patchify + fixed 2D sin-cos positions: (N, C, H, W) -> (N, (H/p)*(W/p), D).

    ``pos_embed`` is a non-persistent buffer (absent from ``motion_encoder.pth``), computed here at construction.
    """

    def __init__(self, sample_size: int, patch_size: int, in_channels: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        table = sincos_2d_table(embed_dim, sample_size // patch_size)
        self.register_buffer("pos_embed", table.unsqueeze(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # (N, L, D)
        if tokens.shape[1] != self.pos_embed.shape[1]:
            raise ValueError(
                f"PatchEmbed: {tokens.shape[1]} patches, positional table built for "
                f"{self.pos_embed.shape[1]} (input {tuple(x.shape)})"
            )
        return (tokens + self.pos_embed).to(tokens.dtype)


class SpatialSelfAttentionBlock(nn.Module):
    """Pre-norm self-attention + GEGLU feed-forward over patch tokens (upstream ``TemporalTransformerBlock`` with
    one ``Spatial_Self`` attention): keys ``attention_blocks.0``, ``norms.0``, ``ff``, ``ff_norm``."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.attention_blocks = nn.ModuleList([Attention(query_dim=dim, heads=heads, dim_head=head_dim, bias=False)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim)])
        self.ff = geglu_feed_forward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D) -> (N, L, D)
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class PatchAttention(nn.Module):
    """Residual patch self-attention on a feature map (upstream FAN ``TemporalTransformer3DModel``, one frame):
    GroupNorm -> patchify + positions -> transformer block -> per-pixel projection back -> + input."""

    def __init__(
        self,
        in_channels: int,
        sample_size: int,
        patch_size: int,
        num_attention_heads: int = 8,
        attention_head_dim: int = 128,
        norm_num_groups: int = 32,
    ):
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        if inner_dim % patch_size**2:
            raise ValueError(f"PatchAttention: inner dim {inner_dim} not divisible by patch_size^2={patch_size**2}")
        self.in_channels, self.patch_size = in_channels, patch_size
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6, affine=True)
        self.transformer_blocks = nn.ModuleList(
            [SpatialSelfAttentionBlock(inner_dim, num_attention_heads, attention_head_dim)]
        )
        self.proj_out = nn.Linear(inner_dim // patch_size**2, in_channels)  # zero-initialised upstream
        self.pos_embed = PatchEmbed(sample_size, patch_size, in_channels, inner_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, H, W)
        n, c, h, w = x.shape
        p = self.patch_size
        tokens = self.pos_embed(self.norm(x))  # (N, L, D), L = (H/p)*(W/p)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        pixels = self.proj_out(tokens.reshape(n, h // p, w // p, p, p, -1))  # (N, H/p, W/p, p, p, C)
        pixels = torch.einsum("nhwpqc->nchpwq", pixels).reshape(n, c, h, w)
        return pixels + x


class FanBackbone(nn.Module):
    """Face crop (N, 3, 224, 224) in [-1, 1] -> motion vector (N, 512) (upstream ``FAN_SA``)."""

    def __init__(self, att_num_attention_heads: int = 8, att_attention_head_dim: int = 128):
        super().__init__()
        att = {"num_attention_heads": att_num_attention_heads, "attention_head_dim": att_attention_head_dim}
        # stem: (N, 3, 224, 224) -> (N, 64, 112, 112) -> (N, 128, 112, 112)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        # after max-pool: (N, 128, 56, 56) -> (N, 256, 56, 56)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, FAN_FEATURES)
        # hourglass + landmark head: (N, 256, 56, 56) -> (N, 68, 56, 56)
        self.m0 = HourGlass(depth=4)
        self.top_m_0 = ConvBlock(FAN_FEATURES, FAN_FEATURES)
        self.conv_last0 = nn.Conv2d(FAN_FEATURES, FAN_FEATURES, kernel_size=1)
        self.l0 = nn.Conv2d(FAN_FEATURES, FAN_LANDMARKS, kernel_size=1)
        self.bn_end0 = nn.BatchNorm2d(FAN_FEATURES)
        # heatmaps -> vector: (N, 68, 56, 56) -> (N, 1, 28, 28) -> (N, 512)
        self.conv6 = nn.Conv2d(FAN_LANDMARKS, 1, 3, 2, 1)
        self.fc = nn.Linear(FAN_TOKEN_GRID * FAN_TOKEN_GRID, 512)
        self.bn5 = nn.BatchNorm2d(FAN_LANDMARKS)
        # PersonaLive's patch attention after conv2 (112x112, patch 4), conv4 and bn_end0 (56x56, patch 2)
        self.att_1 = PatchAttention(128, sample_size=112, patch_size=4, **att)
        self.att_2 = PatchAttention(FAN_FEATURES, sample_size=56, patch_size=2, **att)
        self.att_3 = PatchAttention(FAN_FEATURES, sample_size=56, patch_size=2, **att)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (N, 64, 112, 112)
        x = self.att_1(self.conv2(x))  # (N, 128, 112, 112)
        x = self.conv4(self.conv3(F.max_pool2d(x, 2)))  # (N, 256, 56, 56)
        x = self.att_2(x)
        x = self.bn_end0(self.conv_last0(self.top_m_0(self.m0(x))))  # (N, 256, 56, 56)
        x = self.att_3(x)
        heatmaps = F.relu(self.bn5(self.l0(F.relu(x))))  # (N, 68, 56, 56)
        pooled = F.relu(self.conv6(heatmaps).flatten(1))  # (N, 784)
        return self.fc(pooled)  # (N, 512)
