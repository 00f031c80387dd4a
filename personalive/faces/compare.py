"""The comparison video's frames: reference | driving frame (face square, face patch, keypoints) | output.

All three panels have the model's height; the driving panel keeps the video's aspect ratio, so a wide clip shows
where in the whole frame the face was found. The width is rounded up to an even number (yuv420p).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SQUARE_COLOUR = (0, 255, 0)  # the square the motion extractor saw
PATCH_COLOUR = (255, 255, 0)  # the motion encoder's face patch
POINT_RADIUS = 3


class CompareLayout:
    """Fixed panel sizes for one run: reference (H x H'), driving (H x Wd), output (H x W)."""

    def __init__(self, height: int, width: int, drive_size: tuple[int, int], reference: np.ndarray) -> None:
        self.height, self.width = height, width
        dh, dw = drive_size
        self.drive_scale = height / dh
        self.drive_width = max(2, round(dw * self.drive_scale))
        ref = Image.fromarray(np.ascontiguousarray(reference))
        ref_width = max(1, round(ref.width * height / ref.height))
        self.reference = np.asarray(ref.resize((ref_width, height), Image.BILINEAR))
        total = self.reference.shape[1] + self.drive_width + width
        self.total_width = total + total % 2

    def panel_image(self, rgb: np.ndarray) -> np.ndarray:
        """A driving frame resized to the panel (height x drive_width)."""
        if rgb.shape[:2] == (self.height, self.drive_width):
            return rgb
        image = Image.fromarray(np.ascontiguousarray(rgb))
        return np.asarray(image.resize((self.drive_width, self.height), Image.BILINEAR))

    def driving_panel(
        self,
        rgb: np.ndarray,
        square: tuple[float, float, float] | None,
        patch: tuple[float, float, float, float] | None,
        points: np.ndarray | None,
        colours: tuple[tuple[int, int, int], ...] = ((255, 0, 0),),
    ) -> np.ndarray:
        """The driving frame (any size, or already :meth:`panel_image`) scaled to the panel, with its boxes and
        keypoints given in the original frame's pixels; point ``i`` is drawn in ``colours[i]`` (the last repeats)."""
        s = self.drive_scale
        image = Image.fromarray(np.array(self.panel_image(rgb)))
        draw = ImageDraw.Draw(image)
        if square is not None:
            x, y, side = square
            draw.rectangle([x * s, y * s, (x + side) * s - 1, (y + side) * s - 1], outline=SQUARE_COLOUR, width=2)
        if patch is not None:
            x1, y1, x2, y2 = patch
            draw.rectangle([x1 * s, y1 * s, x2 * s - 1, y2 * s - 1], outline=PATCH_COLOUR, width=1)
        if points is not None:
            for i, (px, py) in enumerate(np.asarray(points) * s):
                colour, r = colours[min(i, len(colours) - 1)], POINT_RADIUS
                draw.ellipse([px - r, py - r, px + r, py + r], fill=tuple(colour))
        return np.asarray(image)

    def compose(self, driving_panel: np.ndarray, output: np.ndarray) -> np.ndarray:
        """(H, total_width, 3) uint8: reference | driving panel | output, black filler column if odd."""
        out = np.zeros((self.height, self.total_width, 3), dtype=np.uint8)
        a = self.reference.shape[1]
        b = a + driving_panel.shape[1]
        out[:, :a] = self.reference
        out[:, a:b] = driving_panel
        out[:, b : b + output.shape[1]] = output
        return out


def square_to_frame(
    points: np.ndarray, square: tuple[int, int, int] | None, frame_size: tuple[int, int], model_size: tuple[int, int]
) -> np.ndarray:
    """Points in model-square pixels -> driving-frame pixels, for a face/centre square (or a stretched frame)."""
    mh, mw = model_size
    pts = np.asarray(points, dtype=np.float64)
    if square is None:  # the whole frame was resized to the model's size
        fh, fw = frame_size
        return pts * np.array([fw / mw, fh / mh])
    x, y, side = square
    return pts * np.array([side / mw, side / mh]) + np.array([x, y])
