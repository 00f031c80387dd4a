"""`personalive batch --devices`: worker processes, dynamic hand-out, dead workers, stopping, two runs of one job.

The pool tests run the real pool, pipes, spawned processes, sinks and report; inside the workers the models are
FakeAnimator (see pool_helpers.py) so that a test costs the start-up of two processes, not a pipeline run. One test
runs the real pipeline on tiny random weights.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pool_helpers
import pytest
import yaml
from media.synth import make_video, probe
from PIL import Image
from typer.testing import CliRunner

from personalive import batch
from personalive.cli import app
from personalive.config import load_config
from personalive.errors import ConfigError, DeviceError, JobsFailedError
from personalive.workers import parse_devices

TESTS = Path(__file__).resolve().parent
SMALL = ["generation.height=64", "generation.width=64", "model.dtype=fp32"]


@pytest.fixture
def inputs(tmp_path) -> Path:
    data = tmp_path / "data"
    (data / "out").mkdir(parents=True)
    for name, color in (("a", (200, 50, 50)), ("b", (50, 50, 200)), ("race", (90, 160, 60))):
        Image.fromarray(np.full((80, 80, 3), color, np.uint8)).save(data / f"{name}.png")
    make_video(data / "d1.mp4", frames=3)
    make_video(data / "d2.mp4", frames=5)
    make_video(data / "slow.mp4", frames=4)
    return data


@pytest.fixture(autouse=True)
def no_stale_log_handlers(monkeypatch):
    # an earlier CliRunner run leaves a handler writing to its (closed) captured stderr
    monkeypatch.setattr(logging.getLogger(), "handlers", [])


@pytest.fixture
def fake_models(monkeypatch):
    # batch.run hands this runner to the workers; inside them it runs batch.run_one with FakeAnimator models
    monkeypatch.setattr(batch, "run_one", pool_helpers.fake_run_one)


def manifest(folder: Path, rows: list[tuple[str, str]]) -> Path:
    jobs = [{"ref": ref, "drive": drive, "out": f"out/{i}.mp4"} for i, (ref, drive) in enumerate(rows)]
    path = folder / "jobs.yaml"
    path.write_text(yaml.safe_dump({"jobs": jobs}))
    return path


def runs(folder: Path) -> list[tuple[int, int]]:
    """(job index, worker pid) of every time a worker started a job, from pool_helpers' ran.log."""
    log = folder / "out" / "ran.log"
    lines = log.read_text().split() if log.exists() else []
    return [(int(i), int(pid)) for i, pid in (line.split(":") for line in lines)]


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "out").iterdir() if ".tmp" in p.name)


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})


