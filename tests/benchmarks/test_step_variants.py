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
