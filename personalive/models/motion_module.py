"""AnimateDiff-style modules of the denoising UNet: motion modules and temporal modules.

Both are upstream's ``VanillaTemporalModule`` with different attention types (``inference_stage3.yaml``):

* motion modules (``motion_modules.*``, "Spatial_Cross"): each frame's latent tokens cross-attend to that frame's
  motion tokens from the motion encoder (B, F, 32, 16); this is how the driving expression enters the UNet.
* temporal modules (``temporal_modules.*``, "Temporal_Self"): every latent position attends over the frames of the
  window, with a sinusoidal frame-position encoding (``pos_encoder.pe``, a persistent buffer in the checkpoint).

Hidden states arrive with frames folded into the batch, (B*F, C, H, W).
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from personalive.errors import ConfigError, PersonaLiveError
from personalive.models.attention_3d import multihead_attention
from personalive.models.feed_forward import geglu_feed_forward

__all__ = ["MotionAttention", "MotionModule", "PositionalEncoding", "build_motion_module"]


class PositionalEncoding(nn.Module):
    """Transformer sine/cosine encoding of the frame index, added to the normalised tokens before attention."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)  # persistent: temporal_module.pth carries it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (N, F, C)
        if x.shape[1] > self.pe.shape[1]:
            raise PersonaLiveError(
                f"{x.shape[1]} frames in one window, but the temporal position encoding covers "
                f"{self.pe.shape[1]} (temporal_position_encoding_max_len); use a shorter window"
            )
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class MotionAttention(Attention):
    """A diffusers ``Attention`` that attends over space ("Spatial") or over frames ("Temporal").

    Spatial: tokens are one frame's positions; with ``cross_attention_dim`` set, keys come from that frame's motion
    tokens. Temporal: tokens are one position's frames, optionally position-encoded (``pos_encoder``).
    """

    def __init__(
        self,
        mode: str,
        query_dim: int,
        heads: int,
        dim_head: int,
        cross_attention_dim: int | None,
        position_encoding_max_len: int | None,
    ) -> None:
        super().__init__(
            query_dim=query_dim, cross_attention_dim=cross_attention_dim, heads=heads, dim_head=dim_head, bias=False
        )
        if mode not in ("Spatial", "Temporal"):
            raise ConfigError(f"attention_block_types: unknown attention mode {mode!r}; expected Spatial or Temporal")
        if mode == "Temporal" and cross_attention_dim is not None:
            raise ConfigError(
                "attention_block_types: 'Temporal_Cross' is not supported; the release uses Temporal_Self"
            )
        self.mode = mode
        self.is_cross_attention = cross_attention_dim is not None
        use_pe = mode == "Temporal" and position_encoding_max_len is not None
        self.pos_encoder = PositionalEncoding(query_dim, position_encoding_max_len) if use_pe else None

    def attend(
        self, tokens: torch.Tensor, num_frames: int, context: torch.Tensor | None, frame_major: bool = False
    ) -> torch.Tensor:
        """tokens (B*F, L, C); context (B*F, S, D) for cross-attention. Returns (B*F, L, C).

        ``frame_major``: tokens are (B*L, F, C) instead, the layout temporal attention works in (Temporal only),
        and so is the result.
        """
        if self.mode == "Spatial":
            return multihead_attention(self, tokens, context=context if self.is_cross_attention else None)
        if frame_major:
            return multihead_attention(self, tokens if self.pos_encoder is None else self.pos_encoder(tokens))
        n, length, channels = tokens.shape
        batch = n // num_frames
        # (B*F, L, C) -> (B*L, F, C)
        frames = (
            tokens.view(batch, num_frames, length, channels).transpose(1, 2).reshape(batch * length, num_frames, -1)
        )
        if self.pos_encoder is not None:
            frames = self.pos_encoder(frames)
        out = multihead_attention(self, frames)
        return out.view(batch, length, num_frames, -1).transpose(1, 2).reshape(n, length, -1)


class TemporalTransformerBlock(nn.Module):
    """Pre-norm attentions (one per ``attention_block_types`` entry) and a GEGLU feed-forward."""

    def __init__(
        self, dim: int, heads: int, head_dim: int, block_types: list[str], cross_dim: int, pe_len: int | None
    ):
        super().__init__()
        attentions, norms = [], []
        for block_type in block_types:
            mode, _, kind = block_type.partition("_")
            cross = cross_dim if kind == "Cross" else None
            attentions.append(MotionAttention(mode, dim, heads, head_dim, cross, pe_len))
            norms.append(nn.LayerNorm(dim))
        self.attention_blocks = nn.ModuleList(attentions)
        self.norms = nn.ModuleList(norms)
        self.ff = geglu_feed_forward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(
        self, tokens: torch.Tensor, num_frames: int, context: torch.Tensor | None, frame_major: bool = False
    ) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            tokens = attention.attend(norm(tokens), num_frames, context, frame_major) + tokens
        return self.ff(self.ff_norm(tokens)) + tokens


