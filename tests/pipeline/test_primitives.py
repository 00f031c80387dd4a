"""Scheduler, keypoint math, drawing and crops: against upstream's recorded outputs and independent references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from personalive.config import GenerationConfig, SchedulerConfig
from personalive.pipeline import keypoints as K
from personalive.pipeline.conditioning import crop_faces, lerp_frames
from personalive.pipeline.scheduler import StaggeredDDIM, ddim_step, staggered_timesteps


def _modules(oracle_dir):
    return torch.load(oracle_dir / "bundle_modules.pt", weights_only=False)


def test_staggered_timesteps_default_is_upstream():
    assert staggered_timesteps(1000, 4) == ([999, 666, 333, 0], 333)
    assert staggered_timesteps(1000, 1) == ([999], 1000)
    sched = StaggeredDDIM(SchedulerConfig(), GenerationConfig())
    assert sched.call_timesteps(0).tolist() == [0] * 4 + [333] * 4 + [666] * 4 + [999] * 4
    assert sched.startup_timesteps().tolist() == [0] * 4 + [333] * 4 + [666] * 4
    assert sched.padding_frames == 12


def test_two_calls_per_window_cover_every_level():
    sched = StaggeredDDIM(SchedulerConfig(), GenerationConfig(inference_steps=8, adaptive_steps=4, window=2))
    assert sched.jump == 2
    levels = sched.timesteps
    call0, call1 = sched.call_timesteps(0), sched.call_timesteps(1)
    # one step of step_length takes every frame of call 0 to its level in call 1 (same frame position)
    torch.testing.assert_close(call0 - sched.step_length, call1)
    assert sorted(set(call0.tolist()) | set(call1.tolist())) == sorted(levels)
    assert call1.tolist()[:2] == [levels[-1]] * 2


@pytest.mark.oracle
def test_scheduler_matches_upstream(oracle_dir):
    rec = _modules(oracle_dir)["scheduler"]
    sched = StaggeredDDIM(SchedulerConfig(), GenerationConfig())
    torch.testing.assert_close(sched.alphas_cumprod, rec["alphas_cumprod"], atol=0, rtol=0)
    t = rec["timesteps"]
    coef = sched.step_coefficients(t)
    # upstream's step works on (F, C, H, W); ours on (B, C, F, H, W)
    sample = rec["step_sample"].permute(1, 0, 2, 3)[None]
    eps = rec["step_model_output"].permute(1, 0, 2, 3)[None]
    prev, x0 = ddim_step(eps, sample, coef)
    torch.testing.assert_close(prev[0].permute(1, 0, 2, 3), rec["step_prev_sample"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(x0[0].permute(1, 0, 2, 3), rec["step_pred_original_sample"], atol=1e-6, rtol=1e-6)
    noisy = sched.add_noise(rec["add_noise_original"], rec["add_noise_noise"], t)
    torch.testing.assert_close(noisy, rec["add_noise_out"], atol=1e-6, rtol=1e-6)


@pytest.mark.oracle
def test_draw_keypoints_matches_upstream(oracle_dir):
    rec = _modules(oracle_dir)["draw_keypoints"]
    canvas = K.draw_keypoints(rec["keypoints"], 512, 512)
    assert canvas.shape == (4, 3, 512, 512)
    assert torch.equal((canvas * 255).round().to(torch.uint8), rec["canvas_u8"])


def test_draw_keypoints_disc_area_and_colour():
    kps = torch.zeros(1, 21, 3)
    kps[0, list(K.SELECTED_KEYPOINTS), 0] = torch.linspace(-0.8, 0.8, 7)  # 7 separate discs on one row
    canvas = K.draw_keypoints(kps, 64, 256)
    disc = sum(1 for dx in range(-4, 5) for dy in range(-4, 5) if dx * dx + dy * dy <= 16)
    red_only = (canvas[0, 0] == 1) & (canvas[0, 1] == 0) & (canvas[0, 2] == 0)
    assert int(red_only.sum()) == disc  # the first keypoint is pure red
    assert int((canvas.sum(1) > 0).sum()) == 7 * disc


@pytest.mark.oracle
def test_keypoint_math_matches_upstream(oracle_dir):
    rec = _modules(oracle_dir)["motion_extractor"]
    info = rec["detector_out"]
    torch.testing.assert_close(K.driving_keypoints(info), rec["get_kp_out"], atol=1e-5, rtol=1e-5)


def test_relative_and_startup_keypoints_are_consistent():
    g = torch.Generator().manual_seed(0)

    def info(n):
        return {
            "pitch": torch.randn(n, 66, generator=g),
            "yaw": torch.randn(n, 66, generator=g),
            "roll": torch.randn(n, 66, generator=g),
            "t": torch.randn(n, 3, generator=g) * 0.1,
            "scale": torch.rand(n, 1, generator=g) + 0.5,
            "kp": torch.randn(n, 63, generator=g) * 0.3,
        }

    ref, drive = info(1), info(4)
    first = {k: v[:1] for k, v in drive.items()}
    # the first frame's animated keypoints: reference shape, reference translation and scale, driving pose
    animated = K.animated_keypoints(ref, first, drive)
    expected0 = K.pose_keypoints(
        ref["kp"], *(K.head_pose_degrees(first[a]) for a in ("pitch", "yaw", "roll")), ref["t"], ref["scale"]
    )
    torch.testing.assert_close(animated[:1], expected0)
    # start-up: begins exactly at the reference's own keypoints, approaches the first animated frame
    start = K.startup_keypoints(ref, first, 12)
    assert start.shape == (12, 21, 3)
    torch.testing.assert_close(start[0], K.driving_keypoints(ref)[0])
    steps = (start[1:] - start[:-1]).abs().amax(dim=(1, 2))
    assert float((animated[0] - start[-1]).abs().max()) < 2 * float(steps.max()) + 1e-6


def test_face_boxes_degenerate_get_min_side():
    kps = torch.zeros(2, 21, 3)  # all keypoints at the image centre: zero-size box
    kps[1] = 5.0  # far off the image
    boxes = K.face_boxes(kps, 128, 128, min_side=32)
    side_x, side_y = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert side_x.tolist() == [32, 32] and side_y.tolist() == [32, 32]
    assert int(boxes.min()) >= 0 and int(boxes[:, 2:].max()) <= 127


def test_crop_faces_equals_slice_and_interpolate():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 96, 80, generator=g)
    boxes = torch.tensor([[5, 7, 60, 90], [0, 0, 80, 96], [30, 40, 40, 47]])
    out = crop_faces(images, boxes, size=56)
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        ref = F.interpolate(images[i : i + 1, :, y1:y2, x1:x2], size=(56, 56), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[i : i + 1], ref, atol=1e-5, rtol=1e-5)


def test_lerp_frames_matches_linspace_rule():
    a, b = torch.zeros(1, 1, 2), torch.ones(1, 1, 2) * 12
    out = lerp_frames(a, b, 12)
    assert out.shape == (1, 12, 2)
    torch.testing.assert_close(out[0, :, 0], torch.arange(12.0))
