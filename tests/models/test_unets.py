"""The two UNets: checkpoint compatibility, parity with upstream, reference features as explicit inputs, dtypes."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from personalive.errors import ConfigError, PersonaLiveError
from personalive.models import attention_kernels
from personalive.models.denoising_unet import build_denoising_unet, motion_cross_attention_modules
from personalive.models.reference_features import reference_feature_specs
from personalive.models.reference_unet import (
    ReferenceFeatureExtractor,
    build_reference_unet,
    reference_cross_attentions,
    set_single_key_shortcut,
)

# inference_stage3.yaml's unet_additional_kwargs (the released configuration)
ADDITIONAL_KWARGS = {
    "use_inflated_groupnorm": True,
    "unet_use_cross_frame_attention": False,
    "unet_use_temporal_attention": False,
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": True,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "cross_attention_dim": 16,
        "attention_block_types": ["Spatial_Cross", "Spatial_Cross"],
        "temporal_position_encoding": False,
        "temporal_position_encoding_max_len": 32,
        "temporal_attention_dim_div": 1,
    },
    "use_temporal_module": True,
    "temporal_module_type": "Vanilla",
    "temporal_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 32,
        "temporal_attention_dim_div": 1,
    },
}


def unet_config(channels: list[int], cross_attention_dim: int) -> dict:
    """An SD 1.x UNet config.json (the image-variations UNet's, with other widths)."""
    return {
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": channels,
        "center_input_sample": False,
        "cross_attention_dim": cross_attention_dim,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    }


FULL = unet_config([320, 640, 1280, 1280], 768)
SMALL = unet_config([32, 32, 64, 64], 16)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def key_digest(module: torch.nn.Module) -> str:
    text = "\n".join(f"{k}:{list(v.shape)}" for k, v in sorted(module.state_dict().items()))
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These networks are tiny: with several threads on a busy 2-core machine, OpenMP synchronisation made a forward
    100x slower (25 s instead of 0.25 s). One thread keeps the module's tests at a few seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Variance-preserving random weights (PyTorch's default init leaves this random UNet badly conditioned)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        if p.ndim >= 2:
            p.copy_(noise / p[0].numel() ** 0.5)
        else:
            p.copy_(1.0 + 0.1 * noise if name.endswith("weight") else 0.02 * noise)
    return module


@pytest.fixture(scope="module")
def small():
    reference = randomize_(build_reference_unet(SMALL), 0).eval()
    denoising = randomize_(build_denoising_unet(SMALL, ADDITIONAL_KWARGS), 1).eval()
    return reference, denoising


# 16x16 latents: at 8x8 the mid block (1x1) GroupNorm sees 2 values per group and amplifies rounding 10x
def small_inputs(batch: int = 1, frames: int = 4, size: int = 16, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(batch, 4, frames, size, size, generator=g),
        "timestep": torch.linspace(0, 999, frames).round().long(),
        "encoder_hidden_states": torch.randn(batch, 1, 16, generator=g),
        "motion_hidden_states": torch.randn(batch, frames, 32, 16, generator=g),
        "pose_cond_fea": 0.5 * torch.randn(batch, 32, frames, size, size, generator=g),
    }


def small_features(reference, batch: int = 1, size: int = 16, seed: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, size, size, generator=g)
    embeds = torch.randn(batch, 1, 16, generator=g)
    with torch.no_grad():
        return ReferenceFeatureExtractor(reference)(latents, embeds)


# --- feature specs ------------------------------------------------------------------------------------------------


def test_reference_feature_specs_full_size_512():
    specs = reference_feature_specs(FULL, 64, 64)
    assert [s.name for s in specs] == [
        "ref_down0_0", "ref_down0_1", "ref_down1_0", "ref_down1_1", "ref_down2_0", "ref_down2_1", "ref_mid_0",
        "ref_up1_0", "ref_up1_1", "ref_up1_2", "ref_up2_0", "ref_up2_1", "ref_up2_2", "ref_up3_0", "ref_up3_1",
        "ref_up3_2",
    ]  # fmt: skip
    assert [s.channels for s in specs] == [320] * 2 + [640] * 2 + [1280] * 2 + [1280] + [1280] * 3 + [640] * 3 + [
        320
    ] * 3
    assert [s.tokens for s in specs] == [4096] * 2 + [1024] * 2 + [256] * 2 + [64] + [256] * 3 + [1024] * 3 + [
        4096
    ] * 3