class TemporalTransformer(nn.Module):
    """GroupNorm, linear projection in, transformer blocks, linear projection out, residual.

    Every layer but the attention works token by token, so the token order in memory is free: a module whose
    attentions are all temporal keeps its tokens frame-major, (B*H*W, F, C), the layout temporal attention needs,
    and other modules keep them contiguous per frame, (B*F, H*W, C). Either way the tokens are copied once in and
    once out. (A permuted view instead, as before, made every LayerNorm copy its input on CUDA, and the temporal
    attentions transpose in and out: ``fast_layout = False`` keeps that path for measurements.)
    """

    fast_layout = True

    def __init__(self, channels: int, heads: int, head_dim: int, num_layers: int, block_kwargs: dict) -> None:
        super().__init__()
        inner = heads * head_dim
        # upstream's TemporalTransformer3DModel always uses 32 groups here, not the UNet's norm_num_groups
        self.norm = nn.GroupNorm(32, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(inner, heads, head_dim, **block_kwargs) for _ in range(num_layers)]
        )
        self.proj_out = nn.Linear(inner, channels)

    @property
    def temporal_only(self) -> bool:
        return all(a.mode == "Temporal" for block in self.transformer_blocks for a in block.attention_blocks)

    def forward(self, hidden_states: torch.Tensor, num_frames: int, context: torch.Tensor | None) -> torch.Tensor:
        """hidden_states (B*F, C, H, W) -> (B*F, C, H, W)."""
        n, channels, height, width = hidden_states.shape
        residual = hidden_states
        normed = self.norm(hidden_states)
        if self.fast_layout and self.temporal_only:
            batch = n // num_frames
            tokens = normed.view(batch, num_frames, channels, height * width).permute(0, 3, 1, 2)
            tokens = self.proj_in(tokens.reshape(batch * height * width, num_frames, channels))
            for block in self.transformer_blocks:
                tokens = block(tokens, num_frames, context, frame_major=True)
            tokens = self.proj_out(tokens).view(batch, height, width, num_frames, channels)
            return tokens.permute(0, 3, 4, 1, 2).reshape(n, channels, height, width) + residual
        tokens = normed.permute(0, 2, 3, 1).reshape(n, height * width, channels)
        tokens = self.proj_in(tokens.contiguous() if self.fast_layout else tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, num_frames, context)
        tokens = self.proj_out(tokens)
        return tokens.reshape(n, height, width, channels).permute(0, 3, 1, 2).contiguous() + residual


class MotionModule(nn.Module):
    """Upstream ``VanillaTemporalModule``: a residual temporal transformer (key prefix ``temporal_transformer``)."""

    def __init__(self, channels: int, heads: int, head_dim: int, num_layers: int, block_kwargs: dict) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, heads, head_dim, num_layers, block_kwargs)

    def forward(self, hidden_states: torch.Tensor, num_frames: int, context: torch.Tensor | None) -> torch.Tensor:
        return self.temporal_transformer(hidden_states, num_frames, context)


_KNOWN_KWARGS = {
    "num_attention_heads",
    "num_transformer_block",
    "attention_block_types",
    "cross_attention_dim",
    "temporal_position_encoding",
    "temporal_position_encoding_max_len",
    "temporal_attention_dim_div",
    "zero_initialize",
    "cross_frame_attention_mode",
}


def build_motion_module(channels: int, module_type: str, kwargs: dict) -> MotionModule:
    """A motion or temporal module from ``inference_stage3.yaml``'s ``*_module_type`` and ``*_module_kwargs``."""
    if module_type != "Vanilla":
        raise ConfigError(f"motion/temporal module type {module_type!r} is not supported; the release uses 'Vanilla'")
    unknown = sorted(set(kwargs) - _KNOWN_KWARGS)
    if unknown:
        raise ConfigError(f"unet_additional_kwargs: unknown motion/temporal module kwargs {unknown}")
    if kwargs.get("cross_frame_attention_mode") is not None:
        raise ConfigError("unet_additional_kwargs: cross_frame_attention_mode is not supported; set it to null")
    heads = int(kwargs.get("num_attention_heads", 8))
    head_dim = channels // heads // int(kwargs.get("temporal_attention_dim_div", 1))
    use_pe = bool(kwargs.get("temporal_position_encoding", False))
    block_kwargs = {
        "block_types": list(kwargs.get("attention_block_types", ("Temporal_Self", "Temporal_Self"))),
        "cross_dim": int(kwargs.get("cross_attention_dim", 768)),
        "pe_len": int(kwargs.get("temporal_position_encoding_max_len", 24)) if use_pe else None,
    }
    # zero_initialize only matters for training: the weights are always loaded from the checkpoint
    return MotionModule(channels, heads, head_dim, int(kwargs.get("num_transformer_block", 2)), block_kwargs)
