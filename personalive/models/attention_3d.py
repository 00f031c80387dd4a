"""Spatial transformers of the denoising UNet, with PersonaLive's reference attention as an explicit input.

Each frame's self-attention also attends to the reference features of the transformer block at the same place in
the reference UNet (plus those of any history keyframes, concatenated along the token axis): keys and values are
``[frame tokens, reference tokens]``, queries are the frame tokens only. Upstream does this by patching the blocks'
``forward`` and keeping the features on the modules; here they are an argument, so the module has no state and runs
the same eagerly, under ``torch.compile`` and in an ONNX export. The argument is the reference tokens' keys and
values (:func:`project_reference`), not the tokens: they are the same in every window, so the pipeline projects
them once per reference image and keyframe.

Two exact savings against upstream's arithmetic: the reference projections above, and the cross-attention to the
CLIP image embedding, which has a single key (:func:`single_key_attention`).

Frames are folded into the batch throughout: hidden states are (B*F, C, H, W), frame-major within a batch element.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn

from personalive.models import attention_kernels
from personalive.models.feed_forward import geglu_feed_forward

__all__ = [
    "ReferenceTransformerBlock",
    "SpatialTransformer",
    "multihead_attention",
    "project_reference",
    "single_key_attention",
]


def per_frame(tokens: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, L, D) -> (B*F, L, D), each batch element repeated for its frames.

    expand + reshape rather than ``repeat_interleave``: under ONNX tracing ``frames`` becomes a tensor and
    ``repeat_interleave`` builds its index on the CPU, which breaks a CUDA export (seen on the H100).
    """
    batch = tokens.shape[0]
    return tokens.unsqueeze(1).expand(batch, frames, *tokens.shape[1:]).reshape(batch * frames, *tokens.shape[1:])


def _append_per_frame(tokens: torch.Tensor, shared: torch.Tensor, frames: int) -> torch.Tensor:
    """tokens (B*F, L, C) followed by ``shared`` (B, R, C), the same for each frame of a batch element: (B*F, L+R, C).

    Concatenated as (B, F, ., C) with ``shared`` expanded over the frames (a view), so the one copy is the
    concatenation's own: ``per_frame`` first would materialise the F copies of ``shared`` and copy them again.
    """
    n, length, channels = tokens.shape
    batch = shared.shape[0]
    every_frame = shared.unsqueeze(1).expand(batch, frames, *shared.shape[1:])
    joined = torch.cat([tokens.reshape(batch, frames, length, channels), every_frame], dim=2)
    return joined.reshape(n, length + shared.shape[1], channels)


def project_reference(attn: Attention, reference: torch.Tensor) -> torch.Tensor:
    """Reference tokens (B, R, C) -> their keys and values in ``attn``, ``[keys | values]`` (B, R, 2 * inner).

    They depend only on the reference image (and the history keyframes), so the pipeline computes them once per
    image rather than once per window; :func:`multihead_attention` takes them as they come out of here.
    """
    reference = reference.to(attn.to_k.weight.dtype)
    return torch.cat([attn.to_k(reference), attn.to_v(reference)], dim=-1)


def single_key_attention(attn: Attention, context: torch.Tensor) -> torch.Tensor:
    """Attention output when ``context`` (N, 1, D) has one token: (N, 1, C), the same for every query.

    Softmax over a single key is exactly 1, so the output is that key's value for every query, whatever the queries
    are: ``to_out(to_v(context))``. The query projection, the key projection and the attention kernel drop out.
    """
    return attn.to_out[1](attn.to_out[0](attn.to_v(context)))


def multihead_attention(
    attn: Attention,
    hidden_states: torch.Tensor,
    context: torch.Tensor | None = None,
    reference_kv: torch.Tensor | None = None,
    num_frames: int = 1,
) -> torch.Tensor:
    """Scaled dot-product attention with the weights of a diffusers ``Attention`` (same math as AttnProcessor2_0).

    hidden_states (N, L, C) give the queries; keys/values come from ``context`` (N, S, Cc), or from hidden_states
    itself when it is None, followed by the reference tokens' keys and values ``reference_kv`` (B, R, 2 * inner)
    (from :func:`project_reference`), with N = B * num_frames, shared by the frames of each batch element.
    """
    query = attn.to_q(hidden_states)
    source = hidden_states if context is None else context
    key, value = attn.to_k(source), attn.to_v(source)
    heads = attn.heads
    eager = attention_kernels.eager_kernels()
    if reference_kv is not None:
        ref_key, ref_value = reference_kv.to(hidden_states.dtype).chunk(2, dim=-1)
        if eager:  # the reference tokens' keys and values read once for all frames, not copied per frame
            out = attention_kernels.shared_reference_attention(query, key, value, ref_key, ref_value, heads)
            return attn.to_out[1](attn.to_out[0](out))
        key = _append_per_frame(key, ref_key, num_frames)
        value = _append_per_frame(value, ref_value, num_frames)
    attend = attention_kernels.short_sequence_attention if eager else F.scaled_dot_product_attention
    split = attention_kernels.split_heads
    out = attend(split(query, heads), split(key, heads), split(value, heads))
    n, _, length, head_dim = out.shape
    out = out.transpose(1, 2).reshape(n, length, heads * head_dim)
    return attn.to_out[1](attn.to_out[0](out))


