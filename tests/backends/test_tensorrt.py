"""TensorRT build and run. The real-TensorRT tests need the tensorrt package and a CUDA GPU: they are skipped
here (TensorRT cannot be installed on these machines) and were never executed in this repository's CI."""

from __future__ import annotations

import pytest
import torch

from personalive._optional import is_available
from personalive.backends import onnx as ex
from personalive.backends.artifacts import TensorSpec
from personalive.errors import MissingDependencyError

from .test_onnx_toy import CHANNELS, TOKENS, Toy, _inputs

no_tensorrt = pytest.mark.skipif(is_available("tensorrt"), reason="checks the path where TensorRT is absent")


@no_tensorrt
def test_build_without_tensorrt_names_the_extra(tmp_path):
    from personalive.backends.tensorrt.build import build_engine

    with pytest.raises(MissingDependencyError, match=r"pip install 'personalive\[tensorrt\]'") as info:
        build_engine(tmp_path / "x.onnx", tmp_path / "x.engine", [], timing_cache=None)
    assert info.value.exit_code == 2


@no_tensorrt
def test_runtime_without_tensorrt_names_the_extra(tmp_path):
    from personalive.backends.tensorrt.runtime import TensorRTStep

    with pytest.raises(MissingDependencyError, match=r"pip install 'personalive\[tensorrt\]'"):
        TensorRTStep(tmp_path / "x.engine", models=None, config=None, device=torch.device("cpu"))


def _toy_specs(max_keyframes: int) -> list[TensorSpec]:
    return [
        TensorSpec("latents", "float32", [1, 4, 3, 4, 4]),
        TensorSpec(
            "ref_a", "float32", [1, -1, CHANNELS], ex.token_profile([1, TOKENS, CHANNELS], max_keyframes=max_keyframes)
        ),
    ]


@pytest.mark.tensorrt
def test_toy_engine_matches_torch_over_the_profile(tmp_path):
    """Build a strongly typed fp32 engine from the toy ONNX and run it on PyTorch's stream at 1x..4x tokens."""
    from personalive.backends.tensorrt.build import build_engine
    from personalive.backends.tensorrt.runtime import TensorRTRunner

    device = torch.device("cuda", 0)
    onnx_path, engine_path, cache = tmp_path / "toy.onnx", tmp_path / "toy.engine", tmp_path / "timing.cache"
    module = Toy()
    ex.export_onnx(
        module,
        _inputs(1, torch.Generator().manual_seed(0)),
        onnx_path,
        output_names=["out", "pooled"],
        dynamic_axes=ex.token_dynamic_axes(["ref_a"]),
    )
    build_engine(onnx_path, engine_path, _toy_specs(3), timing_cache=cache)
    assert engine_path.stat().st_size > 0 and cache.stat().st_size > 0
    runner = TensorRTRunner(engine_path, device)
    assert runner.input_names == ["latents", "ref_a"] and runner.output_names == ["out", "pooled"]
    module = module.to(device)
    generator = torch.Generator().manual_seed(1)
    for k in range(4):
        inputs = {name: t.to(device) for name, t in _inputs(k, generator).items()}
        out = runner(inputs)
        with torch.no_grad():
            expected = module(*inputs.values())
        torch.cuda.current_stream().synchronize()
        for name, want in zip(["out", "pooled"], expected, strict=True):
            torch.testing.assert_close(out[name], want, rtol=1e-3, atol=1e-3)  # TF32 may be on in TensorRT
    with pytest.raises(Exception, match="outside the engine's profile"):
        runner({name: t.to(device) for name, t in _inputs(4, generator).items()})
    # a second build reuses (and keeps) the timing cache
    build_engine(onnx_path, tmp_path / "toy2.engine", _toy_specs(3), timing_cache=cache)
    assert cache.stat().st_size > 0
