"""`personalive bench` on the CPU with tiny random weights: every measurement runs and the JSON holds its numbers."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from personalive.cli import app


def test_bench_tiny_on_cpu_writes_every_measurement(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--random", "tiny", "--device", "cpu", "--keyframes", "0,1", "--iters", "1", "--warmup", "0"]
    args += ["--frames", "2", "--video-frames", "2", "--video-size", "64x48", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["dtype"] == "fp32" and report["versions"]["torch"]
    assert report["load"]["source"] == "random tiny" and report["load"]["seconds"] > 0
    assert [row["keyframes"] for row in report["step"]] == [0, 1]
    for row in report["step"]:
        assert row["iters"] == 1 and 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert row["step_fps"] == round(1000 * report["window"] / row["median_ms"], 2)
    stream = report["stream"]
    assert stream["frames"] == 2 and stream["windows"] == 4  # 1 window of frames + 3 to flush
    assert 0 < stream["first_frame_s"] <= stream["seconds"] and stream["fps"] > 0
    assert stream["stages_s"]["denoising"] > 0
    video = report["video"]
    assert video["frames"] == 2 and video["input"] == "64x48 30000/1001 fps, audio True"
    assert video["seconds"] > 0 and {"decode", "encode", "denoising"} <= set(video["stages_s"])
    assert report["peak_host_gib"] > 0


def test_bench_refuses_both_weights_and_random(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--random", "huge"])
    assert result.exit_code == 2 and "--random 'huge': expected one of full, tiny" in result.output


def test_bench_with_weights_reports_the_load_breakdown(tmp_path, tiny_weights):
    out = tmp_path / "bench.json"
    # loading only: no step (no keyframe counts), no stream, no video
    args = ["bench", "--weights", str(tiny_weights), "--device", "cpu", "--keyframes", "", "--frames", "0"]
    args += ["--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    load = json.loads(out.read_text())["load"]
    assert load["source"] == str(tiny_weights) and load["seconds"] > 0 and load["peak_host_gib"] > 0
    breakdown = load["breakdown"]
    assert {"imports", "build", "read", "compare", "copy", "finite"} <= set(breakdown["phases_s"])
    assert set(breakdown["networks_s"]) == {
        "pose_guider",
        "motion_encoder",
        "motion_extractor",
        "vae",
        "image_encoder",
        "reference_unet",
        "denoising_unet",
    }
    # both rounded to 10 ms apiece: the loader's own total may round one step above the outer one
    assert 0 < breakdown["seconds"] <= load["seconds"] + 0.01 and breakdown["gib_copied"] > 0
    assert breakdown["peak_rss_gib"] >= breakdown["rss_start_gib"] > 0


def test_the_step_alone_is_fed_inference_tensors_as_the_job_feeds_it(tiny_weights):
    # a compiled step guards on inference-ness: plain inputs recompiled it (37 s at full size, call AR)
    import torch

    from personalive.backends.eager import EagerWindowStep
    from personalive.bench import BenchOptions, measure_step
    from personalive.config import RunConfig
    from personalive.weights import load_models

    config = RunConfig()
    config.generation.height = config.generation.width = 64
    models = load_models(tiny_weights, torch.float32, "cpu")
    seen: list[bool] = []

    class Recording(EagerWindowStep):
        def __call__(self, inputs):
            seen.extend(t.is_inference() for t in inputs.values())
            return super().__call__(inputs)

    step = Recording.from_models(models, config, torch.device("cpu"))
    for savings in (True, False):  # with the exact savings, and with raw features projected every call
        options = BenchOptions(random="tiny", warmup=0, iters=1, savings=savings)
        assert measure_step(models, config, torch.device("cpu"), options, keyframes=1, step=step)["iters"] == 1
    assert seen and all(seen)
