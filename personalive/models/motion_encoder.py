"""MotionEncoder: PersonaLive's implicit facial-expression encoder (paper: the "motion encoder" whose tokens drive
the denoising UNet's motion modules through cross-attention; upstream class ``MotEncoder``).

Face crops (B, 3, F, 224, 224) in [-1, 1] -> motion tokens (B, F, 32, 16): a FAN backbone with patch attention
(:mod:`personalive.models.motion_encoder_fan`) gives a 512-d vector per frame, a linear layer mixes it, and it is
cut into 32 tokens of 16 channels, each plus a fixed 1D sin-cos position (buffer ``pe``, stored in the .pth).
The same tokens feed the history-keyframe bank (distance threshold). Names equal upstream's (``model.*``, ``pe``,
``final_proj``) so ``motion_encoder.pth`` loads strictly; the att_1..att_3 positional tables are non-persistent
buffers recomputed at construction.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from personalive.models.motion_encoder_fan import FanBackbone

MOTION_VECTOR_DIM = 512  # upstream expr_dim: the FAN output and final_proj width


def sincos_1d_table(embed_dim: int, positions: int) -> torch.Tensor:
    """(positions, embed_dim) sin-cos table computed in float64 like upstream (sin half, then cos half)."""
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    out = np.einsum("m,d->md", np.arange(positions).astype(np.float64), omega)
    return torch.from_numpy(np.concatenate([np.sin(out), np.cos(out)], axis=1)).float()


class MotionEncoder(nn.Module):
    """Face crops (B, 3, F, 224, 224) in [-1, 1] -> motion tokens (B, F, 512 / token_channels, token_channels)."""

    def __init__(self, token_channels: int = 16, att_num_attention_heads: int = 8, att_attention_head_dim: int = 128):
        super().__init__()
        self.token_channels = token_channels
        self.model = FanBackbone(att_num_attention_heads, att_attention_head_dim)
        table = sincos_1d_table(token_channels, MOTION_VECTOR_DIM // token_channels)
        self.register_buffer("pe", table.unsqueeze(0))  # (1, tokens, token_channels)
        self.final_proj = nn.Linear(MOTION_VECTOR_DIM, MOTION_VECTOR_DIM)

    @property
    def num_tokens(self) -> int:
        return MOTION_VECTOR_DIM // self.token_channels

    @property
    def dtype(self) -> torch.dtype:
        return self.final_proj.weight.dtype

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = faces.shape
        frames = faces.to(self.dtype).permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)  # (B*F, 3, 224, 224)
        vector = self.final_proj(self.model(frames))  # (B*F, 512)
        tokens = vector.reshape(b * f, self.num_tokens, self.token_channels) + self.pe  # (B*F, 32, 16)
        return tokens.reshape(b, f, self.num_tokens, self.token_channels)
