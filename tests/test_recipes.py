"""The README's recipes for several processes (SLURM job array, xargs -P, GNU parallel), run as written.

The commands are taken from the README and examples/slurm_batch.sh and run by bash with a ``personalive`` on PATH
that is the real command line with FakeAnimator models (tests/pool_helpers.py), so a test costs the start-up of
the processes, not pipeline runs. What is checked: every job of the manifest is run by exactly one process, every
output is a complete video, and each process writes its own report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from media.synth import make_video, probe
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
JOBS = 4
SETS = "--set generation.height=64 --set generation.width=64 --set model.dtype=fp32 --set runtime.device=cpu"


@pytest.fixture
def work(tmp_path) -> Path:
    """A manifest of JOBS jobs, and a bin/personalive that runs the command line with FakeAnimator models."""
    Image.fromarray(np.full((80, 80, 3), (200, 50, 50), np.uint8)).save(tmp_path / "a.png")
    make_video(tmp_path / "d.mp4", frames=3)
    rows = [{"ref": "a.png", "drive": "d.mp4", "out": f"out/{i}.mp4"} for i in range(JOBS)]
    (tmp_path / "jobs.yaml").write_text(yaml.safe_dump({"jobs": rows}))
    (tmp_path / "out").mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "reports").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "personalive"
    # options are appended after the recipe's own (the recipes pass model options through)
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{TESTS / "pool_helpers.py"}" "$@"\n')
    shim.chmod(0o755)
    return tmp_path


def env(work: Path, **extra: str) -> dict[str, str]:
    path = f"{work / 'bin'}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "PYTHONPATH": str(ROOT), **extra}


def readme_lines(prefix: str) -> list[str]:
    lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()]
    found = [line for line in lines if line.startswith(prefix)]
    assert found, f"README has no line starting with {prefix!r}"
    return found


def check(work: Path, reports: list[Path]) -> None:
    indices = sorted(e["index"] for r in reports for e in json.loads(r.read_text())["jobs"])
    assert indices == list(range(JOBS))  # every job in exactly one report
    ran = sorted(int(line.split(":")[0]) for line in (work / "out" / "ran.log").read_text().split())
    assert ran == list(range(JOBS))  # and run exactly once
    for i in range(JOBS):
        assert probe(work / "out" / f"{i}.mp4")["frames"] == 3


def test_slurm_array_recipe(work):
    script = ROOT / "examples" / "slurm_batch.sh"
    assert "sbatch --array=0-7 examples/slurm_batch.sh jobs.yaml" in (ROOT / "README.md").read_text()
    # what SLURM does for --array=0-1: the script once per task, with the task's id and the array's size
    tasks = [
        subprocess.Popen(
            ["bash", str(script), "jobs.yaml", *SETS.split()],
            cwd=work,
            env=env(work, SLURM_ARRAY_TASK_ID=str(i), SLURM_ARRAY_TASK_COUNT="2"),
        )
        for i in range(2)
    ]
    assert [t.wait(timeout=600) for t in tasks] == [0, 0]
    check(work, [work / "reports" / "0.json", work / "reports" / "1.json"])
    assert [e["index"] for e in json.loads((work / "reports" / "1.json").read_text())["jobs"]] == [1, 3]


@pytest.mark.parametrize("tool", ["xargs", "parallel"])
def test_one_host_recipes(work, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    (line,) = readme_lines("seq 0 $((N-1)) | xargs" if tool == "xargs" else "parallel -j $N")
    # the recipe as written, with the test's model options added to each `personalive batch`
    command = "N=2\n" + line.replace("--report report-{}.json", f"--report report-{{}}.json {SETS}")
    result = subprocess.run(["bash", "-c", command], cwd=work, env=env(work), timeout=600, check=False)
    assert result.returncode == 0
    check(work, [work / "report-0.json", work / "report-1.json"])
