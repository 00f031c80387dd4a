"""A job's real-world inputs and extra outputs: framed reference, planned driving, paste-back, comparison video.

The job runner calls, in order: :func:`load_reference_input` (the photo, its square and landmark face image),
:func:`driving_preparer` (the face pass and the keypoint-smoothing pass over the driving video, each a fresh
decoding pass, then a :class:`~personalive.pipeline.driving.DrivingPreparer` for the main pass), and
:class:`Outputs` (which turns each generated square into the written frame: pasted back into the photo or
not, plus the comparison video's frame). Motion templates (:mod:`personalive.motion`) replace the driving video.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from personalive.errors import ConfigError, InputError
from personalive.faces.boxes import centre_square
from personalive.faces.compare import CompareLayout, square_to_frame
from personalive.faces.crop import crop_square, patch_pixels
from personalive.faces.paste import PasteBack, even_size
from personalive.media.resize import fit_to_model
from personalive.pipeline.animate import DrivingInputs
from personalive.pipeline.driving import DrivingPreparer
from personalive.pipeline.framing import DrivingPlan, ReferenceFraming, frame_reference, plan_driving
from personalive.pipeline.keypoints import KEYPOINT_COLORS

log = logging.getLogger(__name__)


@dataclass
class ReferenceInput:
    photo: np.ndarray  # (H, W, 3) uint8 as read
    image: torch.Tensor  # (h, w, 3) uint8 model square on the device
    face: torch.Tensor | None  # (1, 3, 224, 224) landmark face image in [-1, 1]; None = keypoint box crop
    square: tuple[int, int, int] | None  # where ``image`` came from in the photo (None: padded or stretched)
    warnings: list[str] = field(default_factory=list)


def load_reference_input(path: Path, config: Any, device: torch.device) -> ReferenceInput:
    """Read the reference and frame it by ``media.reference_crop`` / ``media.face_crop``."""
    from personalive.media.reference import load_reference

    g, m = config.generation, config.media
    photo = load_reference(path)
    framing: ReferenceFraming = frame_reference(photo, path, m.reference_crop, m.face_crop)
    if framing.square is not None:
        square = framing.square
        image = crop_square(photo, square, g.height, device)
    else:
        h, w = photo.shape[:2]
        square = centre_square(h, w) if m.crop == "center" or h == w else None
        image = fit_to_model(photo, g.height, g.width, m.crop, device)
    face = None
    if framing.patch is not None:
        x1, y1, x2, y2 = framing.patch
        face = patch_pixels(photo[y1:y2, x1:x2])[None]
    return ReferenceInput(photo, image, face, square, list(framing.warnings))


def open_frames(path: Path, max_frames: int | None):
    """A fresh decoding pass over the driving video (a generator that closes the file when done)."""
    from personalive.media.source import VideoSource

    def frames() -> Iterator[np.ndarray]:
        with VideoSource(path, max_frames=max_frames) as source:
            yield from source

    return frames


def plan_report(plan: DrivingPlan) -> dict[str, Any]:
    return {
        "driving_crop": plan.driving_crop,
        "face_crop": plan.face_crop,
        "face_misses": plan.face_misses,
        "landmark_misses": plan.landmark_misses,
    }


class Outputs:
    """Generated squares -> written frames (pasted back or not) and the comparison video's frames."""

    def __init__(
        self,
        config: Any,
        reference: ReferenceInput,
        paste_back: bool,
        compare_drive_size: tuple[int, int] | None = None,
        preparer: DrivingPreparer | None = None,
    ) -> None:
        g = config.generation
        self.model_size = (g.height, g.width)
        self.paste = None
        if paste_back:
            if reference.square is None:
                raise ConfigError(
                    "--paste-back needs the reference's square in the photo: use media.reference_crop=face or "
                    f"media.crop=center (not {config.media.crop})"
                )
            self.paste = PasteBack(reference.photo, reference.square)
        self.size = even_size(*reference.photo.shape[:2]) if self.paste else self.model_size
        self.preparer = preparer
        self.layout = None
        self.pending: deque[tuple[np.ndarray, tuple[int, int]]] = deque()  # (panel-sized frame, frame size)
        self.index = 0
        if compare_drive_size is not None:
            self.layout = CompareLayout(g.height, g.width, compare_drive_size, reference.image.cpu().numpy())
            preparer.record_overlay = True

    def driving_frames(self, frames) -> Iterator[np.ndarray]:
        """Pass the driving frames through, keeping a panel-sized copy of each for the comparison video."""
        for rgb in frames:
            if self.layout is not None:  # held until its output frame comes (~P + 2W frames later): keep it small
                self.pending.append((self.layout.panel_image(rgb), rgb.shape[:2]))
            yield rgb

    def frame(self, square: torch.Tensor) -> torch.Tensor:
        """(h, w, 3) uint8 generated frame -> the frame to write."""
        return self.paste(square) if self.paste is not None else square

    def compare_frame(self, square: torch.Tensor) -> np.ndarray:
        """The comparison frame of the next output frame (its driving frame is the oldest one pending)."""
        small, size = self.pending.popleft()
        overlay = self.preparer.overlay[self.index]
        self.preparer.overlay[self.index] = None  # free it: the overlay list is consumed in order
        self.index += 1
        square_box = overlay["square"]
        if square_box is None and "center" in (self.preparer.plan.driving_crop, self.preparer.crop_mode):
            square_box = centre_square(*size)  # a centred square was cut (else: the frame was resized)
        points = square_to_frame(overlay["points"], square_box, size, self.model_size)
        panel = self.layout.driving_panel(small, overlay["square"], overlay["patch"], points, KEYPOINT_COLORS)
        return self.layout.compose(panel, square.cpu().numpy())


