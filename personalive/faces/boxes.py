"""Face boxes: ``(x1, y1, x2, y2)`` in pixels, x to the right, y down, ``x2``/``y2`` exclusive for integer boxes.

Upstream's offline script (``src/utils/util.py``: ``crop_face`` and ``scale_bb``) crops the motion encoder's
face image as follows, reproduced here step for step:

1. landmark pixel coordinates ``int(x * width)``, ``int(y * height)`` (truncation toward zero) of all 468
   FaceMesh landmarks; their bounding box (min and max);
2. a square of side ``1.1 * max(box width, box height)`` about the box centre, in floats;
3. each side clamped on its own: left and top to >= 0, right to <= width - 1, bottom to <= height - 1 (so a
   face at the border gives a non-square patch, and the last row/column is never included);
4. the patch ``image[int(top):int(bottom), int(left):int(right)]``.
"""

from __future__ import annotations

import numpy as np

LANDMARK_SCALE = 1.1  # upstream crop_face: scale_bb(face_box, scale=1.1)

# The framing the networks were trained on: in upstream's demo reference and driving frames (512x512) the
# FaceMesh box is about 240 x 260 px, i.e. the square frame is ~2x the face's larger side, centred on the face.
SQUARE_SCALE = 2.0
MIN_SQUARE = 16  # smallest square crop side in pixels (a tiny detection is still a usable crop)


def landmark_box(landmarks: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """(N, 2) normalised landmark (x, y) -> upstream's integer bounding box (min x, min y, max x, max y)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    xs = np.trunc(pts[:, 0] * width).astype(np.int64)  # Python's int(): truncation toward zero
    ys = np.trunc(pts[:, 1] * height).astype(np.int64)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def scale_box(
    box: tuple[float, float, float, float], scale: float, height: int, width: int
) -> tuple[float, float, float, float]:
    """Upstream ``scale_bb``: a square of ``scale * max(w, h)`` about the box centre, each side clamped alone."""
    left, top, right, bottom = (float(v) for v in box)
    length = max(right - left, bottom - top) * scale
    cx, cy = (left + right) * 0.5, (top + bottom) * 0.5
    return (
        max(0.0, cx - length / 2),
        max(0.0, cy - length / 2),
        min(width - 1.0, cx + length / 2),
        min(height - 1.0, cy + length / 2),
    )


def landmark_crop_box(landmarks: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """The integer slice ``(x1, y1, x2, y2)`` of upstream's ``crop_face`` patch for these landmarks."""
    left, top, right, bottom = scale_box(landmark_box(landmarks, height, width), LANDMARK_SCALE, height, width)
    return int(left), int(top), int(right), int(bottom)


def square_box(
    box: tuple[float, float, float, float] | np.ndarray, height: int, width: int, scale: float = SQUARE_SCALE
) -> tuple[int, int, int]:
    """A face box -> the square ``(x, y, side)`` of ``scale`` x its larger side about its centre, inside the frame.

    The square is shifted (never cut) to stay inside the frame, and shrunk to the frame's short side when it
    would not fit: the crop never needs padding, and pasting it back is the exact inverse.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * scale
    side = int(round(min(max(side, MIN_SQUARE), height, width)))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    x = int(round(cx - side / 2))
    y = int(round(cy - side / 2))
    x = min(max(x, 0), width - side)
    y = min(max(y, 0), height - side)
    return x, y, side


def centre_square(height: int, width: int) -> tuple[int, int, int]:
    """The largest centred square ``(x, y, side)`` (today's ``media.crop=center`` for square models)."""
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
