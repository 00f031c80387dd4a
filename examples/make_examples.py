"""Regenerate the bundled examples: ``reference.png`` and ``driving.mp4``.

Both come from the public-domain NASA portrait of astronaut Eileen Collins that scikit-image ships as
``skimage.data.astronaut()`` (see examples/README.md). The driving clip is the mirrored portrait moved by a smooth
synthetic head motion (rotation, translation, zoom around the face) with a 440 Hz tone as its audio track.

scikit-image is needed only here, not by personalive. Without touching the project's environment:

    python -m pip install --target /tmp/sk scikit-image
    PYTHONPATH=/tmp/sk .venv/bin/python examples/make_examples.py

The output is deterministic up to the H.264/AAC encoders' own versions.
"""

from __future__ import annotations

import argparse
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent

# Face centre and portrait side in the 512x512 astronaut image, found by eye: the head spans about
# x 150..300, y 15..190 pixels.
FACE_CENTER = (225.0, 128.0)
PORTRAIT_SIDE = 256  # reference.png is a native-resolution crop (no resampling)
CLIP_SIDE = 256  # driving.mp4 frame size
CLIP_FPS = 25
CLIP_SECONDS = 3
CLIP_CRF = 30  # H.264 quality: higher is smaller; 30 keeps the clip well under 200 KB
AUDIO_RATE = 16000
AUDIO_HZ = 440.0
AUDIO_LEVEL = 0.2  # peak amplitude of the tone, full scale = 1
PAD = 96  # edge padding so that moved crops never leave the image


def astronaut() -> np.ndarray:
    """The (512, 512, 3) uint8 astronaut portrait from scikit-image."""
    try:
        from skimage import data
    except ImportError as exc:
        raise SystemExit(
            "scikit-image is needed to regenerate the examples: "
            "python -m pip install --target /tmp/sk scikit-image, then run with PYTHONPATH=/tmp/sk"
        ) from exc
    return np.ascontiguousarray(data.astronaut()[..., :3])


def make_reference(image: np.ndarray, path: Path) -> None:
    """Crop a square portrait around the face and save it as PNG."""
    cx, cy = FACE_CENTER
    half = PORTRAIT_SIDE // 2
    left, top = int(round(cx)) - half, max(0, int(round(cy)) - half)
    crop = image[top : top + PORTRAIT_SIDE, left : left + PORTRAIT_SIDE]
    Image.fromarray(crop).save(path, optimize=True)


def head_pose(t: float) -> tuple[float, float, float, float]:
    """Smooth synthetic head motion at time t seconds: (roll degrees, dx, dy pixels, zoom factor).

    Sums of slow sines with unrelated periods, starting at rest (all offsets 0, zoom 1 at t=0).
    """
    roll = 8.0 * math.sin(2 * math.pi * t / 2.0) + 3.0 * math.sin(2 * math.pi * t / 0.9)
    dx = 10.0 * math.sin(2 * math.pi * t / 1.5)
    dy = 6.0 * math.sin(2 * math.pi * t / 1.1) * math.sin(math.pi * t / CLIP_SECONDS)
    zoom = 1.0 + 0.08 * math.sin(math.pi * t / 1.5) ** 2
    return roll, dx, dy, zoom


def driving_frame(padded: Image.Image, center: tuple[float, float], t: float) -> np.ndarray:
    """One (CLIP_SIDE, CLIP_SIDE, 3) uint8 frame: the face crop with the head pose of time t applied."""
    roll, dx, dy, zoom = head_pose(t)
    # Output pixel (u, v), relative to the frame centre, samples the source at centre + shift + R(-roll) (u, v) / zoom:
    # the face appears rotated by roll, moved by (dx, dy) and magnified by zoom.
    scale = PORTRAIT_SIDE / CLIP_SIDE / zoom
    cos, sin = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    a, b = cos * scale, sin * scale
    d, e = -sin * scale, cos * scale
    half = CLIP_SIDE / 2
    cx, cy = center[0] - dx, center[1] - dy
    coeffs = (a, b, cx - a * half - b * half, d, e, cy - d * half - e * half)
    frame = padded.transform((CLIP_SIDE, CLIP_SIDE), Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC)
    return np.asarray(frame)


def tone(seconds: float) -> np.ndarray:
    """(1, samples) float32 mono sine with 50 ms fades at both ends."""
    n = int(round(seconds * AUDIO_RATE))
    t = np.arange(n, dtype=np.float64) / AUDIO_RATE
    fade = np.clip(np.minimum(t, seconds - t) / 0.05, 0.0, 1.0)
    return (AUDIO_LEVEL * fade * np.sin(2 * np.pi * AUDIO_HZ * t)).astype(np.float32)[None, :]


def make_driving(image: np.ndarray, path: Path) -> None:
    """Write the driving clip: mirrored portrait with synthetic head motion, H.264 + AAC tone, in MP4."""
    mirrored = np.ascontiguousarray(image[:, ::-1])
    padded = Image.fromarray(np.pad(mirrored, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="edge"))
    center = (image.shape[1] - 1 - FACE_CENTER[0] + PAD, FACE_CENTER[1] + PAD)
    n_frames = CLIP_FPS * CLIP_SECONDS

    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=CLIP_FPS)
        video.width = video.height = CLIP_SIDE
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(CLIP_CRF), "preset": "slow"}
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        audio.bit_rate = 32000

        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(driving_frame(padded, center, i / CLIP_FPS), format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode())

        samples = tone(CLIP_SECONDS)
        chunk = 1024  # AAC frame size
        for start in range(0, samples.shape[1], chunk):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + chunk]), format="fltp", layout="mono"
            )
            frame.sample_rate = AUDIO_RATE
            frame.pts = start
            frame.time_base = Fraction(1, AUDIO_RATE)
            container.mux(audio.encode(frame))
        container.mux(audio.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="Folder to write into (default: examples/).")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    image = astronaut()
    make_reference(image, args.out / "reference.png")
    make_driving(image, args.out / "driving.mp4")
    for name in ("reference.png", "driving.mp4"):
        size = (args.out / name).stat().st_size
        print(f"wrote {args.out / name} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
