"""PoseGuider, MotionEncoder, MotionExtractor, VAE and CLIP wrappers: shapes, sizes, dtypes, oracle parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from personalive.model_sizes import preset
from personalive.models.image_encoder import build_image_encoder, drop_legacy_buffers
from personalive.models.motion_encoder import MotionEncoder
from personalive.models.motion_encoder_fan import sincos_2d_table
from personalive.models.motion_extractor import MotionExtractor
from personalive.models.pose_guider import PoseGuider
from personalive.models.vae import build_vae, convert_legacy_vae_keys
from personalive.pipeline.keypoints import head_pose_degrees
from personalive.random_weights import randomize_

TINY = preset("tiny")
FULL = preset("full")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def _random(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    randomize_(module, seed)
    return module.eval()


@torch.no_grad()
def test_pose_guider_shape_and_framewise():
    guider = _random(PoseGuider(**TINY["extra"]["pose_guider"]))
    x = torch.rand(2, 3, 3, 64, 64)
    out = guider(x)
    assert guider.downscale_factor == 32
    assert out.shape == (2, 32, 3, 2, 2)
    # frames are independent: one frame alone gives the same result
    assert torch.allclose(guider(x[:, :, 1:2]), out[:, :, 1:2], atol=1e-6)


@torch.no_grad()
def test_motion_encoder_shape_and_pe():
    encoder = _random(MotionEncoder(**TINY["extra"]["motion_encoder"]))
    out = encoder(torch.rand(1, 3, 2, 224, 224) * 2 - 1)
    assert out.shape == (1, 2, 32, 16)
    assert encoder.pe.shape == (1, 32, 16)
    # pe: 1D sin-cos of the token index, sin half then cos half (position 0 -> zeros then ones)
    assert torch.equal(encoder.pe[0, 0], torch.tensor([0.0] * 8 + [1.0] * 8))
    assert "model.att_1.pos_embed.pos_embed" not in encoder.state_dict()  # non-persistent, as upstream


def test_patch_positions_match_diffusers_table():
    """Our float64 sin-cos table equals diffusers' own get_2d_sincos_pos_embed (computed independently)."""
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    reference = get_2d_sincos_pos_embed(32, 28, base_size=28, interpolation_scale=1.0, output_type="np")
    assert np.allclose(sincos_2d_table(32, 28).numpy(), np.asarray(reference, dtype=np.float32), atol=1e-6)


@torch.no_grad()
def test_motion_extractor_outputs_and_degrees():
    extractor = _random(MotionExtractor(**TINY["extra"]["motion_extractor"]))
    out = extractor(torch.rand(3, 3, 256, 256))
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"pitch": (3, 66), "yaw": (3, 66), "roll": (3, 66), "t": (3, 3), "scale": (3, 1), "kp": (3, 63)}
    logits = torch.randn(3, 66)
    expected = (torch.softmax(logits, 1) * torch.arange(66.0)).sum(1) * 3 - 97.5
    assert torch.allclose(head_pose_degrees(logits), expected, atol=1e-4)
    assert set(k.split(".")[0] for k in extractor.state_dict()) == {"detector", "idx_tensor"}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@torch.no_grad()
def test_small_networks_run_in_half_precision(dtype):
    guider = _random(PoseGuider(**TINY["extra"]["pose_guider"]))
    extractor = _random(MotionExtractor(**TINY["extra"]["motion_extractor"]))
    canvas, image = torch.rand(1, 3, 1, 64, 64), torch.rand(2, 3, 256, 256)
    ref_pose, ref_kp = guider(canvas), extractor(image)["kp"]
    guider.to(dtype)
    extractor.to(dtype)
    pose, kp = guider(canvas.to(dtype)), extractor(image)["kp"]
    assert pose.dtype == dtype and kp.dtype == dtype
    tolerance = 2e-2 if dtype == torch.float16 else 1e-1
    assert _rel(pose, ref_pose) < tolerance
    assert _rel(kp, ref_kp) < tolerance


def _params_m(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)


