"""The torch.compile backend computes what the eager backend computes (inductor on the CPU).

Both tests are marked slow: inductor's C++ compilation takes minutes on a loaded 2-core machine (the stand-in one
took 45 s of CPU, 4 min of wall time there). Run them with PERSONALIVE_RUN_SLOW=1.
"""

from __future__ import annotations

import pytest
import torch

from personalive.backends.compiled import CompiledWindowStep
from personalive.backends.eager import EagerWindowStep
from personalive.config import CompileMode, RunConfig
from personalive.pipeline.window import OUTPUT_NAMES, example_window_inputs


def _config(size: int) -> RunConfig:
    config = RunConfig()
    config.generation.height = config.generation.width = size
    return config


def _assert_same_step(models, config, keyframes=(0, 1)):
    eager = EagerWindowStep.from_models(models, config, torch.device("cpu"))
    compiled = CompiledWindowStep.from_models(models, config, torch.device("cpu"))
    assert compiled.input_names == eager.input_names and compiled.feature_names == eager.feature_names
    generator = torch.Generator().manual_seed(0)
    for k in keyframes:  # the token axis grows with keyframes: one dynamic dimension, no shape error
        inputs = example_window_inputs(models, config, torch.device("cpu"), torch.float32, k, generator)
        expected = eager(inputs)
        actual = compiled(inputs)
        assert list(actual) == list(OUTPUT_NAMES)
        for name in OUTPUT_NAMES:
            torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.slow
def test_compiled_step_equals_eager_step_on_stand_in_networks():
    from pipeline.stubs import stub_models

    _assert_same_step(stub_models(), _config(64))


def _rel(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """verify-engine's measure: max|a - b| / max|b| (personalive/backends/verify.py)."""
    return ((actual.double() - reference).abs().max() / reference.abs().max()).item()


@pytest.mark.slow
def test_compiled_step_equals_eager_step_on_tiny_weights(tiny_weights):
    """Against an fp64 eager reference: the random tiny UNet on RMS-40 motion tokens is ill-conditioned (eager
    fp32 itself is 2.3e-2 off fp64 on frames, 4.9e-2 on next_latents, measured 2026-12-02), so compiled and
    eager fp32 cannot agree to 1e-4; the compiled step must be as close to fp64 as eager fp32 is (factor 4)."""
    from personalive.weights import load_models

    config, cpu = _config(128), torch.device("cpu")
    models = load_models(tiny_weights, torch.float32, "cpu")
    inputs = example_window_inputs(models, config, cpu, torch.float32, 0, torch.Generator().manual_seed(0))
    eager = EagerWindowStep.from_models(models, config, cpu)(inputs)
    actual = CompiledWindowStep.from_models(models, config, cpu)(inputs)
    models64 = load_models(tiny_weights, torch.float64, "cpu")
    inputs64 = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    exact = EagerWindowStep.from_models(models64, config, cpu)(inputs64)
    assert list(actual) == list(OUTPUT_NAMES)
    for name in OUTPUT_NAMES:
        floor = 1e-5  # well-conditioned outputs (pose features, motion tokens): fp32 rounding only
        assert _rel(actual[name], exact[name]) <= 4 * max(_rel(eager[name], exact[name]), floor), name


@pytest.mark.gpu
@pytest.mark.parametrize("scope", ["whole", "regional"])
def test_cuda_graphs_replay_equals_the_uncaptured_compiled_step_for_each_keyframe_count(tiny_weights, scope):
    """The replay against the same compiled networks called uncaptured (the same kernels: to fp32 rounding); against
    the eager step only as verify-engine measures it, loosely: the random tiny UNet is ill-conditioned, so any
    change of kernels moves its fp32 output by up to ~5e-2 relative (the CPU test above measures fidelity against
    fp64), while a replay reading stale or foreign buffers is off by O(1)."""
    from personalive.weights import load_models

    device = torch.device("cuda")
    models = load_models(tiny_weights, torch.float32, device)
    config = _config(128)
    # inductor's default mode: max-autotune's search (the product's VAE mode until the fourteenth session) ran past
    # 200 s at tiny size (call AD)
    config.runtime.compile_vae_mode = CompileMode.default
    config.runtime.compile_unet_scope = scope
    eager = EagerWindowStep.from_models(models, config, device)
    step = CompiledWindowStep.from_models(models, config, device)
    generator = torch.Generator(device).manual_seed(0)
    kept = None
    for k in (0, 1, 0, 1, 0, 1):
        inputs = example_window_inputs(models, config, device, torch.float32, k, generator)
        uncaptured, actual, reference = step._plain_call(inputs), step(inputs), eager(inputs)
        for name in OUTPUT_NAMES:
            torch.testing.assert_close(actual[name], uncaptured[name], rtol=1e-4, atol=1e-4, msg=name)
            assert _rel(actual[name], reference[name].double()) < 0.15, name
        if kept is None:
            kept = {name: (tensor, tensor.clone()) for name, tensor in actual.items()}
    assert len(step.graphed.graphs) == 2  # one graph per keyframe count, captured at the third call of each
    for name, (tensor, copy) in kept.items():  # outputs are the caller's: later replays do not overwrite them
        assert torch.equal(tensor, copy), name


def test_a_whole_stream_with_keyframes_compiles_each_network_once(monkeypatch):
    # dynamo's own "eager" backend (no inductor: seconds, not minutes), recompilations made errors: the stream feeds
    # the step its outputs and grows the reference features per keyframe, and neither may recompile (each had
    # cost a whole UNet compilation mid-run: call AO, run again in the fourteenth session)
    from pipeline.stubs import stub_models
    from pipeline.test_animate import SIZE, _frames, _reference

    from personalive.pipeline.animate import Animator

    compile_ = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda m, mode=None, dynamic=None: compile_(m, backend="eager", dynamic=dynamic)
    )
    config = _config(SIZE)
    config.generation.keyframe_threshold = 0.0
    config.runtime.compile_unet_scope = "whole"  # the stand-in UNet has no blocks (regional: test_regions.py)
    models = stub_models()
    animator = Animator(models, config, CompiledWindowStep.from_models(models, config, torch.device("cpu")))
    torch._dynamo.reset()
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            frames = list(animator.animate(animator.fuse_reference(_reference()), iter(_frames(48))))
    finally:
        torch._dynamo.reset()
    assert len(frames) == 48 and animator.keyframes_added == 3
