"""Implicit keypoints (LivePortrait motion extractor output) turned into pose canvases and face boxes.

The motion extractor's detector returns, per image, head-pose logits over 66 bins (pitch, yaw, roll), a
translation ``t`` (3), a scale (1) and 21 canonical keypoints ``kp`` (63). Keypoints in the image are
``scale * (kp @ R(pitch, yaw, roll)) + t`` with only tx, ty applied (upstream ``motion_extractor.get_kp``).

PersonaLive animates the *reference's* keypoints: driving head pose, driving translation relative to the first
driving frame (scaled by ``translation_scale``) added to the reference's, and the reference's scale
(upstream ``get_kps`` / ``interpolate_kps_online``). Everything here is torch on the caller's device; nothing
waits on the host.
"""

from __future__ import annotations

import math

import torch

from personalive.pipeline.conditioning import lerp_frames

KeypointInfo = dict[str, torch.Tensor]  # detector output: pitch, yaw, roll (B, 66), t (B, 3), scale (B, 1), kp (B, 63)

# The 7 of LivePortrait's 21 implicit keypoints that upstream draws and boxes (src/utils/util.py, draw_keypoints
# and get_boxes), and the colours it draws them in (RGB, 0..255).
SELECTED_KEYPOINTS: tuple[int, ...] = (1, 2, 3, 4, 12, 15, 20)
KEYPOINT_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (255, 255, 0),
    (0, 255, 0),
    (0, 255, 255),
    (0, 0, 255),
    (255, 0, 255),
    (255, 0, 85),
)
KEYPOINT_RADIUS = 4  # pixels on the canvas (upstream draw_keypoints at 512)

# Head-pose bins: 66 bins of 3 degrees, centred so that the expectation is in degrees (LivePortrait camera.py).
HEAD_POSE_BIN_DEGREES = 3.0
HEAD_POSE_OFFSET_DEGREES = 97.5

# Face box from the drawn keypoints (upstream src/utils/util.py get_boxes): the side is 1.7 x twice the distance
# from the keypoints' centre to the top-most keypoint; the box reaches 0.95 half-sides up/left, 1.05 down/right.
FACE_BOX_SCALE = 1.7
FACE_BOX_NEAR = 0.95
FACE_BOX_FAR = 1.05


def head_pose_degrees(logits: torch.Tensor) -> torch.Tensor:
    """(B, 66) bin logits -> (B,) degrees: the softmax expectation of the bin index, x3 - 97.5."""
    bins = torch.arange(logits.shape[-1], device=logits.device, dtype=torch.float32)
    # softmax and expectation in float32: 66-bin sums in fp16 lose a tenth of a degree
    prob = torch.softmax(logits.float(), dim=-1)
    return ((prob @ bins) * HEAD_POSE_BIN_DEGREES - HEAD_POSE_OFFSET_DEGREES).to(logits.dtype)


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Angles in degrees (B,) -> (B, 3, 3) = (Rz(roll) Ry(yaw) Rx(pitch))^T, LivePortrait's convention."""
    x, y, z = (a * (math.pi / 180) for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rot_x = torch.stack([one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()], dim=-1)
    rot_y = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], dim=-1)
    rot_z = torch.stack([z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one], dim=-1)
    rot = rot_z.view(-1, 3, 3) @ rot_y.view(-1, 3, 3) @ rot_x.view(-1, 3, 3)
    return rot.transpose(1, 2)


