"""Regional compilation of the denoising UNet (``runtime.compile_unet_scope=regional``)."""

from __future__ import annotations

import pytest
import torch

from personalive.backends.regions import compile_unet_regions, shared_copy, unet_regions
from personalive.config import RunConfig


@pytest.fixture(scope="module")
def tiny_models(tiny_weights):
    from personalive.weights import load_models

    return load_models(tiny_weights, torch.float32, "cpu")


def test_the_regions_are_every_block_module_and_nothing_else(tiny_models):
    unet = tiny_models.denoising_unet
    regions = unet_regions(unet)
    names = {id(m): name for name, m in unet.named_modules()}
    assert len({id(m) for m in regions}) == len(regions)  # each once
    kinds = {names[id(m)].split(".")[-2] for m in regions}
    assert kinds == {"resnets", "attentions", "motion_modules", "temporal_modules", "downsamplers", "upsamplers"}
    # every ResNet and spatial transformer of the UNet is a region (the blocks' only heavy modules)
    resnets = [m for n, m in unet.named_modules() if n.split(".")[-2:-1] == ["resnets"]]
    assert resnets and all(any(r is m for m in regions) for r in resnets)


def test_the_compiled_copy_shares_the_weights_and_leaves_the_model_set_uncompiled(tiny_models):
    unet = tiny_models.denoising_unet
    clone = compile_unet_regions(unet, None)
    assert clone is not unet
    original, copied = unet.state_dict(keep_vars=True), clone.state_dict(keep_vars=True)
    assert list(original) == list(copied)
    for name, tensor in original.items():
        assert copied[name] is tensor, name  # the same tensors: no second copy of the weights
    assert all(getattr(m, "_compiled_call_impl", None) is not None for m in unet_regions(clone))
    assert all(getattr(m, "_compiled_call_impl", None) is None for m in unet.modules())  # other backends run these
    assert torch._dynamo.config.recompile_limit >= len(unet_regions(clone))


def test_a_network_without_blocks_is_compiled_whole():
    from pipeline.stubs import stub_models

    unet = stub_models().denoising_unet
    assert unet_regions(unet) == []
    compiled = compile_unet_regions(unet, None)
    assert compiled._orig_mod is unet  # torch.compile's wrapper of the network itself


def test_a_shared_copy_holds_modules_of_its_own():
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    copy = shared_copy(net)
    assert copy[0] is not net[0] and copy[0].weight is net[0].weight
    assert copy[1].running_mean is net[1].running_mean
    copy[0].extra = 1  # a module attribute set on the copy stays there
    assert not hasattr(net[0], "extra")


@pytest.mark.slow
def test_regional_step_computes_the_eager_step_and_traces_each_block_shape_once(tiny_models, monkeypatch):
    """dynamo's graphs run as traced (no inductor): the same kernels as eager once the eager-only attention kernels
    are off, so the two agree to fp32 rounding; the reference features' token axis grows with keyframes without a
    new graph (128x128: at 64x64 the innermost level holds one reference token, a size dynamo specialises)."""
    from personalive.backends.compiled import CompiledWindowStep
    from personalive.backends.eager import EagerWindowStep
    from personalive.models import attention_kernels
    from personalive.pipeline.window import OUTPUT_NAMES, example_window_inputs

    monkeypatch.setattr(attention_kernels, "enabled", False)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compile_ = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda m, mode=None, dynamic=None: compile_(m, backend=backend, dynamic=dynamic)
    )
    config = RunConfig()
    config.generation.height = config.generation.width = 128
    config.runtime.compile_unet_scope = "regional"
    cpu = torch.device("cpu")
    models = tiny_models
    eager = EagerWindowStep.from_models(models, config, cpu)
    torch._dynamo.reset()
    try:
        step = CompiledWindowStep.from_models(models, config, cpu)
        generator = torch.Generator().manual_seed(0)
        counts = []
        for k in (0, 1, 2, 3):
            with torch.inference_mode():
                inputs = example_window_inputs(models, config, cpu, torch.float32, k, generator)
                expected, actual = eager(inputs), step(inputs)
            for name in OUTPUT_NAMES:
                torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-5, msg=name)
            counts.append(len(graphs))
    finally:
        torch._dynamo.reset()
    regions = len(unet_regions(models.denoising_unet))
    assert counts[1:] == counts[:1] * 3  # keyframes 1-3: no new graph
    # the UNet's share: far fewer graphs than regions (repeated block shapes reuse one); + pose, motion, decode
    assert counts[0] - 3 < regions / 2
