"""History keyframes: a bank of motion tokens; a frame whose motion is far from every entry becomes a keyframe.

Rule (upstream ``Pose2VideoPipeline_Stream.calculate_dis`` with its online wrapper's cap): from window
``2 * adaptive_steps + 1`` on (window 9 for 4 adaptive steps), in every window, the L2 distance between the motion
tokens of the *first new frame* of the window and every bank entry is computed; when the smallest exceeds the
threshold (17) and fewer than ``max_keyframes`` (3) were added, those tokens join the bank and the reference UNet
runs on the clean latent of the frame emitted by that window (its oldest frame); its features are appended to the
reference features along the token axis, so the next windows attend to them too.

Which frame: the stream pipeline measures the first new frame but takes the features from the emitted (oldest)
frame; the online wrapper uses the emitted frame for both. We follow the stream pipeline, because it is the
offline pipeline we reimplement and the oracle recording we are checked against uses it; the new frame's motion
tokens exist before the UNet runs, the emitted frame's clean latent only after, and both are one window apart.
Upstream's stream pipeline also never resets its flag once the bank is full (deviation 1); we decide afresh in
every window and stop after ``max_keyframes``.
"""

from __future__ import annotations

import torch


class KeyframeBank:
    """Motion-token bank (1, K, 32, 16) starting with the reference face's tokens."""

    def __init__(self, reference_motion: torch.Tensor, threshold: float, max_added: int, first_window: int) -> None:
        self.bank = reference_motion
        self.threshold = threshold
        self.max_added = max_added
        self.first_window = first_window
        self.added = 0

    def active(self, window_index: int) -> bool:
        """Whether window ``window_index`` may add a keyframe (no host sync)."""
        return window_index >= self.first_window and self.added < self.max_added

    def distance(self, new_motion: torch.Tensor) -> torch.Tensor:
        """Smallest L2 distance (0-dim float32 tensor, on device) of the first new frame's tokens to the bank."""
        probe = new_motion[0, :1].reshape(1, -1).float()
        bank = self.bank[0].reshape(self.bank.shape[1], -1).float()
        return torch.cdist(probe, bank).min()

    def propose(self, new_motion: torch.Tensor) -> torch.Tensor:
        """0-dim bool tensor: add this window's keyframe? Read it after the frames' host copy (no extra sync)."""
        return self.distance(new_motion) > self.threshold

    def accept(self, new_motion: torch.Tensor) -> None:
        self.bank = torch.cat([self.bank, new_motion[:, :1].to(self.bank.dtype)], dim=1)
        self.added += 1


def append_keyframe(features: list[torch.Tensor], keyframe_features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Reference keys/values with one more image's tokens: each (1, L * (1 + K), C) -> (1, L * (2 + K), C)."""
    return [torch.cat([f, k.to(f.dtype)], dim=1) for f, k in zip(features, keyframe_features, strict=True)]
