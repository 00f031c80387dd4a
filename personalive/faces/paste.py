"""Paste a generated square frame back into the full photo through a feathered mask.

The generated frame (the model's square, e.g. 512x512) is resized to the photo's face square ``(x, y, side)``
and blended in with a mask that is 1 inside the square, except for a band of ``feather`` pixels along its
border where it falls linearly to 0. Pixels outside the square are the photo's own, untouched. The output is the
photo's size rounded down to even numbers (H.264 in yuv420p needs even sides): the last row or column of an
odd-sized photo is dropped.
"""

from __future__ import annotations

import numpy as np
import torch

from personalive.media.resize import fit_to_model

FEATHER_FRACTION = 1 / 8  # feather band as a fraction of the square's side


def even_size(height: int, width: int) -> tuple[int, int]:
    return height - height % 2, width - width % 2


def default_feather(side: int) -> int:
    return max(1, round(side * FEATHER_FRACTION))


def feather_mask(side: int, feather: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(side, side) float32 mask: 1 at least ``feather`` px from the border, falling linearly to 0 at it."""
    centres = torch.arange(side, dtype=torch.float32, device=device) + 0.5
    to_edge = torch.minimum(centres, side - centres)  # distance of each pixel centre to the nearer edge
    ramp = (to_edge / max(feather, 1)).clamp(0, 1) if feather > 0 else torch.ones_like(to_edge)
    return torch.minimum(ramp[:, None], ramp[None, :])


class PasteBack:
    """Pastes frames into one photo at one square; the photo and mask are prepared once per run."""

    def __init__(
        self,
        photo: np.ndarray | torch.Tensor,
        square: tuple[int, int, int],
        feather: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.photo = torch.as_tensor(np.array(photo, dtype=np.uint8, copy=True)).to(device)
        height, width = self.photo.shape[:2]
        x, y, side = square
        if not (0 <= x and 0 <= y and x + side <= width and y + side <= height and side > 0):
            raise ValueError(f"square {square} is not inside the {width}x{height} photo")
        self.square = square
        self.size = even_size(height, width)
        self.feather = default_feather(side) if feather is None else feather
        self.mask = feather_mask(side, self.feather, device)[..., None]  # (side, side, 1)
        self.device = device

    def __call__(self, frame: torch.Tensor) -> torch.Tensor:
        """(h, w, 3) uint8 generated frame -> (H_even, W_even, 3) uint8 photo with the frame pasted in."""
        x, y, side = self.square
        face = fit_to_model(frame, side, side, "stretch", self.device).float()
        out = self.photo.clone()
        region = out[y : y + side, x : x + side].float()
        blended = region + self.mask * (face - region)
        out[y : y + side, x : x + side] = blended.round().clamp(0, 255).to(torch.uint8)
        height, width = self.size
        return out[:height, :width].contiguous()