class VideoDriving:
    """A driving video: probed and face-planned before models load; :meth:`prepare` builds the preparer."""

    def __init__(self, path: Path, config: Any) -> None:
        from personalive.media.source import VideoSource

        m = config.media
        self.path, self.config = Path(path), config
        self.source = VideoSource(self.path, max_frames=m.max_frames)  # a bad file fails here
        vi = self.source.info
        self.info = {"rate": vi.rate, "frames": vi.frames, "size": [vi.width, vi.height]}
        try:
            self.plan = plan_driving(open_frames(self.path, m.max_frames), self.path, m.driving_crop, m.face_crop)
        except BaseException:
            self.source.close()
            raise
        self.warnings = list(self.plan.warnings)
        self.preparer: DrivingPreparer | None = None

    def prepare(self, animator: Any, config: Any, device: Any, compare: bool = False) -> None:
        """The keypoint-smoothing pass (when on) and the main pass's preparer (when anything needs one)."""
        self.device = device
        g = config.generation
        if self.plan.squares is None and self.plan.patches is None and g.smoothing == 0 and not compare:
            return  # nothing to prepare differently: the animator's own loop on fitted frames, as before
        self.preparer = DrivingPreparer(animator, self.plan, config.media.crop)
        if g.smoothing > 0:
            self.preparer.smooth_keypoints(open_frames(self.path, config.media.max_frames)(), g.smoothing)

    def _decoded(self, clock: dict[str, float], ahead: int = 0) -> Iterator[np.ndarray]:
        """Decoded frames; with ``ahead`` > 0 decoded on a background thread that many frames ahead at most."""
        from personalive.media.background import prefetch

        it = prefetch(self.source, maxsize=ahead) if ahead > 0 else iter(self.source)
        try:
            while True:
                t = time.perf_counter()
                rgb = next(it, None)
                clock["decode"] += time.perf_counter() - t
                if rgb is None:
                    return
                yield rgb
        finally:
            if ahead > 0:
                it.close()  # stops and joins the decode thread

    def chunks(self, outputs: Outputs | None, clock: dict[str, float], ahead: int = 0) -> Iterator[DrivingInputs]:
        decoded = self._decoded(clock, ahead)
        return self.preparer.chunks(decoded if outputs is None else outputs.driving_frames(decoded))

    def generate(self, animator: Any, state: Any, generator: Any, outputs: Outputs, clock: dict, ahead: int = 0):
        """Generated (h, w, 3) uint8 squares, one per driving frame (close it to stop the decode thread)."""
        if self.preparer is not None:
            yield from _squares(animator.animate_prepared(state, self.chunks(outputs, clock, ahead), generator))
            return
        g, m = self.config.generation, self.config.media
        mode = "center" if self.plan.driving_crop == "center" else m.crop
        decoded = self._decoded(clock, ahead)
        try:
            fitted = (fit_to_model(rgb, g.height, g.width, mode, self.device) for rgb in decoded)
            yield from animator.animate(state, fitted, generator=generator)
        finally:
            decoded.close()

    def audio(self, want: bool) -> tuple[Path | None, float]:
        vi = self.source.info
        if want and not vi.has_audio:
            log.debug("%s: no audio stream; the output is silent", self.path)
        return (self.path, vi.start) if want and vi.has_audio else (None, 0.0)

    def compare_size(self, job: Any) -> tuple[int, int] | None:
        return (self.source.info.height, self.source.info.width) if job.compare is not None else None

    def faces_report(self) -> dict[str, Any]:
        return plan_report(self.plan)

    @property
    def frames_read(self) -> int:
        return self.source.frames_read

    @property
    def expected_frames(self) -> int | None:
        return self.source.expected_frames

    @property
    def truncated(self) -> bool:
        return self.source.stopped_early

    def __enter__(self) -> VideoDriving:
        return self

    def __exit__(self, *exc) -> None:
        self.source.close()


