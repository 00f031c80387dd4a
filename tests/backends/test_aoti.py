"""The AOTInductor engine: build-engine --format aoti, verify-engine on the package, --backend aoti, refusals.

The build compiles the tiny step with inductor's C++ backend for the CPU: BUILD_MINUTES on the shared 2-core
machine, so every test that needs a package is marked slow (PERSONALIVE_RUN_SLOW=1) and shares one build.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from personalive.backends import aoti, artifacts
from personalive.cli import app
from personalive.errors import EngineMismatchError, InputError

SIZE = ["--height", "128", "--width", "128"]  # 64x64 would give a 1-token reference feature


@pytest.fixture(scope="module")
def package(tiny_weights, tmp_path_factory):
    """One build-engine --format aoti run (fp32, CPU, max 1 keyframe: the token axis is dynamic) with --verify."""
    engines = tmp_path_factory.mktemp("engines")
    args = ["build-engine", "--format", "aoti", "--weights", str(tiny_weights), *SIZE, "--max-keyframes", "1"]
    args += ["--dtype", "fp32", "--device", "cpu", "--set", f"runtime.engine_dir={engines}", "--verify"]
    result = CliRunner().invoke(app, args)
    packages = sorted(engines.glob("*.pt2"))
    assert result.exit_code == 0 and len(packages) == 1, (result.output, list(engines.rglob("*")))
    return result, packages[0]


@pytest.mark.slow
def test_package_holds_no_weights_and_its_sidecar_names_the_machine(package, tiny_weights):
    from personalive.weights import weights_hash

    result, path = package
    meta = artifacts.read_sidecar(path)
    assert meta.kind == "aoti" and meta.precision == "fp32" and meta.max_keyframes == 1
    assert meta.device_type == "cpu" and meta.torch_version == torch.__version__ and meta.gpu_name is None
    assert meta.weights_hash == weights_hash(tiny_weights)
    assert meta.output_names == list(aoti.OUTPUT_NAMES)
    assert path.name.endswith(f"-cpu-torch{torch.__version__.replace('+', '-')}.pt2")
    # the tiny step's fp32 weights are ~58 MB; a package without them is code only
    weights = sum(p.stat().st_size for p in tiny_weights.rglob("*.pth"))
    assert path.stat().st_size < weights / 4, (path.stat().st_size, weights)
    assert "all 6 outputs within tolerance" in " ".join(result.output.split())  # rich pads wrapped lines


@pytest.mark.slow
def test_backend_aoti_equals_the_eager_step_with_0_and_1_keyframes(package, tiny_weights):
    from personalive.backends.eager import EagerWindowStep
    from personalive.config import load_config
    from personalive.pipeline.window import OUTPUT_NAMES, example_window_inputs
    from personalive.weights import load_models

    _, path = package
    config = load_config(None, [], {"generation.height": 128, "generation.width": 128, "generation.max_keyframes": 1})
    config.model.weights_dir = str(tiny_weights)
    config.model.dtype = "fp32"
    models = load_models(tiny_weights, torch.float32, "cpu")
    step = aoti.AOTIStep.from_models(models, config, torch.device("cpu"), engine=path)
    eager = EagerWindowStep.from_models(models, config, torch.device("cpu"))
    generator = torch.Generator().manual_seed(3)
    for k in (0, 1, 0):
        inputs = example_window_inputs(models, config, torch.device("cpu"), torch.float32, k, generator)
        actual, expected = step(inputs), eager(inputs)
        for name in OUTPUT_NAMES:
            torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-4, msg=name)
    config.generation.max_keyframes = 3  # the run may add more keyframes than the package takes
    with pytest.raises(EngineMismatchError, match="built for at most 1 history keyframes"):
        aoti.AOTIStep.from_models(models, config, torch.device("cpu"), engine=path)


@pytest.mark.slow
def test_verify_engine_refuses_a_package_of_another_torch(package, tmp_path):
    _, path = package
    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes())
    meta = json.loads(artifacts.sidecar_path(path).read_text())
    meta["torch_version"] = "1.0.0"
    artifacts.sidecar_path(copy).write_text(json.dumps(meta))
    result = CliRunner().invoke(app, ["verify-engine", str(copy), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "torch_version differs: built for '1.0.0'" in result.output.replace("\n", "")


# ------------------------------------------------------------------------------------- without a build (fast)
def _sidecar(**changes) -> artifacts.Sidecar:
    facts = aoti.device_facts(torch.device("cpu"))
    meta = artifacts.Sidecar(
        kind="aoti",
        precision="fp32",
        weights_hash="ab" * 32,
        config={"height": 64},
        max_keyframes=1,
        inputs=[],
        outputs=[],
        personalive_version="0",
        build_command="personalive build-engine --format aoti",
        torch_version=facts["torch_version"],
        cuda_version=facts["cuda_version"],
        device_type="cpu",
    )
    return dataclasses.replace(meta, **changes)


def test_package_checks_name_the_first_difference_and_the_rebuild(tmp_path):
    path, cpu = tmp_path / "p.pt2", torch.device("cpu")
    aoti.check_package(_sidecar(), path, cpu, rebuild="REBUILD", weights_hash="ab" * 32, max_keyframes=1)
    cases = [
        (_sidecar(device_type="cuda"), "device_type differs: built for 'cuda', current 'cpu'"),
        (_sidecar(torch_version="2.0.0"), "torch_version differs: built for '2.0.0'"),
        (_sidecar(weights_hash="cd" * 32), "weights_hash differs"),
        (_sidecar(max_keyframes=0), "built for at most 0 history keyframes"),
    ]
    for meta, text in cases:
        with pytest.raises(EngineMismatchError, match=text) as err:
            aoti.check_package(meta, path, cpu, rebuild="REBUILD", weights_hash="ab" * 32, max_keyframes=1)
        assert str(err.value).startswith(f"{path}: ") and "rebuild with `REBUILD`" in str(err.value)
    with pytest.raises(InputError, match="not an AOTInductor package"):
        aoti.check_package(_sidecar(kind="onnx"), path, cpu, rebuild="REBUILD")


def test_constants_the_module_lacks_are_an_error_with_the_rebuild(tmp_path):
    module = torch.nn.Linear(2, 2)
    named = aoti.constants_map(module, ["weight", "bias"], tmp_path / "p.pt2")
    assert named["weight"] is module.weight  # bound, not copied
    with pytest.raises(aoti.AOTIError, match="needs 1 tensor\\(s\\) the window step does not have .first: w2."):
        aoti.constants_map(module, ["weight", "w2"], tmp_path / "p.pt2")


def test_default_package_name_carries_weights_config_device_and_torch(tmp_path):
    facts = {"torch_version": "2.11.0+cu130", "compute_capability": "9.0", "device_type": "cuda"}
    subset = {"height": 512, "width": 512, "window": 4}
    path = aoti.default_package_path(tmp_path, "f" * 64, subset, "fp16", 3, facts)
    assert path.parent == tmp_path
    assert path.name.startswith("window_step-ffffffffffff-512x512-fp16-k3-c")
    assert path.name.endswith("-sm90-torch2.11.0-cu130.pt2")
