"""Driving frames -> :class:`DrivingInputs`, by the :class:`DrivingPlan`: crops, face patches, smoothed keypoints.

With no plan (no face crop, keypoint face crops, no smoothing) this is exactly :func:`prepare_driving` on frames
fitted by ``media.crop``: the frames the animator saw before face finding existed, bit for bit.

Keypoint smoothing (``generation.smoothing`` = sigma in frames, 0 = off) needs the whole clip's keypoints before
the first window: :meth:`DrivingPreparer.smooth_keypoints` runs the motion extractor over one extra decoding pass,
keeps the pose parameters of every frame on the host (~1 KB per frame), smooths them with look-ahead
(:func:`personalive.faces.smoothing.temporal_smooth`) and the main pass then uses them instead of re-running
the extractor. The keypoint face boxes follow the smoothed keypoints, so the crops steady too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from personalive.faces.crop import crop_square, patch_pixels
from personalive.faces.smoothing import temporal_smooth
from personalive.media.resize import fit_to_model
from personalive.pipeline import conditioning as C
from personalive.pipeline import keypoints as K
from personalive.pipeline.animate import DrivingInputs, prepare_driving
from personalive.pipeline.framing import DrivingPlan


class DrivingPreparer:
    """Turns decoded driving frames (H, W, 3) uint8 into DrivingInputs chunks of ``window`` frames."""

    def __init__(self, animator: Any, plan: DrivingPlan | None, crop_mode: str = "center") -> None:
        self.an, self.plan = animator, plan or DrivingPlan()
        self.crop_mode = crop_mode
        self.info: K.KeypointInfo | None = None  # smoothed pose info of every frame (host), when smoothing
        self.overlay: list[dict[str, Any]] = []  # per prepared frame: square, patch, keypoint pixels (compare)
        self.record_overlay = False

    # -------------------------------------------------------------------------------------------- framing
    def model_frame(self, rgb: np.ndarray, index: int) -> torch.Tensor:
        """One decoded frame -> (H, W, 3) uint8 at the model resolution on the device, by the plan's square."""
        g, device = self.an.gen, self.an.device
        if self.plan.squares is not None:
            return crop_square(rgb, tuple(int(v) for v in self.plan.squares[index]), g.height, device)
        if self.plan.driving_crop == "center":
            return fit_to_model(rgb, g.height, g.width, "center", device)
        return fit_to_model(rgb, g.height, g.width, self.crop_mode, device)

    def _patches(self, frames: list[np.ndarray], start: int) -> torch.Tensor:
        pixels = []
        for i, rgb in enumerate(frames):
            x1, y1, x2, y2 = (int(v) for v in self.plan.patches[start + i])
            pixels.append(patch_pixels(rgb[y1:y2, x1:x2]))
        return torch.stack(pixels).to(self.an.device)

    # -------------------------------------------------------------------------------------------- preparing
    @torch.inference_mode()
    def prepare(self, frames: list[np.ndarray], start: int) -> DrivingInputs:
        """Frames ``start .. start + len(frames) - 1`` of the clip -> their DrivingInputs."""
        t0 = time.perf_counter()
        an, g = self.an, self.an.gen
        images = torch.stack([self.model_frame(rgb, start + i) for i, rgb in enumerate(frames)])
        frames01 = C.to_nchw(images, an.device)
        if self.info is None and self.plan.patches is None:
            inputs = prepare_driving(an.models, frames01, g.height, g.width, g.min_face_box)
        else:
            if self.info is not None:
                info = {k: v[start : start + len(frames)].to(an.device) for k, v in self.info.items()}
            else:
                info = an.models.motion_extractor(C.keypoint_pixels(frames01))
            if self.plan.patches is not None:
                faces = self._patches(frames, start)
            else:
                boxes = K.face_boxes(K.driving_keypoints(info), g.height, g.width, g.min_face_box)
                faces = C.crop_faces(frames01 * 2 - 1, boxes)
            inputs = DrivingInputs(info, faces)
        if self.record_overlay:
            self._record(inputs, start, len(frames))
        an.stats.conditioning += time.perf_counter() - t0
        return inputs

    def chunks(self, frames: Iterable[np.ndarray]) -> Iterator[DrivingInputs]:
        """Stream DrivingInputs of ``window`` frames (the last chunk may be shorter)."""
        chunk: list[np.ndarray] = []
        start = 0
        for rgb in frames:
            chunk.append(rgb)
            if len(chunk) == self.an.gen.window:
                yield self.prepare(chunk, start)
                start += len(chunk)
                chunk = []
        if chunk:
            yield self.prepare(chunk, start)

    @torch.no_grad()
    def smooth_keypoints(self, frames: Iterable[np.ndarray], sigma: float) -> None:
        """Extra pass: every frame's pose parameters, smoothed over time with look-ahead (sigma in frames)."""
        if sigma <= 0:
            return
        an, parts = self.an, []
        chunk: list[torch.Tensor] = []

        def flush() -> None:
            frames01 = C.to_nchw(torch.stack(chunk), an.device)
            info = K.pose_info(an.models.motion_extractor(C.keypoint_pixels(frames01)))
            parts.append({k: v.cpu() for k, v in info.items()})

        for i, rgb in enumerate(frames):
            chunk.append(self.model_frame(rgb, i))
            if len(chunk) == an.gen.window:
                flush()
                chunk = []
        if chunk:
            flush()
        if parts:
            info = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
            self.info = {k: temporal_smooth(v, sigma) for k, v in info.items()}

    def _record(self, inputs: DrivingInputs, start: int, count: int) -> None:
        """Keypoint pixels (model square coordinates) and boxes of each frame, for the comparison video."""
        g = self.an.gen
        points = K.driving_keypoints(inputs.info)[:, list(K.SELECTED_KEYPOINTS), :2].float().cpu()
        points = (points * 0.5 + 0.5) * torch.tensor([g.width, g.height])
        for i in range(count):
            self.overlay.append(
                {
                    "square": None if self.plan.squares is None else self.plan.squares[start + i].tolist(),
                    "patch": None if self.plan.patches is None else self.plan.patches[start + i].tolist(),
                    "points": points[i].numpy(),
                }
            )
