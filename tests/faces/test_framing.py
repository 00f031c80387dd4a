"""The face pass over driving clips and the reference photo, with the real face finder (needs the extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from personalive.errors import InputError
from personalive.faces.boxes import iou
from personalive.pipeline.framing import frame_reference, plan_driving
from tests.faces.synth import HAND_BOXES, photo, wide_clip

pytestmark = pytest.mark.faces


def test_plan_tracks_the_face_of_a_wide_clip():
    frames, expected = wide_clip(12)
    frames[5] = np.full_like(frames[5], 128)
    plan = plan_driving(lambda: iter(frames), Path("clip.mp4"), "auto", "auto")
    assert plan.driving_crop == "face" and plan.face_crop == "landmarks"
    assert plan.frames == 12 and plan.face_misses == 1 and plan.landmark_misses == 1
    assert plan.squares.shape == (12, 3) and plan.patches.shape == (12, 4)
    assert any("1 of 12 frames" in w and "clip.mp4" in w for w in plan.warnings)
    for i, (x, y, side) in enumerate(plan.squares):
        if i == 5:
            continue
        want = expected[i]
        cx, cy = (want[0] + want[2]) / 2, (want[1] + want[3]) / 2
        assert abs(x + side / 2 - cx) < 0.1 * side and abs(y + side / 2 - cy) < 0.1 * side, i
        assert 0 <= x and x + side <= 480 and 0 <= y and y + side <= 270
        x1, y1, x2, y2 = plan.patches[i]
        assert iou((x1, y1, x2, y2), want) > 0.5, i
    np.testing.assert_array_equal(plan.patches[5], plan.patches[4])  # held


def test_plan_without_any_face_falls_back_with_a_warning():
    frames = [np.full((90, 160, 3), v, dtype=np.uint8) for v in (40, 80, 120)]
    plan = plan_driving(lambda: iter(frames), Path("grey.mp4"), "auto", "auto")
    assert plan.squares is None and plan.driving_crop == "none" and plan.face_crop == "keypoints"
    assert len(plan.warnings) == 2 and all(w.startswith("grey.mp4: no face") for w in plan.warnings)


def test_center_and_keypoints_need_no_face_pass():
    frames = [np.full((90, 160, 3), 40, dtype=np.uint8)]
    plan = plan_driving(lambda: iter(frames), Path("x.mp4"), "center", "keypoints")
    assert plan.frames == 0 and plan.driving_crop == "center" and plan.warnings == []


def test_reference_framing_on_real_photos():
    framing = frame_reference(photo("astronaut"), Path("astronaut.jpg"), "auto", "landmarks")
    x, y, side = framing.square
    hand = HAND_BOXES["astronaut"]
    assert x <= hand[0] and y <= hand[1] and x + side >= hand[2] and y + side >= hand[3]
    assert 1.6 * (hand[3] - hand[1]) < side < 2.6 * (hand[3] - hand[1])
    assert framing.patch is not None and framing.warnings == []
    cat = frame_reference(photo("chelsea"), Path("chelsea.jpg"), "auto", "landmarks")
    assert cat.square is None and cat.patch is None and cat.warnings[0].startswith("chelsea.jpg: no face found")
    with pytest.raises(InputError, match=r"chelsea.jpg: no face found in the reference"):
        frame_reference(photo("chelsea"), Path("chelsea.jpg"), "face", "keypoints")
