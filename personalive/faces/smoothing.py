"""A temporal filter for per-frame sequences (keypoints, pose parameters, face boxes) and a jitter figure.

The run is offline, so the filter may look ahead: a centred Gaussian of standard deviation ``sigma`` frames,
truncated at 3 sigma. Beyond both ends the sequence is extended by point reflection about the end frame
(``2 x[0] - x[k]``), so a steady drift stays exact up to the last frame instead of being pulled toward the
interior (a one-sided kernel would lag a moving face at the clip's ends). ``sigma = 0`` returns the input
object itself, so "off" is bit-identical to no filter.
"""

from __future__ import annotations

import math

import torch

TRUNCATE = 3.0  # kernel half-width in sigmas


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised weights of a centred Gaussian, float64, length 2 * ceil(3 sigma) + 1."""
    radius = max(1, math.ceil(TRUNCATE * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def temporal_smooth(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Smooth ``values`` (N, ...) along dim 0; computed in float64, returned in the input's dtype and device."""
    if sigma < 0:
        raise ValueError(f"smoothing sigma {sigma} must be >= 0")
    if sigma == 0 or values.shape[0] < 2:
        return values
    n = values.shape[0]
    kernel = gaussian_kernel(sigma)
    radius = kernel.numel() // 2
    if radius > n - 1:  # a clip shorter than the kernel: cut the kernel to what point reflection can supply
        kernel = kernel[radius - (n - 1) : radius + n]
        kernel, radius = kernel / kernel.sum(), n - 1
    x = values.reshape(n, -1).to(torch.float64)  # (N, D)
    head = 2 * x[:1] - x[1 : radius + 1].flip(0)
    tail = 2 * x[-1:] - x[-radius - 1 : -1].flip(0)
    padded = torch.cat([head, x, tail]).T[:, None, :]  # (D, 1, N + 2 radius)
    out = torch.nn.functional.conv1d(padded, kernel.to(values.device).view(1, 1, -1))[:, 0, :].T
    out = out.reshape(values.shape)
    return out.to(values.dtype)


def jitter(values: torch.Tensor) -> float:
    """Mean frame-to-frame acceleration: mean over frames of ``|x[t+1] - 2 x[t] + x[t-1]|`` (L2 per point).

    ``values`` is (N, P, C) (P points of C coordinates) or (N, C); fewer than 3 frames give 0.
    """
    if values.shape[0] < 3:
        return 0.0
    x = values.to(torch.float64)
    if x.dim() == 2:
        x = x[:, None, :]
    accel = x[2:] - 2 * x[1:-1] + x[:-2]
    return float(accel.norm(dim=-1).mean())
