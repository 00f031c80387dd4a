"""Memory layouts of the networks' activations (no diffusers import: the window step imports this early)."""

from __future__ import annotations

import torch


def channels_last_only(x: torch.Tensor) -> bool:
    """A 4-d tensor laid out channels-last (NHWC) and not also NCHW-contiguous (one channel, or 1x1 images)."""
    return x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def decoder_channels_last(autoencoder: torch.nn.Module) -> bool:
    """Whether :func:`set_decoder_layout` last made the decoder channels-last (its first convolution's weights)."""
    return channels_last_only(autoencoder.decoder.conv_in.weight)


def set_decoder_layout(autoencoder: torch.nn.Module, channels_last: bool) -> None:
    """The memory layout of an autoencoder's decoder (``post_quant_conv`` where it has one, and ``decoder``):
    channels-last (NHWC) or PyTorch's default (NCHW); the values are unchanged.

    Why channels-last: on Hopper cuDNN's fp16 convolutions are NHWC kernels, so each NCHW convolution is wrapped
    in two layout transposes. With the decoder's weights channels-last its activations follow (convolutions,
    upsampling and the residual adds keep the layout; the split GroupNorm and the mid-block attention have
    channels-last paths): the eager step 148.4 -> 143.3 ms a window with CUDA graphs, 156.5 -> 152.9 without
    (H200, fp16, 0 keyframes, call AD of the eleventh session); the frames differ by fp16 rounding (2.4e-3)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for name in ("post_quant_conv", "decoder"):
        part = getattr(autoencoder, name, None)
        if isinstance(part, torch.nn.Module):
            part.to(memory_format=layout)
