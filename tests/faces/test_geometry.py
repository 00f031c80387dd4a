"""Box arithmetic, tracks, paste-back geometry and the smoothing filter (no face finder needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from personalive.faces.boxes import centre_square, landmark_box, landmark_crop_box, scale_box, square_box
from personalive.faces.crop import crop_square, landmark_patch
from personalive.faces.paste import PasteBack, even_size, feather_mask
from personalive.faces.smoothing import jitter, temporal_smooth
from personalive.faces.track import hold_misses, track_boxes


def test_landmark_box_truncates_toward_zero_like_python_int():
    # x = -0.004 * 100 = -0.4 -> int() gives 0 (not floor's -1); 0.999 * 100 = 99.9 -> 99
    marks = np.array([[-0.004, 0.5], [0.999, 0.25], [0.5, 0.755]])
    assert landmark_box(marks, height=200, width=100) == (0, 50, 99, 151)


def test_scale_box_matches_hand_computed_square_and_clamps_each_side():
    # 40 x 60 box centred at (50, 60): side 66, so (17, 27, 83, 93) before clamping
    assert scale_box((30, 30, 70, 90), 1.1, height=200, width=200) == pytest.approx((17.0, 27.0, 83.0, 93.0))
    # near the bottom-right corner of a 100x80 image: right clamped to 99, bottom to 79, left/top free
    left, top, right, bottom = scale_box((80, 60, 100, 80), 1.1, height=80, width=100)
    assert (left, top, right, bottom) == pytest.approx((79.0, 59.0, 99.0, 79.0))


def test_landmark_crop_box_and_patch():
    marks = np.array([[0.3, 0.2], [0.5, 0.6]])  # pixels (30, 20) - (50, 60) of a 100x100 image
    # 20 x 40 box, side 44 about (40, 40): (18, 18, 62, 62)
    assert landmark_crop_box(marks, 100, 100) == (18, 18, 62, 62)
    image = np.arange(100 * 100 * 3, dtype=np.int64).reshape(100, 100, 3).astype(np.uint8)
    np.testing.assert_array_equal(landmark_patch(image, marks), image[18:62, 18:62])


def test_square_box_centred_shifted_and_shrunk():
    # 50x80 face at (100, 100): side 160 about (125, 140) -> (45, 60, 160)
    assert square_box((100, 100, 150, 180), height=400, width=600) == (45, 60, 160)
    # at the left edge it is shifted right, not cut
    assert square_box((0, 100, 50, 180), height=400, width=600) == (0, 60, 160)
    # larger than the frame: shrunk to the short side
    assert square_box((0, 0, 300, 300), height=360, width=640) == (0, 0, 360)
    assert centre_square(360, 640) == (140, 0, 360)


def test_hold_misses_keeps_last_good_box_and_counts():
    a, b = (1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0)
    filled, misses = hold_misses([None, a, None, None, b, None])
    np.testing.assert_array_equal(filled, [a, a, a, a, b, b])
    assert misses == 4
    assert hold_misses([None, None]) is None
    assert track_boxes([None]) is None


def test_track_of_steady_boxes_is_exact_and_wobble_is_reduced():
    steady = [(10.0, 20.0, 110.0, 140.0)] * 12
    np.testing.assert_allclose(track_boxes(steady).boxes, np.array(steady), rtol=0, atol=1e-12)
    rng = np.random.default_rng(0)
    wobble = [tuple(np.array([10.0, 20.0, 110.0, 140.0]) + rng.normal(0, 3, 4)) for _ in range(50)]
    track = track_boxes(wobble)
    raw = torch.tensor(np.array(wobble))
    assert jitter(torch.from_numpy(track.boxes)) < 0.25 * jitter(raw)


def test_smoothing_off_is_identity_and_constant_is_kept():
    x = torch.randn(9, 21, 3)
    assert temporal_smooth(x, 0.0) is x
    const = torch.full((7, 5), 3.25)
    torch.testing.assert_close(temporal_smooth(const, 2.0), const, rtol=0, atol=1e-6)
    # a steady drift stays exact up to both ends (point reflection), also for clips shorter than the kernel
    for n in (30, 4, 2):
        ramp = 3 * torch.arange(n, dtype=torch.float64)[:, None] - 7
        torch.testing.assert_close(temporal_smooth(ramp, 1.5), ramp, rtol=0, atol=1e-9)


def test_jitter_of_noisy_keypoint_clip_before_and_after():
    """A smooth head motion plus per-frame noise: the filter cuts the acceleration figure by a large factor."""
    t = torch.arange(100, dtype=torch.float64)[:, None, None]
    base = torch.randn(1, 21, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.3
    clean = base + 0.05 * torch.sin(t / 15)  # slow motion
    noisy = clean + 0.01 * torch.randn(100, 21, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    before, after = jitter(noisy), jitter(temporal_smooth(noisy, 2.0))
    assert before > 0.02  # the noise dominates the acceleration
    assert after < before / 5
    # and the slow motion itself survives: the smoothed clip stays close to the clean one
    assert float((temporal_smooth(noisy, 2.0) - clean).abs()[10:-10].max()) < 0.02


def test_crop_square_slices_then_resizes():
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[10:60, 120:170] = 200  # the square (120, 10, 50) is uniformly 200
    out = crop_square(image, (120, 10, 50), 32)
    assert out.shape == (32, 32, 3) and out.dtype == torch.uint8
    assert int(out.min()) == 200 and int(out.max()) == 200
    with pytest.raises(ValueError, match="not inside"):
        crop_square(image, (180, 10, 50), 32)


def test_feather_mask_ramps_over_the_band():
    mask = feather_mask(20, 4)
    assert mask.shape == (20, 20)
    assert float(mask[4:16, 4:16].min()) == 1.0  # 4 px or more from every edge
    assert float(mask[0, 10]) == pytest.approx(0.5 / 4)  # border pixel centre is 0.5 px from the edge
    assert float(mask[10, 1]) == pytest.approx(1.5 / 4)
    torch.testing.assert_close(mask, mask.T)


def test_paste_back_geometry_is_exact():
    """A generated frame of one colour lands at the square; outside it the photo is untouched; odd sides dropped."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(301, 403, 3), dtype=np.uint8)
    x, y, side, feather = 150, 40, 120, 10
    paste = PasteBack(photo, (x, y, side), feather=feather)
    generated = torch.full((512, 512, 3), 17, dtype=torch.uint8)
    out = paste(generated).numpy()
    assert out.shape == (300, 402, 3) and even_size(301, 403) == (300, 402)
    inside = np.zeros(out.shape[:2], dtype=bool)
    inside[y : y + side, x : x + side] = True
    np.testing.assert_array_equal(out[~inside], photo[:300, :402][~inside])  # untouched outside the square
    core = out[y + feather : y + side - feather, x + feather : x + side - feather]
    assert (core == 17).all()  # the frame's own pixels inside the feather
    # in the band: a blend of photo and frame with the mask's weight
    m = float(feather_mask(side, feather)[0, side // 2])
    below = photo[y, x + side // 2].astype(np.float32)
    expect = np.round(below + np.float32(m) * (17 - below))
    np.testing.assert_array_equal(out[y, x + side // 2], expect.astype(np.uint8))


def test_paste_back_resizes_frame_content_to_the_square():
    photo = np.zeros((200, 200, 3), dtype=np.uint8)
    frame = torch.zeros((64, 64, 3), dtype=torch.uint8)
    frame[:, 32:] = 255  # right half white
    out = PasteBack(photo, (50, 60, 100), feather=0)(frame).numpy()
    assert (out[60:160, 50:99] == 0).all() and (out[60:160, 101:150] == 255).all()
    assert (out[:60] == 0).all() and (out[160:] == 0).all()
    with pytest.raises(ValueError, match="not inside"):
        PasteBack(photo, (150, 60, 100))
