"""The image autoencoder: Stable Diffusion's KL autoencoder fine-tuned with an MSE loss (``sd-vae-ft-mse``).

A thin layer over diffusers' ``AutoencoderKL``: built from the layout's ``config.json`` without loading weights
(the loader loads them strictly), plus the key renaming that old checkpoints need (the released
``sd-vae-ft-mse`` weights predate diffusers' ``Attention`` class and name the mid-block attention
``query/key/value/proj_attn``; diffusers' ``from_pretrained`` renames them silently, we do it explicitly).
"""

from __future__ import annotations

from diffusers import AutoencoderKL

# old diffusers AttentionBlock names -> Attention names (mid-block attention of encoder and decoder)
_LEGACY_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def build_vae(config: dict) -> AutoencoderKL:
    """AutoencoderKL from a diffusers config dict (``sd-vae-ft-mse/config.json``), default-initialised."""
    return AutoencoderKL.from_config(config)


def convert_legacy_vae_keys(state_dict: dict) -> dict:
    """Rename ``*.attentions.N.{query,key,value,proj_attn}.*`` to ``to_q/to_k/to_v/to_out.0``; other keys kept."""
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if "attentions" in parts and len(parts) >= 2 and parts[-2] in _LEGACY_ATTENTION_NAMES:
            key = ".".join(parts[:-2] + [_LEGACY_ATTENTION_NAMES[parts[-2]], parts[-1]])
        out[key] = value
    return out
