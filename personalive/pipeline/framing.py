"""Where the face is: the driving video's per-frame face squares and landmark patches, the reference's square.

Settings (``media.*``):

* ``driving_crop``: ``face`` crops every driving frame to a square about the tracked face
  (:mod:`personalive.faces.track`, look-ahead smoothed, misses hold the last good box); ``center`` takes the
  largest centred square; ``none`` fits the whole frame by ``media.crop`` (the behaviour before face finding);
  ``auto`` is ``face`` when the face finder is installed and finds a face in the clip, else ``none``.
* ``face_crop``: the motion encoder's face image. ``landmarks`` is upstream's offline ``crop_face`` on the
  original frame (FaceMesh landmark box x 1.1); ``keypoints`` is the box from the motion extractor's keypoints
  (upstream's online path); ``auto`` is ``landmarks`` when the finder is installed, else ``keypoints``.
* ``reference_crop``: ``face`` / ``center`` / ``auto`` for the reference photo, as for the driving frames
  (``center`` fits it by ``media.crop``). ``face`` is an error when no face is found; ``auto`` then falls back
  to ``center`` with a warning.

Every fallback is one warning line naming the file, also kept in :attr:`DrivingPlan.warnings` for the report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from personalive.errors import InputError, MissingDependencyError
from personalive.faces.boxes import landmark_crop_box, square_box
from personalive.faces.finder import FACES_HINT, FaceFinder, faces_available
from personalive.faces.track import track_boxes

log = logging.getLogger(__name__)

FrameSource = Callable[[], Iterator[np.ndarray]]  # opens the driving video anew: one decoding pass per call


@dataclass
class DrivingPlan:
    """The result of the face pass over a driving video (nothing here is on a device)."""

    frames: int = 0
    squares: np.ndarray | None = None  # (N, 3) int x, y, side: the face square of each frame; None = no face crop
    patches: np.ndarray | None = None  # (N, 4) int x1, y1, x2, y2: each frame's landmark patch; None = keypoints
    face_misses: int = 0  # frames where no face was found (their square held the last good one)
    landmark_misses: int = 0  # frames without FaceMesh landmarks (their patch held the last good one)
    driving_crop: str = "none"  # what was applied: face | center | none
    face_crop: str = "keypoints"  # landmarks | keypoints
    boxes: np.ndarray | None = None  # (N, 4) float tracked face boxes (for the comparison video)
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        log.warning("%s", message)
        self.warnings.append(message)


def resolve_face_crop(face_crop: str) -> str:
    """``auto`` -> ``landmarks`` with the finder installed, else ``keypoints``; ``landmarks`` needs the finder."""
    if face_crop == "auto":
        return "landmarks" if faces_available() else "keypoints"
    if face_crop == "landmarks" and not faces_available():
        raise MissingDependencyError(f"media.face_crop=landmarks: {FACES_HINT}")
    return face_crop


def plan_driving(open_frames: FrameSource, path: Path, driving_crop: str, face_crop: str) -> DrivingPlan:
    """One decoding pass with the face finder where a setting needs it; falls back (with warnings) where no face."""
    face_crop = resolve_face_crop(face_crop)
    if driving_crop == "face" and not faces_available():
        raise MissingDependencyError(f"media.driving_crop=face: {FACES_HINT}")
    want_squares = driving_crop == "face" or (driving_crop == "auto" and faces_available())
    plan = DrivingPlan(driving_crop="center" if driving_crop == "center" else "none", face_crop=face_crop)
    if not want_squares and face_crop != "landmarks":
        return plan
    boxes, patches, size = [], [], (0, 0)
    with FaceFinder() as finder:
        for rgb in open_frames():
            face = finder.find(rgb)
            size = rgb.shape[:2]
            boxes.append(face.box if face is not None else None)
            marks = face.landmarks if face is not None else None
            patches.append(None if marks is None else landmark_crop_box(marks, *size))
    plan.frames = len(boxes)
    if want_squares:
        track = track_boxes(boxes)
        if track is None:
            plan.warn(f"{path}: no face found in any driving frame; fitting whole frames by media.crop")
        else:
            plan.driving_crop, plan.boxes, plan.face_misses = "face", track.boxes, track.misses
            plan.squares = np.array([square_box(b, *size) for b in track.boxes], dtype=np.int64)
            if track.misses:
                plan.warn(f"{path}: no face in {track.misses} of {plan.frames} frames; they keep the last face box")
    if face_crop == "landmarks":
        _plan_patches(plan, patches, path)
    return plan


def _plan_patches(plan: DrivingPlan, patches: list, path: Path) -> None:
    found = [p for p in patches if p is not None]
    if not found:
        plan.face_crop = "keypoints"
        plan.warn(f"{path}: no face landmarks in any driving frame; face crops from keypoints instead")
        return
    last, held = found[0], []
    for p in patches:
        last = p if p is not None else last
        held.append(last)
    plan.patches = np.array(held, dtype=np.int64)
    plan.landmark_misses = len(patches) - len(found)
    if plan.landmark_misses:
        plan.warn(
            f"{path}: no face landmarks in {plan.landmark_misses} of {plan.frames} frames; "
            "they keep the last face patch"
        )


@dataclass
class ReferenceFraming:
    """How the reference photo becomes the model's square, and its landmark patch for the motion encoder."""

    square: tuple[int, int, int] | None  # x, y, side in the photo; None = fit by media.crop
    patch: tuple[int, int, int, int] | None  # upstream crop_face slice; None = keypoint box crop
    warnings: list[str] = field(default_factory=list)


def frame_reference(photo: np.ndarray, path: Path, reference_crop: str, face_crop: str) -> ReferenceFraming:
    """Find the reference's face (where a setting needs it) and choose its square and landmark patch."""
    face_crop = resolve_face_crop(face_crop)
    if reference_crop == "face" and not faces_available():
        raise MissingDependencyError(f"media.reference_crop=face: {FACES_HINT}")
    want_square = reference_crop == "face" or (reference_crop == "auto" and faces_available())
    framing = ReferenceFraming(None, None)
    if not want_square and face_crop != "landmarks":
        return framing
    with FaceFinder() as finder:
        face = finder.find(photo)
    height, width = photo.shape[:2]
    if face is None:
        if reference_crop == "face":
            raise InputError(f"{path}: no face found in the reference (use --set media.reference_crop=center)")
        message = f"{path}: no face found in the reference; using media.crop"
        if face_crop == "landmarks":
            message += " and a face crop from keypoints"
        log.warning("%s", message)
        framing.warnings.append(message)
        return framing
    if want_square:
        framing.square = square_box(face.box, height, width)
    if face_crop == "landmarks":
        if face.landmarks is None:
            message = f"{path}: no face landmarks in the reference; face crop from keypoints instead"
            log.warning("%s", message)
            framing.warnings.append(message)
        else:
            framing.patch = landmark_crop_box(face.landmarks, height, width)
    return framing
