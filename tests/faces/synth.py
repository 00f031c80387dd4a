"""Real public-domain photos (tests/faces/data, see its README) and synthetic motion made from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).parent / "data"

# Face boxes (x1, y1, x2, y2) read off the photos by eye on a 10 px grid: cheek (or ear) to cheek (or nose
# tip), hairline to chin. Not produced by the finder.
HAND_BOXES = {
    "astronaut": (182, 75, 273, 175),
    "camera": (184, 118, 257, 200),
}

# The astronaut's face region used as the moving "head" of the synthetic clips, and its hand box in it.
HEAD_REGION = (145, 40, 305, 200)  # 160 x 160
HEAD_BOX = (182 - 145, 75 - 40, 273 - 145, 175 - 40)


def photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(DATA / f"{name}.jpg").convert("RGB"))


def head() -> np.ndarray:
    x1, y1, x2, y2 = HEAD_REGION
    return photo("astronaut")[y1:y2, x1:x2]


def wide_frame(x: int, y: int, scale: float, size=(270, 480)) -> tuple[np.ndarray, tuple[float, ...]]:
    """A grey 16:9 frame with the astronaut's head at (x, y) scaled by ``scale``, and its expected face box."""
    frame = np.full((*size, 3), 128, dtype=np.uint8)
    side = round(160 * scale)
    patch = np.asarray(Image.fromarray(head()).resize((side, side), Image.BILINEAR))
    h, w = min(side, size[0] - y), min(side, size[1] - x)  # a head past the right/bottom edge is cut
    frame[y : y + h, x : x + w] = patch[:h, :w]
    s = side / 160
    box = (x + HEAD_BOX[0] * s, y + HEAD_BOX[1] * s, x + HEAD_BOX[2] * s, y + HEAD_BOX[3] * s)
    return frame, box


def wide_clip(frames: int = 24) -> tuple[list[np.ndarray], list[tuple[float, ...]]]:
    """The head drifting from the left third to the right, bobbing and zooming: frames and expected boxes."""
    images, boxes = [], []
    for i in range(frames):
        u = i / max(frames - 1, 1)
        scale = 0.9 + 0.25 * np.sin(np.pi * u)
        x = round(20 + 260 * u)
        y = round(40 + 30 * np.sin(2 * np.pi * u))
        image, box = wide_frame(x, y, scale)
        images.append(image)
        boxes.append(box)
    return images, boxes