def test_reference_feature_specs_odd_latent_rounds_up_like_the_convolutions():
    specs = {s.name: s.tokens for s in reference_feature_specs(FULL, 9, 5)}
    assert specs["ref_down0_0"] == 45 and specs["ref_down1_0"] == 5 * 3 and specs["ref_down2_0"] == 3 * 2
    assert specs["ref_mid_0"] == 2 * 1 and specs["ref_up1_0"] == 6 and specs["ref_up3_2"] == 45


def test_reference_feature_specs_bad_config():
    with pytest.raises(ConfigError, match="block_out_channels"):
        reference_feature_specs({"layers_per_block": 2}, 8, 8)


# --- full size, on the meta device (no memory) ------------------------------------------------------------------


def test_full_size_keys_and_parameter_counts_match_upstream():
    with torch.device("meta"):
        reference = build_reference_unet(FULL)
        denoising = build_denoising_unet(FULL, ADDITIONAL_KWARGS)
    # upstream's UNet2DConditionModel without conv_norm_out/conv_out; diffusers' full SD UNet has 859,520,964
    assert sum(p.numel() for p in reference.parameters()) == 859_508_800
    assert sum(p.numel() for p in denoising.parameters()) == 1_684_818_244
    temporal = {k: v for k, v in denoising.state_dict().items() if ".temporal_modules." in k}
    assert len(temporal) == 588
    assert sum(v.numel() for k, v in temporal.items() if not k.endswith("pos_encoder.pe")) == 453_209_280
    assert sum(v.numel() for v in temporal.values()) == 454_417_600  # with the 28 pos_encoder.pe buffers
    assert len(denoising.state_dict()) == 1820 and len(reference.state_dict()) == 682
    # sha256 of "key:[shape]" lines of upstream's UNet3DConditionModel / UNet2DConditionModel at this size
    assert key_digest(denoising) == "a272d0fcb1df39b8e5c5416a7b9b75cfbd60d0d12a8b911a715b6e46a210d39d"
    assert key_digest(reference) == "0784b9a369f0c735d26519c5fbc8d52c902be8ec5eb4f88ba38df49bf4e8785f"
    assert not any(k.startswith(("conv_out", "conv_norm_out")) for k in reference.state_dict())


def test_motion_cross_attention_modules():
    with torch.device("meta"):
        denoising = build_denoising_unet(FULL, ADDITIONAL_KWARGS)
    found = motion_cross_attention_modules(denoising)
    # 21 motion modules (8 down, 1 mid, 12 up), two Spatial_Cross attentions each, keys from 16-dim motion tokens
    assert len(found) == 42
    assert all(m.to_k.in_features == 16 and m.to_v.in_features == 16 for m in found)


def test_unsupported_options_are_refused():
    with pytest.raises(ConfigError, match="use_inflated_groupnorm"):
        build_denoising_unet(SMALL, {**ADDITIONAL_KWARGS, "use_inflated_groupnorm": False})
    bad = {**ADDITIONAL_KWARGS, "motion_module_type": "RefImage_Vanilla"}
    with pytest.raises(ConfigError, match="RefImage_Vanilla"):
        build_denoising_unet(SMALL, bad)


# --- reference features as explicit inputs ------------------------------------------------------------------------


