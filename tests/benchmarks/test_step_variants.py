"""benchmarks/step_variants.py's ``before`` really runs the code before the fast path, and puts the fast path back."""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from benchmarks.step_variants import before
from personalive.models import attention_3d
from personalive.models.attention_3d import SpatialTransformer
from personalive.models.feed_forward import SplitGEGLU
from personalive.models.motion_module import TemporalTransformer
from personalive.models.vae import NCHWAttnProcessor
from personalive.random_weights import random_models


def test_before_switches_every_rewrite_off_and_back_on():
    models = random_models("tiny", torch.device("cpu"), torch.float32)
    module = torch.nn.ModuleDict({"unet": models.denoising_unet, "vae": models.vae})
    gegl = [m for m in module.modules() if isinstance(m, SplitGEGLU)]
    assert len(gegl) == 58  # every feed-forward of the denoising UNet
    layouts = [m for m in module.modules() if isinstance(m, (SpatialTransformer, TemporalTransformer))]
    assert len(layouts) == 16 + 42 and all(m.fast_layout for m in layouts)
    fast_append = attention_3d._append_per_frame
    with before(module):
        assert not any(m.fast_layout for m in layouts)
        assert not any(m.split for m in gegl)
        assert attention_3d._append_per_frame is not fast_append
        assert isinstance(models.vae.decoder.mid_block.attentions[0].processor, AttnProcessor2_0)
        assert not isinstance(models.vae.decoder.mid_block.attentions[0].processor, NCHWAttnProcessor)
        tokens, shared = torch.randn(6, 5, 4), torch.randn(2, 3, 4)
        assert torch.equal(attention_3d._append_per_frame(tokens, shared, 3), fast_append(tokens, shared, 3))
    assert all(m.split for m in gegl)
    assert all(m.fast_layout for m in layouts)
    assert attention_3d._append_per_frame is fast_append
    assert isinstance(models.vae.decoder.mid_block.attentions[0].processor, NCHWAttnProcessor)


def test_fp32_deviations_compare_both_paths_with_the_reference():
    """In fp32 the fast path is its own reference (0 exactly) and the code before differs by summation order only;
    every output of the step is compared."""
    from benchmarks.step_variants import fp32_deviations
    from personalive.backends.verify import VerificationInputs
    from personalive.config import load_config
    from personalive.pipeline.window import OUTPUT_NAMES, build_window_module

    models = random_models("tiny", torch.device("cpu"), torch.float32)
    size = {"generation.height": models.sizes.height, "generation.width": models.sizes.width}
    config = load_config(options={"model.dtype": "fp32", "runtime.device": "cpu", **size})
    module = build_window_module(models, config).eval()
    inputs = VerificationInputs(models, config, torch.device("cpu"))(1, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        row = fp32_deviations(module, module, inputs, torch.float32)
    paths = ("fast", "before", "plain_gn", "nchw")
    assert set(row) == {f"fp32_deviation_{path}_{name}" for path in paths for name in OUTPUT_NAMES}
    assert all(row[f"fp32_deviation_fast_{name}"] == 0.0 for name in OUTPUT_NAMES)
    assert 0.0 < row["fp32_deviation_before_frames"] < 1e-4
    assert all(row[f"fp32_deviation_plain_gn_{name}"] == 0.0 for name in OUTPUT_NAMES)  # the CPU splits no norm
    # the module was built NCHW (as on the CPU): the NCHW variant is the same path
    assert all(row[f"fp32_deviation_nchw_{name}"] == 0.0 for name in OUTPUT_NAMES)


def test_plain_group_norm_switches_the_split_off_and_back_on():
    from benchmarks.step_variants import plain_group_norm
    from personalive.models.group_norm import SplitGroupNorm

    models = random_models("tiny", torch.device("cpu"), torch.float32)
    norms = [m for m in models.vae.modules() if isinstance(m, SplitGroupNorm)]
    assert norms and all(m.split is None for m in norms)
    with plain_group_norm(models.vae):
        assert all(m.split == 1 for m in norms)
    assert all(m.split is None for m in norms)


def test_twelfth_session_variants_switch_their_code_paths_and_back():
    from diffusers.models.resnet import ResnetBlock2D

    from benchmarks.step_variants import _before_all, diffusers_resnets, joined_attention
    from personalive.models import attention_kernels
    from personalive.models.resnet import LeanResnetBlock2D

    models = random_models("tiny", torch.device("cpu"), torch.float32)
    unet = models.denoising_unet
    lean = sum(type(m) is LeanResnetBlock2D for m in unet.modules())
    assert lean > 0 and attention_kernels.enabled
    with diffusers_resnets(unet):
        assert sum(type(m) is ResnetBlock2D for m in unet.modules()) == lean
    with joined_attention(unet):
        assert not attention_kernels.eager_kernels()
    with _before_all(_Step(unet, models.vae)):
        assert not attention_kernels.enabled
        assert not any(type(m) is LeanResnetBlock2D for m in unet.modules())
    assert attention_kernels.enabled and sum(type(m) is LeanResnetBlock2D for m in unet.modules()) == lean


class _Step(torch.nn.Module):
    def __init__(self, unet, vae) -> None:
        super().__init__()
        self.denoising_unet, self.vae = unet, vae


def test_per_sample_statistics_variant_gives_each_samples_channel_statistics():
    from benchmarks.step_variants import per_sample_statistics

    torch.manual_seed(0)
    x = (torch.randn(3, 8, 6, 5) * 3 + 5).contiguous(memory_format=torch.channels_last)
    var, mean = torch.var_mean(x.double(), dim=(2, 3), correction=0)
    got_mean, got_var = per_sample_statistics(x, 1e-6)
    torch.testing.assert_close(got_mean.double(), mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_var.double(), var, rtol=1e-5, atol=1e-5)
