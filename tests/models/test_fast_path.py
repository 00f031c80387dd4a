"""The eager fast path's rewrites compute what they replace: the split GEGLU and the per-frame reference keys."""

from __future__ import annotations

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
