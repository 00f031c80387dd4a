"""Bad inputs and faults through the CLI (issue 11): one line, the right exit code, inputs never destroyed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from media.synth import FakeAnimator, fake_loader, make_video
from PIL import Image
from typer.testing import CliRunner

from personalive import jobs
from personalive.cli import app

SIZE = ["--set", "generation.height=64", "--set", "generation.width=64", "--dtype", "fp32", "--device", "cpu"]


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(jobs, "load_animators", fake_loader())


@pytest.fixture
def ref(tmp_path) -> Path:
    path = tmp_path / "face.png"
    rgb = np.zeros((90, 70, 3), np.uint8)
    rgb[20:60, 15:55] = (230, 180, 150)
    Image.fromarray(rgb).save(path)
    return path


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})


def only_line(result) -> str:
    text = result.output.strip()
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith(("error:", "internal error:"))]
    assert len(errors) == 1, text
    return errors[0]


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "reference"])
def test_output_naming_an_input_is_refused_with_overwrite(fake, tmp_path, ref, how):
    drive = make_video(tmp_path / "d.mp4", frames=3)
    out = {"same": drive, "reference": ref}.get(how, tmp_path / "link.mp4")
    if how == "symlink":
        out.symlink_to(drive)
    elif how == "hardlink":
        os.link(drive, out)
    before = {p: p.read_bytes() for p in (drive, ref)}
    result = run("animate", "--ref", ref, "--drive", drive, "-o", out, "--overwrite", *SIZE)
    line = only_line(result)
    assert result.exit_code == 2
    assert ("output is the reference image" if how == "reference" else "output is the driving video") in line
    assert "--overwrite" not in line
    assert {p: p.read_bytes() for p in (drive, ref)} == before


@pytest.mark.parametrize(
    ("report", "role"),
    [("d.mp4", "driving video"), ("face.png", "reference image"), ("o.mp4", "output"), ("c.mp4", "comparison video")],
)
def test_report_naming_an_input_or_output_is_refused(fake, tmp_path, ref, report, role):
    drive = make_video(tmp_path / "d.mp4", frames=3)
    before = {p: p.read_bytes() for p in (drive, ref)}
    result = run(
        "animate", "--ref", ref, "--drive", drive, "-o", tmp_path / "o.mp4", "--compare", tmp_path / "c.mp4",
        "--report", tmp_path / report, *SIZE,
    )  # fmt: skip
    assert result.exit_code == 2
    assert f"{tmp_path / report}: --report is the {role}; choose another --report" in only_line(result)
    assert {p: p.read_bytes() for p in (drive, ref)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.mp4", "face.png"]


def test_compare_naming_the_output_is_refused(fake, tmp_path, ref):
    drive = make_video(tmp_path / "d.mp4", frames=3)
    result = run(
        "animate", "--ref", ref, "--drive", drive, "-o", tmp_path / "o.mp4", "--compare", tmp_path / "o.mp4", *SIZE
    )
    assert result.exit_code == 2
    assert "o.mp4: --compare is the output" in only_line(result)
    assert not (tmp_path / "o.mp4").exists()


def test_batch_report_naming_the_manifest_or_a_jobs_file_is_refused(fake, tmp_path, ref):
    make_video(tmp_path / "d.mp4", frames=3)
    manifest = tmp_path / "m.csv"
    manifest.write_text("ref,drive,out,compare\nface.png,d.mp4,o.mp4,c.mp4\n")
    for report, role in [
        ("m.csv", "manifest"),
        ("d.mp4", "driving video of job 0"),
        ("c.mp4", "comparison video of job 0"),
    ]:
        before = manifest.read_bytes(), (tmp_path / "d.mp4").read_bytes()
        result = run("batch", manifest, "--report", tmp_path / report, *SIZE)
        assert result.exit_code == 2
        assert f"--report is the {role}; choose another --report" in only_line(result)
        assert (manifest.read_bytes(), (tmp_path / "d.mp4").read_bytes()) == before
    assert not (tmp_path / "o.mp4").exists()


def test_output_directory_and_unknown_extension(fake, tmp_path, ref):
    drive = make_video(tmp_path / "d.mp4", frames=2)
    (tmp_path / "outdir").mkdir()
    result = run("animate", "--ref", ref, "--drive", drive, "-o", tmp_path / "outdir", *SIZE)
    assert result.exit_code == 2 and "outdir: output is a directory" in only_line(result)
    result = run("animate", "--ref", ref, "--drive", drive, "-o", tmp_path / "x.avi", *SIZE)
    assert result.exit_code == 2 and "x.avi: output has extension '.avi'; name it .mp4, .mov or .mkv" in only_line(
        result
    )
    assert not (tmp_path / "x.avi").exists()


def test_flat_output_fails_instead_of_being_written(monkeypatch, tmp_path, ref):
    class BlackAnimator(FakeAnimator):  # what NaN weights produce: every frame black
        def animate(self, ref_state, frames, generator):
            for frame in super().animate(ref_state, frames, generator):
                yield frame * 0

    monkeypatch.setattr(jobs, "load_animators", lambda config, device, dtype: lambda c: BlackAnimator(c))
    drive = make_video(tmp_path / "d.mp4", frames=3)
    out = tmp_path / "o.mp4"
    result = run("animate", "--ref", ref, "--drive", drive, "-o", out, *SIZE)
    assert result.exit_code == 1, result.output
    assert "o.mp4: all 3 frames are one flat colour (0, 0, 0)" in only_line(result)
    assert sorted(os.listdir(tmp_path)) == ["d.mp4", "face.png"]


# ------------------------------------------------------------------------------------------------ manifests
@pytest.fixture
def data(tmp_path) -> Path:
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.full((80, 80, 3), (200, 50, 50), np.uint8)).save(folder / "a.png")
    make_video(folder / "d1.mp4", frames=3)
    make_video(folder / "d2.mp4", frames=3)
    return folder


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("a.png,d1.mp4,o.mp4\na.png,d2.mp4,o.mp4\n", "jobs 0 and 1 both write"),
        ("a.png,d1.mp4,o.mp4\na.png,d2.mp4,sub/../o.mp4\n", "jobs 0 and 1 both write"),
        ("a.png,d1.mp4,x.mp4\na.png,d2.mp4\na.png,d2.mp4\n", "jobs 1 and 2 both write"),  # default names
        (
            "a.png,d1.mp4,x.mp4\na.png,d2.mp4,d1.mp4\n",
            "job 1 writes {data}/d1.mp4, which is the driving video of job 0",
        ),
        ("a.png,d1.mp4,a.png\n", "job 0 writes {data}/a.png, which is the reference of job 0"),
        # comparison videos are written files too
        ("ref,drive,out,compare\na.png,d1.mp4,o.mp4,o.mp4\n", "job 0's output and job 0's comparison video are both"),
        (
            "ref,drive,out,compare\na.png,d1.mp4,o.mp4,\na.png,d2.mp4,p.mp4,o.mp4\n",
            "job 0's output and job 1's comparison",
        ),
        (
            "ref,drive,out,compare\na.png,d1.mp4,o.mp4,d1.mp4\n",
            "job 0 writes {data}/d1.mp4, which is the driving video",
        ),
        ("a.png,d1.mp4,m.csv\n", "job 0 writes {data}/m.csv, which is the manifest"),
    ],
)
def test_manifest_outputs_collide(fake, monkeypatch, data, rows, message):
    calls: list = []
    monkeypatch.setattr(jobs, "load_animators", fake_loader(calls))
    (data / "m.csv").write_text(rows)
    before = sorted(os.listdir(data))
    result = run("batch", data / "m.csv", "--overwrite", *SIZE)
    assert result.exit_code == 2, result.output
    assert message.format(data=data) in only_line(result)
    assert sorted(os.listdir(data)) == before and calls == []  # refused before anything ran


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("ref,out", "the CSV header ref,out has no drive column"),
        ("out", "has no ref or drive column"),
        ("ref,drive,output", "unknown CSV columns ['output'] in the header"),
        ("ref,drive,ref", "the CSV header names ref twice"),
    ],
)
def test_csv_header_recognised_by_name(data, header, message):
    from personalive.errors import InputError
    from personalive.manifest import read_manifest

    (data / "m.csv").write_text(f"{header}\na.png,o.mp4\n")
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_manifest(data / "m.csv")


def test_csv_header_in_any_order_still_read(data):
    from personalive.manifest import read_manifest

    (data / "m.csv").write_text("OUT, Drive ,ref\no.mp4,d1.mp4,a.png\n")
    [job] = read_manifest(data / "m.csv")
    assert (job.ref, job.drive, job.out) == (data / "a.png", data / "d1.mp4", data / "o.mp4")


# ------------------------------------------------------------------------------------------------ references
def test_bomb_tiny_and_newline_named_references(fake, tmp_path, ref):
    from media.test_reference import _png_declaring

    drive = make_video(tmp_path / "d.mp4", frames=2)
    _png_declaring(tmp_path / "bomb.png", 40000, 40000)
    Image.fromarray(np.full((1, 1, 3), 128, np.uint8)).save(tmp_path / "dot.png")
    odd = tmp_path / "my\nface.png"
    odd.write_bytes(ref.read_bytes())
    Image.fromarray(np.full((1, 1, 3), 128, np.uint8)).save(tmp_path / "odd\ndot.png")
    for name, message in [
        ("bomb.png", "bomb.png: reference image is too large to decode safely"),
        ("dot.png", "dot.png: reference image is 1x1 pixels, too small to hold a face (at least 64x64 needed"),
        ("odd\ndot.png", "odd\\ndot.png': reference image is 1x1 pixels"),
    ]:
        result = run("animate", "--ref", tmp_path / name, "--drive", drive, "-o", tmp_path / "o.mp4", *SIZE)
        assert result.exit_code == 2 and message in only_line(result), result.output
    assert not (tmp_path / "o.mp4").exists()
    result = run("animate", "--ref", odd, "--drive", drive, "-o", tmp_path / "o.mp4", *SIZE)
    assert result.exit_code == 0, result.output  # an odd name is fine when the file is


# ------------------------------------------------------------------------------------------------ config values
@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["generation.adaptive_steps=1", "generation.inference_steps=1"], "generation.adaptive_steps=1: must be >= 2"),
        (["media.preset=warp"], "media.preset='warp': expected one of ultrafast, superfast"),
        (
            ["media.codec=libx999"],
            "media.codec='libx999': not a video encoder of this FFmpeg build (available: libx264",
        ),
        (["media.pix_fmt=rgb48"], "media.pix_fmt='rgb48': libx264 does not encode it (expected one of yuv420p"),
        (
            ["generation.seed=18446744073709551616"],
            "generation.seed=18446744073709551616: must be between 0 and 2**64",
        ),
        (["generation.seed=-1"], "generation.seed=-1: must be between 0 and 2**64 - 1"),
        (["generation.min_face_box=0"], "generation.min_face_box=0: must be between 1 and the model's size 64"),
        (["generation.min_face_box=-5"], "generation.min_face_box=-5: must be between 1"),
        (["generation.inference_steps=2000", "generation.adaptive_steps=4"], "must be at most scheduler.num_train"),
        (["scheduler.prediction_type=v_prediction"], "scheduler.prediction_type='v_prediction': "),
        (
            ["scheduler.beta_schedule=cosine"],
            "scheduler.beta_schedule='cosine': expected one of linear, scaled_linear",
        ),
        (["generation.keyframe_threshold=.nan"], "generation.keyframe_threshold=nan: must be a finite number"),
    ],
)
def test_config_values_fail_before_models_load(monkeypatch, tmp_path, ref, sets, message):
    calls: list = []
    monkeypatch.setattr(jobs, "load_animators", fake_loader(calls))
    drive = make_video(tmp_path / "d.mp4", frames=2)
    extra = [arg for item in sets for arg in ("--set", item)]
    result = run("animate", "--ref", ref, "--drive", drive, "-o", tmp_path / "o.mp4", *SIZE, *extra)
    assert result.exit_code == 2, result.output
    assert message in only_line(result)
    assert calls == [] and not (tmp_path / "o.mp4").exists()


def test_valid_small_settings_still_run(fake, tmp_path, ref):
    drive = make_video(tmp_path / "d.mp4", frames=2)
    sets = ["generation.adaptive_steps=2", "generation.inference_steps=2", "media.preset=ultrafast"]
    extra = [arg for item in sets for arg in ("--set", item)]
    result = run("animate", "--ref", ref, "--drive", drive, "-o", tmp_path / "o.mp4", *SIZE, *extra)
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------------------------------------ reports
@pytest.mark.parametrize("command", ["animate", "batch"])
@pytest.mark.parametrize("where", ["missing", "directory"])
def test_report_path_checked_before_work(monkeypatch, tmp_path, ref, command, where):
    calls: list = []
    monkeypatch.setattr(jobs, "load_animators", fake_loader(calls))
    drive = make_video(tmp_path / "d.mp4", frames=2)
    report = tmp_path / "nowhere" / "r.json" if where == "missing" else tmp_path
    if command == "animate":
        args = ["animate", "--ref", ref, "--drive", drive, "-o", tmp_path / "o.mp4"]
    else:
        (tmp_path / "m.csv").write_text(f"{ref},{drive},{tmp_path / 'o.mp4'}\n")
        args = ["batch", tmp_path / "m.csv"]
    result = run(*args, "--report", report, *SIZE)
    assert result.exit_code == 2, result.output
    message = "report directory" if where == "missing" else "--report is a directory"
    assert message in only_line(result)
    assert calls == [] and not (tmp_path / "o.mp4").exists()


# ------------------------------------------------------------------------------------------------ CLI output
@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["animate", "--ref", "a.png", "--drive", "d.mp4", "--max-frames", "abc"], "error: --max-frames: "),
        (["animate", "--drive", "d.mp4"], "error: --ref: required, but not given"),
        (["animate", "--ref", "a.png", "--drive", "d.mp4", "--sead", "3"], "error: --sead: no such option"),
        (["batch"], "error: MANIFEST: required, but not given"),
    ],
)
def test_usage_errors_are_one_line(args, start):
    result = run(*args)
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith(start) and line.endswith("--help`)"), line


def test_warnings_and_job_errors_are_not_wrapped_without_a_terminal(fake, tmp_path, ref):
    deep = tmp_path / ("a-rather-long-directory-name-" * 3)
    deep.mkdir()
    drive = make_video(deep / "cut.mp4", frames=40, width=96, height=96, faststart=True)
    data = drive.read_bytes()
    start = data.index(b"mdat") + 4
    drive.write_bytes(data[: start + (len(data) - start) // 2])
    (tmp_path / "m.csv").write_text(f"{ref},{drive},{tmp_path / 'o1.mp4'}\n{ref},{deep / 'missing.mp4'},o2.mp4\n")
    result = CliRunner().invoke(app, ["batch", str(tmp_path / "m.csv"), *SIZE], env={"COLUMNS": "80"})
    assert result.exit_code == 1
    lines = result.output.splitlines()
    warning = [line for line in lines if "the stream ended after" in line]
    assert len(warning) == 1 and warning[0].startswith(f"warning: {drive}: ")
    assert warning[0].endswith("(file truncated?); using the frames decoded")
    failed = [line for line in lines if "job 1 failed" in line]
    assert failed == [f"error: job 1 failed: {deep / 'missing.mp4'}: driving video not found"]
