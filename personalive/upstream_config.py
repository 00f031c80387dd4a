"""Upstream's own prompt YAML files (``configs/prompts/personalive_offline.yaml`` / ``personalive_online.yaml``),
mapped onto our config keys so ``--config`` accepts them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from personalive.errors import ConfigError

# upstream prompt-YAML keys -> ours; None means "accepted and ignored" (paths inside the weights root,
# which we derive from one root, and settings that have no meaning offline)
_UPSTREAM_KEYS: dict[str, str | None] = {
    "height": "generation.height",
    "width": "generation.width",
    "temporal_adaptive_step": "generation.adaptive_steps",
    "temporal_window_size": "generation.window",
    "num_inference_steps": "generation.inference_steps",
    "seed": "generation.seed",
    "dtype": "model.dtype",
    "weight_dtype": "model.dtype",
    "reference_image_height": None,
    "reference_image_width": None,
    "batch_size": None,
    "fps": None,  # the output keeps the driving video's frame rate
    "vae_model_path": None,
    "vae_path": None,
    "vae_tiny_path": None,
    "image_encoder_path": None,
    "reference_unet_weight_path": None,
    "denoising_unet_path": None,
    "pose_guider_path": None,
    "motion_encoder_path": None,
    "temporal_module_path": None,
    "pose_encoder_path": None,
    "onnx_path": None,
    "onnx_opt_path": None,
    "tensorrt_target_model": None,
    "inference_config": None,
    "test_cases": None,
}


def is_upstream(data: dict) -> bool:
    return "pretrained_base_model_path" in data or "inference_config" in data


def map_upstream(data: dict, source: Path) -> dict[str, Any]:
    """Map one of upstream's prompt YAML files onto our keys (flat)."""
    flat: dict[str, Any] = {}
    base = data.get("pretrained_base_model_path")
    if base:
        # upstream lays every weight under one root: <root>/sd-image-variations-diffusers
        root = Path(base).parent
        flat["model.weights_dir"] = str(root if root.is_absolute() else (source.parent / root))
    for key, value in data.items():
        if key == "pretrained_base_model_path":
            continue
        if key not in _UPSTREAM_KEYS:
            raise ConfigError(f"{source}: unknown key {key!r} in an upstream PersonaLive config")
        target = _UPSTREAM_KEYS[key]
        if target is not None:
            flat[target] = value
    return flat
