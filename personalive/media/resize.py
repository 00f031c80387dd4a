"""Bring a frame or reference image to the model resolution, on the device, in torch.

Non-matching aspect ratios are handled by ``media.crop``:

* ``center`` (default): crop the largest centred region of the target aspect ratio, then resize. Nothing is
  distorted; the edges of wide or tall frames are lost. A portrait is usually centred, so this keeps the face.
* ``pad``: letterbox: resize the whole frame to fit inside the target and pad the rest with black.
* ``stretch``: resize to the target size ignoring the aspect ratio (what upstream does to its inputs).

Resizing is bilinear with antialiasing (like PIL's resize that upstream's transforms use), in fp32, rounded
back to uint8. The output, and so the written video, is the model resolution ``generation.height x width``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from personalive.config import CropMode


def crop_box(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the largest centred box of the target's aspect ratio inside (height, width)."""
    if width * target_h > height * target_w:  # too wide
        w = max(1, round(height * target_w / target_h))
        return 0, (width - w) // 2, height, w
    h = max(1, round(width * target_h / target_w))
    return (height - h) // 2, 0, h, width


def fit_to_model(
    frame: np.ndarray | torch.Tensor,
    height: int,
    width: int,
    mode: str = "center",
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(h, w, 3) uint8 -> (height, width, 3) uint8 tensor on ``device``, by ``mode`` (center | pad | stretch)."""
    choices = [m.value for m in CropMode]
    if mode not in choices:
        raise ValueError(f"crop mode {mode!r}: expected one of {', '.join(choices)}")
    if isinstance(frame, np.ndarray) and not frame.flags.writeable:
        frame = frame.copy()  # torch refuses to share read-only numpy buffers (PIL and FFmpeg hand those out)
    image = _to_device(torch.as_tensor(frame), torch.device(device))
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 frame, got {tuple(image.shape)} {image.dtype}")
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if mode == "center":
        top, left, ch, cw = crop_box(h, w, height, width)
        image = image[top : top + ch, left : left + cw]
        return _resize(image, height, width)
    if mode == "stretch":
        return _resize(image, height, width)
    scale = min(height / h, width / w)  # pad: fit inside, then centre on black
    fh, fw = max(1, round(h * scale)), max(1, round(w * scale))
    inner = _resize(image, fh, fw)
    out = torch.zeros((height, width, 3), dtype=torch.uint8, device=image.device)
    top, left = (height - fh) // 2, (width - fw) // 2
    out[top : top + fh, left : left + fw] = inner
    return out


def _to_device(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type != "cuda" or image.device.type != "cpu":
        return image.to(device)
    # through pinned memory without waiting: a plain copy from pageable memory first waits for all the GPU work
    # queued before it (the previous windows), which would serialise decoding with the window loop
    return image.pin_memory().to(device, non_blocking=True)


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if tuple(image.shape[:2]) == (height, width):
        return image.contiguous()
    x = image.permute(2, 0, 1)[None].float()  # (1, 3, h, w)
    antialias = height < image.shape[0] or width < image.shape[1]
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=antialias)
    return x[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
