"""ONNX export and comparison utilities on a toy module with named I/O and a dynamic token axis (no models)."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from personalive.backends import onnx as ex
from personalive.backends.onnx import OnnxRunner
from personalive.backends.verify import compare_runs, keyframe_schedule, reference_cases
from personalive.errors import ConfigError

TOKENS, CHANNELS = 6, 32  # to_k (4 KB) is big enough to go to external data


class Toy(nn.Module):
    """latents (B, 4, F, h, w) attend over reference features (B, L * (1 + K), C); two named outputs."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv3d(4, CHANNELS, 1)
        self.to_k = nn.Linear(CHANNELS, CHANNELS)
        self.out = nn.Conv3d(CHANNELS, 4, 1)

    def forward(self, latents, ref_a):
        b, _, f, h, w = latents.shape
        x = self.conv(latents)  # (B, C, F, h, w)
        q = x.flatten(2).transpose(1, 2)  # (B, F*h*w, C)
        att = torch.softmax(q @ self.to_k(ref_a).transpose(1, 2) / CHANNELS**0.5, dim=-1) @ ref_a
        y = self.out(att.transpose(1, 2).reshape(b, CHANNELS, f, h, w))
        return latents + y, y.mean(dim=(3, 4))


def _inputs(k: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "latents": torch.randn(1, 4, 3, 4, 4, generator=generator),
        "ref_a": torch.randn(1, TOKENS * (1 + k), CHANNELS, generator=generator),
    }


@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "toy.onnx"
    inputs = _inputs(1, torch.Generator().manual_seed(0))
    ex.export_onnx(Toy(), inputs, path, output_names=["out", "pooled"], dynamic_axes=ex.token_dynamic_axes(["ref_a"]))
    return path


def _torch_run(module):
    def run(inputs):
        with torch.no_grad():
            return dict(zip(["out", "pooled"], module(*inputs.values()), strict=True))

    return run


def test_named_io_and_only_the_token_axis_dynamic(toy_onnx):
    graph = onnx.load(str(toy_onnx)).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input}
    assert dims == {"latents": [1, 4, 3, 4, 4], "ref_a": [1, "ref_a_tokens", CHANNELS]}
    assert [o.name for o in graph.output] == ["out", "pooled"]
    assert not toy_onnx.with_name("toy.onnx.data").exists()


def test_onnxruntime_matches_torch_for_every_token_length(toy_onnx):
    cases = reference_cases(_torch_run(Toy()), _inputs, 4, 3, torch.Generator().manual_seed(0))
    result = compare_runs(OnnxRunner(toy_onnx), cases, output_names=["out", "pooled"], tolerance=1e-5)
    assert result.keyframes == [0, 3, 1, 2]
    assert not result.failed, result.lines()
    assert all(0 < r.rel < 1e-5 or r.max_abs == 0 for r in result.reports)
    assert "tolerance 1e-05" in result.lines()[0]


def test_other_weights_fail_the_comparison(toy_onnx):
    cases = reference_cases(_torch_run(Toy(seed=1)), _inputs, 2, 1, torch.Generator().manual_seed(0))
    result = compare_runs(OnnxRunner(toy_onnx), cases, output_names=["out", "pooled"], tolerance=1e-4)
    assert {r.name for r in result.failed} == {"out", "pooled"}
    assert all(r.rel > 1e-2 for r in result.reports)
    assert all(line.endswith("FAIL") for line in result.lines()[1:])


def test_nan_and_shape_mismatch_fail():
    def bad(inputs):
        out = _torch_run(Toy())(inputs)
        out["out"] = out["out"].clone()
        out["out"][0, 0, 0, 0, 0] = float("nan")
        out["pooled"] = out["pooled"][..., :1]
        return out

    cases = reference_cases(_torch_run(Toy()), _inputs, 1, 0, torch.Generator().manual_seed(0))
    result = compare_runs(bad, cases, output_names=["out", "pooled"], tolerance=1.0)
    by_name = {r.name: r for r in result.reports}
    assert by_name["out"].nan == 1 and by_name["out"].ref_nan == 0 and by_name["out"].rel == 0
    assert not by_name["out"].passed(1.0)
    assert by_name["pooled"].shape_errors == ["shape (1, 4, 1) != reference (1, 4, 3)"]


def test_external_data_is_one_file_and_checks(tmp_path):
    path = tmp_path / "big.onnx"
    inputs = _inputs(0, torch.Generator().manual_seed(0))
    ex.export_onnx(
        Toy(),
        inputs,
        path,
        output_names=["out", "pooled"],
        dynamic_axes=ex.token_dynamic_axes(["ref_a"]),
        external_data=True,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    proto = onnx.load(str(path), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    out = OnnxRunner(path)(inputs)
    torch.testing.assert_close(out["out"], _torch_run(Toy())(inputs)["out"], rtol=1e-5, atol=1e-5)


def test_unused_input_is_reported(tmp_path):
    class Drops(nn.Module):
        def forward(self, latents, ref_a):
            return (latents * 2,)

    inputs = _inputs(0, torch.Generator().manual_seed(0))
    with pytest.raises(ex.ExportError, match=r"graph I/O names differ from the contract.*'ref_a'"):
        ex.export_onnx(Drops(), inputs, tmp_path / "d.onnx", output_names=["out"])


def test_token_profile_and_schedule():
    assert ex.token_profile([1, 64, 320], 3) == {"min": [1, 64, 320], "opt": [1, 128, 320], "max": [1, 256, 320]}
    assert ex.token_profile([1, 64, 320], 0) == {"min": [1, 64, 320], "opt": [1, 64, 320], "max": [1, 64, 320]}
    assert keyframe_schedule(3, 0) == [0, 0, 0]
    assert keyframe_schedule(5, 2) == [0, 2, 1, 0, 2]


def test_zero_draws_is_a_usage_error():
    with pytest.raises(ConfigError, match="--draws 0: must be >= 1"):
        reference_cases(_torch_run(Toy()), _inputs, 0, 0, torch.Generator().manual_seed(0))
