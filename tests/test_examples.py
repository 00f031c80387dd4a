"""The bundled examples exist, are small, and decode with the stated size, frame count, frame rate and audio."""

from __future__ import annotations

import os
import stat
import subprocess
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


# ------------------------------------------------------------------------------------------------ demo.sh
# demo.sh run against a stand-in `personalive` that records its arguments (the real run is `make demo`).
STUB = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$STUB_LOG"
if [[ "$1 $2" == "weights init-random" ]]; then mkdir -p "$3"; fi
"""


def _run_demo(tmp_path, **env_extra):
    stub = tmp_path / "personalive"
    stub.write_text(STUB)
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PERSONALIVE_WEIGHTS", "DEMO_ARGS")}
    env.update(PERSONALIVE=str(stub), STUB_LOG=str(tmp_path / "calls.log"), DEMO_OUT=str(tmp_path / "demo.mp4"))
    env.update(env_extra)
    result = subprocess.run(["bash", str(EXAMPLES / "demo.sh")], env=env, capture_output=True, text=True, timeout=60)
    calls = (tmp_path / "calls.log").read_text().splitlines() if (tmp_path / "calls.log").exists() else []
    return result, calls


def test_demo_with_random_weights_inits_once_and_warns(tmp_path):
    weights = tmp_path / "demo-weights"
    result, calls = _run_demo(tmp_path, DEMO_WEIGHTS=str(weights))
    assert result.returncode == 0, result.stderr
    assert calls[0] == f"weights init-random {weights} --size tiny --seed 0"
    animate = calls[1]
    assert animate.startswith("animate --ref examples/reference.png --drive examples/driving.mp4")
    for arg in (
        f"--weights {weights}",
        f"-o {tmp_path / 'demo.mp4'}",
        "--device cpu",
        "--dtype fp32",
        "--overwrite",
        "--max-frames 75",
    ):
        assert arg in animate
    assert "generation.height=128" in animate and "generation.width=128" in animate
    assert "meaningless" in result.stderr and "personalive weights download" in result.stderr
    assert "PERSONALIVE_WEIGHTS" in result.stderr
    assert result.stdout == ""  # everything the demo says goes to stderr

    (tmp_path / "calls.log").unlink()
    _, calls = _run_demo(tmp_path, DEMO_WEIGHTS=str(weights))
    assert [c.split()[0] for c in calls] == ["animate"]  # cached: no second init-random


def test_demo_redoes_an_interrupted_init(tmp_path):
    weights = tmp_path / "demo-weights"
    weights.mkdir()  # a folder without the completion marker
    (weights / "half-written.pth").write_bytes(b"x")
    result, calls = _run_demo(tmp_path, DEMO_WEIGHTS=str(weights))
    assert result.returncode == 0, result.stderr
    assert calls[0].startswith("weights init-random")
    assert not (weights / "half-written.pth").exists()


def test_demo_with_real_weights_uses_them_at_full_size(tmp_path):
    result, calls = _run_demo(tmp_path, PERSONALIVE_WEIGHTS=str(tmp_path / "real"))
    assert result.returncode == 0, result.stderr
    assert len(calls) == 1
    assert f"--weights {tmp_path / 'real'}" in calls[0]
    assert "generation.height" not in calls[0] and "--device cpu" not in calls[0] and "--max-frames" not in calls[0]
    assert "meaningless" not in result.stderr
