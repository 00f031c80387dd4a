"""Attention computed with other kernels than ``scaled_dot_product_attention`` picks, for the same function.

Two cases in the denoising UNet where the eager step gains from choosing (measured on an H200, call AG of the twelfth
session, ``benchmarks/attention_backends.py``):

* Reference attention: each frame's queries attend to ``[its own tokens, the reference tokens]``, and the reference
  tokens (reference image plus history keyframes) are the same for every frame of a window. Joined, their keys and
  values are copied once per frame (16 frames x up to 4 x 4096 tokens at the 64x64 level) and every frame's kernel
  reads its own copy. :func:`shared_reference_attention` instead runs two attentions -- each frame's queries over its
  own tokens, and all frames' queries at once over the one copy of the reference tokens -- and merges them exactly
  with their log-sum-exps: softmax over the union weighs the two partial results by ``exp(lse)``, so the merged
  output is ``lerp(reference_out, own_out, sigmoid(lse_own - lse_reference))``.
* Temporal attention (16 frames attending to each other at every position): short queries and keys, where the
  memory-efficient kernel reads and writes faster than cuDNN's (:func:`short_sequence_attention`).

Both are for eager execution only: traced, compiled or exported steps keep ``scaled_dot_product_attention`` (the
private operators that return log-sum-exps have no ONNX export, and inductor chooses its own kernels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["SHORT_SEQUENCE", "eager_kernels", "shared_reference_attention", "short_sequence_attention", "split_heads"]

# off: every attention through scaled_dot_product_attention, the reference tokens joined per frame (benchmarks)
enabled = True
# queries and keys at most this long go to the memory-efficient kernel on CUDA (the temporal attention's 16 frames;
# the motion cross-attention's 32 keys with 4096 queries stay on the default: slower there, call AG)
SHORT_SEQUENCE = 32


def eager_kernels() -> bool:
    """Whether this module's kernel choices apply: on, and eager execution (not traced, compiled or exported)."""
    return enabled and not (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling())


# (device type, dtype, head size) where cuDNN refused the call (other GPUs, other head sizes): the fallback's
_CUDNN_REFUSED: set[tuple] = set()


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, L, heads*d) -> (N, heads, L, d), a view."""
    n, length, inner = x.shape
    return x.view(n, length, heads, inner // heads).transpose(1, 2)


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention (N, H, Lq, d) and the log-sum-exp of each query's scaled scores, (N, H, Lq) in fp32."""
    kind = (q.device.type, q.dtype, q.shape[-1])
    result = None
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and kind not in _CUDNN_REFUSED:
        try:
            result = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True)[:2]
        except RuntimeError:  # a check before any launch (this GPU's cuDNN, this head size): not this kind again
            _CUDNN_REFUSED.add(kind)
    if result is None and q.is_cuda:  # fp32 (cuDNN's are half-precision only), the refused; rows of lse padded
        result = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True)[:2]
    elif result is None:
        result = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
    out, lse = result
    return out, lse.reshape(*q.shape[:2], -1)[..., : q.shape[2]].float()


def shared_reference_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    reference_key: torch.Tensor,
    reference_value: torch.Tensor,
    heads: int,
) -> torch.Tensor:
    """Attention of query (B*F, L, C) over ``[key, reference_key]`` per frame -> (B*F, L, C), heads merged.

    key/value (B*F, S, C) are each frame's own; reference_key/value (B, R, C) are shared by the F frames of each
    batch element and are never copied per frame: all F*L queries of a batch element attend to them in one call.
    """
    n, length, inner = query.shape
    batch = reference_key.shape[0]
    frames = n // batch
    own, own_lse = attention_with_lse(split_heads(query, heads), split_heads(key, heads), split_heads(value, heads))
    every_query = split_heads(query.reshape(batch, frames * length, inner), heads)  # a view: tokens are frame-major
    shared, shared_lse = attention_with_lse(
        every_query, split_heads(reference_key, heads), split_heads(reference_value, heads)
    )
    # (B, H, F*L) -> (B*F, H, L); each query's weight of its own part: exp(lse_own) / (exp(lse_own) + exp(lse_ref))
    shared_lse = shared_lse.view(batch, heads, frames, length).transpose(1, 2).reshape(n, heads, length)
    own_weight = torch.sigmoid(own_lse - shared_lse).transpose(1, 2).unsqueeze(-1).to(own.dtype)  # (N, L, H, 1)
    shared = shared.transpose(1, 2).reshape(n, length, heads, -1)  # (N, L, H, d)
    return torch.lerp(shared, own.transpose(1, 2), own_weight).reshape(n, length, inner)


def short_sequence_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(N, H, L, d) attention; on CUDA with queries and keys of at most :data:`SHORT_SEQUENCE` tokens, the
    memory-efficient kernel (a top-level temporal attention 0.54 -> 0.36 ms, call AG)."""
    short = q.shape[2] <= SHORT_SEQUENCE and k.shape[2] <= SHORT_SEQUENCE
    if q.is_cuda and short and q.shape[-1] % 8 == 0:  # the kernel's alignment for half-precision rows
        return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, False)[0]
    return F.scaled_dot_product_attention(q, k, v)
