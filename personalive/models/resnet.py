"""diffusers' ``ResnetBlock2D`` with two passes fewer over its activations, for the same function.

The UNets' and the VAE's residual blocks are diffusers' (their parameter names are the checkpoints'). Their forward
makes two full passes over the block's activations that change nothing worth a pass:

* ``conv1``'s bias is added to the image (PyTorch adds a convolution's bias as a separate kernel), and then the time
  embedding is added to it: the bias can join the time embedding first, a (N, C) add instead of an image-sized one
  (the sum is the same; its rounding order differs). Without a time embedding (the VAE) the bias goes into
  ``norm2`` instead (:meth:`~personalive.models.group_norm.SplitGroupNorm.biased`: shifted channel means, no pass
  where its channels-last path runs);
* the output is divided by ``output_scale_factor``, which is 1 in every block of the release: a division by 1 is
  an identity, and a full read and write (the VAE decoder's 512x512 blocks: 268 MB each way).

:class:`LeanResnetBlock2D` does neither where it can; blocks with up/down-sampling, another time-embedding norm or
any extra argument run diffusers' forward unchanged, and so does training. (Joining ``conv2``'s bias to a 1x1
shortcut convolution's saves a third pass by arithmetic; measured on an H200 it gained nothing, thirteenth
session's call AM, and was left out.)
"""

from __future__ import annotations

import torch
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from personalive.models.group_norm import SplitGroupNorm

__all__ = ["LeanResnetBlock2D", "lean_resnets"]


class LeanResnetBlock2D(ResnetBlock2D):
    """``ResnetBlock2D`` without the image-sized bias add and the division by 1 (module docstring). Same
    parameters, keys and hooks: :func:`lean_resnets` changes the class of existing blocks."""

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor | None, *args, **kwargs) -> torch.Tensor:
        plain = self.upsample is None and self.downsample is None and self.time_embedding_norm == "default"
        conv1 = self.conv1
        usual = (
            isinstance(conv1, nn.Conv2d) and conv1.bias is not None and (temb is None) == (self.time_emb_proj is None)
        )
        if args or kwargs or self.training or not plain or not usual:
            return super().forward(input_tensor, temb, *args, **kwargs)
        hidden_states = self.nonlinearity(self.norm1(input_tensor))
        if temb is not None:
            if not self.skip_time_act:
                temb = self.nonlinearity(temb)
            shift = self.time_emb_proj(temb) + conv1.bias  # (N, C): conv1's bias joins the time embedding
            hidden_states = self.norm2(
                conv1._conv_forward(hidden_states, conv1.weight, None) + shift[:, :, None, None]
            )
        elif isinstance(self.norm2, SplitGroupNorm):  # no time embedding (the VAE): the bias goes into norm2
            hidden_states = self.norm2.biased(conv1._conv_forward(hidden_states, conv1.weight, None), conv1.bias)
        else:
            hidden_states = self.norm2(conv1(hidden_states))
        hidden_states = self.conv2(self.dropout(self.nonlinearity(hidden_states)))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        output = input_tensor + hidden_states
        return output if self.output_scale_factor == 1 else output / self.output_scale_factor


def lean_resnets(module: nn.Module) -> int:
    """Make every ``ResnetBlock2D`` inside ``module`` a :class:`LeanResnetBlock2D` (in place: the same objects,
    parameters and checkpoint keys); the number changed."""
    changed = 0
    for child in module.modules():
        if type(child) is ResnetBlock2D:
            child.__class__ = LeanResnetBlock2D
            changed += 1
    return changed
