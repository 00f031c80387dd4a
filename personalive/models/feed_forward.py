"""The GEGLU feed-forward of every transformer in the window step, with its projection computed as two halves.

diffusers' ``GEGLU`` projects to ``[value | gate]`` in one matmul and splits the result with ``chunk``: both halves
are then strided views (each row skips the other half), and on CUDA the ``gelu`` and the product run PyTorch's
non-vectorised elementwise kernels over them, 2 of the eager step's ~3,800 kernels in each of 61 feed-forwards
(13 ms of the H200's 179 ms in the 2026-12-02 profile). Computing each half with its own matmul (the weight's rows
are a contiguous view: no copy) gives contiguous halves and vectorised kernels, for the same function: every output
element is the same dot product, up to the matmul's summation order. Parameter names (``net.0.proj``) are
diffusers', so the official checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.activations import GEGLU
from diffusers.models.attention import FeedForward

__all__ = ["SplitGEGLU", "geglu_feed_forward"]


class SplitGEGLU(GEGLU):
    """diffusers' GEGLU, its value and gate halves projected separately (``split = False``: diffusers' forward)."""

    split = True

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not self.split:
            return super().forward(hidden_states, *args, **kwargs)
        inner = self.proj.out_features // 2
        weight, bias = self.proj.weight, self.proj.bias
        value = F.linear(hidden_states, weight[:inner], None if bias is None else bias[:inner])
        gate = F.linear(hidden_states, weight[inner:], None if bias is None else bias[inner:])
        return value * F.gelu(gate)


def geglu_feed_forward(dim: int, dropout: float = 0.0) -> FeedForward:
    """diffusers' ``FeedForward(dim, activation_fn="geglu")`` with :class:`SplitGEGLU` as its first layer."""
    ff = FeedForward(dim, dropout=dropout, activation_fn="geglu")
    original = ff.net[0]
    split = SplitGEGLU(original.proj.in_features, original.proj.out_features // 2, bias=original.proj.bias is not None)
    split.proj = original.proj
    ff.net[0] = split
    return ff