def test_two_workers_do_every_job_once_and_a_rerun_only_what_is_missing(fake_models, inputs, tmp_path):
    rows = [
        ("a.png", "d1.mp4"),
        ("b.png", "d2.mp4"),
        ("a.png", "missing.mp4"),
        ("b.png", "d1.mp4"),
        ("a.png", "d2.mp4"),
    ]
    jobs_file, report = manifest(inputs, rows), tmp_path / "r.json"
    sets = [x for s in SMALL for x in ("--set", s)]
    result = cli("batch", jobs_file, "--devices", "cpu:2", "--report", report, *sets)
    assert result.exit_code == 1, result.output
    assert "1 of 5 jobs failed" in result.output and "Traceback" not in result.output
    data = json.loads(report.read_text())
    assert [e["index"] for e in data["jobs"]] == [0, 1, 2, 3, 4]  # the combined report: every job once, in order
    assert [e["status"] for e in data["jobs"]] == ["done", "done", "failed", "done", "done"]
    assert "missing.mp4: driving video not found" in data["jobs"][2]["error"]
    assert [e["frames"] for e in data["jobs"]] == [3, 5, None, 3, 5]
    for i, frames in ((0, 3), (1, 5), (3, 3), (4, 5)):
        assert probe(inputs / "out" / f"{i}.mp4")["frames"] == frames
    ran = runs(inputs)
    assert sorted(i for i, _ in ran) == [0, 1, 2, 3, 4]  # each job ran exactly once
    pids = {pid for _, pid in ran}
    assert len(pids) == 2 and os.getpid() not in pids  # in two worker processes, not here
    assert {e["worker"] for e in data["jobs"]} == {0, 1} and {e["device"] for e in data["jobs"]} == {"cpu"}
    assert [(w["worker"], w["device"], len(w["pids"]), w["deaths"]) for w in data["workers"]] == [
        (0, "cpu", 1, 0),
        (1, "cpu", 1, 0),
    ]
    assert sum(w["jobs"] for w in data["workers"]) == 5
    assert data["summary"] == {"jobs": 5, "done": 4, "skipped": 0, "failed": 1, "fusions": data["summary"]["fusions"]}
    assert data["device"] == "cpu:2" and temps(inputs) == []
    # a rerun skips the finished jobs (without starting a worker for them) and retries only the failed one
    result = cli("batch", jobs_file, "--devices", "cpu:2", "--report", report, *sets)
    assert result.exit_code == 1
    data = json.loads(report.read_text())
    assert [e["status"] for e in data["jobs"]] == ["skipped", "skipped", "failed", "skipped", "skipped"]
    assert sorted(i for i, _ in runs(inputs)) == [0, 1, 2, 2, 3, 4]
    assert [len(w["pids"]) for w in data["workers"]] == [1, 0]  # one job to do: one worker started


def _when_file(path: Path, then, timeout: float = 300.0, after: Path | None = None) -> threading.Thread:
    """Call ``then(path)`` from a thread as soon as ``path`` (and ``after``) exist."""

    def watch():
        deadline = time.monotonic() + timeout
        while not (path.exists() and (after is None or after.exists())) and time.monotonic() < deadline:
            time.sleep(0.05)
        if path.exists():
            then(path)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_worker_killed_mid_job_fails_that_job_only(fake_models, inputs, tmp_path):
    jobs_file = manifest(
        inputs, [("a.png", "slow.mp4"), ("b.png", "d1.mp4"), ("a.png", "d2.mp4"), ("b.png", "d2.mp4")]
    )
    config, report = load_config(None, SMALL, {}), tmp_path / "r.json"
    seen = {}

    def kill(pid_file: Path):
        seen["temps"] = temps(inputs)  # the slow job's partial file exists while it runs
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    watcher = _when_file(inputs / "out" / "0.mp4.pid", kill)
    with pytest.raises(JobsFailedError, match="1 of 4 jobs failed"):
        batch.run(config, jobs_file, devices="cpu:2", report=report)
    watcher.join()
    assert any(name.startswith(".0.mp4.") for name in seen["temps"])
    data = json.loads(report.read_text())
    assert [e["index"] for e in data["jobs"]] == [0, 1, 2, 3]
    assert [e["status"] for e in data["jobs"]] == ["failed", "done", "done", "done"]
    pid = int((inputs / "out" / "0.mp4.pid").read_text())
    assert (
        data["jobs"][0]["error"]
        == f"worker 0 (cpu, pid {pid}) died: killed by SIGKILL (kill -9 or the out-of-memory killer)"
    )
    assert data["workers"][0]["deaths"] == 1
    assert not (inputs / "out" / "0.mp4").exists() and temps(inputs) == []  # its partial file was removed
    # a rerun finishes what is missing (the slow job blocks only once)
    batch.run(load_config(None, SMALL, {}), jobs_file, devices="cpu:2", report=report)
    data = json.loads(report.read_text())
    assert [e["status"] for e in data["jobs"]] == ["done", "skipped", "skipped", "skipped"]
    assert probe(inputs / "out" / "0.mp4")["frames"] == 4


