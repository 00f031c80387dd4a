"""Driving preparation by a plan: off = today's frames bit for bit; squares, patches and smoothing applied."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from personalive.backends.eager import EagerWindowStep
from personalive.config import RunConfig
from personalive.faces.crop import crop_square, patch_pixels
from personalive.faces.smoothing import jitter
from personalive.media.resize import fit_to_model
from personalive.pipeline import keypoints as K
from personalive.pipeline.animate import Animator
from personalive.pipeline.driving import DrivingPreparer
from personalive.pipeline.framing import DrivingPlan

from .stubs import stub_models

SIZE = 64


def _animator() -> Animator:
    config = RunConfig()
    config.generation.height = config.generation.width = SIZE
    models = stub_models()
    return Animator(models, config, EagerWindowStep.from_models(models, config, models.device))


def _wide_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=(72, 128, 3))
    return [np.clip(base + 3 * i, 0, 255).astype(np.uint8) for i in range(n)]


def _run(an: Animator, chunks) -> torch.Tensor:
    ref = an.fuse_reference(torch.full((SIZE, SIZE, 3), 120, dtype=torch.uint8))
    return torch.stack(list(an.animate_prepared(ref, chunks, torch.Generator().manual_seed(3))))


def test_no_plan_is_bit_identical_to_the_animator_on_fitted_frames():
    frames = _wide_frames(9)
    an = _animator()
    before = _run(an, DrivingPreparer(an, None).chunks(frames))
    an2 = _animator()
    ref = an2.fuse_reference(torch.full((SIZE, SIZE, 3), 120, dtype=torch.uint8))
    fitted = [fit_to_model(f, SIZE, SIZE, "center") for f in frames]
    today = torch.stack(
        [(f.float() / 255).permute(2, 0, 1) for f in an2.animate(ref, fitted, torch.Generator().manual_seed(3))]
    )
    assert before.shape == (9, 3, SIZE, SIZE)
    torch.testing.assert_close((before * 255).round() / 255, today, rtol=0, atol=0)
    # and smoothing 0 changes nothing
    an3 = _animator()
    prep = DrivingPreparer(an3, None)
    prep.smooth_keypoints(frames, 0.0)
    assert prep.info is None
    torch.testing.assert_close(_run(an3, prep.chunks(frames)), before, rtol=0, atol=0)


def test_plan_squares_and_patches_are_what_the_networks_see():
    frames = _wide_frames(5)
    squares = np.array([[10 + i, 2, 60] for i in range(5)])
    patches = np.array([[20, 5, 70, 50]] * 5)
    prep = DrivingPreparer(_animator(), DrivingPlan(frames=5, squares=squares, patches=patches, face_crop="landmarks"))
    for i, f in enumerate(frames):
        torch.testing.assert_close(prep.model_frame(f, i), crop_square(f, tuple(squares[i]), SIZE), rtol=0, atol=0)
    inputs = prep.prepare(frames[:4], 0)
    want = torch.stack([patch_pixels(f[5:50, 20:70]) for f in frames[:4]])
    torch.testing.assert_close(inputs.faces, want, rtol=0, atol=0)
    assert len(inputs) == 4 and inputs.info["kp"].shape == (4, 63)


def test_smoothing_steadies_noisy_driving_keypoints():
    """A clip whose brightness flickers frame to frame (the stub extractor's pose follows it): jitter drops."""
    rng = np.random.default_rng(1)
    frames = [
        np.full((64, 64, 3), int(v), dtype=np.uint8)
        for v in 128 + 40 * np.sin(np.arange(40) / 6) + rng.normal(0, 12, 40)
    ]
    raw_prep = DrivingPreparer(_animator(), None)
    raw = torch.cat([K.driving_keypoints(c.info) for c in raw_prep.chunks(frames)])
    prep = DrivingPreparer(_animator(), None)
    prep.smooth_keypoints(frames, 2.0)
    assert prep.info is not None and prep.info["angles"].shape == (40, 3)
    smooth = torch.cat([K.driving_keypoints(c.info) for c in prep.chunks(frames)])
    before, after = jitter(raw), jitter(smooth)
    assert before > 0 and after < before / 4, (before, after)


@pytest.mark.parametrize("n", [1, 6])
def test_smoothed_run_gives_one_frame_per_input(n):
    frames = _wide_frames(n)
    an = _animator()
    prep = DrivingPreparer(an, None)
    prep.smooth_keypoints(frames, 1.5)
    assert _run(an, prep.chunks(frames)).shape[0] == n


def test_without_the_face_finder_auto_is_todays_behaviour_and_face_is_refused(monkeypatch):
    from pathlib import Path

    from personalive.errors import MissingDependencyError
    from personalive.pipeline import framing

    monkeypatch.setattr(framing, "faces_available", lambda: False)
    opened = []
    plan = framing.plan_driving(lambda: opened.append(1) or iter([]), Path("d.mp4"), "auto", "auto")
    assert (plan.driving_crop, plan.face_crop, plan.squares, plan.warnings, opened) == (
        "none",
        "keypoints",
        None,
        [],
        [],
    )
    ref = framing.frame_reference(np.zeros((8, 8, 3), np.uint8), Path("r.png"), "auto", "auto")
    assert (ref.square, ref.patch, ref.warnings) == (None, None, [])
    for call in (
        lambda: framing.plan_driving(lambda: iter([]), Path("d.mp4"), "face", "keypoints"),
        lambda: framing.plan_driving(lambda: iter([]), Path("d.mp4"), "none", "landmarks"),
        lambda: framing.frame_reference(np.zeros((8, 8, 3), np.uint8), Path("r.png"), "face", "keypoints"),
    ):
        with pytest.raises(MissingDependencyError, match=r"personalive\[faces\]"):
            call()
