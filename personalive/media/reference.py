"""The reference portrait: an image file (PNG, JPEG, WebP, BMP, ...) or a video's first frame, as RGB uint8.

* EXIF orientation is applied (phone photos come out upright).
* Every PIL mode becomes RGB: grayscale (L, I, I;16, F) is replicated to 3 channels with 16-bit and float images
  scaled to 8 bits by their full range; palette (P) images are expanded; transparency (RGBA, LA, P with a
  transparent colour) is composited over white, the usual background of a cut-out portrait.
* A video file given as the reference contributes its first frame (rotation applied).
* A reference smaller than :data:`MIN_SIDE` pixels on a side carries no face to animate and is refused; an image
  declaring more pixels than PIL's decompression-bomb limit (e.g. a 40000x40000 PNG of a few bytes) is refused
  before it is decoded.
* Non-square references are cropped/padded/stretched to the model resolution by ``media.crop``, like the driving
  frames (see :mod:`personalive.media.resize`).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from personalive.errors import InputError
from personalive.media.outputs import shown
from personalive.media.source import check_input_file, first_frame

log = logging.getLogger(__name__)

BACKGROUND = 255  # transparent pixels are composited over white
# the smallest reference side accepted: below it there is no face to see (the model works at 512 px; the face
# crops of the motion extractor are 256 px), and a 1x1 "portrait" is always a mistake
MIN_SIDE = 64


def load_reference(path: str | os.PathLike, min_side: int = MIN_SIDE) -> np.ndarray:
    """Read the reference portrait as an upright (H, W, 3) uint8 RGB array of at least ``min_side`` px a side."""
    path = check_input_file(Path(path), "reference image")
    rgb = _read_image(path)
    if rgb is None:
        try:
            rgb = first_frame(path, what="reference")
        except InputError as exc:
            raise InputError(
                f"{shown(path)}: reference is neither an image (PNG, JPEG, WebP, BMP) nor a readable video"
            ) from exc
        log.info("%s: using the first frame of the video as the reference", shown(path))
    height, width = rgb.shape[:2]
    if min(height, width) < min_side:
        raise InputError(
            f"{shown(path)}: reference image is {width}x{height} pixels, too small to hold a face "
            f"(at least {min_side}x{min_side} needed; use a larger portrait)"
        )
    return rgb


def _read_image(path: Path) -> np.ndarray | None:
    """The image as RGB, or None when PIL does not know the format (it may be a video)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # between one and two times PIL's limit PIL only warns: such images (up to ~180 Mpx) are decoded
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return image_to_rgb(image)
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{shown(path)}: reference image is too large to decode safely ({_first_line(exc)}); "
            "use an image of at most a few thousand pixels a side"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{shown(path)}: reference image is damaged or unreadable ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def image_to_rgb(image) -> np.ndarray:
    """A PIL image of any mode -> upright (H, W, 3) uint8 RGB."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _gray_high_depth(np.asarray(image), mode)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(image.convert("RGBA")).astype(np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb = rgba[..., :3] * alpha + BACKGROUND * (1.0 - alpha)
        return np.ascontiguousarray(rgb.round().clip(0, 255).astype(np.uint8))
    if mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _gray_high_depth(values: np.ndarray, mode: str) -> np.ndarray:
    values = values.astype(np.float64)
    if mode == "F":
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
    else:
        # 16-bit data (PIL opens 16-bit PNGs as I;16 or I): full scale is 65535
        scaled = values / 65535.0 * 255.0
    gray = scaled.round().clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))
