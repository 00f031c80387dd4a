"""The window step with its VAE decoder channels-last (the eager backend on CUDA) computes the same step."""

from __future__ import annotations

import torch

from personalive.backends.eager import EagerWindowStep
from personalive.config import load_config
from personalive.models.group_norm import SplitGroupNorm
from personalive.pipeline.window import OUTPUT_NAMES, build_window_module, example_window_inputs
from personalive.random_weights import random_models


def _conv_in_channels_last(module) -> bool:
    return module.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_channels_last_decoder_gives_the_same_step_and_does_not_carry_over():
    models = random_models("tiny", torch.device("cpu"), torch.float32)
    size = {"generation.height": models.sizes.height, "generation.width": models.sizes.width}
    config = load_config(options={"model.dtype": "fp32", "runtime.device": "cpu", **size})
    inputs = example_window_inputs(
        models, config, torch.device("cpu"), torch.float32, 1, torch.Generator().manual_seed(0)
    )
    nchw = build_window_module(models, config)
    assert not _conv_in_channels_last(nchw)
    expected = EagerWindowStep(nchw)(inputs)
    cl = build_window_module(models, config, channels_last_decoder=True)
    assert _conv_in_channels_last(cl)
    norms = [m for m in cl.vae.decoder.modules() if isinstance(m, SplitGroupNorm)]
    assert norms
    for norm in norms:  # the CPU takes the norms' channels-last path only when told (CUDA always does)
        norm.split = 2
    try:
        actual = EagerWindowStep(cl)(inputs)
    finally:
        for norm in norms:
            del norm.split  # back to the class default
    assert actual["frames"].shape == expected["frames"].shape
    torch.testing.assert_close(actual["frames"], expected["frames"], rtol=1e-5, atol=1e-5)
    for name in OUTPUT_NAMES:  # the decoder makes only the frames
        if name != "frames":
            assert torch.equal(actual[name], expected[name]), name
    # a backend built later from the same networks (compile, the exports) gets the default layout back
    assert not _conv_in_channels_last(build_window_module(models, config))