def test_extractor_records_norm1_outputs_and_changes_the_unet_only_by_rounding(small):
    reference, _ = small
    g = torch.Generator().manual_seed(3)
    latents, embeds = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 1, 16, generator=g)
    t = torch.zeros(2)
    with torch.no_grad():
        set_single_key_shortcut(reference, False)  # diffusers' own attention (a no-op before any extractor)
        before = reference(latents, t, encoder_hidden_states=embeds).sample
        extractor = ReferenceFeatureExtractor(reference)
        set_single_key_shortcut(reference, True)
        # the same thing, another way: forward hooks on every transformer block's norm1
        hooked, handles = [], []
        for name, module in reference.named_modules():
            if name.endswith("transformer_blocks.0.norm1"):
                handles.append(module.register_forward_hook(lambda m, i, o: hooked.append(o)))
        features = extractor(latents, embeds)
        for h in handles:
            h.remove()
        queries = []
        handles = [
            a.to_q.register_forward_hook(lambda m, i, o: queries.append(o))
            for a in reference_cross_attentions(reference)
        ]
        after = reference(latents, t, encoder_hidden_states=embeds).sample  # single-key shortcut on
        fast_queries = len(queries)
        set_single_key_shortcut(reference, False)
        full = reference(latents, t, encoder_hidden_states=embeds).sample
        set_single_key_shortcut(reference, True)
        for h in handles:
            h.remove()
    specs = reference_feature_specs(SMALL, 8, 8)
    assert before.shape == (2, 32, 8, 8)  # no output head: the last up-block features
    assert torch.equal(before, full)
    assert rel_err(after, before) < 1e-6 and (fast_queries, len(queries)) == (0, 16)  # the shortcut ran
    assert [tuple(f.shape) for f in features] == [(2, s.tokens, s.channels) for s in specs]
    assert len(hooked) == 16 and all(torch.equal(a, b) for a, b in zip(features, hooked, strict=True))


def test_reference_attention_equals_concatenated_keys_with_diffusers_processor(small):
    """Upstream's read mode: attn1(x, encoder_hidden_states=cat([x, reference repeated per frame]))."""
    _, denoising = small
    block = denoising.down_blocks[1].attentions[0].transformer_blocks[0]
    g = torch.Generator().manual_seed(4)
    frames, batch = 3, 2
    x = torch.randn(batch * frames, 16, 32, generator=g)
    ref = torch.randn(batch, 24, 32, generator=g)
    from personalive.models.attention_3d import multihead_attention, project_reference

    with torch.no_grad():
        ours = multihead_attention(block.attn1, x, reference_kv=project_reference(block.attn1, ref), num_frames=frames)
        block.attn1.set_processor(AttnProcessor2_0())
        repeated = ref.repeat_interleave(frames, dim=0)
        theirs = block.attn1(x, encoder_hidden_states=torch.cat([x, repeated], dim=1))
    assert rel_err(ours, theirs) < 1e-6


def test_single_key_cross_attention_shortcut_equals_full_attention(small):
    """Softmax over the one CLIP token is 1: to_out(to_v(embedding)) for every query, in both UNets."""
    reference, denoising = small
    inputs, feats = small_inputs(batch=2), small_features(reference, batch=2)
    blocks = [m for m in denoising.modules() if hasattr(m, "single_key_shortcut")]
    assert len(blocks) == 16 and len(reference_cross_attentions(reference)) == 16
    queries = []  # the shortcut never projects the queries
    handles = [b.attn2.to_q.register_forward_hook(lambda m, i, o: queries.append(o)) for b in blocks]
    with torch.no_grad():
        fast = denoising(**inputs, reference_features=feats)
        fast_queries = len(queries)
        for block in blocks:
            block.single_key_shortcut = False
        full = denoising(**inputs, reference_features=feats)
        full_queries = len(queries) - fast_queries
        for block in blocks:
            block.single_key_shortcut = True
        # several context tokens: the shortcut does not apply, the full attention runs
        two = {**inputs, "encoder_hidden_states": inputs["encoder_hidden_states"].repeat(1, 2, 1)}
        two_fast = denoising(**two, reference_features=feats)
        for block in blocks:
            block.single_key_shortcut = False
        two_full = denoising(**two, reference_features=feats)
        for block in blocks:
            block.single_key_shortcut = True
    for h in handles:
        h.remove()
    assert (fast_queries, full_queries) == (0, 16)
    assert rel_err(fast, full) < 1e-6
    assert torch.equal(two_fast, two_full)


