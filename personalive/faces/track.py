"""Per-frame face boxes -> a steady track: misses hold the last good box, then a look-ahead smoothing filter.

A frame where the finder found nothing keeps the box of the last frame where it did (frames before the first
detection take the first detection: offline, the track may look ahead). The boxes are then smoothed over time
(:func:`personalive.faces.smoothing.temporal_smooth`), which removes the detector's frame-to-frame wobble; a
crop that follows that wobble would shake the whole picture the motion extractor sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from personalive.faces.smoothing import temporal_smooth

BOX_SIGMA = 2.0  # frames; ~0.1 s at 25 fps: steadies the detector without lagging real head motion


@dataclass(frozen=True)
class Track:
    """Smoothed boxes of every frame and how many frames had no face."""

    boxes: np.ndarray  # (N, 4) float64 x1, y1, x2, y2
    misses: int  # frames where the finder found no face (their box was held)

    @property
    def frames(self) -> int:
        return int(self.boxes.shape[0])


def hold_misses(boxes: Sequence[Sequence[float] | None]) -> tuple[np.ndarray, int] | None:
    """Fill frames without a box by the last good one (leading misses: the first good one). None if all miss."""
    found = [i for i, b in enumerate(boxes) if b is not None]
    if not found:
        return None
    out = np.empty((len(boxes), 4), dtype=np.float64)
    last = boxes[found[0]]
    for i, box in enumerate(boxes):
        if box is not None:
            last = box
        out[i] = last
    return out, len(boxes) - len(found)


def track_boxes(boxes: Sequence[Sequence[float] | None], sigma: float = BOX_SIGMA) -> Track | None:
    """The track of per-frame boxes (None = no face in that frame); None when no frame has a face."""
    held = hold_misses(boxes)
    if held is None:
        return None
    filled, misses = held
    smoothed = temporal_smooth(torch.from_numpy(filled), sigma).numpy()
    return Track(smoothed, misses)
