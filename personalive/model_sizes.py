"""Architecture sizes of every network: the released (full) ones and the tiny ones used for CPU tests.

Full sizes are the public configs of the base models (``lambdalabs/sd-image-variations-diffusers`` UNet and CLIP
ViT-L/14 image encoder, ``stabilityai/sd-vae-ft-mse``), upstream's constructor defaults for PersonaLive's own
networks (``PoseGuider()``, ``MotEncoder()``, ``MotionExtractor(num_kp=21)``), and upstream's
``configs/inference/inference_stage3.yaml`` (``unet_additional_kwargs``; its scheduler settings are
:class:`personalive.config.SchedulerConfig`).
Tiny sizes equal the upstream oracle's TINY configuration (same architectures, few channels), so a tiny layout
written here and the oracle's layout have the same shapes.

A layout's sizes come from its config files; PersonaLive's own networks have none in the release, so a layout
may carry ``personalive/config.json`` (written by ``weights init-random``; schema: ``extra``,
``unet_additional_kwargs``, like the oracle's ``oracle_config.json``; other keys are ignored). Without it the
full defaults apply.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

SD_UNET_FULL: dict = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.8.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

CLIP_VISION_FULL: dict = {
    "architectures": ["CLIPVisionModelWithProjection"],
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "quick_gelu",
    "hidden_size": 1024,
    "image_size": 224,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model",
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "projection_dim": 768,
}

VAE_FULL: dict = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.4.2",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

MODEL_INDEX: dict = {
    "_class_name": "StableDiffusionImageVariationPipeline",
    "_diffusers_version": "0.8.0.dev0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "requires_safety_checker": True,
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

# upstream configs/inference/inference_stage3.yaml
UNET_ADDITIONAL_KWARGS: dict = {
    "use_inflated_groupnorm": True,
    "unet_use_cross_frame_attention": False,
    "unet_use_temporal_attention": False,
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": True,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "cross_attention_dim": 16,
        "attention_block_types": ["Spatial_Cross", "Spatial_Cross"],
        "temporal_position_encoding": False,
        "temporal_position_encoding_max_len": 32,
        "temporal_attention_dim_div": 1,
    },
    "use_temporal_module": True,
    "temporal_module_type": "Vanilla",
    "temporal_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 32,
        "temporal_attention_dim_div": 1,
    },
}

# constructor kwargs of the networks that have no config file in the release
EXTRA_FULL: dict = {
    "width": 512,
    "height": 512,
    "pose_guider": {},  # 320 channels, (16, 32, 96, 256): 3 stride-2 stages
    "motion_extractor": {"num_kp": 21},  # convnextv2_tiny
    "motion_encoder": {},  # FAN, att_1..3 with 8 heads x 128
}

SD_UNET_TINY: dict = {
    **SD_UNET_FULL,
    "block_out_channels": [32, 64, 64, 64],
    "cross_attention_dim": 64,
    "sample_size": 16,
}
CLIP_VISION_TINY: dict = {
    **CLIP_VISION_FULL,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "patch_size": 32,
    "projection_dim": 64,
}
VAE_TINY: dict = {**VAE_FULL, "block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "sample_size": 128}
EXTRA_TINY: dict = {
    "width": 128,
    "height": 128,
    # 5 stride-2 stages: the 512 canvas -> 16x16 latents of 128x128 images
    "pose_guider": {"conditioning_embedding_channels": 32, "block_out_channels": [8, 8, 16, 16, 32, 32]},
    "motion_extractor": {
        "num_kp": 21,
        "backbone": "convnextv2_oracle",
        "depths": [1, 1, 1, 1],
        "dims": [16, 32, 64, 128],
    },
    "motion_encoder": {"att_num_attention_heads": 2, "att_attention_head_dim": 16},
}

SIZE_NAMES = ("tiny", "full")
_PRESETS = {
    "tiny": {"unet": SD_UNET_TINY, "clip": CLIP_VISION_TINY, "vae": VAE_TINY, "extra": EXTRA_TINY},
    "full": {"unet": SD_UNET_FULL, "clip": CLIP_VISION_FULL, "vae": VAE_FULL, "extra": EXTRA_FULL},
}


def preset(size: str) -> dict:
    """Deep copy of the ``tiny`` / ``full`` configs: keys unet, clip, vae, extra."""
    return copy.deepcopy(_PRESETS[size])


@dataclass
class ModelSizes:
    """Everything needed to build the networks of one layout (no weights)."""

    unet: dict
    clip: dict
    vae: dict
    pose_guider: dict = field(default_factory=dict)
    motion_extractor: dict = field(default_factory=dict)
    motion_encoder: dict = field(default_factory=dict)
    unet_additional_kwargs: dict = field(default_factory=lambda: copy.deepcopy(UNET_ADDITIONAL_KWARGS))
    width: int = 512
    height: int = 512
    source: str = "full-size defaults"  # which file described the PersonaLive networks

    def personalive_config(self) -> dict:
        """The ``personalive/config.json`` document describing these sizes."""
        return {
            "extra": {
                "width": self.width,
                "height": self.height,
                "pose_guider": self.pose_guider,
                "motion_extractor": self.motion_extractor,
                "motion_encoder": self.motion_encoder,
            },
            "unet_additional_kwargs": self.unet_additional_kwargs,
        }
