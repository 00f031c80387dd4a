"""The whole streaming run against upstream's recorded Pose2VideoPipeline_Stream call (same weights, inputs, noise).

Upstream preprocesses with PIL (Lanczos resizes) and is given mediapipe-style face crops; we preprocess in torch
and crop faces from keypoints. To compare everything after preprocessing, this test prepares the network inputs
the way upstream's VaeImageProcessor does (PIL, Lanczos) and feeds the given face crops, then runs our reference
fusion, conditioning, window loop, keyframes and decoding unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from personalive.backends.eager import EagerWindowStep
from personalive.config import RunConfig
from personalive.pipeline.animate import Animator, DrivingInputs
from personalive.pipeline.reference import ReferencePixels, fuse_reference


def _pil_resize(images_u8: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) in [0, 1] via PIL Lanczos (diffusers VaeImageProcessor)."""
    from PIL import Image

    out = [np.asarray(Image.fromarray(x).resize((size, size), resample=Image.LANCZOS)) for x in images_u8]
    return torch.from_numpy(np.stack(out).astype(np.float32) / 255.0).permute(0, 3, 1, 2)


@pytest.mark.oracle
@pytest.mark.slow
def test_streaming_run_matches_upstream(oracle_dir):
    from personalive.weights import load_models

    bundle = torch.load(oracle_dir / "bundle_pipeline.pt", weights_only=False)
    meta, inputs, pre = bundle["meta"], bundle["inputs"], bundle["pre"]
    assert meta["dtype"] == "fp32"
    models = load_models(oracle_dir / "pretrained_weights", torch.float32, "cpu")
    config = RunConfig()
    config.generation.height, config.generation.width = meta["height"], meta["width"]
    animator = Animator(models, config, EagerWindowStep.from_models(models, config, models.device))

    # reference: upstream's preprocessed tensors (CLIP pixels, VAE input, 256 keypoint input, the given face)
    kp_ref = bundle["windows"][0]["ref_cond_tensor"]
    pixels = ReferencePixels(
        clip=pre["clip_pixel_values"],
        vae=pre["vae_encode_input"],
        keypoints=kp_ref,
        face=pre["motion_encoder_in"][:, :, 0],
    )
    state = fuse_reference(
        models, pixels, torch.float32, config.generation.min_face_box, animator.step.project_reference
    )
    torch.testing.assert_close(state.embeddings[:, 0], pre["clip_image_embeds"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state.motion, pre["motion_encoder_out"], atol=1e-4, rtol=1e-4)

    # driving: PIL-preprocessed keypoint inputs (as upstream) and the given faces
    cond = _pil_resize(inputs["driving"].numpy(), 256)
    torch.testing.assert_close(cond[:4], bundle["windows"][0]["tgt_cond_tensor"], atol=1e-6, rtol=0)
    faces = _pil_resize(inputs["faces"].numpy(), 224) * 2 - 1
    with torch.no_grad():
        driving = DrivingInputs(models.motion_extractor(cond), faces)

    noise = iter(bundle["noise"])
    drawn: list[tuple[int, ...]] = []

    def given(shape):
        drawn.append(tuple(shape))
        return next(noise)

    frames = list(animator.animate_prepared(state, [driving], noise_source=given))
    video = torch.stack(frames, dim=1)[None]  # (1, 3, N, H, W)
    assert video.shape == bundle["video"].shape
    assert len(drawn) == len(bundle["noise"])
    err = (video - bundle["video"]).abs().max().item()
    print(f"video max abs error vs upstream: {err:.2e}")
    assert err < 1e-3, f"video max abs error {err:.2e}"
    assert animator.stats.keyframe_windows == [h["window"] for h in bundle["hkf"]]
