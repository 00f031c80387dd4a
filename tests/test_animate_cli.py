"""`personalive animate` through the CLI: options do what they say, bad inputs fail cleanly, no partial files.

Most tests swap the models for a cheap stand-in (``jobs.load_animators`` patched) so they test the media and job
machinery in milliseconds; ``test_real_pipeline_*`` run the real pipeline on tiny random weights.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media.synth import fake_loader, make_video, probe
from PIL import Image
from typer.testing import CliRunner

from personalive import jobs
from personalive.cli import app

REAL_LOADER = jobs.load_animators
SIZE = ["--set", "generation.height=128", "--set", "generation.width=128", "--dtype", "fp32", "--device", "cpu"]


@pytest.fixture
def fake(monkeypatch):
    calls: list = []
    monkeypatch.setattr(jobs, "load_animators", fake_loader(calls))
    return calls


@pytest.fixture
def ref(tmp_path) -> Path:
    path = tmp_path / "face.png"
    rgb = np.zeros((90, 70, 3), np.uint8)
    rgb[20:60, 15:55] = (230, 180, 150)
    Image.fromarray(rgb).save(path)
    return path


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})


def frames_of(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def only_line(result) -> str:
    """The one error line (log lines may precede it); never a traceback."""
    text = result.output.strip()
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith(("error:", "internal error:"))]
    assert len(errors) == 1, text
    return errors[0]


@pytest.mark.parametrize("rate", [24, 25, Fraction(30000, 1001), 60])
def test_frames_rate_and_audio_preserved(fake, tmp_path, ref, rate):
    drive = make_video(tmp_path / "drive.mp4", frames=9, rate=rate, audio_seconds=1.0)
    out = tmp_path / "out.mp4"
    result = run("animate", "--ref", ref, "--drive", drive, "-o", out, *SIZE)
    assert result.exit_code == 0, result.output
    info = probe(out)
    assert info["frames"] == 9 and info["rate"] == Fraction(rate)
    assert (info["width"], info["height"]) == (128, 128)
    assert info["audio"] == pytest.approx(9 / float(Fraction(rate)), abs=0.03)
    assert len(fake) == 1  # models loaded once


def test_rotated_and_odd_sized_inputs(fake, tmp_path, ref):
    drive = make_video(tmp_path / "phone.mp4", frames=5, width=98, height=74, rotation=90)
    out = tmp_path / "o.mp4"
    assert run("animate", "--ref", ref, "--drive", drive, "-o", out, *SIZE).exit_code == 0
    info = probe(out)
    assert info["frames"] == 5 and (info["width"], info["height"]) == (128, 128)
    # the red band of the stored frame's top lands on the left after the 90-degree rotation
    first = frames_of(out)[0].astype(int)
    assert first[:, :10, 0].mean() > first[:, -10:, 0].mean() + 30


def test_default_output_name_and_overwrite(fake, tmp_path, ref, monkeypatch):
    drive = make_video(tmp_path / "clip.mp4", frames=3)
    monkeypatch.chdir(tmp_path)
    assert run("animate", "--ref", ref, "--drive", drive, *SIZE).exit_code == 0
    out = tmp_path / "face_clip.mp4"
    assert out.is_file()
    before = out.read_bytes()
    result = run("animate", "--ref", ref, "--drive", drive, *SIZE)
    assert result.exit_code == 2 and "face_clip.mp4: output exists (pass --overwrite" in only_line(result)
    assert out.read_bytes() == before
    assert run("animate", "--ref", ref, "--drive", drive, "--seed", "5", "--overwrite", *SIZE).exit_code == 0
    assert out.read_bytes() != before


def test_seed_no_audio_max_frames_crop(fake, tmp_path, ref):
    drive = make_video(tmp_path / "d.mp4", frames=6, width=96, height=64, audio_seconds=1.0)
    outs = {}
    for name, extra in {
        "a": [],
        "same": [],
        "seed": ["--seed", "7"],
        "noaudio": ["--no-audio"],
        "max": ["--max-frames", "4"],
        "pad": ["--set", "media.crop=pad"],
    }.items():
        outs[name] = tmp_path / f"{name}.mp4"
        result = run("animate", "--ref", ref, "--drive", drive, "-o", outs[name], *SIZE, *extra)
        assert result.exit_code == 0, result.output
    a, same, seed = frames_of(outs["a"]), frames_of(outs["same"]), frames_of(outs["seed"])
    assert np.array_equal(a, same)
    assert np.abs(a.astype(int) - seed).mean() > 3
    assert probe(outs["a"])["audio"] is not None and probe(outs["noaudio"])["audio"] is None
    assert probe(outs["max"])["frames"] == 4 and probe(outs["max"])["audio"] == pytest.approx(4 / 25, abs=0.03)
    pad = frames_of(outs["pad"])
    assert pad[:, :10].mean() < a[:, :10].mean()  # letterbox bars are black; the bar fades with the fake noise


def test_report(fake, tmp_path, ref):
    drive = make_video(tmp_path / "d.mp4", frames=5, rate=Fraction(30000, 1001), audio_seconds=0.5)
    out, report = tmp_path / "o.mp4", tmp_path / "r.json"
    args = ["animate", "--ref", ref, "--drive", drive, "-o", out, *SIZE, "--seed", "3", "--report", report]
    assert run(*args, "--backend", "eager").exit_code == 0
    data = json.loads(report.read_text())
    assert data["frames"] == 5 and data["input_frame_rate"] == data["output_frame_rate"] == "30000/1001"
    assert data["seed"] == 3 and data["dtype"] == "fp32" and data["backend"] == "eager" and data["device"] == "cpu"
    assert {"decode", "denoising", "encode"} <= set(data["timings"])
    assert data["versions"]["av"] == av.__version__ and data["peak_host_memory_mib"] > 0
    assert data["ref"] == str(ref) and data["out"] == str(out) and data["audio"] is True
    assert run(*args, "--overwrite", "--dtype", "bf16").exit_code == 0
    assert json.loads(report.read_text())["dtype"] == "bf16"
    assert fake[-1][2].__repr__() == "torch.bfloat16"  # the dtype given to the model loader


def test_device_cuda_without_gpu(fake, tmp_path, ref):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    drive = make_video(tmp_path / "d.mp4", frames=2)
    result = run("animate", "--ref", ref, "--drive", drive, "-o", tmp_path / "o.mp4", "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA GPU is visible" in only_line(result)
    assert not (tmp_path / "o.mp4").exists()


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _zero_frames(path: Path) -> Path:
    make_video(path, frames=4, faststart=True)
    data = bytearray(path.read_bytes())
    start = bytes(data).index(b"mdat") + 4
    data[start:] = b"\x00" * (len(data) - start)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("missing_ref", 2, "nope.png: reference image not found"),
        ("missing_drive", 2, "nope.mp4: driving video not found"),
        ("ref_not_image", 2, "notes.png: reference is neither an image"),
        ("drive_random", 2, "noise.mp4: driving video is not a readable video"),
        ("drive_empty", 2, "empty.mp4: driving video is an empty file"),
        ("ref_empty", 2, "empty.png: reference image is an empty file"),
        ("audio_only", 2, "voice.m4a: driving video has no video stream"),
        ("zero_frames", 2, "zero.mp4: driving video has no decodable video frame"),
        ("unwritable", 2, "o.mp4: output directory"),
        ("weights_missing", 2, "no_weights: weights directory not found"),
    ],
)
def test_bad_inputs(fake, monkeypatch, tmp_path, ref, case, code, message):
    drive = make_video(tmp_path / "d.mp4", frames=3)
    out = tmp_path / "o.mp4"
    args = {"ref": ref, "drive": drive, "out": out}
    if case == "missing_ref":
        args["ref"] = tmp_path / "nope.png"
    elif case == "missing_drive":
        args["drive"] = tmp_path / "nope.mp4"
    elif case == "ref_not_image":
        args["ref"] = tmp_path / "notes.png"
        args["ref"].write_text("not an image\n" * 10)
    elif case == "drive_random":
        args["drive"] = tmp_path / "noise.mp4"
        args["drive"].write_bytes(np.random.default_rng(0).bytes(4000))
    elif case == "drive_empty":
        args["drive"] = tmp_path / "empty.mp4"
        args["drive"].write_bytes(b"")
    elif case == "ref_empty":
        args["ref"] = tmp_path / "empty.png"
        args["ref"].write_bytes(b"")
    elif case == "audio_only":
        args["drive"] = _audio_only(tmp_path / "voice.m4a")
    elif case == "zero_frames":
        args["drive"] = _zero_frames(tmp_path / "zero.mp4")
    elif case == "unwritable":
        args["out"] = tmp_path / "missing_dir" / "o.mp4"
    elif case == "weights_missing":
        monkeypatch.setattr(jobs, "load_animators", REAL_LOADER)
    extra = ["--weights", tmp_path / "no_weights"] if case == "weights_missing" else []
    before = set(os.listdir(tmp_path))
    result = run("animate", "--ref", args["ref"], "--drive", args["drive"], "-o", args["out"], *SIZE, *extra)
    assert result.exit_code == code, result.output
    assert message in only_line(result)
    assert set(os.listdir(tmp_path)) == before  # no output, no temporary file


def test_truncated_drive_uses_decoded_frames(fake, tmp_path, ref):
    drive = make_video(tmp_path / "cut.mp4", frames=40, width=96, height=96, faststart=True)
    data = drive.read_bytes()
    start = data.index(b"mdat") + 4
    drive.write_bytes(data[: start + (len(data) - start) // 2])
    out, report = tmp_path / "o.mp4", tmp_path / "r.json"
    result = run("animate", "--ref", ref, "--drive", drive, "-o", out, *SIZE, "--report", report)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "cut.mp4: the stream ended after" in text and "using the frames decoded" in text
    data = json.loads(report.read_text())
    assert data["truncated_input"] is True and 0 < data["frames"] < 40 == data["input_frames_expected"]
    assert probe(out)["frames"] == data["frames"]


_SLOW_CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from personalive import jobs
from media.synth import fake_loader, FakeAnimator
slow = FakeAnimator.animate
def animate(self, ref_state, frames, generator):
    for frame in slow(self, ref_state, frames, generator):
        time.sleep(0.2)
        yield frame
FakeAnimator.animate = animate
jobs.load_animators = fake_loader()
from personalive.cli import main
sys.argv = ["personalive"] + sys.argv[1:]
main()
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_leaves_no_file(tmp_path, ref, sig):
    drive = make_video(tmp_path / "d.mp4", frames=60, audio_seconds=2.0)
    out = tmp_path / "o.mp4"
    script = _SLOW_CHILD.format(tests=str(Path(__file__).parent))
    args = [sys.executable, "-c", script, "animate", "--ref", str(ref), "--drive", str(drive), "-o", str(out), *SIZE]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.time() + 60
    while not any(name.endswith(".tmp.mp4") for name in os.listdir(tmp_path)) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # some frames written
    child.send_signal(sig)
    output, _ = child.communicate(timeout=60)
    assert child.returncode == 130, output.decode()
    assert b"interrupted" in output and b"Traceback" not in output
    assert sorted(os.listdir(tmp_path)) == ["d.mp4", "face.png"]


def test_log_progress_without_terminal(caplog):
    progress = jobs.LogProgress(every=3)
    with caplog.at_level(logging.INFO, logger="personalive.jobs"):
        progress.start("o.mp4", 9)
        for done in range(1, 10):
            progress.update(done)
        progress.finish()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and lines[0].startswith("o.mp4: 3/9 frames,") and "fps, ETA" in lines[0]
