"""Reference fusion: everything the stream needs from the reference image, computed once per image.

``ReferenceState`` holds the CLIP image embedding, the scaled VAE latents, the reference UNet's attention features
(at timestep 0) and their keys/values in the denoising UNet's self-attentions (what every window step consumes,
projected here once), the motion extractor's keypoint info of the reference and the motion tokens of its face crop
(the first entry of the keyframe bank). A state is never modified by a run: history keyframes are appended to a
per-run copy of the keys/values, so a batch can reuse one state for many driving videos.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from personalive.pipeline import conditioning
from personalive.pipeline.keypoints import KeypointInfo, driving_keypoints, face_boxes


@dataclass
class ReferenceState:
    embeddings: torch.Tensor  # (1, 1, D) CLIP image embedding, pipeline dtype
    latents: torch.Tensor  # (1, 4, h, w) VAE latent mean x scaling factor
    features: list[torch.Tensor]  # reference_feature_specs order, each (1, tokens, C), pipeline dtype
    keys_values: list[torch.Tensor]  # the same projected by the denoising UNet, each (1, tokens, 2C): step inputs
    keypoint_info: KeypointInfo  # motion-extractor output of the 256x256 reference, each (1, ...)
    motion: torch.Tensor  # (1, 1, 32, 16) motion tokens of the reference face crop


def feature_extractor(models: Any):
    """The model set's reference UNet wrapped to return its attention features (built once, cached on ``models``)."""
    from diffusers import UNet2DConditionModel

    from personalive.models.reference_unet import ReferenceFeatureExtractor

    unet = models.reference_unet
    if not isinstance(unet, UNet2DConditionModel):  # already an extractor (or a test stand-in with its signature)
        return unet
    cached = getattr(models, "_reference_feature_extractor", None)
    if cached is None or cached.unet is not unet:
        cached = ReferenceFeatureExtractor(unet)
        try:
            models._reference_feature_extractor = cached
        except AttributeError:  # frozen / slotted model set: rebuild each time (cheap)
            pass
    return cached


@dataclass
class ReferencePixels:
    """The reference image preprocessed for each network (all (1, 3, ., .) on the device)."""

    clip: torch.Tensor  # (1, 3, 224, 224), CLIP-normalised
    vae: torch.Tensor  # (1, 3, H, W) in [-1, 1] at the model resolution
    keypoints: torch.Tensor  # (1, 3, 256, 256) in [0, 1]
    face: torch.Tensor | None = None  # (1, 3, 224, 224) in [-1, 1]; None = crop from keypoints


def reference_pixels(image: torch.Tensor, height: int, width: int, device: torch.device) -> ReferencePixels:
    """(H, W, 3) uint8 reference (already square) -> the preprocessed inputs of :func:`fuse_reference`."""
    image01 = conditioning.to_nchw(image, device)
    mean, std = conditioning.clip_normalization()
    model_res = conditioning.resize(image01, height, width)
    return ReferencePixels(
        clip=conditioning.clip_pixels(image01, mean, std),
        vae=model_res * 2 - 1,
        keypoints=conditioning.keypoint_pixels(image01),
    )


@torch.inference_mode()
def fuse_reference(
    models: Any,
    pixels: ReferencePixels,
    dtype: torch.dtype,
    min_face_box: int,
    project: Callable[[list[torch.Tensor]], list[torch.Tensor]],
) -> ReferenceState:
    """Run the CLIP encoder, VAE encoder, reference UNet, motion extractor and motion encoder on the reference;
    ``project`` (the window step's ``project_reference``) turns the attention features into the step's keys/values."""
    encoder = models.image_encoder
    encoder_dtype = next(encoder.parameters()).dtype
    # the CLIP encoder may run in its own dtype (fp32 by default); its output is cast to the pipeline dtype
    embeddings = encoder(pixels.clip.to(encoder_dtype)).image_embeds.to(dtype)[:, None]  # (1, 1, D)
    vae = models.vae
    latents = vae.encode(pixels.vae.to(vae.dtype)).latent_dist.mean * vae.config.scaling_factor
    latents = latents.to(dtype)
    features = [f.to(dtype) for f in feature_extractor(models)(latents, embeddings)]
    keys_values = [kv.to(dtype) for kv in project(features)]
    info = models.motion_extractor(pixels.keypoints)
    face = pixels.face
    if face is None:
        height, width = pixels.vae.shape[-2:]
        boxes = face_boxes(driving_keypoints(info), height, width, min_face_box)
        face = conditioning.crop_faces(pixels.vae, boxes)
    motion = models.motion_encoder(face[:, :, None].to(dtype))  # (1, 1, 32, 16)
    return ReferenceState(embeddings, latents, features, keys_values, info, motion.to(dtype))
