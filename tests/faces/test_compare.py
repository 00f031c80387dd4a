"""The comparison frame layout: panels placed exactly, even width, boxes and keypoints drawn where they belong."""

from __future__ import annotations

import numpy as np

from personalive.faces.compare import PATCH_COLOUR, SQUARE_COLOUR, CompareLayout, square_to_frame


def test_panels_and_drawings():
    reference = np.full((64, 64, 3), 200, dtype=np.uint8)
    layout = CompareLayout(64, 64, drive_size=(135, 241), reference=reference)  # a 241x135 driving clip
    assert layout.drive_width == round(241 * 64 / 135) == 114
    assert layout.total_width == 64 + 114 + 64 + 0 and layout.total_width % 2 == 0
    drive = np.zeros((135, 241, 3), dtype=np.uint8)
    panel = layout.driving_panel(drive, square=(100, 20, 90), patch=(120, 40, 170, 100), points=None)
    s = 64 / 135

    def near(row: int, col: float) -> set:  # colours within a pixel of a (fractional) column
        return {tuple(panel[row, c]) for c in range(int(col) - 1, int(col) + 2)}

    assert SQUARE_COLOUR in near(round(20 * s) + 10, 100 * s)  # left edge of the square
    assert PATCH_COLOUR in near(round(40 * s) + 5, 120 * s)
    assert tuple(panel[2, 2]) == (0, 0, 0)
    output = np.full((64, 64, 3), 7, dtype=np.uint8)
    frame = layout.compose(panel, output)
    assert frame.shape == (64, 242, 3)
    assert (frame[:, :64] == 200).all() and (frame[:, 64 + 114 :] == 7).all()
    np.testing.assert_array_equal(frame[:, 64 : 64 + 114], panel)


def test_keypoints_drawn_at_their_frame_position():
    layout = CompareLayout(100, 100, drive_size=(100, 200), reference=np.zeros((100, 100, 3), np.uint8))
    pts = square_to_frame(np.array([[50.0, 50.0]]), (100, 0, 100), (100, 200), (100, 100))
    assert pts.tolist() == [[150.0, 50.0]]  # the centre of the square on the right half
    panel = layout.driving_panel(np.zeros((100, 200, 3), np.uint8), None, None, pts)
    assert tuple(panel[50, 150]) == (255, 0, 0)  # the first keypoint's colour
    assert square_to_frame(np.array([[10.0, 20.0]]), None, (50, 200), (100, 100)).tolist() == [[20.0, 10.0]]