def test_projected_reference_is_tokenwise_and_equals_projecting_in_the_step(small):
    """Keys/values computed once (reference, then a keyframe appended) = the raw features projected per call."""
    reference, denoising = small
    inputs = small_inputs(batch=2)
    feats, keyframe = small_features(reference, batch=2), small_features(reference, batch=2, seed=5)
    with torch.no_grad():
        kv = denoising.project_reference(feats)
        appended = [torch.cat([a, b], dim=1) for a, b in zip(kv, denoising.project_reference(keyframe), strict=True)]
        together = denoising.project_reference(
            [torch.cat([f, k], dim=1) for f, k in zip(feats, keyframe, strict=True)]
        )
        raw = denoising(
            **inputs, reference_features=[torch.cat([f, k], dim=1) for f, k in zip(feats, keyframe, strict=True)]
        )
        projected = denoising(**inputs, reference_kv=appended)
    specs = reference_feature_specs(SMALL, 16, 16)
    assert [tuple(t.shape) for t in kv] == [(2, s.tokens, s.kv_channels) for s in specs]
    assert all(torch.equal(a, b) for a, b in zip(appended, together, strict=True))
    assert torch.equal(raw, projected)
    with pytest.raises(PersonaLiveError, match=r"reference_kv\[0\]: expected \(B, tokens, 64\)"):
        denoising(**inputs, reference_kv=feats)
    with pytest.raises(PersonaLiveError, match="not both"):
        denoising(**inputs, reference_features=feats, reference_kv=kv)


def test_denoising_unet_with_reference_is_stateless_and_batched_equals_single(small):
    reference, denoising = small
    inputs = small_inputs(batch=2)
    feats = small_features(reference, batch=2)
    keyframe = small_features(reference, batch=2, seed=5)
    with torch.no_grad():
        plain = denoising(**inputs)
        first = denoising(**inputs, reference_features=feats)
        again = denoising(**inputs, reference_features=feats)
        after_plain = denoising(**inputs)
        with_kf_feats = [torch.cat([f, k], dim=1) for f, k in zip(feats, keyframe, strict=True)]
        with_kf = denoising(**inputs, reference_features=with_kf_feats)
        single = denoising(
            **{k: (v[1:] if k != "timestep" else v) for k, v in inputs.items()},
            reference_features=[f[1:] for f in feats],
        )
    assert first.shape == (2, 4, 4, 16, 16)
    assert torch.equal(first, again) and torch.equal(plain, after_plain)
    assert rel_err(first, plain) > 1e-3 and rel_err(with_kf, first) > 1e-3
    assert all(a.shape[1] == 2 * b.shape[1] for a, b in zip(with_kf_feats, feats, strict=True))
    assert rel_err(single, first[1:]) < 1e-5


def test_traces_as_one_graph_without_state(small):
    """fullgraph=True fails on any graph break: no hooks, no Python-side state, features only as arguments."""
    reference, denoising = small
    inputs, feats = small_inputs(), small_features(reference)
    compiled = torch.compile(denoising, fullgraph=True, backend="eager")
    with torch.no_grad():
        traced = compiled(**inputs, reference_features=feats)
        eager = denoising(**inputs, reference_features=feats)  # the eager attention kernels: the same to rounding
        attention_kernels.enabled = False  # the path a compiled step traces: SDPA over the joined keys
        try:
            joined = denoising(**inputs, reference_features=feats)
        finally:
            attention_kernels.enabled = True
    assert torch.equal(traced, joined)
    assert rel_err(eager, joined) <= 1e-5


def test_timestep_forms(small):
    _, denoising = small
    inputs = small_inputs(batch=2)
    with torch.no_grad():
        per_frame = denoising(**inputs)
        per_sample = denoising(**{**inputs, "timestep": inputs["timestep"].repeat(2)})
        scalar = denoising(**{**inputs, "timestep": 333})
        constant = denoising(**{**inputs, "timestep": torch.full((4,), 333)})
    assert torch.equal(per_frame, per_sample) and torch.equal(scalar, constant)
    assert rel_err(per_frame, scalar) > 1e-3
    with pytest.raises(PersonaLiveError, match="timestep"):
        denoising(**{**inputs, "timestep": torch.zeros(3)})


def test_bad_reference_features_are_refused(small):
    reference, denoising = small
    feats = small_features(reference)
    with pytest.raises(PersonaLiveError, match="expected 16 tensors"):
        denoising(**small_inputs(), reference_features=feats[:15])
    with pytest.raises(PersonaLiveError, match=r"reference_features\[3\]"):
        denoising(**small_inputs(), reference_features=feats[:3] + [feats[3][..., :8]] + feats[4:])
    with pytest.raises(PersonaLiveError, match="ref_down0_0: 64 tokens is not a multiple of 256"):
        denoising(**small_inputs(), reference_features=small_features(reference, size=8))