class TemplateDriving:
    """A motion template in place of the driving video (checked against the weights and settings in prepare)."""

    preparer = None

    def __init__(self, path: Path, config: Any) -> None:
        from personalive.media.source import check_input_file
        from personalive.motion import load_motion

        self.path = check_input_file(Path(path), "motion template")
        self.template = load_motion(self.path)
        meta = self.template.meta
        frames = self.template.frames
        if config.media.max_frames is not None:
            frames = min(frames, config.media.max_frames)
        self.frames = frames
        self.info = {"rate": self.template.rate, "frames": frames, "size": meta.get("source", {}).get("size")}
        self.warnings: list[str] = []
        self.frames_read = 0
        self.expected_frames = frames
        self.truncated = False
        self.device: Any = None

    def prepare(self, animator: Any, config: Any, device: Any, compare: bool = False) -> None:
        from personalive.motion import check_motion, template_settings
        from personalive.weights import weights_hash

        settings = template_settings(config, animator.dtype)
        check_motion(self.path, self.template, weights_hash(config.model.weights_dir), settings)
        self.device, self.dtype, self.window = device, animator.dtype, animator.gen.window

    def chunks(self, outputs: Outputs | None, clock: dict[str, float], ahead: int = 0) -> Iterator[DrivingInputs]:
        t = self.template
        for start in range(0, self.frames, self.window):
            stop = min(start + self.window, self.frames)
            info = {k: v[start:stop].to(self.device) for k, v in t.info.items()}
            self.frames_read = stop
            yield DrivingInputs(info, t.faces[start:stop].to(self.device))

    def generate(self, animator: Any, state: Any, generator: Any, outputs: Outputs, clock: dict, ahead: int = 0):
        yield from _squares(animator.animate_prepared(state, self.chunks(outputs, clock), generator))

    def audio(self, want: bool) -> tuple[Path | None, float]:
        from personalive.motion import source_hash

        source = self.template.meta.get("source", {})
        path = Path(source.get("path", ""))
        if not want or not source.get("has_audio"):
            return None, 0.0
        if path.is_file() and source_hash(path) == source.get("hash"):
            return path, float(source.get("start", 0.0))
        message = f"{self.path}: the source video {path} is gone or changed; the output is silent"
        log.warning("%s", message)
        self.warnings.append(message)
        return None, 0.0

    def compare_size(self, job: Any) -> None:
        return None

    def faces_report(self) -> dict[str, Any]:
        return {"template": str(self.path), **self.template.meta.get("plan", {})}

    def __enter__(self) -> TemplateDriving:
        return self

    def __exit__(self, *exc) -> None:
        pass


def extract_motion(drive: Path, out: Path, config: Any, animator: Any, weights: str) -> dict[str, Any]:
    """`personalive motion extract`: the driving video's prepared inputs written as a template."""
    from personalive.motion import FORMAT, MotionTemplate, save_motion, source_hash, template_settings

    with VideoDriving(drive, config) as driving:
        driving.prepare(animator, config, animator.device, compare=True)  # always the preparer's path
        chunks = [
            DrivingInputs({k: v.cpu() for k, v in c.info.items()}, c.faces.cpu())
            for c in driving.chunks(None, {"decode": 0.0})
        ]
        if not chunks:
            raise InputError(f"{drive}: driving video has no frames")
        inputs = DrivingInputs.cat(chunks)
        vi = driving.source.info
        meta = {
            "format": FORMAT,
            "frames": len(inputs),
            "rate": str(vi.rate),
            "source": {
                "path": str(Path(drive).resolve()),
                "hash": source_hash(Path(drive)),
                "size": [vi.width, vi.height],
                "has_audio": vi.has_audio,
                "start": vi.start,
            },
            "weights_hash": weights,
            "settings": template_settings(config, animator.dtype),
            "plan": plan_report(driving.plan),
            "warnings": driving.warnings,
        }
    save_motion(Path(out), MotionTemplate(inputs.info, inputs.faces.to(animator.dtype), meta))
    return meta


def _squares(frames01: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    """(3, h, w) float [0, 1] frames -> (h, w, 3) uint8, rounded as :meth:`Animator.animate` rounds them."""
    for out in frames01:
        yield (out * 255).round().to(torch.uint8).permute(1, 2, 0)
