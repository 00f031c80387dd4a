"""CUDA graphs replay the window step: same outputs as the uncaptured step, one graph per keyframe count, outputs
that survive later replays, and a step that cannot be captured runs uncaptured with a warning."""

from __future__ import annotations

import logging

import pytest
import torch

from personalive.backends.eager import EagerWindowStep
from personalive.backends.graphs import GraphedStep
from personalive.config import CudaGraphs, RunConfig
from personalive.pipeline.window import OUTPUT_NAMES, example_window_inputs


def _config(size: int, graphs: bool) -> RunConfig:
    config = RunConfig()
    config.generation.height = config.generation.width = size
    config.runtime.cuda_graphs = CudaGraphs.on if graphs else CudaGraphs.off
    return config


def test_graphs_pass_through_on_the_cpu(tiny_weights):
    """runtime.cuda_graphs=on: on a CPU the step runs as before, output for output."""
    from personalive.weights import load_models

    models = load_models(tiny_weights, torch.float32, "cpu")
    inputs = example_window_inputs(models, _config(64, False), torch.device("cpu"), torch.float32, 1)
    plain = EagerWindowStep.from_models(models, _config(64, False), torch.device("cpu"))
    graphed = EagerWindowStep.from_models(models, _config(64, True), torch.device("cpu"))
    assert plain.graphed is None and graphed.graphed is not None
    a, b = plain(inputs), graphed(inputs)
    assert not graphed.graphed.graphs  # nothing captured off CUDA
    for name in OUTPUT_NAMES:
        assert torch.equal(a[name], b[name]), name


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


@pytest.mark.gpu
@requires_cuda
def test_eager_graphs_replay_equals_the_uncaptured_step(tiny_weights):
    from personalive.weights import load_models

    device = torch.device("cuda")
    models = load_models(tiny_weights, torch.float32, device)
    plain = EagerWindowStep.from_models(models, _config(128, False), device)
    step = EagerWindowStep.from_models(models, _config(128, True), device)
    generator = torch.Generator(device).manual_seed(0)
    kept = None
    # new draws every call: a replay must read its inputs, not the captured ones; each count is captured at its
    # third call, and replayed after
    for k in (0, 1, 0, 1, 0, 1, 2, 2, 2, 0, 1, 2):
        inputs = example_window_inputs(models, _config(128, True), device, torch.float32, k, generator)
        expected, actual = plain(inputs), step(inputs)
        for name in OUTPUT_NAMES:
            torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-4, msg=name)
        if kept is None and step.graphed.graphs:  # the first replay's outputs
            kept = {name: (tensor, tensor.clone()) for name, tensor in actual.items()}
    assert len(step.graphed.graphs) == 3  # keyframe counts 0, 1, 2
    for name, (tensor, copy) in kept.items():  # outputs are the caller's: later replays do not overwrite them
        assert torch.equal(tensor, copy), name


@pytest.mark.gpu
@requires_cuda
def test_a_step_that_cannot_be_captured_runs_uncaptured_with_a_warning(caplog):
    def syncing_step(inputs):  # .item() synchronises with the host: not allowed while capturing
        x = inputs["x"]
        return {"y": x * float(x.sum().item() > 0)}

    step = GraphedStep(syncing_step, "test step")
    x = torch.ones(4, device="cuda")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # the first two calls of a shape run uncaptured: no capture tried yet
            assert torch.equal(step({"x": x})["y"], x)
        assert step.enabled and not caplog.text
        out = step({"x": x})  # the third tries the capture, which fails
    assert torch.equal(out["y"], x)
    assert not step.enabled and "CUDA graph capture failed" in caplog.text
    assert torch.equal(step({"x": -x})["y"], torch.zeros(4, device="cuda"))
    # the device's default random generator still draws (a failed capture once left it marked as capturing)
    assert torch.randn(8, device="cuda").isfinite().all()


@pytest.mark.parametrize(
    ("setting", "pays", "expected"),
    [("auto", True, True), ("auto", False, False), ("on", False, True), ("off", True, False)],
)
def test_auto_means_graphs_where_they_pay(setting, pays, expected):
    from personalive.backends.graphs import use_graphs

    assert use_graphs(CudaGraphs(setting), pays) is expected