def test_full_size_parameter_counts_on_meta():
    with torch.device("meta"):
        counts = {
            "vae": _params_m(build_vae(FULL["vae"])),
            "clip": _params_m(build_image_encoder(FULL["clip"])),
            "motion_encoder": _params_m(MotionEncoder(**FULL["extra"]["motion_encoder"])),
            "motion_extractor": _params_m(MotionExtractor(**FULL["extra"]["motion_extractor"])),
            "pose_guider": _params_m(PoseGuider(**FULL["extra"]["pose_guider"])),
        }
    assert counts == {"vae": 83.7, "clip": 304.0, "motion_encoder": 61.6, "motion_extractor": 28.1, "pose_guider": 1.1}


def test_legacy_vae_keys_are_converted():
    vae = build_vae(TINY["vae"])
    names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    legacy = {}
    for key, value in vae.state_dict().items():
        for new, old in names.items():
            key = key.replace(f".{new}.", f".{old}.")
        legacy[key] = value
    assert any(".query." in k for k in legacy)
    converted = convert_legacy_vae_keys(legacy)
    assert converted.keys() == vae.state_dict().keys()
    vae.load_state_dict(converted, strict=True)


def test_clip_position_ids_of_old_checkpoints_are_dropped():
    encoder = build_image_encoder(TINY["clip"])
    state = dict(encoder.state_dict())
    state["vision_model.embeddings.position_ids"] = torch.arange(50)[None]
    encoder.load_state_dict(drop_legacy_buffers(state), strict=True)


# ------------------------------------------------------------------------------------------- oracle parity
def _oracle(oracle_dir):
    bundle = torch.load(oracle_dir / "bundle_modules.pt", weights_only=False)
    extra = json.loads((oracle_dir / "pretrained_weights" / "oracle_config.json").read_text())["extra"]
    return bundle, extra, oracle_dir / "pretrained_weights"


def _load(module, path):
    module.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"), strict=True)
    return module.eval()


@pytest.mark.oracle
@torch.no_grad()
def test_oracle_pose_guider(oracle_dir):
    bundle, extra, root = _oracle(oracle_dir)
    guider = _load(PoseGuider(**extra["pose_guider"]), root / "personalive" / "pose_guider.pth")
    record = bundle["pose_guider"]
    assert _rel(guider(record["in_u8_over_255"].float() / 255), record["out"]) < 1e-4


@pytest.mark.oracle
@torch.no_grad()
def test_oracle_motion_encoder(oracle_dir):
    bundle, extra, root = _oracle(oracle_dir)
    encoder = _load(MotionEncoder(**extra["motion_encoder"]), root / "personalive" / "motion_encoder.pth")
    record = bundle["motion_encoder"]  # frames are independent: 2 of the 4 recorded frames keep it fast
    assert _rel(encoder(record["in"][:, :, 1:3]), record["out"][:, 1:3]) < 1e-4
    assert len(record["nonpersistent_pos_embed"]) == 3
    for name, table in record["nonpersistent_pos_embed"].items():
        assert torch.equal(encoder.get_buffer(name), table), name


@pytest.mark.oracle
@torch.no_grad()
def test_oracle_motion_extractor(oracle_dir):
    bundle, extra, root = _oracle(oracle_dir)
    extractor = _load(MotionExtractor(**extra["motion_extractor"]), root / "personalive" / "motion_extractor.pth")
    record = bundle["motion_extractor"]
    out = extractor(record["in"])
    for key, expected in record["detector_out"].items():
        assert _rel(out[key], expected) < 1e-4, key


@pytest.mark.oracle
@torch.no_grad()
def test_oracle_vae_and_clip(oracle_dir):
    bundle, _, root = _oracle(oracle_dir)
    vae_dir, clip_dir = root / "sd-vae-ft-mse", root / "sd-image-variations-diffusers" / "image_encoder"
    vae = _load(build_vae(json.loads((vae_dir / "config.json").read_text())), vae_dir / "diffusion_pytorch_model.bin")
    record = bundle["vae"]
    assert _rel(vae.encode(record["encode_in"]).latent_dist.mean, record["encode_latent_mean"]) < 1e-4
    assert _rel(vae.decode(record["decode_in"][:2]).sample, record["decode_out"][:2]) < 1e-4
    clip = build_image_encoder(json.loads((clip_dir / "config.json").read_text()))
    clip = _load(clip, clip_dir / "pytorch_model.bin")
    record = bundle["image_encoder"]
    assert _rel(clip(record["pixel_values"]).image_embeds, record["image_embeds"]) < 1e-4
