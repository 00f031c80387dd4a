"""The tiny window step through build-engine (ONNX) and verify-engine (onnxruntime), against the PyTorch step."""

from __future__ import annotations

import onnx
import pytest
import torch
from typer.testing import CliRunner

from personalive._optional import is_available
from personalive.backends import artifacts
from personalive.cli import app
from personalive.errors import InputError
from personalive.pipeline.window import OUTPUT_NAMES, STATE_INPUT_NAMES

SIZE = ["--height", "128", "--width", "128"]
HAS_TRT = is_available("tensorrt")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from personalive.random_weights import init_random_weights

    root = tmp_path_factory.mktemp("weights")
    return init_random_weights(root / "a", "tiny", seed=0), init_random_weights(root / "b", "tiny", seed=1)


@pytest.fixture(scope="module")
def built(weights, tmp_path_factory):
    """One build-engine run (no --out: default names under runtime.engine_dir), shared by the tests below.

    Without TensorRT this is the TensorRT-missing path: the ONNX is written, then exit 2."""
    engines = tmp_path_factory.mktemp("engines")
    args = ["build-engine", "--format", "tensorrt", "--weights", str(weights[0]), *SIZE, "--max-keyframes", "3"]
    args += ["--dtype", "fp32", "--device", "cpu", "--set", f"runtime.engine_dir={engines}"]
    if HAS_TRT:
        args.append("--onnx-only")
    result = CliRunner().invoke(app, args)
    onnx_files = sorted(engines.glob("onnx/*/window_step.onnx"))
    assert len(onnx_files) == 1, (result.output, list(engines.rglob("*")))
    return result, onnx_files[0]


@pytest.mark.skipif(HAS_TRT, reason="checks the path where TensorRT is absent")
def test_without_tensorrt_onnx_is_written_then_exit_2(built):
    result, onnx_path = built
    assert result.exit_code == 2, result.output
    assert "TensorRT is missing" in result.output and "pip install 'personalive[tensorrt]'" in result.output
    assert str(onnx_path) in result.output.replace("\n", "")
    assert onnx_path.is_file() and artifacts.sidecar_path(onnx_path).is_file()


def test_onnx_graph_names_shapes_and_sidecar(built, weights):
    from personalive.weights import weights_hash

    _, onnx_path = built
    meta = artifacts.read_sidecar(onnx_path)
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    names = [v.name for v in graph.input]
    assert names[: len(STATE_INPUT_NAMES)] == list(STATE_INPUT_NAMES)
    assert names == meta.input_names and len(names) > len(STATE_INPUT_NAMES)
    assert [v.name for v in graph.output] == list(OUTPUT_NAMES) == meta.output_names
    for value, spec in zip(graph.input, meta.inputs, strict=True):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        if spec.name in STATE_INPUT_NAMES:
            assert dims == spec.shape and spec.profile is None
        else:  # only the token axis is dynamic; profile 1x / 2x / 4x
            assert dims == [1, f"{spec.name}_tokens", spec.shape[2]]
            base = spec.profile["min"][1]
            assert spec.profile["opt"][1] == 2 * base and spec.profile["max"][1] == 4 * base
    assert meta.kind == "onnx" and meta.precision == "fp32" and meta.max_keyframes == 3
    assert meta.weights_hash == weights_hash(weights[0])
    assert meta.config["height"] == 128 and meta.config["window"] == 4
    assert onnx_path.parent.name == artifacts.artifact_stem(meta.weights_hash, meta.config, "fp32", 3)
    assert meta.build_command.startswith("personalive build-engine --weights ")
    assert meta.build_command.endswith("--max-keyframes 3 --dtype fp32")


def test_onnxruntime_equals_pytorch_step_with_0_1_3_keyframes(built, weights):
    _, onnx_path = built
    from personalive import engines
    from personalive.config import load_config

    meta = artifacts.read_artifact_sidecar(onnx_path)
    options = {**artifacts.artifact_options(meta), "model.weights_dir": str(weights[0]), "runtime.device": "cpu"}
    result = engines.verify_engine(load_config(None, [], options), onnx_path, meta, draws=3)
    assert result.keyframes == [0, 3, 1]
    assert result.tolerance == 1e-4
    for report in result.reports:
        assert report.rel < 1e-4, report.line(1e-4)
        assert report.nan == report.ref_nan == 0 and report.inf == report.ref_inf == 0
        assert report.ref_max > report.ref_min  # not a constant output
    frames = next(r for r in result.reports if r.name == "frames")
    assert 0 <= frames.ref_min and frames.ref_max <= 1


def test_verify_engine_fails_on_onnx_from_other_weights(built, weights):
    _, onnx_path = built
    result = CliRunner().invoke(
        app, ["verify-engine", str(onnx_path), "--weights", str(weights[1]), "--device", "cpu", "--draws", "1"]
    )
    out = result.output.replace("\n", " ")
    assert result.exit_code == 1, result.output
    assert "weights hash differs" in out
    assert "outputs beyond tolerance 0.0001" in out and "frames" in out


def test_verify_engine_refuses_a_check_that_cannot_fit_in_memory_before_loading_models(built, weights, monkeypatch):
    from personalive.backends import onnx_memory

    _, onnx_path = built
    monkeypatch.setattr(onnx_memory, "available_memory_bytes", lambda: 1 << 20)  # 1 MiB left
    monkeypatch.setattr("personalive.weights.load_models", lambda *a, **k: pytest.fail("models loaded"))
    args = ["verify-engine", str(onnx_path), "--weights", str(weights[0]), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    out = result.output.replace("\n", " ")
    assert result.exit_code == 1, result.output
    assert f"{onnx_path}: checking this graph on onnxruntime's CPU provider needs about" in out
    assert "0.0 GiB is available" in out and "--height 64 --width 64" in out


def test_verify_engine_rejects_other_file_kinds(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"")
    result = CliRunner().invoke(app, ["verify-engine", str(bad), "--device", "cpu"])
    out = result.output.replace("\n", " ")
    assert result.exit_code == 2 and "expected a .onnx (onnxruntime), .engine (TensorRT), .pt2 (AOTInductor)" in out
    assert ".ptcache (compile cache) or .ptstep (precompiled step) file" in out


def test_missing_engine_names_the_build_command(weights):
    from personalive.backends.tensorrt.runtime import resolve_engine_path
    from personalive.config import load_config

    cfg = load_config(
        None, [], {"model.weights_dir": str(weights[0]), "generation.height": 128, "generation.width": 128}
    )
    with pytest.raises(InputError) as info:
        resolve_engine_path(weights[0] / "nope.engine", None, cfg, torch.device("cpu"))
    message = str(info.value)
    assert "nope.engine: file not found" in message
    assert f"personalive build-engine --weights {weights[0]} --height 128 --width 128 --max-keyframes 3" in message
