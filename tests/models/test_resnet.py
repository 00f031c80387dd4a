"""LeanResnetBlock2D computes diffusers' ResnetBlock2D (to fp32 rounding), with its keys."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers.models.resnet import ResnetBlock2D

from personalive.models.resnet import LeanResnetBlock2D, lean_resnets


def _pair(**kwargs) -> tuple[ResnetBlock2D, ResnetBlock2D]:
    torch.manual_seed(0)
    block = ResnetBlock2D(groups=4, eps=1e-5, **kwargs).eval()
    with torch.no_grad():  # non-zero biases everywhere: the folded bias must matter
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    lean = copy.deepcopy(block)
    assert lean_resnets(lean) == 1 and type(lean) is LeanResnetBlock2D
    return block, lean


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 16, "out_channels": 16, "temb_channels": 32},  # a UNet block
        {"in_channels": 16, "out_channels": 24, "temb_channels": 32},  # with the 1x1 shortcut
        {"in_channels": 16, "out_channels": 16, "temb_channels": None},  # a VAE block: no time embedding
        {"in_channels": 16, "out_channels": 24, "temb_channels": None},  # a VAE block with the 1x1 shortcut
        {"in_channels": 16, "out_channels": 16, "temb_channels": 32, "output_scale_factor": 2.0},
        {"in_channels": 16, "out_channels": 16, "temb_channels": 32, "up": True},  # diffusers' forward
        {"in_channels": 16, "out_channels": 16, "temb_channels": 32, "time_embedding_norm": "scale_shift"},
    ],
)
def test_lean_block_matches_diffusers(kwargs):
    block, lean = _pair(**kwargs)
    x = torch.randn(3, 16, 8, 8) + 0.5
    temb = torch.randn(3, 32) if kwargs["temb_channels"] else None
    with torch.no_grad():
        expected, got = block(x, temb), lean(x, temb)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    assert block.state_dict().keys() == lean.state_dict().keys()


def test_channels_last_input_keeps_its_layout():
    block, lean = _pair(in_channels=16, out_channels=16, temb_channels=32)
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = lean(x, torch.randn(2, 32))
    assert got.is_contiguous(memory_format=torch.channels_last)


def test_loaded_networks_use_the_lean_blocks(tiny_weights):
    from personalive.weights import load_models

    models = load_models(tiny_weights, torch.float32, torch.device("cpu"))
    blocks = [m for name in ("denoising_unet", "vae") for m in getattr(models, name).modules()]
    assert any(type(m) is LeanResnetBlock2D for m in blocks)
    assert not any(type(m) is ResnetBlock2D for m in blocks)


@pytest.mark.parametrize("channels_last", [False, True])
def test_vae_block_folds_conv1_bias_into_its_split_norm(channels_last):
    from personalive.models.group_norm import SplitGroupNorm, split_group_norms

    block, lean = _pair(in_channels=16, out_channels=16, temb_channels=None)
    assert split_group_norms(lean) == 2 and isinstance(lean.norm2, SplitGroupNorm)
    lean.norm1.split = lean.norm2.split = 2  # the CPU takes the channels-last path only when told
    x = torch.randn(3, 16, 8, 8) + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected, got = block(x, None), lean(x, None)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
