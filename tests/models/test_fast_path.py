"""The eager fast path's rewrites compute what they replace: the split GEGLU and the per-frame reference keys."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.activations import GEGLU
from diffusers.models.attention import FeedForward

from personalive.models.attention_3d import _append_per_frame, per_frame
from personalive.models.feed_forward import SplitGEGLU, geglu_feed_forward


def _copy_of(ff: FeedForward) -> FeedForward:
    plain = FeedForward(ff.net[0].proj.in_features, activation_fn="geglu")
    plain.load_state_dict(ff.state_dict(), strict=True)
    return plain


def test_geglu_feed_forward_has_diffusers_keys_and_a_split_first_layer():
    ff = geglu_feed_forward(40)
    plain = FeedForward(40, activation_fn="geglu")
    assert isinstance(ff.net[0], SplitGEGLU) and isinstance(ff.net[0], GEGLU)
    assert {k: v.shape for k, v in ff.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}


def test_split_geglu_matches_diffusers_geglu_to_fp32_rounding():
    torch.manual_seed(0)
    ff = geglu_feed_forward(64).eval()
    plain = _copy_of(ff).eval()
    x = torch.randn(3, 50, 64)
    with torch.no_grad():
        ours, theirs = ff(x), plain(x)
    assert ours.shape == theirs.shape == (3, 50, 64)
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()
    assert not torch.equal(ff.net[0].proj.weight[:256], ff.net[0].proj.weight[256:])  # two different halves


def test_split_geglu_off_is_diffusers_forward_exactly():
    torch.manual_seed(1)
    ff = geglu_feed_forward(32).eval()
    plain = _copy_of(ff).eval()
    ff.net[0].split = False
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        assert torch.equal(ff(x), plain(x))


def test_append_per_frame_equals_repeating_then_concatenating():
    torch.manual_seed(2)
    batch, frames, length, shared_length, channels = 2, 3, 5, 4, 6
    tokens = torch.randn(batch * frames, length, channels)
    kv = torch.randn(batch, shared_length, 2 * channels)
    shared = kv.chunk(2, dim=-1)[1]  # strided, as the window step passes it
    expected = torch.cat([tokens, per_frame(shared, frames)], dim=1)
    got = _append_per_frame(tokens, shared, frames)
    assert got.shape == (batch * frames, length + shared_length, channels)
    assert torch.equal(got, expected)
    assert torch.equal(got[frames + 1, length:], shared[1])  # frame 1 of batch element 1 sees element 1's tokens


def test_vae_decoder_stays_nchw_after_its_attention_and_decodes_the_same():
    from diffusers.models.attention_processor import AttnProcessor2_0

    from personalive.model_sizes import preset
    from personalive.models.vae import NCHWAttnProcessor, build_vae

    torch.manual_seed(4)
    vae = build_vae(preset("tiny")["vae"]).eval()
    assert isinstance(vae.decoder.mid_block.attentions[0].processor, NCHWAttnProcessor)
    layouts = []
    hook = vae.decoder.up_blocks[0].register_forward_hook(lambda m, a, out: layouts.append(out.is_contiguous()))
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=vae.dtype)
    try:
        with torch.no_grad():
            ours = vae.decode(latents).sample
            vae.set_attn_processor(AttnProcessor2_0())  # diffusers' own: a channels-last view from here on
            theirs = vae.decode(latents).sample
    finally:
        vae.set_attn_processor(NCHWAttnProcessor())
        hook.remove()
    assert layouts == [True, False]
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def _randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval()


def _both_layouts(module: torch.nn.Module, *args) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        fast = module(*args)
        module.fast_layout = False
        try:
            before = module(*args)
        finally:
            del module.fast_layout
    return fast, before


@pytest.mark.parametrize("linear", [False, True])
def test_spatial_transformer_fast_layout_computes_the_same(linear):
    from personalive.models.attention_3d import SpatialTransformer, project_reference

    block = _randomize(
        SpatialTransformer(32, 2, cross_attention_dim=24, norm_num_groups=8, use_linear_projection=linear), 5
    )
    frames = 3
    x = torch.randn(2 * frames, 32, 6, 5, generator=torch.Generator().manual_seed(6))
    image = torch.randn(2 * frames, 1, 24, generator=torch.Generator().manual_seed(7))
    kv = project_reference(block.transformer_blocks[0].attn1, torch.randn(2, 30, 32))
    fast, before = _both_layouts(block, x, image, kv, frames)
    assert fast.shape == x.shape and fast.is_contiguous()
    assert (fast - before).abs().max() <= 1e-5 * before.abs().max()


@pytest.mark.parametrize(
    "kinds, frame_major",
    [(["Temporal_Self", "Temporal_Self"], True), (["Spatial_Cross", "Spatial_Cross"], False)],
)
def test_temporal_transformer_layouts_compute_the_same(kinds, frame_major):
    from personalive.models.motion_module import build_motion_module

    kwargs = {
        "num_attention_heads": 2,
        "num_transformer_block": 1,
        "attention_block_types": kinds,
        "cross_attention_dim": 12,
        "temporal_position_encoding": frame_major,
        "temporal_position_encoding_max_len": 8,
    }
    module = _randomize(build_motion_module(32, "Vanilla", kwargs), 8).temporal_transformer
    assert module.temporal_only is frame_major
    frames = 4
    x = torch.randn(2 * frames, 32, 3, 5, generator=torch.Generator().manual_seed(9))
    context = torch.randn(2 * frames, 6, 12, generator=torch.Generator().manual_seed(10)) if not frame_major else None
    fast, before = _both_layouts(module, x, frames, context)
    assert fast.shape == x.shape and fast.is_contiguous()
    assert (fast - before).abs().max() <= 1e-5 * before.abs().max()
    assert not torch.equal(fast[:frames], fast[frames:])  # the two batch elements stay apart
