"""Faces through the CLI: paste-back size and geometry, comparison video, motion templates end to end."""

from __future__ import annotations

import json
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

TINY = ["--set", "generation.height=128", "--set", "generation.width=128", "--dtype", "fp32", "--device", "cpu"]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})


def frames_of(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _photo(path: Path, height: int, width: int) -> np.ndarray:
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 250, width, dtype=np.uint8)[None]  # a ramp: any misplaced paste shows
    rgb[..., 2] = 90
    Image.fromarray(rgb).save(path)
    return rgb


def test_paste_back_output_has_the_photo_size_and_keeps_the_photo_outside(monkeypatch, tmp_path):
    monkeypatch.setattr(jobs, "load_animators", fake_loader())
    photo = _photo(tmp_path / "wide.png", 91, 161)  # odd sides: the output drops the last row and column
    drive = make_video(tmp_path / "d.mp4", frames=3, rate=Fraction(25), width=64, height=64)
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    settings = ["--set", "media.reference_crop=center", "--report", report]
    result = run(
        "animate", "--ref", tmp_path / "wide.png", "--drive", drive, "-o", out, "--paste-back", *TINY, *settings
    )
    assert result.exit_code == 0, result.output
    info = probe(out)
    assert (info["width"], info["height"], info["frames"]) == (160, 90, 3)
    assert json.loads(report.read_text())["output_size"] == [160, 90]
    frames = frames_of(out).astype(np.int16)
    # the centre square (x 35..125) is the animation; left and right of it the photo, up to H.264's loss
    outside = np.abs(frames[:, :, :30] - photo[None, :90, :30]).mean()
    assert outside < 4, outside
    assert np.abs(frames[:, :, 40:120] - photo[None, :90, 40:120]).mean() > 10  # the fake's frames differ inside


def test_paste_back_needs_a_square(monkeypatch, tmp_path):
    monkeypatch.setattr(jobs, "load_animators", fake_loader())
    _photo(tmp_path / "wide.png", 90, 160)
    drive = make_video(tmp_path / "d.mp4", frames=2, rate=Fraction(25), width=64, height=64)
    out = tmp_path / "out.mp4"
    args = ["--set", "media.reference_crop=center", "--set", "media.crop=pad", "--paste-back"]
    result = run("animate", "--ref", tmp_path / "wide.png", "--drive", drive, "-o", out, *TINY, *args)
    assert result.exit_code == 2 and "--paste-back needs the reference's square" in result.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["d.mp4", "wide.png"]


def test_motion_template_and_compare_video_with_the_real_pipeline(tmp_path, tiny_weights):
    _photo(tmp_path / "face.png", 100, 80)
    drive = make_video(
        tmp_path / "drive.mp4", frames=5, rate=Fraction(30000, 1001), width=98, height=74, audio_seconds=1
    )
    common = ["--weights", tiny_weights, *TINY]
    template = tmp_path / "drive.motion"
    result = run("motion", "extract", drive, "-o", template, *common)
    assert result.exit_code == 0, result.output
    assert template.read_bytes()[8:9] == b"{"  # safetensors: a JSON header, no pickle
    from_video, from_template, compare = tmp_path / "v.mp4", tmp_path / "t.mp4", tmp_path / "cmp.mp4"
    # crf 0: the random-weight frames are noise-like, which lossy H.264 would blur differently in the two videos
    animate = ["animate", "--ref", tmp_path / "face.png", "--seed", "4", "--set", "media.crf=0", *common]
    result = run(*animate, "--drive", drive, "-o", from_video, "--compare", compare)
    assert result.exit_code == 0, result.output
    result = run(*animate, "--drive", template, "-o", from_template)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(frames_of(from_template), frames_of(from_video))
    t_info, c_info = probe(from_template), probe(compare)
    assert t_info["rate"] == c_info["rate"] == Fraction(30000, 1001) and t_info["audio"] and c_info["audio"]
    # reference as the model sees it (128) | driving panel (98x74 at height 128 -> 170) | output (128)
    assert (c_info["width"], c_info["height"], c_info["frames"]) == (128 + 170 + 128, 128, 5)
    # its right panel is the output (only yuv420p's chroma at the panel's left edge mixes with its neighbour)
    right = frames_of(compare)[:, :, -126:].astype(float)
    assert np.abs(right - frames_of(from_video)[:, :, 2:]).mean() < 1
    # a broken template: one line, exit 2, nothing written (other weights/settings: tests/pipeline/test_motion.py)
    bad = tmp_path / "bad.mp4"
    (tmp_path / "junk.motion").write_bytes(b"junk")
    result = run(*animate, "--drive", tmp_path / "junk.motion", "-o", bad)
    assert result.exit_code == 2 and "junk.motion: not a readable motion template" in result.output
    assert not bad.exists()


@pytest.mark.parametrize("name", ["x.mp4"])
def test_motion_extract_refuses_a_wrong_name_and_an_existing_file(tmp_path, name):
    drive = make_video(tmp_path / "d.mp4", frames=2, rate=Fraction(25), width=32, height=32)
    result = run("motion", "extract", drive, "-o", tmp_path / name)
    assert result.exit_code == 2 and "must end in .motion" in result.output
    (tmp_path / "e.motion").write_bytes(b"x")
    result = run("motion", "extract", drive, "-o", tmp_path / "e.motion")
    assert result.exit_code == 2 and "e.motion: output exists" in result.output


@pytest.mark.faces
def test_face_tracking_end_to_end_on_a_wide_clip(tmp_path, tiny_weights):
    """A real face moving in a 16:9 clip: tracked, cropped, counted in the report; a cat reference falls back."""
    from tests.faces.synth import photo, wide_clip

    frames, _ = wide_clip(6)
    frames[2] = np.full_like(frames[2], 128)
    drive = tmp_path / "wide.mp4"
    with av.open(str(drive), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 480, 270, "yuv420p"
        stream.options = {"crf": "10"}
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    Image.fromarray(photo("chelsea")).save(tmp_path / "cat.png")
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    args = ["animate", "--ref", tmp_path / "cat.png", "--drive", drive, "-o", out, "--weights", tiny_weights, *TINY]
    result = run(*args, "--report", report)
    assert result.exit_code == 0, result.output
    faces = json.loads(report.read_text())["faces"]
    assert faces["driving_crop"] == "face" and faces["face_crop"] == "landmarks"
    assert faces["face_misses"] == 1 and faces["landmark_misses"] == 1
    assert any(w.startswith(f"{tmp_path / 'cat.png'}: no face found in the reference") for w in faces["warnings"])
    assert probe(out)["frames"] == 6
    result = run(*args, "--overwrite", "--set", "media.reference_crop=face")
    assert result.exit_code == 2 and "cat.png: no face found in the reference" in result.output


def test_manifest_compare_column_and_template_drive(tmp_path):
    from personalive.manifest import read_manifest

    (tmp_path / "m.yaml").write_text(
        "jobs:\n  - {ref: a.png, drive: d.motion, compare: c/cmp.mp4}\n  - {ref: a.png, drive: e.mp4}\n"
    )
    first, second = read_manifest(tmp_path / "m.yaml")
    assert first.compare == tmp_path / "c" / "cmp.mp4" and first.drive == tmp_path / "d.motion"
    assert second.compare is None
    (tmp_path / "m.csv").write_text("ref,drive,out,compare\na.png,d.mp4,o.mp4,k.mp4\n")
    (row,) = read_manifest(tmp_path / "m.csv")
    assert (row.out, row.compare) == (tmp_path / "o.mp4", tmp_path / "k.mp4")
