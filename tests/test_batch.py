"""`personalive batch`: manifests (YAML, CSV), isolation of failing jobs, report, resume, shard, per-job sets."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from media.synth import FakeAnimator, fake_loader, make_video, probe
from PIL import Image
from typer.testing import CliRunner

from personalive import batch, jobs
from personalive.cli import app
from personalive.errors import ConfigError, InputError
from personalive.manifest import read_manifest

SIZE = ["--set", "generation.height=128", "--set", "generation.width=128", "--dtype", "fp32", "--device", "cpu"]


@pytest.fixture
def loads(monkeypatch):
    calls: list = []
    monkeypatch.setattr(jobs, "load_animators", fake_loader(calls))
    return calls


@pytest.fixture
def fusions(monkeypatch):
    seen: list = []
    original = FakeAnimator.fuse_reference

    def fuse(self, image):
        seen.append(image)
        return original(self, image)

    monkeypatch.setattr(FakeAnimator, "fuse_reference", fuse)
    return seen


@pytest.fixture
def inputs(tmp_path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for name, color in (("a", (200, 50, 50)), ("b", (50, 50, 200))):
        Image.fromarray(np.full((80, 80, 3), color, np.uint8)).save(data / f"{name}.png")
    make_video(data / "d1.mp4", frames=4, audio_seconds=0.5)
    make_video(data / "d2.mp4", frames=5, rate=30)
    return data


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})


def write_yaml(path: Path, jobs_: list[dict]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"jobs": jobs_}))
    return path


def test_yaml_batch_isolation_report_and_reuse(loads, fusions, tmp_path, inputs):
    manifest = write_yaml(
        inputs / "jobs.yaml",
        [
            {"ref": "a.png", "drive": "d1.mp4", "out": "out/1.mp4"},
            {"ref": "a.png", "drive": "d2.mp4", "out": "out/2.mp4"},  # same reference: fusion reused
            {"ref": "a.png", "drive": "missing.mp4", "out": "out/3.mp4"},  # fails, the rest continue
            {"ref": "b.png", "drive": "d1.mp4"},  # default name beside the manifest
        ],
    )
    (inputs / "out").mkdir()
    report = tmp_path / "report.json"
    result = run("batch", manifest, "--report", report, *SIZE)
    assert result.exit_code == 1, result.output
    assert "1 of 4 jobs failed" in result.output and "Traceback" not in result.output
    data = json.loads(report.read_text())
    statuses = [j["status"] for j in data["jobs"]]
    assert statuses == ["done", "done", "failed", "done"]
    assert "missing.mp4: driving video not found" in data["jobs"][2]["error"]
    assert [j["frames"] for j in data["jobs"]] == [4, 5, None, 4]
    assert all(j["seconds"] >= 0 for j in data["jobs"])
    assert [j["reference_reused"] for j in data["jobs"] if j["status"] == "done"] == [False, True, False]
    assert len(fusions) == 2 and data["summary"]["fusions"] == 2
    assert len(loads) == 1  # models loaded once for the whole batch
    assert probe(inputs / "out" / "2.mp4")["frames"] == 5 and probe(inputs / "b_d1.mp4")["audio"] is not None
    assert not (inputs / "out" / "3.mp4").exists()


def test_report_times_the_load_once_and_the_job_stages(monkeypatch, tmp_path, inputs):
    """The load timing is the models' loading, paid by the first job only; every stage fits in the job's time."""
    import time

    def slow_loader(config, device, dtype):
        time.sleep(0.4)
        return fake_loader()(config, device, dtype)

    monkeypatch.setattr(jobs, "load_animators", slow_loader)
    manifest = write_yaml(
        inputs / "jobs.yaml", [{"ref": "a.png", "drive": "d1.mp4"}, {"ref": "b.png", "drive": "d2.mp4"}]
    )
    report = tmp_path / "r.json"
    assert run("batch", manifest, "--report", report, *SIZE).exit_code == 0
    first, second = json.loads(report.read_text())["jobs"]
    assert first["timings"]["load"] >= 0.4 and second["timings"]["load"] < 0.1
    for job in (first, second):
        t = job["timings"]
        assert all(t[k] >= 0 for k in ("inputs", "load", "setup", "first_frame", "close"))
        assert t["inputs"] + t["load"] + t["reference"] + t["setup"] + t["first_frame"] < job["seconds"]
        assert t["close"] <= t["encode"]


def test_resume_skips_finished_jobs(loads, tmp_path, inputs):
    manifest = write_yaml(
        inputs / "jobs.yaml", [{"ref": "a.png", "drive": "d1.mp4"}, {"ref": "b.png", "drive": "d2.mp4"}]
    )
    (inputs / "a_d1.mp4").write_bytes(b"finished earlier")
    report = tmp_path / "r.json"
    assert run("batch", manifest, "--report", report, *SIZE).exit_code == 0
    data = json.loads(report.read_text())
    assert [j["status"] for j in data["jobs"]] == ["skipped", "done"]
    assert (inputs / "a_d1.mp4").read_bytes() == b"finished earlier"
    # everything finished: nothing runs and the models are not even loaded
    loads.clear()
    assert run("batch", manifest, "--report", report, *SIZE).exit_code == 0
    assert [j["status"] for j in json.loads(report.read_text())["jobs"]] == ["skipped", "skipped"]
    assert loads == []
    # --overwrite redoes them
    assert run("batch", manifest, "--report", report, "--overwrite", *SIZE).exit_code == 0
    assert [j["status"] for j in json.loads(report.read_text())["jobs"]] == ["done", "done"]
    assert probe(inputs / "a_d1.mp4")["frames"] == 4


def test_shards_split_the_manifest(loads, tmp_path, inputs):
    rows = [{"ref": "a.png", "drive": "d1.mp4", "out": f"o{i}.mp4"} for i in range(5)]
    manifest = write_yaml(inputs / "jobs.yaml", rows)
    done = {}
    for shard in ("0/2", "1/2"):
        report = tmp_path / f"{shard[0]}.json"
        assert run("batch", manifest, "--shard", shard, "--report", report, *SIZE).exit_code == 0
        done[shard] = [j["index"] for j in json.loads(report.read_text())["jobs"]]
    assert done == {"0/2": [0, 2, 4], "1/2": [1, 3]}
    assert sorted(p.name for p in inputs.glob("o*.mp4")) == [f"o{i}.mp4" for i in range(5)]
    for bad in ("2/2", "x", "1/0"):
        result = run("batch", manifest, "--shard", bad, *SIZE)
        assert result.exit_code == 2 and "--shard" in result.output


def test_csv_manifest_with_and_without_header(loads, tmp_path, inputs):
    (inputs / "h.csv").write_text("drive,ref,out\nd1.mp4,a.png,h.mp4\n")
    (inputs / "n.csv").write_text("b.png,d2.mp4,n.mp4\n\n")
    assert [(j.ref.name, j.drive.name, j.out) for j in read_manifest(inputs / "h.csv")] == [
        ("a.png", "d1.mp4", inputs / "h.mp4")
    ]
    assert run("batch", inputs / "h.csv", *SIZE).exit_code == 0
    assert run("batch", inputs / "n.csv", *SIZE).exit_code == 0
    assert probe(inputs / "h.mp4")["frames"] == 4 and probe(inputs / "n.mp4")["frames"] == 5


def test_per_job_set(loads, tmp_path, inputs):
    manifest = write_yaml(
        inputs / "jobs.yaml",
        [
            {"ref": "a.png", "drive": "d1.mp4", "out": "s1.mp4"},
            {"ref": "a.png", "drive": "d1.mp4", "out": "s2.mp4", "set": {"generation.seed": 99}},
            {"ref": "a.png", "drive": "d1.mp4", "out": "s3.mp4", "set": ["media.audio=false", "media.max_frames=2"]},
        ],
    )
    report = tmp_path / "r.json"
    assert run("batch", manifest, "--report", report, *SIZE).exit_code == 0
    jobs_ = json.loads(report.read_text())["jobs"]
    assert [j["status"] for j in jobs_] == ["done", "done", "done"]
    assert jobs_[1]["seed"] == 99
    assert [j["reference_reused"] for j in jobs_] == [False, True, True]  # a seed or media change reuses it

    def frames(name):
        with av.open(str(inputs / name)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])

    assert not np.array_equal(frames("s1.mp4"), frames("s2.mp4"))
    assert probe(inputs / "s3.mp4") | {"rate": None} == {
        "rate": None,
        "width": 128,
        "height": 128,
        "audio": None,
        "frames": 2,
    }


@pytest.mark.parametrize(
    ("bad_set", "message"),
    [
        ({"model": {"dtype": "fp16"}}, "job 1 (s1.mp4): 'model.dtype' cannot change per job"),
        ({"generation.height": 256}, "job 1 (s1.mp4): 'generation.height' cannot change per job"),
        ({"generation.sed": 3}, "unknown config key 'generation.sed'"),
        ({"generation.seed": "seven"}, "generation.seed"),
    ],
)
def test_a_bad_per_job_set_refuses_the_manifest_before_anything_loads(loads, tmp_path, inputs, bad_set, message):
    rows = [{"ref": "a.png", "drive": "d1.mp4", "out": f"s{i}.mp4"} for i in range(3)]
    rows[1]["set"] = bad_set
    manifest = write_yaml(inputs / "jobs.yaml", rows)
    for shard in ("0/2", "1/2"):  # job 1 is in shard 1/2 only; shard 0/2 refuses the same manifest
        result = run("batch", manifest, "--shard", shard, "--report", tmp_path / "r.json", *SIZE)
        assert result.exit_code == 2, result.output
        assert "jobs.yaml: job 1 (s1.mp4)" in result.output and message in result.output
        assert result.output.count("\n") == 1  # one line
    assert loads == [] and list(inputs.glob("s*.mp4")) == [] and not (tmp_path / "r.json").exists()


def test_bad_manifests(tmp_path):
    with pytest.raises(InputError, match="nope.yaml: manifest not found"):
        read_manifest(tmp_path / "nope.yaml")
    (tmp_path / "m.yaml").write_text("jobs: 3\n")
    with pytest.raises(InputError, match="expected `jobs:`"):
        read_manifest(tmp_path / "m.yaml")
    (tmp_path / "m.yaml").write_text("jobs:\n  - {ref: a.png}\n")
    with pytest.raises(InputError, match="job 0 has no 'drive'"):
        read_manifest(tmp_path / "m.yaml")
    (tmp_path / "m.yaml").write_text("jobs:\n  - {ref: a.png, drive: d.mp4, output: x}\n")
    with pytest.raises(InputError, match="unknown keys"):
        read_manifest(tmp_path / "m.yaml")
    (tmp_path / "m.csv").write_text("a,b,c,d,e\n")
    with pytest.raises(InputError, match="CSV row 1 has 5 columns"):
        read_manifest(tmp_path / "m.csv")
    with pytest.raises(ConfigError, match="cannot change per job"):
        batch.check_job_overrides({"generation.height": 256}, "job 0")
    result = run("batch", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "manifest not found" in result.output
