"""Synthetic clips for the media and CLI tests, written with PyAV (small, a few frames)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np


def frame_pattern(index: int, width: int, height: int) -> np.ndarray:
    """A frame whose content tells its index (a bright bar moving right) and its orientation (red top rows)."""
    rgb = np.full((height, width, 3), 40, np.uint8)
    rgb[: max(1, height // 4), :, 0] = 220  # red band at the top
    x = (index * 7) % max(1, width - 4)
    rgb[:, x : x + 4, 1] = 255  # green moving bar
    return rgb


def make_video(
    path: Path,
    *,
    frames: int = 6,
    rate: Fraction | int = 25,
    width: int = 64,
    height: int = 64,
    audio_seconds: float | None = None,
    audio_rate: int = 16000,
    rotation: int | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    faststart: bool = False,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
) -> Path:
    """Write a small clip; ``pts`` (in ``time_base``) makes a variable-frame-rate video."""
    path = Path(path)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(rate))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio = None
        if audio_seconds:
            audio = container.add_stream("aac", rate=audio_rate)
            audio.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, width, height), format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio is not None:
            total = round(audio_seconds * audio_rate)
            t = np.arange(total) / audio_rate
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, total, 1024):
                chunk = samples[None, start : start + 1024]
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
                af.sample_rate, af.pts = audio_rate, start
                container.mux(audio.encode(af))
            container.mux(audio.encode(None))
    return path


def probe(path: Path) -> dict:
    """Frame count (decoded), rate, size and audio duration of a written file."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info = {"rate": video.average_rate, "width": video.width, "height": video.height, "audio": None}
        info["frames"] = sum(1 for _ in container.decode(video))
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            info["audio"] = float(stream.duration * stream.time_base)
    return info


class FakeAnimator:
    """Stands in for the pipeline's Animator in job tests: same calls, cheap arithmetic, seeded noise."""

    def __init__(self, config, device=None, dtype=None):
        import torch

        self.config = config
        self.stats = SimpleNamespace(conditioning=0.0, denoising=0.0, keyframes=0.0, keyframes_added=0)
        self.fused: list = []
        self._torch = torch

    def fuse_reference(self, image):
        assert image.dtype == self._torch.uint8 and image.ndim == 3 and image.shape[-1] == 3
        self.fused.append(image)
        return image.cpu().numpy().astype(np.int16)

    def animate(self, ref_state, frames, generator):
        # numpy arithmetic: tiny torch ops are slow on a loaded 2-core machine; the noise still comes from
        # the generator, so the seed changes the frames
        for frame in frames:
            offset = int(self._torch.randint(0, 60, (1,), generator=generator))
            self.stats.denoising += 0.001
            mixed = (frame.cpu().numpy().astype(np.int16) + ref_state) // 2 + offset
            yield self._torch.from_numpy(mixed.clip(0, 255).astype(np.uint8))


def fake_loader(calls: list | None = None):
    """A `jobs.load_animators` replacement: records each (config, device, dtype) it is asked to load."""

    def load(config, device, dtype):
        if calls is not None:
            calls.append((config, device, dtype))
        return lambda job_config: FakeAnimator(job_config, device, dtype)

    return load
