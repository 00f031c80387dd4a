"""The trained face finder on real public-domain photos and on synthetic motion of them (needs the extra)."""

from __future__ import annotations

import numpy as np
import pytest

from personalive.faces.boxes import iou, landmark_crop_box, square_box
from personalive.faces.crop import landmark_patch, patch_pixels
from personalive.faces.track import track_boxes
from tests.faces.synth import HAND_BOXES, photo, wide_clip, wide_frame

pytestmark = pytest.mark.faces


@pytest.fixture(scope="module")
def finder():
    from personalive.faces.finder import FaceFinder

    with FaceFinder() as f:
        yield f


def _centre(box):
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_finds_the_face_where_a_person_sees_it(finder, name):
    face = finder.find(photo(name))
    assert face is not None and face.landmarks is not None and face.landmarks.shape == (468, 2)
    hand = HAND_BOXES[name]
    assert iou(face.box, hand) > 0.6, (face.box, hand)
    cx, cy = _centre(face.box)
    assert hand[0] < cx < hand[2] and hand[1] < cy < hand[3]


def test_no_face_in_a_cat_photo(finder):
    assert finder.find(photo("chelsea")) is None
    assert finder.find(np.full((200, 300, 3), 90, dtype=np.uint8)) is None


def test_landmark_patch_holds_the_face(finder):
    image = photo("astronaut")
    marks = finder.landmarks(image)
    x1, y1, x2, y2 = landmark_crop_box(marks, *image.shape[:2])
    hand = HAND_BOXES["astronaut"]
    # 1.1 x the landmark box about its centre: the hand box fits inside, and the patch is not much larger
    assert x1 <= hand[0] + 4 and y1 <= hand[1] + 4 and x2 >= hand[2] - 4 and y2 >= hand[3] - 4
    assert (x2 - x1) < 1.5 * (hand[2] - hand[0]) and abs((x2 - x1) - (y2 - y1)) <= 1
    pixels = patch_pixels(landmark_patch(image, marks))
    assert pixels.shape == (3, 224, 224) and -1 <= float(pixels.min()) and float(pixels.max()) <= 1


def test_face_at_the_frame_border_gives_a_clamped_patch(finder):
    frame, _ = wide_frame(480 - 130, 270 - 150, 1.0)  # head cut by the right and bottom edges
    marks = finder.landmarks(frame)
    assert marks is not None
    x1, y1, x2, y2 = landmark_crop_box(marks, 270, 480)
    assert x2 <= 479 and y2 <= 269  # clamped to width - 1 / height - 1 as upstream does
    assert landmark_patch(frame, marks).shape == (y2 - y1, x2 - x1, 3)


def test_tracks_an_off_centre_moving_face_in_a_wide_clip(finder):
    frames, expected = wide_clip(24)
    frames[7] = np.full_like(frames[7], 128)  # two frames lose the face (a cut, a hand over it)
    frames[8] = np.full_like(frames[8], 128)
    found = [finder.find(f) for f in frames]
    assert found[7] is None and found[8] is None
    track = track_boxes([f.box if f else None for f in found])
    assert track.misses == 2 and track.frames == 24
    for i, (box, want) in enumerate(zip(track.boxes, expected, strict=True)):
        if i in (7, 8):
            continue
        assert iou(box, want) > 0.6, (i, box, want)
    # the held frames stay near the face they lost (the previous frame's box, smoothed)
    assert iou(track.boxes[7], expected[6]) > 0.6
    # the square crop is centred on the face and inside the 480x270 frame, whatever the face's position
    for box in track.boxes:
        x, y, side = square_box(box, 270, 480)
        assert 0 <= x and x + side <= 480 and 0 <= y and y + side <= 270
        cx, cy = _centre(box)
        assert x <= cx <= x + side and y <= cy <= y + side
