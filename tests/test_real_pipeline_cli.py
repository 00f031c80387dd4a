"""`personalive animate` end to end with the real pipeline on tiny random weights (128x128).

One short clip only: the real pipeline is the slow part on a CPU (minutes on a loaded 2-core machine). The
media and job machinery (rates, audio, options, bad inputs, batch) are covered in detail with a stand-in model
in test_animate_cli.py and test_batch.py.
"""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest
from media.synth import make_video, probe
from PIL import Image
from typer.testing import CliRunner

from personalive.cli import app


def test_real_pipeline_animate(tmp_path, tiny_weights):
    pytest.importorskip("personalive.pipeline.animate")
    rgb = np.zeros((100, 80, 3), np.uint8)
    rgb[20:80, 15:65] = (220, 170, 140)
    Image.fromarray(rgb).save(tmp_path / "face.png")
    drive = make_video(
        tmp_path / "drive.mp4", frames=5, rate=Fraction(30000, 1001), width=98, height=74, rotation=90, audio_seconds=1
    )
    out, report = tmp_path / "out.mp4", tmp_path / "report.json"
    args = ["animate", "--ref", tmp_path / "face.png", "--drive", drive, "-o", out, "--weights", tiny_weights]
    args += ["--device", "cpu", "--dtype", "fp32", "--seed", "3", "--report", report]
    args += ["--set", "generation.height=128", "--set", "generation.width=128"]
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    info = probe(out)
    assert info["frames"] == 5 and info["rate"] == Fraction(30000, 1001)
    assert (info["width"], info["height"]) == (128, 128)
    assert info["audio"] == pytest.approx(5 * 1001 / 30000, abs=0.03)
    with av.open(str(out)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.std() > 1  # not a blank video
    data = json.loads(report.read_text())
    assert data["frames"] == 5 and data["seed"] == 3 and data["dtype"] == "fp32" and data["backend"] == "eager"
    assert {"decode", "conditioning", "denoising", "encode"} <= set(data["timings"])
    loading = data["loading"]  # the models were loaded by this job: where that time went
    assert loading["phases_s"]["copy"] > 0 and loading["gib_copied"] > 0 and loading["window_step_s"] >= 0
    assert loading["seconds"] + loading["window_step_s"] <= data["timings"]["load"]
    assert data["output_frame_rate"] == "30000/1001" and data["audio"] is True
