"""The host-memory estimate of an onnxruntime check, and the refusal before a check that cannot fit."""

from __future__ import annotations

import pytest

from personalive.backends import onnx_memory as om
from personalive.model_sizes import SD_UNET_FULL, SD_UNET_TINY

GIB = 1 << 30


def test_largest_attention_is_the_first_block_with_all_reference_images():
    # 512x512 -> 64x64 latents: 4096 tokens; 16 frames x 8 heads x 4096 queries x 4096 * (2 + K) keys
    for k in (0, 3):
        n = om.largest_attention_elements(SD_UNET_FULL, 64, 64, frames=16, keyframes=k)
        assert n == 16 * 8 * 4096 * 4096 * (2 + k)
    # the tiny UNet has the same heads and token counts: the same score tensors
    assert om.largest_attention_elements(SD_UNET_TINY, 64, 64, 16, 0) == 16 * 8 * 4096 * 8192
    # per-block head counts: the largest is used
    assert om.heads_per_block({**SD_UNET_TINY, "attention_head_dim": [5, 10, 20, 20]}) == 20


def test_estimate_matches_the_measured_cases():
    # tiny graph (58 MB of weights) at 192x192: measured peak minus session 0.79 GiB (K=0), 1.78 GiB (K=3)
    for k, measured in ((0, 0.79), (3, 1.78)):
        est = om.verify_memory_bytes(
            SD_UNET_TINY,
            height=192,
            width=192,
            vae_factor=8,
            frames=16,
            keyframes=k,
            element_bytes=4,
            weight_bytes=58_000_000,
        )
        assert measured * GIB < est < measured * GIB + 2 * GIB
    # full-size fp32 graph (7.2 GB) at 256x256 with 1 keyframe: 15.5 GB peak measured
    est = om.verify_memory_bytes(
        SD_UNET_FULL,
        height=256,
        width=256,
        vae_factor=8,
        frames=16,
        keyframes=1,
        element_bytes=4,
        weight_bytes=7_200_000_000,
    )
    assert 15.5e9 < est < 15.5e9 * 1.5


def test_the_tiny_graph_at_512_does_not_fit_24_gb_and_the_refusal_says_what_to_do(tmp_path):
    needed = om.verify_memory_bytes(
        SD_UNET_TINY,
        height=512,
        width=512,
        vae_factor=8,
        frames=16,
        keyframes=3,
        element_bytes=4,
        weight_bytes=58_000_000,
    )
    assert needed > 24 * GIB
    with pytest.raises(om.MemoryCheckError) as err:
        om.check_verify_memory(tmp_path / "g.onnx", needed, 20 * GIB, height=512, width=512)
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'g.onnx'}: ") and "\n" not in text
    assert f"{needed / GIB:.1f} GiB" in text and "20.0 GiB is available" in text
    side = int(text.split("--height ")[1].split()[0])
    assert f"--height {side} --width {side}" in text and side % 64 == 0 and 64 <= side < 512
    at_side = om.verify_memory_bytes(
        SD_UNET_TINY,
        height=side,
        width=side,
        vae_factor=8,
        frames=16,
        keyframes=3,
        element_bytes=4,
        weight_bytes=58_000_000,
    )
    assert at_side <= 20 * GIB  # the size it suggests fits
    assert "CUDA provider" in text
    om.check_verify_memory(tmp_path / "g.onnx", needed, needed, height=512, width=512)  # fits: no error
    om.check_verify_memory(tmp_path / "g.onnx", needed, None, height=512, width=512)  # unknown: a warning only


def test_available_memory_is_read_from_this_machine():
    available = om.available_memory_bytes()
    assert available is not None and 0 < available < 1 << 50
