"""benchmarks/step_flops.py counts the window step's arithmetic: checked against the reference attention by hand."""

from __future__ import annotations

import pytest

from benchmarks.step_flops import build_meta_models, count, floor_ms
from personalive.config import RunConfig
from personalive.models.reference_features import reference_feature_specs


@pytest.fixture(scope="module")
def tiny():
    config = RunConfig()
    config.generation.height = config.generation.width = 128
    return build_meta_models("tiny", "vae"), config


def test_each_keyframe_adds_exactly_the_reference_attention_over_its_tokens(tiny):
    models, config = tiny
    frames = config.generation.adaptive_steps * config.generation.window  # 16 noisy frames a window
    specs = reference_feature_specs(dict(models.sizes.unet), 128 // 8, 128 // 8)
    # one keyframe more: every frame's queries (one per token) against one more image's tokens, for scores and
    # weighted values (2 matmuls, 2 FLOPs a multiply-add) over the full inner width
    per_keyframe = sum(frames * s.tokens * s.tokens * s.channels * 4 for s in specs)
    counts = [count(models, config, k) for k in (0, 1, 3)]
    attention = [c["by_kind"]["attention"] for c in counts]
    assert attention[1] - attention[0] == per_keyframe
    assert attention[2] - attention[0] == 3 * per_keyframe
    for c in counts[1:]:  # nothing else grows with keyframes
        assert {k: v for k, v in c["by_kind"].items() if k != "attention"} == {
            k: v for k, v in counts[0]["by_kind"].items() if k != "attention"
        }
        assert c["by_network"]["vae"] == counts[0]["by_network"]["vae"] > 0
    assert sum(counts[0]["by_network"].values()) == counts[0]["total"]


def test_floor_is_flops_over_rates():
    rates = {"matmul": 1e12, "attention": 0.5e12}
    assert floor_ms({"matmul": 2e12, "attention": 1e12, "convolution": 1e12}, rates) == pytest.approx(5000.0)
