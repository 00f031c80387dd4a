"""The reference-image encoder: CLIP ViT-L/14 vision tower with its 768-d projection (Radford et al., "Learning
Transferable Visual Models From Natural Language Supervision"), as shipped in ``sd-image-variations-diffusers``.

A thin layer over transformers' ``CLIPVisionModelWithProjection``: built from ``image_encoder/config.json`` without
loading weights (the loader loads them strictly), plus the one explicit key fix older checkpoints need.
Its ``image_embeds`` (B, D) condition both UNets' cross-attention.
"""

from __future__ import annotations

from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

# transformers >= 4.31 keeps position_ids as a non-persistent buffer (always arange(num_positions)); checkpoints
# written by older versions (the released sd-image-variations one) store it. It holds no learned value.
LEGACY_BUFFER_KEYS = ("vision_model.embeddings.position_ids",)


def build_image_encoder(config: dict) -> CLIPVisionModelWithProjection:
    """CLIPVisionModelWithProjection from a config dict (``image_encoder/config.json``), default-initialised."""
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**config))


def drop_legacy_buffers(state_dict: dict) -> dict:
    """Remove the stored ``position_ids`` buffer of old checkpoints (recomputed by transformers)."""
    return {k: v for k, v in state_dict.items() if k not in LEGACY_BUFFER_KEYS}
