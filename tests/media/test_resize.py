"""Model-resolution preprocessing: center crop (default), pad, stretch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from personalive.media.resize import crop_box, fit_to_model


def _frame(h, w):
    return torch.from_numpy(np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _reference_resize(x, h, w):
    y = F.interpolate(x.permute(2, 0, 1)[None].double(), size=(h, w), mode="bilinear", antialias=True)
    return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)


def test_center_crop_equals_crop_then_resize():
    frame = _frame(72, 96)
    assert crop_box(72, 96, 64, 64) == (0, 12, 72, 72)
    out = fit_to_model(frame, 64, 64, "center")
    expected = _reference_resize(frame[:, 12:84], 64, 64)
    assert out.shape == (64, 64, 3) and out.dtype == torch.uint8
    assert (out.int() - expected.int()).abs().max() <= 1


def test_tall_frame_crop_is_centered():
    assert crop_box(100, 40, 64, 64) == (30, 0, 40, 40)


def test_pad_letterboxes_with_black():
    frame = torch.full((32, 64, 3), 200, dtype=torch.uint8)
    out = fit_to_model(frame, 64, 64, "pad")
    assert (out[:16] == 0).all() and (out[48:] == 0).all() and (out[16:48] == 200).all()


def test_stretch_keeps_everything():
    frame = _frame(30, 90)
    out = fit_to_model(frame, 64, 64, "stretch")
    assert (out.int() - _reference_resize(frame, 64, 64).int()).abs().max() <= 1


def test_same_size_is_identity_and_bad_input():
    frame = _frame(64, 64)
    assert torch.equal(fit_to_model(frame, 64, 64), frame)
    with pytest.raises(ValueError, match="crop mode"):
        fit_to_model(frame, 64, 64, "zoom")
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        fit_to_model(frame.float(), 32, 32)