class ReferenceTransformerBlock(nn.Module):
    """Self-attention (+ reference tokens), cross-attention to the CLIP image embedding, GEGLU feed-forward.

    Parameter names are those of upstream's ``TemporalBasicTransformerBlock`` (= diffusers' BasicTransformerBlock).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, cross_attention_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=head_dim, dropout=dropout, bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(
            query_dim=dim,
            cross_attention_dim=cross_attention_dim,
            heads=heads,
            dim_head=head_dim,
            dropout=dropout,
            bias=False,
        )
        self.norm3 = nn.LayerNorm(dim)
        self.ff = geglu_feed_forward(dim, dropout=dropout)
        # the cross-attention context is the CLIP image embedding, one token: see single_key_attention.
        # False runs the full attention (the same function up to rounding; kept for measurements and checks)
        self.single_key_shortcut = True

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_kv: torch.Tensor | None,
        num_frames: int,
    ) -> torch.Tensor:
        """hidden_states (B*F, L, C), encoder_hidden_states (B*F, S, D), reference_kv (B, R, 2C) or None."""
        norm = self.norm1(hidden_states)
        hidden_states = (
            multihead_attention(self.attn1, norm, reference_kv=reference_kv, num_frames=num_frames) + hidden_states
        )
        if self.single_key_shortcut and encoder_hidden_states.shape[1] == 1:
            # norm2 only feeds the queries, which a single key makes irrelevant
            hidden_states = single_key_attention(self.attn2, encoder_hidden_states) + hidden_states
        else:
            norm = self.norm2(hidden_states)
            hidden_states = multihead_attention(self.attn2, norm, context=encoder_hidden_states) + hidden_states
        return self.ff(self.norm3(hidden_states)) + hidden_states


def _pointwise(layer: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """A Linear, or a 1x1 Conv2d, applied to tokens (N, L, C_in) -> (N, L, C_out)."""
    if isinstance(layer, nn.Conv2d):
        return F.linear(tokens, layer.weight.view(layer.out_channels, layer.in_channels), layer.bias)
    return layer(tokens)


class SpatialTransformer(nn.Module):
    """Per-frame spatial transformer (upstream ``Transformer3DModel``): GroupNorm, 1x1 projection, one block.

    ``fast_layout = False`` runs the path before the sixth session (projections as convolutions, tokens a permuted
    view), for measurements; the two compute the same function.
    """

    fast_layout = True

    def __init__(
        self,
        channels: int,
        heads: int,
        cross_attention_dim: int,
        norm_num_groups: int,
        use_linear_projection: bool = False,
    ) -> None:
        super().__init__()
        head_dim = channels // heads
        inner = heads * head_dim
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6, affine=True)
        if use_linear_projection:
            self.proj_in = nn.Linear(channels, inner)
            self.proj_out = nn.Linear(inner, channels)
        else:
            self.proj_in = nn.Conv2d(channels, inner, kernel_size=1)
            self.proj_out = nn.Conv2d(inner, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [ReferenceTransformerBlock(inner, heads, head_dim, cross_attention_dim)]
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_kv: torch.Tensor | None,
        num_frames: int,
    ) -> torch.Tensor:
        """hidden_states (B*F, C, H, W) -> (B*F, C, H, W); reference_kv (B, R, 2C) from project_reference or None."""
        n, _, height, width = hidden_states.shape
        residual = hidden_states
        hidden_states = self.norm(hidden_states)
        if self.fast_layout:
            # contiguous tokens, the 1x1 convolutions applied as the matmuls they are (bias fused, no layout
            # transposes around cuDNN); a permuted view instead made every LayerNorm copy it on CUDA and every
            # residual add mix layouts
            tokens = hidden_states.permute(0, 2, 3, 1).reshape(n, height * width, hidden_states.shape[1])
            tokens = _pointwise(self.proj_in, tokens.contiguous())
            for block in self.transformer_blocks:
                tokens = block(tokens, encoder_hidden_states, reference_kv, num_frames)
            tokens = _pointwise(self.proj_out, tokens)
            return tokens.reshape(n, height, width, -1).permute(0, 3, 1, 2).contiguous() + residual
        if not self.use_linear_projection:
            hidden_states = self.proj_in(hidden_states)
        tokens = hidden_states.permute(0, 2, 3, 1).reshape(n, height * width, hidden_states.shape[1])
        if self.use_linear_projection:
            tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, encoder_hidden_states, reference_kv, num_frames)
        if self.use_linear_projection:
            tokens = self.proj_out(tokens)
        hidden_states = tokens.reshape(n, height, width, tokens.shape[-1]).permute(0, 3, 1, 2).contiguous()
        if not self.use_linear_projection:
            hidden_states = self.proj_out(hidden_states)
        return hidden_states + residual
