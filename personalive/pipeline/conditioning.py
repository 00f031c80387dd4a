"""Image preprocessing on the device, in torch: resizes, normalisation, CLIP pixels and keypoint-box face crops.

Upstream preprocesses with PIL on the host (``VaeImageProcessor``, ``CLIPImageProcessor``: Lanczos / bicubic
resizes of uint8 images). Here frames go to the device once as uint8 and every step is a batched torch op:
antialiased bilinear (or bicubic for CLIP) resizes in float, no host round trip. The values differ from PIL's by
resampling-kernel detail only; the parity tests feed PIL-preprocessed tensors to the stages below to compare the
rest exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KEYPOINT_INPUT_SIZE = 256  # the LivePortrait motion extractor's input side (upstream: 256x256, values in [0, 1])
FACE_CROP_SIZE = 224  # the motion encoder's face-crop side (upstream wrapper_trt.crop_face_tensor)
CLIP_INPUT_SIZE = 224  # upstream resizes the reference to 224x224 before CLIPImageProcessor (a no-op crop then)


def to_nchw(images: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(H, W, 3) or (B, H, W, 3) uint8 images on any device -> (B, 3, H, W) float in [0, 1] on ``device``."""
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[-1] != 3:
        from personalive.errors import InputError

        raise InputError(f"expected RGB images of shape (H, W, 3) or (B, H, W, 3), got {tuple(images.shape)}")
    images = images.to(device, non_blocking=True).permute(0, 3, 1, 2)
    return images.to(dtype) / 255.0


def resize(images: torch.Tensor, height: int, width: int, mode: str = "bilinear") -> torch.Tensor:
    """(B, C, H, W) -> (B, C, height, width); antialiased when shrinking; a no-op at the same size."""
    if images.shape[-2:] == (height, width):
        return images
    return F.interpolate(images, size=(height, width), mode=mode, align_corners=False, antialias=True)


def clip_pixels(images01: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> CLIP image-encoder input (B, 3, 224, 224), normalised with ``mean``/``std``."""
    pixels = resize(images01, CLIP_INPUT_SIZE, CLIP_INPUT_SIZE, mode="bicubic").clamp(0, 1)
    mean_t = torch.tensor(mean, device=pixels.device, dtype=pixels.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=pixels.device, dtype=pixels.dtype).view(1, -1, 1, 1)
    return (pixels - mean_t) / std_t


def clip_normalization() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """CLIP's pixel mean and std (OpenAI's constants, the values of sd-image-variations' feature extractor)."""
    from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    return tuple(OPENAI_CLIP_MEAN), tuple(OPENAI_CLIP_STD)


def keypoint_pixels(images01: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> motion-extractor input (B, 3, 256, 256) in [0, 1]."""
    return resize(images01, KEYPOINT_INPUT_SIZE, KEYPOINT_INPUT_SIZE)


def crop_faces(images: torch.Tensor, boxes: torch.Tensor, size: int = FACE_CROP_SIZE) -> torch.Tensor:
    """Crop ``boxes`` (B, 4) int [x1, y1, x2, y2) from ``images`` (B, C, H, W) and resize each to (size, size).

    Equal to slicing ``image[:, y1:y2, x1:x2]`` and ``F.interpolate(..., mode="bilinear", align_corners=False)``
    (upstream ``crop_face_tensor``), done for the whole batch with one ``grid_sample`` and no host sync: sample
    positions are clamped to the box's own pixels, as interpolate clamps at the crop's border.
    """
    _, _, height, width = images.shape
    steps = (torch.arange(size, device=images.device, dtype=torch.float32) + 0.5) / size  # (size,)
    boxes = boxes.to(torch.float32)
    x1, y1, x2, y2 = boxes.unbind(dim=1)

    def axis(lo: torch.Tensor, hi: torch.Tensor, extent: int) -> torch.Tensor:
        pos = lo[:, None] + steps[None, :] * (hi - lo)[:, None] - 0.5  # source pixel centres, (B, size)
        pos = torch.maximum(torch.minimum(pos, (hi - 1)[:, None]), lo[:, None])
        return (2 * pos + 1) / extent - 1  # grid_sample's normalised coordinate (align_corners=False)

    gx, gy = axis(x1, x2, width), axis(y1, y2, height)
    grid = torch.stack(
        [gx[:, None, :].expand(-1, size, -1), gy[:, :, None].expand(-1, -1, size)], dim=-1
    )  # (B, size, size, 2)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def lerp_frames(start: torch.Tensor, end: torch.Tensor, count: int, dim: int = 1) -> torch.Tensor:
    """``count`` steps from ``start`` toward ``end`` along ``dim`` (size 1 there), excluding ``end``.

    (B, 1, ...) -> (B, count, ...) for ``dim=1``: upstream ``interpolate_tensors(a, b, num=count + 1)[:, :-1]``,
    weights ``linspace(0, 1, count + 1)[:-1]``, ``(1 - a) x + a y`` (the start-up motion tokens and keypoints).
    """
    alphas = torch.linspace(0, 1, count + 1, device=start.device, dtype=start.dtype)[:-1]
    alphas = alphas.view(*([1] * dim), -1, *([1] * (start.dim() - dim - 1)))
    return (1 - alphas) * start + alphas * end