@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_low_precision_runs_and_is_close_to_fp32(small, dtype, tol):
    reference, denoising = small
    inputs = small_inputs()
    with torch.no_grad():
        expected = denoising(**inputs, reference_features=small_features(reference))
        low_ref = build_reference_unet(SMALL).eval()
        low_ref.load_state_dict(reference.state_dict())
        low = build_denoising_unet(SMALL, ADDITIONAL_KWARGS).eval()
        low.load_state_dict(denoising.state_dict())
        low_ref.to(dtype)
        low.to(dtype)
        feats = small_features(low_ref)  # fp32 inputs: the extractor casts them
        out = low(**inputs, reference_features=feats)  # fp32 inputs and int timesteps: cast inside
    assert all(f.dtype == dtype for f in feats) and out.dtype == dtype
    assert rel_err(out.float(), expected) < tol


# --- parity with upstream (oracle bundle) ---------------------------------------------------------------------------


def load_oracle_unets(weights: object) -> tuple:
    cfg = json.loads((weights / "sd-image-variations-diffusers" / "unet" / "config.json").read_text())
    extra = json.loads((weights / "oracle_config.json").read_text())["unet_additional_kwargs"]
    reference = build_reference_unet(cfg)
    reference.load_state_dict(torch.load(weights / "personalive" / "reference_unet.pth"), strict=True)
    denoising = build_denoising_unet(cfg, extra)
    state = torch.load(weights / "personalive" / "denoising_unet.pth")
    temporal = torch.load(weights / "personalive" / "temporal_module.pth")
    assert not set(state) & set(temporal)
    denoising.load_state_dict(state | temporal, strict=True)
    return cfg, reference.eval(), denoising.eval()


@pytest.mark.oracle
def test_unets_match_upstream(oracle_dir):
    cfg, reference, denoising = load_oracle_unets(oracle_dir / "pretrained_weights")
    bundle = torch.load(oracle_dir / "bundle_modules.pt")
    ref, den = bundle["reference_unet"], bundle["denoising_unet"]
    extractor = ReferenceFeatureExtractor(reference)
    with torch.no_grad():
        out = reference(ref["sample"], ref["timestep"], encoder_hidden_states=ref["encoder_hidden_states"]).sample
        features = extractor(ref["sample"], ref["encoder_hidden_states"])
        keyframe = extractor(den["hkf_reference_sample"], ref["encoder_hidden_states"])
    assert rel_err(out, ref["out"]) < 1e-4

    # upstream's bank_writer lists blocks in module order (down, up, mid) stably sorted by channels, largest first
    specs = reference_feature_specs(cfg, *ref["sample"].shape[-2:])
    module_order = [
        i for place in ("down", "up", "mid") for i, s in enumerate(specs) if s.name.startswith(f"ref_{place}")
    ]
    sorted_order = sorted(module_order, key=lambda i: -specs[i].channels)
    assert len(ref["bank_writer"]) == len(specs) == 16
    for i, expected in zip(sorted_order, ref["bank_writer"], strict=True):
        assert rel_err(features[i], expected) < 1e-4, specs[i].name

    # the bundle's reader bank was rounded to float16 by upstream (see the oracle's notes.reference_bank_dtype)
    bank = [f.half().float() for f in features]
    with_keyframe = [torch.cat([f, k.half().float()], dim=1) for f, k in zip(bank, keyframe, strict=True)]
    args = (
        den["sample"],
        den["timestep"],
        den["image_prompt_embeds"],
        den["motion_hidden_states"],
        den["pose_cond_fea"],
    )
    with torch.no_grad():
        assert rel_err(denoising(*args), den["out_plain"]) < 1e-4
        assert rel_err(denoising(*args, reference_features=bank), den["out_with_reference"]) < 1e-4
        out_kf = denoising(*args, reference_features=with_keyframe)
    assert rel_err(out_kf, den["out_with_reference_and_1_keyframe"]) < 1e-4
