"""The streaming loop with the real tiny networks (random weights), not stand-ins: counts, seeds, dtypes, no face.

The stand-in tests in test_animate.py cover the loop logic in depth; these check that the same properties hold
through the real pose guider, motion encoder, motion extractor, UNets and VAE (128x128, the tiny layout's size).
"""

from __future__ import annotations

import pytest
import torch

from personalive.backends.eager import EagerWindowStep
from personalive.config import RunConfig
from personalive.pipeline.animate import Animator
from personalive.weights import load_models

SIZE = 128


@pytest.fixture(scope="module")
def models32(tiny_weights):
    return load_models(tiny_weights, torch.float32, "cpu")


def _animator(models) -> Animator:
    config = RunConfig()
    config.generation.height = config.generation.width = SIZE
    return Animator(models, config, EagerWindowStep.from_models(models, config, models.device))


def _frames(n: int) -> list[torch.Tensor]:
    """A bright disc (a stand-in face) moving over a dark background."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    frames = []
    for i in range(n):
        cy, cx = 64 + 3 * i, 60 + 2 * i
        disc = (((yy - cy) ** 2 + (xx - cx) ** 2) < 30**2).float()
        img = torch.stack([disc * 220, disc * 170, disc * 140], dim=-1) + 20
        frames.append(img.clamp(0, 255).to(torch.uint8))
    return frames


def _small_animator(models) -> Animator:
    """64x64, windows of 2 frames with 2 noise levels: the same code paths at a fraction of the 128x128
    cost (CPU has no fast half-precision convolution: bf16/fp16 runs fall back to a slow reference kernel)."""
    config = RunConfig()
    gen = config.generation
    gen.height = gen.width = 64
    gen.window = gen.adaptive_steps = gen.inference_steps = 2
    return Animator(models, config, EagerWindowStep.from_models(models, config, models.device))


def _small_frames(n: int) -> list[torch.Tensor]:
    return [
        torch.nn.functional.avg_pool2d(f.permute(2, 0, 1).float(), 2).permute(1, 2, 0).to(torch.uint8)
        for f in _frames(n)
    ]


def test_real_networks_frame_counts_and_seed(models32):
    an = _small_animator(models32)  # four runs: the 64x64 configuration keeps them cheap
    ref = an.fuse_reference(_small_frames(1)[0])
    one = list(an.animate(ref, iter(_small_frames(1)), generator=torch.Generator().manual_seed(3)))
    assert len(one) == 1 and one[0].shape == (64, 64, 3) and one[0].dtype == torch.uint8

    five_a = list(an.animate(ref, iter(_small_frames(5)), generator=torch.Generator().manual_seed(3)))
    five_b = list(an.animate(ref, iter(_small_frames(5)), generator=torch.Generator().manual_seed(3)))
    five_c = list(an.animate(ref, iter(_small_frames(5)), generator=torch.Generator().manual_seed(4)))
    assert len(five_a) == 5
    assert all(torch.equal(a, b) for a, b in zip(five_a, five_b, strict=True))
    assert any(not torch.equal(a, c) for a, c in zip(five_a, five_c, strict=True))
    # the first frame of a 1-frame and a 5-frame run share their start-up and first window inputs only partly
    # (the tail padding differs), so only shapes are compared there
    assert one[0].shape == five_a[0].shape


def test_black_frames_pass_through_the_real_networks(models32):
    an = _animator(models32)
    ref = an.fuse_reference(torch.zeros(SIZE, SIZE, 3, dtype=torch.uint8))
    black = [torch.zeros(SIZE, SIZE, 3, dtype=torch.uint8)] * 3
    out = list(an.animate(ref, iter(black)))
    assert len(out) == 3


# one half type covers the casts (the pipeline treats both alike); fp16, the slower of the two on the CPU
# (5 min of one core here even at 64x64), runs with the slow tests
@pytest.mark.parametrize("dtype", [torch.bfloat16, pytest.param(torch.float16, marks=pytest.mark.slow)])
def test_half_precision_pipelines_run_without_dtype_errors(tiny_weights, models32, dtype):
    """The whole run in bf16/fp16 (CLIP in fp32) has no dtype mismatch and stays near the fp32 frames."""
    models = load_models(tiny_weights, dtype, "cpu")
    # one driving window: on this CPU (AVX2, no bf16 convolution kernels) PyTorch's reference convolution took 136
    # of the run's 139 s, nearly all of it the motion encoder's 56x56 layers; over channels-last weights the same
    # reference path took 17 s (measured here). The layout changes no dtype on the way, which is what this checks;
    # partial windows are covered in fp32 above
    models.motion_encoder.to(memory_format=torch.channels_last)
    frames = _small_frames(2)
    half = _small_animator(models)
    full = _small_animator(models32)
    a = list(half.animate(half.fuse_reference(frames[0]), iter(frames), generator=torch.Generator().manual_seed(0)))
    b = list(full.animate(full.fuse_reference(frames[0]), iter(frames), generator=torch.Generator().manual_seed(0)))
    assert len(a) == len(b) == 2 and a[0].shape == (64, 64, 3)
    assert half.stats.windows == 2  # one driving window (2 frames) and one flush window
    diff = torch.stack([(x.float() - y.float()).abs().mean() for x, y in zip(a, b, strict=True)]).mean()
    # random weights amplify rounding; the mean pixel error stays a fraction of the range, not noise-level
    assert diff < 40, f"mean |half - fp32| = {diff:.1f} of 255"
