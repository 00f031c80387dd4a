"""The image autoencoder: Stable Diffusion's KL autoencoder fine-tuned with an MSE loss (``sd-vae-ft-mse``).

A thin layer over diffusers' ``AutoencoderKL``: built from the layout's ``config.json`` without loading weights
(the loader loads them strictly), plus the key renaming that old checkpoints need (the released
``sd-vae-ft-mse`` weights predate diffusers' ``Attention`` class and name the mid-block attention
``query/key/value/proj_attn``; diffusers' ``from_pretrained`` renames them silently, we do it explicitly).

Its mid-block attentions return their output in PyTorch's default (NCHW) layout: see :class:`NCHWAttnProcessor`.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import AttnProcessor2_0

from personalive.models.memory_layout import channels_last_only

# old diffusers AttentionBlock names -> Attention names (mid-block attention of encoder and decoder)
_LEGACY_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


class NCHWAttnProcessor(AttnProcessor2_0):
    """diffusers' SDPA attention processor, its image-shaped output made contiguous (NCHW).

    diffusers turns the attention's (N, HW, C) tokens back into an image by a transpose, which leaves a
    channels-last view; the residual add keeps that layout, and so does everything after it. In the decoder that
    is every layer after the mid-block: on CUDA each GroupNorm then copies its input back to NCHW and each residual
    add mixes the two layouts (PyTorch's slow strided kernels), 8 + ~10 ms of the H200's 172 ms step at 512x512
    (sixth session's profile). One copy of the 64x64 mid-block output puts the rest back in NCHW; the values are the
    same. A decoder whose convolutions run channels-last (``memory_layout.set_decoder_layout``) keeps that
    layout instead.
    """

    # the parameters are spelt out: diffusers drops (with a warning) any keyword the signature does not name
    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        out = super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if out.ndim != 4:
            return out
        # a decoder run channels-last (its convolutions' weights converted) stays so
        layout = torch.channels_last if channels_last_only(hidden_states) else torch.contiguous_format
        return out.contiguous(memory_format=layout)


def build_vae(config: dict) -> AutoencoderKL:
    """AutoencoderKL from a diffusers config dict (``sd-vae-ft-mse/config.json``), default-initialised, with
    :class:`NCHWAttnProcessor` in its attentions."""
    vae = AutoencoderKL.from_config(config)
    vae.set_attn_processor(NCHWAttnProcessor())
    return vae


def convert_legacy_vae_keys(state_dict: dict) -> dict:
    """Rename ``*.attentions.N.{query,key,value,proj_attn}.*`` to ``to_q/to_k/to_v/to_out.0``; other keys kept."""
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if "attentions" in parts and len(parts) >= 2 and parts[-2] in _LEGACY_ATTENTION_NAMES:
            key = ".".join(parts[:-2] + [_LEGACY_ATTENTION_NAMES[parts[-2]], parts[-1]])
        out[key] = value
    return out