def pose_keypoints(
    kp: torch.Tensor, pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor, t: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Canonical keypoints (B, 63) posed: scale * (kp @ R) + (tx, ty, 0) -> (B, 21, 3). Angles in degrees (B,)."""
    kp = kp.reshape(kp.shape[0], -1, 3)
    posed = kp @ rotation_matrix(pitch, yaw, roll).to(kp.dtype)
    posed = posed * scale[:, None, :]
    return torch.cat([posed[..., :2] + t[:, None, :2], posed[..., 2:]], dim=-1)


def _angles(info: KeypointInfo) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if "angles" in info:  # already degrees (a smoothed sequence: see pose_info)
        angles = info["angles"]
        return angles[:, 0], angles[:, 1], angles[:, 2]
    return head_pose_degrees(info["pitch"]), head_pose_degrees(info["yaw"]), head_pose_degrees(info["roll"])


def pose_info(info: KeypointInfo) -> KeypointInfo:
    """The detector output with the head-pose logits replaced by their angles: ``angles`` (B, 3) degrees
    (pitch, yaw, roll), ``t``, ``scale``, ``kp``. Every function here accepts either form; this one is linear in
    time, so a temporal filter can act on it (a filter on the 66-bin logits would not average the angles)."""
    pitch, yaw, roll = _angles(info)
    return {"angles": torch.stack([pitch, yaw, roll], dim=1), "t": info["t"], "scale": info["scale"], "kp": info["kp"]}


def driving_keypoints(info: KeypointInfo) -> torch.Tensor:
    """The driving frames' own keypoints (B, 21, 3) (upstream ``get_kp(detector(x))``; used for face boxes)."""
    return pose_keypoints(info["kp"], *_angles(info), info["t"], info["scale"])


def relative_parameters(
    reference: KeypointInfo,
    first: KeypointInfo,
    info: KeypointInfo,
    translation_scale: float,
    use_reference_scale: bool,
) -> dict[str, torch.Tensor]:
    """Pose parameters of the reference animated by ``info``: angles (B,) degrees, t (B, 3), scale (B, 1).

    Translation: ``(t - t_first) * translation_scale + t_reference``; scale: the reference's (upstream
    ``s_scale = 0``) or, with ``use_reference_scale=False``, the driving frame's own.
    """
    pitch, yaw, roll = _angles(info)
    t = (info["t"] - first["t"][:1]) * translation_scale + reference["t"][:1]
    scale = info["scale"] * 0 + reference["scale"][:1] if use_reference_scale else info["scale"]
    return {"pitch": pitch, "yaw": yaw, "roll": roll, "t": t, "scale": scale}


def animated_keypoints(
    reference: KeypointInfo,
    first: KeypointInfo,
    info: KeypointInfo,
    translation_scale: float = 0.5,
    use_reference_scale: bool = True,
) -> torch.Tensor:
    """The reference's canonical keypoints posed by the driving frames ``info`` -> (B, 21, 3) (upstream get_kps)."""
    p = relative_parameters(reference, first, info, translation_scale, use_reference_scale)
    kp = reference["kp"][:1].expand(info["kp"].shape[0], -1)
    return pose_keypoints(kp, p["pitch"], p["yaw"], p["roll"], p["t"], p["scale"])


def startup_keypoints(
    reference: KeypointInfo,
    first: KeypointInfo,
    count: int,
    translation_scale: float = 0.5,
    use_reference_scale: bool = True,
) -> torch.Tensor:
    """``count`` keypoint sets (count, 21, 3) moving from the reference's pose to the first driving frame's.

    Pose angles (degrees), translation and scale are interpolated linearly between the reference's own values
    and the first frame's animated values (upstream ``interpolate_kps_online``); the canonical keypoints are the
    reference's.
    """
    ref_pitch, ref_yaw, ref_roll = _angles({k: v[:1] for k, v in reference.items()})
    start = {"pitch": ref_pitch, "yaw": ref_yaw, "roll": ref_roll, "t": reference["t"][:1]}
    start["scale"] = reference["scale"][:1]
    end = relative_parameters(
        reference, first, {k: v[:1] for k, v in first.items()}, translation_scale, use_reference_scale
    )
    p = {k: lerp_frames(start[k], end[k], count, dim=0) for k in start}
    kp = reference["kp"][:1].expand(count, -1)
    return pose_keypoints(kp, p["pitch"], p["yaw"], p["roll"], p["t"], p["scale"])


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def device_constant(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant tensor on ``device``, made once per (values, device, dtype).

    Making it afresh in every window would copy it from the host, and a plain host-to-device copy waits for the
    GPU to finish everything queued before it: the window loop would stall on the previous window's step.
    """
    key = (values, str(device), dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, device=device, dtype=dtype)
    return _CONSTANTS[key]


def _pixel_points(keypoints: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 21, 3) keypoints in [-1, 1] -> (B, 7, 2) int64 pixel (x, y) of the selected ones, truncated as upstream."""
    index = device_constant(tuple(SELECTED_KEYPOINTS), keypoints.device, torch.int64)
    pts = keypoints[:, index, :2] * 0.5 + 0.5
    size = device_constant((width, height), keypoints.device, pts.dtype)
    return (pts * size).long()


def draw_keypoints(
    keypoints: torch.Tensor, height: int, width: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Pose canvases (B, 3, height, width) in [0, 1]: a disc of radius 4 per selected keypoint, colours summed.

    Matches upstream ``draw_keypoints`` (which always drew at 512x512) for ``height = width = 512``.
    """
    pts = _pixel_points(keypoints, height, width)
    xs = torch.arange(width, device=keypoints.device)
    ys = torch.arange(height, device=keypoints.device)
    colors = device_constant(KEYPOINT_COLORS, keypoints.device, torch.float32) / 255.0
    canvas = torch.zeros(pts.shape[0], 3, height, width, device=keypoints.device)
    for i in range(len(SELECTED_KEYPOINTS)):
        dx = (pts[:, i, 0, None, None] - xs[None, None, :]) ** 2  # (B, 1, W)
        dy = (pts[:, i, 1, None, None] - ys[None, :, None]) ** 2  # (B, H, 1)
        disc = (dx + dy <= KEYPOINT_RADIUS**2).float()  # (B, H, W)
        canvas = canvas + colors[i].view(1, 3, 1, 1) * disc[:, None]
    return canvas.clamp(0, 1).to(dtype)


def face_boxes(keypoints: torch.Tensor, height: int, width: int, min_side: int) -> torch.Tensor:
    """Face boxes (B, 4) int64 [x1, y1, x2, y2) in pixels of a (height, width) image from keypoints (B, 21, 3).

    Upstream ``get_boxes``; a degenerate box (no face: keypoints collapsed or off the image) is widened to at
    least ``min_side`` pixels about its centre and moved back inside the image, so that a crop always exists.
    """
    pts = _pixel_points(keypoints, height, width).float()
    cx, cy = pts[..., 0].mean(dim=1), pts[..., 1].mean(dim=1)
    side = (cy - pts[..., 1].amin(dim=1)) * 2.0 * FACE_BOX_SCALE
    x1 = (cx - side / 2 * FACE_BOX_NEAR).clamp(0, width - 1).long()
    y1 = (cy - side / 2 * FACE_BOX_NEAR).clamp(0, height - 1).long()
    x2 = (cx + side / 2 * FACE_BOX_FAR).clamp(0, width - 1).long()
    y2 = (cy + side / 2 * FACE_BOX_FAR).clamp(0, height - 1).long()
    x1, x2 = _widen(x1, x2, min(min_side, width - 1), width - 1)
    y1, y2 = _widen(y1, y2, min(min_side, height - 1), height - 1)
    return torch.stack([x1, y1, x2, y2], dim=1)


def _widen(lo: torch.Tensor, hi: torch.Tensor, min_side: int, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow [lo, hi) to at least ``min_side`` about its centre, then shift it into [0, limit]."""
    side = (hi - lo).clamp(min=min_side)
    lo = torch.where(hi - lo < min_side, (lo + hi) // 2 - min_side // 2, lo)
    lo = lo.clamp(min=0)
    lo = torch.minimum(lo, limit - side)
    return lo, lo + side
