"""MotionExtractor: LivePortrait's motion extractor (Guo et al., "LivePortrait", the network M that predicts the
canonical implicit keypoints, head pose and translation/scale of a face), which PersonaLive uses to draw the
3D-keypoint pose canvas.

The network is pure: :meth:`MotionExtractor.forward` returns the raw detector outputs. Turning them into driving
keypoints (softmax over pose bins, rotation, relative motion to the reference and first frame, interpolation) is the
pipeline's job (:mod:`personalive.pipeline.keypoints`, e.g. ``head_pose_degrees``). Upstream's class also carries
those helpers (``get_kp``, ``get_kps``, ``interpolate_kps*``). ``motion_extractor.pth`` keys: ``detector.*`` +
``idx_tensor`` (the bin indices, kept so the checkpoint loads strictly).
"""

from __future__ import annotations

import torch
from torch import nn

from personalive.models.convnextv2 import NUM_POSE_BINS, ConvNeXtV2

# backbone name -> (depths, dims); any other name (the oracle's tiny preset says "convnextv2_oracle") needs both
# passed as arguments
BACKBONES = {"convnextv2_tiny": ((3, 3, 9, 3), (96, 192, 384, 768))}


class MotionExtractor(nn.Module):
    """Image (N, 3, 256, 256) in [0, 1] -> {pitch, yaw, roll: (N, 66) logits, t: (N, 3), scale: (N, 1),
    kp: (N, 3 * num_kp) canonical keypoints}."""

    def __init__(
        self,
        num_kp: int = 21,
        backbone: str = "convnextv2_tiny",
        depths: list[int] | None = None,
        dims: list[int] | None = None,
        num_bins: int = NUM_POSE_BINS,
    ):
        super().__init__()
        if depths is None or dims is None:
            if backbone not in BACKBONES:
                raise ValueError(f"MotionExtractor: unknown backbone {backbone!r} without depths/dims")
            depths, dims = BACKBONES[backbone]
        self.num_kp = num_kp
        self.detector = ConvNeXtV2(depths=depths, dims=dims, num_kp=num_kp, num_bins=num_bins)
        self.register_buffer("idx_tensor", torch.arange(num_bins, dtype=torch.float32))

    @property
    def dtype(self) -> torch.dtype:
        return self.detector.fc_kp.weight.dtype

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.detector(images.to(self.dtype))