def test_stopping_the_batch_stops_every_worker_and_leaves_no_partial_file(fake_models, inputs, tmp_path):
    jobs_file = manifest(inputs, [("a.png", "slow.mp4"), ("b.png", "d1.mp4")])
    config, report, pid_file = load_config(None, SMALL, {}), tmp_path / "r.json", inputs / "out" / "0.mp4.pid"
    # SIGTERM to this process (as `kill`, or SLURM cancelling a job) while the slow job is in flight and the other
    # job has finished
    watcher = _when_file(inputs / "out" / "1.mp4", lambda _: os.kill(os.getpid(), signal.SIGTERM), after=pid_file)
    with pytest.raises(KeyboardInterrupt):
        batch.run(config, jobs_file, devices="cpu:2", report=report)
    watcher.join()
    for _, pid in runs(inputs):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # every worker is gone
    assert not (inputs / "out" / "0.mp4").exists() and temps(inputs) == []
    data = json.loads(report.read_text())
    assert [(e["index"], e["status"]) for e in data["jobs"]] == [(1, "done")]  # what finished is reported


def test_ctrl_c_stops_every_worker(inputs, tmp_path):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the command and its workers."""
    jobs_file = manifest(inputs, [("a.png", "slow.mp4"), ("b.png", "d1.mp4"), ("a.png", "d2.mp4")])
    sets = [x for s in SMALL for x in ("--set", s)]
    command = [sys.executable, str(TESTS / "pool_helpers.py"), "batch", str(jobs_file), "--devices", "cpu:2"]
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    proc = subprocess.Popen([*command, "--report", str(tmp_path / "r.json"), *sets], env=env, start_new_session=True)
    pid_file = inputs / "out" / "0.mp4.pid"
    deadline = time.monotonic() + 300
    while not pid_file.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert pid_file.exists()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    for _, pid in runs(inputs):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (inputs / "out" / "0.mp4").exists() and temps(inputs) == []


def test_two_runs_starting_the_same_job_at_once(inputs, tmp_path):
    """Two processes (e.g. two hosts on shared storage) start the same job; both get past the output-exists
    checks before either publishes (pool_helpers makes them meet after the first frame)."""
    jobs_file = manifest(inputs, [("race.png", "d2.mp4")])
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    sets = [x for s in [*SMALL, "runtime.device=cpu"] for x in ("--set", s)]
    helper = [sys.executable, str(TESTS / "pool_helpers.py"), "-q", "batch", str(jobs_file), *sets]
    procs = [subprocess.Popen([*helper, "--report", str(tmp_path / f"r{i}.json")], env=env) for i in range(2)]
    codes = [p.wait(timeout=600) for p in procs]
    entries = [json.loads((tmp_path / f"r{i}.json").read_text())["jobs"][0] for i in range(2)]
    assert len(list((inputs / "out" / "0.mp4.race").iterdir())) == 2  # both were writing at the same time
    # whatever the order, the output is one complete video and no temporary file is left
    assert probe(inputs / "out" / "0.mp4")["frames"] == 5 and temps(inputs) == []
    statuses = sorted(e["status"] for e in entries)
    assert "done" in statuses and set(statuses) <= {"done", "failed"}
    assert codes == [0 if e["status"] == "done" else 1 for e in entries]
    if importlib.util.find_spec("personalive.media.outputs") is not None:
        # the sink publishes with a hard link (issue 11): the second finisher keeps the first's file and says so
        assert statuses == ["done", "failed"]
        failed = next(e for e in entries if e["status"] == "failed")
        assert "appeared while this run was writing" in failed["error"]


def test_parse_devices():
    assert [(s.index, s.label, s.device) for s in parse_devices("cpu:2")] == [(0, "cpu", "cpu"), (1, "cpu", "cpu")]
    assert all(s.env == {"CUDA_VISIBLE_DEVICES": ""} for s in parse_devices("cpu:2"))
    for bad in ("cpu:0", "cpu:x", "gpu", "0,0"):
        with pytest.raises(ConfigError, match="--devices"):
            parse_devices(bad)


def test_gpu_devices_map_to_cuda_visible_devices(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    slots = parse_devices("1,3")
    assert [(s.label, s.device, s.env["CUDA_VISIBLE_DEVICES"]) for s in slots] == [
        ("cuda:1", "cuda:0", "5"),
        ("cuda:3", "cuda:0", "7"),
    ]
    assert len(parse_devices("all")) == 4
    with pytest.raises(DeviceError, match="GPU 4 does not exist"):
        parse_devices("0,4")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        parse_devices("all")


def test_device_and_devices_together_is_a_usage_error(tmp_path):
    result = cli("batch", tmp_path / "m.yaml", "--devices", "cpu:2", "--device", "cpu")
    assert result.exit_code == 2 and "--devices cpu:2 and --device cpu: give one of them" in result.output


def test_real_pipeline_on_two_workers(inputs, tmp_path, tiny_weights):
    jobs_file = manifest(inputs, [("a.png", "d1.mp4"), ("b.png", "d1.mp4")])
    report = tmp_path / "r.json"
    sets = [x for s in SMALL for x in ("--set", s)]
    result = cli("batch", jobs_file, "--devices", "cpu:2", "--weights", tiny_weights, "--report", report, *sets)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert [(e["index"], e["status"], e["frames"]) for e in data["jobs"]] == [(0, "done", 3), (1, "done", 3)]
    assert {e["worker"] for e in data["jobs"]} == {0, 1}
    assert probe(inputs / "out" / "0.mp4")["frames"] == 3 and probe(inputs / "out" / "1.mp4")["frames"] == 3


def test_a_finished_job_still_in_the_pipe_when_the_batch_stops_is_reported():
    # the race a loaded CI machine hit: the worker published job 1 and sent "done"; the stop came before the parent
    # read it. Stopping drains what stopped workers had already sent.
    import multiprocessing

    from personalive.workers import WorkerPool, _Worker

    slot = parse_devices("cpu:1")[0]
    pool = WorkerPool(load_config(None, [], {}), [slot], runner=None, overwrite=False)
    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    process.start()
    process.join()
    parent, child = multiprocessing.Pipe()
    child.send(("log", "a record the stop may drop"))
    child.send(("done", {"index": 1, "status": "done"}, 0, True))
    pool._workers, pool._entries = [_Worker(slot, process, parent, job=None)], []
    pool._stop_all()
    assert pool._entries == [{"index": 1, "status": "done", "worker": slot.index, "device": slot.label}]
    assert parent.closed and pool._workers == []


def test_a_job_published_just_before_its_worker_was_stopped_is_reported_done(tmp_path):
    # the race left after the one above: the stop reached the worker after it published its output and before it
    # sent "done". The output, written since the job was handed out, says the job is done; an output older than
    # that (--overwrite of an earlier result) does not.
    import multiprocessing

    from personalive.manifest import Job
    from personalive.workers import WorkerPool, _Worker

    slot = parse_devices("cpu:1")[0]
    pool = WorkerPool(load_config(None, [], {}), [slot], runner=None, overwrite=False)
    process = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    process.start()
    process.join()
    new = Job(ref=tmp_path / "r.png", drive=tmp_path / "d.mp4", out=tmp_path / "new.mp4", index=1)
    old = Job(ref=tmp_path / "r.png", drive=tmp_path / "d.mp4", out=tmp_path / "old.mp4", index=2)
    old.out.write_bytes(b"an earlier result")
    started = time.time()
    os.utime(old.out, (started - 60, started - 60))
    new.out.write_bytes(b"published")
    workers = []
    for job in (new, old):
        parent, _ = multiprocessing.Pipe()
        workers.append(_Worker(slot, process, parent, job=job, since=time.perf_counter(), started_at=started))
    pool._workers, pool._entries = workers, []
    pool._stop_all()
    assert [(e["index"], e["status"], e["error"]) for e in pool._entries] == [(1, "done", None)]
    assert "stopped before it reported" in pool._entries[0]["note"]
