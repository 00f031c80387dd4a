"""The bundled examples exist, are small, and decode with the stated size, frame count, frame rate and audio."""

from __future__ import annotations

import stat
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MAX_BYTES = 300 * 1024  # "a few hundred KB at most" per file


@pytest.mark.parametrize("name", ["reference.png", "driving.mp4", "make_examples.py", "README.md", "demo.sh"])
def test_example_files_exist(name):
    assert (EXAMPLES / name).is_file()


@pytest.mark.parametrize("name", ["reference.png", "driving.mp4"])
def test_example_media_are_small(name):
    assert 0 < (EXAMPLES / name).stat().st_size < MAX_BYTES


def test_reference_is_a_square_rgb_portrait():
    with Image.open(EXAMPLES / "reference.png") as image:
        assert image.format == "PNG"
        assert image.mode == "RGB"
        assert image.size == (256, 256)
        pixels = np.asarray(image)
    # a photograph, not a flat placeholder
    assert pixels.std() > 30


def test_driving_clip_video_stream():
    with av.open(str(EXAMPLES / "driving.mp4")) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        assert video.average_rate == Fraction(25, 1)
        assert (video.codec_context.width, video.codec_context.height) == (256, 256)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 75  # 3 s at 25 fps
    assert frames[0].shape == (256, 256, 3)
    # the head moves: consecutive frames differ, and the clip is not a still
    diffs = [
        np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in zip(frames[:-1], frames[1:], strict=True)
    ]
    assert min(diffs) > 0.5
    assert np.abs(frames[0].astype(np.int16) - frames[18].astype(np.int16)).mean() > 5


def test_driving_clip_audio_is_a_440hz_tone():
    with av.open(str(EXAMPLES / "driving.mp4")) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        rate = audio.codec_context.sample_rate
        samples = np.concatenate(
            [frame.to_ndarray().reshape(-1, frame.samples)[0] for frame in container.decode(audio=0)]
        )
    assert abs(len(samples) / rate - 3.0) < 0.1
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * rate / len(samples)
    assert abs(peak_hz - 440.0) < 2.0


def test_demo_script_is_bash():
    text = (EXAMPLES / "demo.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in text
    assert (EXAMPLES / "demo.sh").stat().st_mode & stat.S_IXUSR
