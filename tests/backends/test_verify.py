"""The verification harness itself: the fp32 reference is computed as IEEE fp32 (TF32 off), flags restored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from personalive.backends.verify import OutputReport, VerificationResult, reference_cases, strict_fp32, update_report


def _flags() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_the_reference_runs_with_tf32_off_and_the_flags_come_back():
    # PyTorch's default lets cuDNN convolutions use TF32, ~1e-3 off fp32: too coarse for an fp32 reference
    seen, saved = [], _flags()

    def reference(inputs):
        seen.append((inputs["k"], _flags()))
        return {"y": inputs["x"] * 2}

    def make_inputs(keyframes, generator):
        return {"x": torch.randn(3, generator=generator), "k": keyframes}

    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
        cases = reference_cases(reference, make_inputs, 3, 2, torch.Generator().manual_seed(0))
        assert _flags() == (True, True)
        assert seen == [(0, (False, False)), (2, (False, False)), (1, (False, False))]
        assert [c.keyframes for c in cases] == [0, 2, 1]
        for case in cases:
            torch.testing.assert_close(case.expected["y"], case.inputs["x"] * 2)
        # restored on an error too
        try:
            with strict_fp32():
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert _flags() == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"), reason="torch without fp32_precision")
def test_the_strict_block_restores_the_precision_strings_exactly():
    """The legacy allow_tf32 setters turn the default "none" into "ieee"; inductor keys its FX graph cache on it, so
    a verify-engine changed every later compilation's key in the process."""
    flags = [torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn]
    saved = [f.fp32_precision for f in flags]
    try:
        for flag, value in zip(flags, ["none", "tf32", "tf32"], strict=True):
            flag.fp32_precision = value
        with strict_fp32():
            assert _flags() == (False, False)
        assert [f.fp32_precision for f in flags] == ["none", "tf32", "tf32"]
        assert _flags() == (True, False)  # the legacy flags still read (PyTorch refuses them after some mixes)
    finally:
        for flag, value in zip(flags, saved, strict=True):
            flag.fp32_precision = value


def _result(artifact: torch.Tensor, reference: torch.Tensor, own: float | None) -> VerificationResult:
    report = OutputReport("frames")
    update_report(report, artifact, reference)
    return VerificationResult([report], 2e-2, [0], {} if own is None else {"frames": own})


def test_an_output_as_far_off_as_the_step_in_its_own_precision_is_excused_a_worse_or_broken_one_is_not():
    # call BA: fp16 TAESD frames 6.1e-2 from fp32 eagerly, 5.8e-2 precompiled, against a tolerance of 2e-2
    reference = torch.linspace(0, 1, 64)
    close = reference + 0.058
    excused = _result(close, reference, own=0.061)
    assert excused.failed == [] and excused.excused(excused.reports[0])
    assert excused.lines()[1].endswith("ok: the PyTorch step in this precision is 6.100e-02 from the reference")
    assert [r.name for r in _result(close, reference, own=None).failed] == ["frames"]  # not measured: it fails
    assert _result(close, reference, own=0.01).failed  # the step in its precision is within tolerance
    assert _result(reference + 0.2, reference, own=0.061).failed  # beyond 1.5x the step's own error
    broken = close.clone()
    broken[3] = float("nan")  # a NaN the reference lacks is never the precision's
    assert _result(broken, reference, own=0.061).failed
    assert _result(close[:32], reference, own=0.061).failed  # nor a shape error


def test_verify_engine_tells_an_artifact_with_its_precisions_error_from_a_wrong_one(tiny_weights, monkeypatch):
    """verify-engine on an fp16 artifact that is the fp16 PyTorch step (a tolerance it cannot meet: its outputs
    fail as the step's own do) passes; the same with its frames shifted fails naming them."""
    import pytest

    from personalive import engines
    from personalive.backends import artifacts
    from personalive.config import load_config
    from personalive.errors import VerificationError
    from personalive.pipeline.window import build_window_module
    from personalive.weights import weights_hash

    options = {"model.weights_dir": str(tiny_weights), "runtime.device": "cpu", "generation.max_keyframes": 1}
    config = load_config(None, [], {**options, "generation.height": 64, "generation.width": 64})
    meta = artifacts.Sidecar(
        "precompiled", "fp16", weights_hash(tiny_weights), artifacts.config_subset(config), 1, [], [], "0", "rebuild"
    )
    step = build_window_module(engines._load_models(config, "fp16", torch.device("cpu")), config).eval()

    def artifact(shift: float):
        def run(inputs):
            with torch.no_grad():
                outputs = engines._named_outputs(step)(inputs)
            return {**outputs, "frames": outputs["frames"] + shift}

        return lambda path, meta, device: lambda config: run

    monkeypatch.setattr(engines, "_open_runner", artifact(0.0))
    result = engines.verify_engine(config, Path("step.ptstep"), meta, tolerance=1e-7, draws=2)
    assert result.failed == [] and set(result.own_error) == {r.name for r in result.reports}
    assert all(result.excused(r) for r in result.reports if r.rel > 1e-7)
    assert any(r.rel > 1e-7 for r in result.reports)  # the tolerance did fail them: they were excused
    monkeypatch.setattr(engines, "_open_runner", artifact(0.5))
    with pytest.raises(VerificationError, match=r"step.ptstep: verification failed: 1 of 6 outputs .*: frames$"):
        engines.verify_engine(config, Path("step.ptstep"), meta, tolerance=1e-7, draws=2)
