"""The face finder: mediapipe's FaceMesh (468 landmarks) with its full-range face detector as a second try.

mediapipe is the optional ``personalive[faces]`` extra. We pin the 0.10.x series up to 0.10.21, the last whose
wheels still carry the ``solutions`` API and the trained models inside the package (later releases only have
the Tasks API, whose ``.task`` model files must be downloaded at run time). FaceMesh is built as upstream's
offline script builds it (``static_image_mode=True, max_num_faces=1``), so its landmarks are upstream's.

Without the extra, :func:`faces_available` is False and callers fall back to centre crops.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from personalive.errors import MissingDependencyError
from personalive.faces.boxes import landmark_box

log = logging.getLogger(__name__)

FACES_HINT = (
    "the face finder is not installed: install it with `pip install 'personalive[faces]'` "
    "(mediapipe; Python 3.10-3.12)"
)
DETECTION_CONFIDENCE = 0.5  # mediapipe's default for both models


def faces_available() -> bool:
    """True when mediapipe with its bundled ``solutions`` models can be imported."""
    try:
        _import_solutions()
    except MissingDependencyError:
        return False
    return True


def _import_solutions():
    # mediapipe's C++ side logs start-up lines to stderr through glog/absl; keep the terminal quiet
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import mediapipe as mp

        return mp.solutions
    except Exception as exc:  # noqa: BLE001 - an absent, broken or Tasks-only install all mean "no finder"
        raise MissingDependencyError(f"{FACES_HINT} ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True)
class Face:
    """One face found in an image: its box in pixels and, when FaceMesh found it, its normalised landmarks."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    landmarks: np.ndarray | None  # (468, 2) normalised (x, y), float64; None for a detector-only box


class FaceFinder:
    """Finds the most prominent face in RGB uint8 images. Use as a context manager or call :meth:`close`."""

    def __init__(self) -> None:
        solutions = _import_solutions()
        self._mesh = solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1)
        # model_selection=1: the full-range model, for faces up to ~5 m (small faces in wide frames)
        self._detector = solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=DETECTION_CONFIDENCE
        )

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """FaceMesh landmarks (468, 2) normalised (x, y) of the first face, or None (upstream's call)."""
        result = self._mesh.process(_contiguous(image))
        if not result.multi_face_landmarks:
            return None
        marks = result.multi_face_landmarks[0].landmark
        return np.array([(m.x, m.y) for m in marks], dtype=np.float64)

    def find(self, image: np.ndarray) -> Face | None:
        """The face: FaceMesh's landmark box, else the full-range detector's best box, else None."""
        image = _contiguous(image)
        height, width = image.shape[:2]
        marks = self.landmarks(image)
        if marks is not None:
            return Face(tuple(float(v) for v in landmark_box(marks, height, width)), marks)
        detections = self._detector.process(image).detections
        if not detections:
            return None
        best = max(detections, key=lambda d: d.score[0])
        rel = best.location_data.relative_bounding_box
        x1, y1 = rel.xmin * width, rel.ymin * height
        return Face((x1, y1, x1 + rel.width * width, y1 + rel.height * height), None)

    def close(self) -> None:
        for model in (self._mesh, self._detector):
            model.close()

    def __enter__(self) -> FaceFinder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _contiguous(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)