def test_a_set_of_shapes_is_captured_at_its_third_call_only():
    """Keyframe counts that a run passes through in a window or two are never captured; a count that stays is
    captured once, at its third call (the first two are real windows that warm everything up)."""
    step = GraphedStep(lambda inputs: inputs, "test step")
    zero, one = ("k", (1,)), ("k", (2,))
    assert [step.due(zero), step.due(one), step.due(zero), step.due(zero)] == [False, False, False, True]
    assert not step.due(one)
    assert GraphedStep(lambda inputs: inputs, capture_after=1).due(zero)


def test_backends_read_the_setting(tiny_weights):
    from personalive.backends.compiled import CompiledWindowStep
    from personalive.config import load_config
    from personalive.weights import load_models

    models = load_models(tiny_weights, torch.float32, "cpu")
    auto = load_config(options={"generation.height": 64, "generation.width": 64})
    assert auto.runtime.cuda_graphs == CudaGraphs.auto
    # auto: on for every backend since captures became cheap (eleventh session); off when asked
    assert EagerWindowStep.from_models(models, auto, torch.device("cpu")).graphed is not None
    assert CompiledWindowStep.from_models(models, auto, torch.device("cpu")).graphed is not None  # not compiled yet
    off = load_config(options={"generation.height": 64, "generation.width": 64, "runtime.cuda_graphs": "off"})
    assert EagerWindowStep.from_models(models, off, torch.device("cpu")).graphed is None
    with pytest.raises(Exception, match="cuda_graphs"):
        load_config(options={"runtime.cuda_graphs": "sometimes"})


def test_static_buffers_keep_each_inputs_inference_mode():
    from personalive.backends.graphs import static_copy

    with torch.inference_mode():
        made_inside = torch.randn(2, 3)
    plain = torch.randn(2, 3)
    for tensor in (made_inside, plain):
        copy = static_copy(tensor)
        assert copy.is_inference() == tensor.is_inference()
        assert torch.equal(copy, tensor) and copy.data_ptr() != tensor.data_ptr()


def test_static_buffers_spare_the_compiled_step_a_recompile():
    # the job feeds a window's outputs (inference tensors) back as inputs; the captured call on static buffers must
    # meet the guards those windows compiled, or torch.compile recompiles inside the capture and it fails
    from personalive.backends.graphs import static_copy

    torch._dynamo.reset()
    compiled = torch.compile(lambda x, y: x * 2 + y, backend="eager", dynamic=False)
    with torch.inference_mode():
        state = torch.randn(4, 8)  # an earlier window's output
    fresh = torch.randn(4, 8)
    compiled(state, fresh)
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            compiled(static_copy(state), static_copy(fresh))  # no recompile
            with pytest.raises(Exception, match="[Rr]ecompil"):  # the buffers made before: plain copies
                compiled(state.detach().clone(), fresh)
    finally:
        torch._dynamo.reset()


@pytest.mark.gpu
@requires_cuda
def test_a_compiled_step_fed_its_own_outputs_is_captured_without_recompiling():
    # as the job runs the compile backend: each call under inference_mode, its outputs the next call's inputs; the
    # captured call on the static buffers must not recompile (compilation inside a capture fails it: call AO)
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, y: (x * 0.5 + y, y + 1), backend="eager", dynamic=False)

    def run(inputs):
        with torch.inference_mode():
            x, y = compiled(inputs["x"], inputs["y"])
        return {"x": x, "y": y}

    step = GraphedStep(run, "compiled test step")
    state = {"x": torch.ones(4, device="cuda"), "y": torch.zeros(4, device="cuda")}  # the first window's: plain
    try:
        state = step(state)
        state = step(state)  # from here on the inputs are a call's outputs, as in the job
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(3):  # the third call of the shape captures, then replays
                state = step(state)
    finally:
        torch._dynamo.reset()
    assert step.enabled and len(step.graphs) == 1
    expected = {"x": torch.ones(4), "y": torch.zeros(4)}
    for _ in range(5):
        expected = {"x": expected["x"] * 0.5 + expected["y"], "y": expected["y"] + 1}
    for name, tensor in expected.items():
        torch.testing.assert_close(state[name].cpu(), tensor)
