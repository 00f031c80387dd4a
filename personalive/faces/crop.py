"""Crops: the motion encoder's landmark face patch (upstream's offline ``crop_face``) and square face crops.

The landmark patch is resized to 224x224 as upstream's ``VaeImageProcessor`` does it (PIL Lanczos on the uint8
patch, then ``[0, 255] -> [-1, 1]``), so with the same landmarks the motion encoder sees upstream's pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from personalive.faces.boxes import landmark_crop_box
from personalive.media.resize import fit_to_model

FACE_PATCH_SIZE = 224  # the motion encoder's input side


def landmark_patch(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Upstream ``crop_face``: the (h, w, 3) uint8 patch about the FaceMesh landmarks (a view of ``image``)."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = landmark_crop_box(landmarks, height, width)
    return image[y1:y2, x1:x2]


def patch_pixels(patch: np.ndarray, size: int = FACE_PATCH_SIZE) -> torch.Tensor:
    """A uint8 face patch -> (3, size, size) float32 in [-1, 1]: PIL Lanczos resize, as upstream preprocesses it."""
    from PIL import Image

    if patch.shape[0] < 1 or patch.shape[1] < 1:
        raise ValueError(f"empty face patch {patch.shape}")
    resized = Image.fromarray(np.ascontiguousarray(patch)).resize((size, size), resample=Image.LANCZOS)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return pixels * 2.0 - 1.0


def crop_square(
    image: np.ndarray | torch.Tensor, square: tuple[int, int, int], size: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The square ``(x, y, side)`` of an (H, W, 3) uint8 image resized to (size, size, 3) uint8 on ``device``."""
    x, y, side = square
    height, width = image.shape[:2]
    if not (0 <= x and 0 <= y and x + side <= width and y + side <= height and side > 0):
        raise ValueError(f"square {square} is not inside a {width}x{height} image")
    return fit_to_model(image[y : y + side, x : x + side], size, size, "center", device)
