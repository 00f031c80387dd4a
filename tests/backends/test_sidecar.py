"""Sidecar JSON round trip, mismatch refusals, and artifact names derived from what an engine depends on."""

from __future__ import annotations

import json

import pytest

from personalive.backends import artifacts
from personalive.config import RunConfig
from personalive.errors import EngineMismatchError, InputError


def _sidecar(**changes) -> artifacts.Sidecar:
    cfg = RunConfig().validate()
    meta = artifacts.Sidecar(
        kind="tensorrt",
        precision="fp16",
        weights_hash="ab" * 32,
        config=artifacts.config_subset(cfg),
        max_keyframes=3,
        inputs=[
            artifacts.TensorSpec("latents", "float16", [1, 4, 16, 64, 64]),
            artifacts.TensorSpec(
                "ref_down_0_0",
                "float16",
                [1, -1, 320],
                {"min": [1, 4096, 320], "opt": [1, 8192, 320], "max": [1, 16384, 320]},
            ),
        ],
        outputs=[artifacts.TensorSpec("frames", "float16", [1, 4, 3, 512, 512])],
        personalive_version="0.1.0",
        build_command="personalive build-engine --weights w",
        tensorrt_version="10.3.0",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability="9.0",
    )
    for key, value in changes.items():
        setattr(meta, key, value)
    return meta


def test_round_trip(tmp_path):
    engine = tmp_path / "x.engine"
    path = artifacts.write_sidecar(engine, _sidecar())
    assert path == tmp_path / "x.engine.json"
    back = artifacts.read_sidecar(engine)
    assert back == _sidecar()
    assert back.input_names == ["latents", "ref_down_0_0"]
    assert back.inputs[1].profile["max"] == [1, 16384, 320]


def test_missing_and_corrupt_sidecar(tmp_path):
    with pytest.raises(InputError, match=r"x\.engine\.json: sidecar JSON not found.*build-engine"):
        artifacts.read_sidecar(tmp_path / "x.engine")
    (tmp_path / "x.engine.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(InputError, match="not a valid engine sidecar"):
        artifacts.read_sidecar(tmp_path / "x.engine")


def _check(meta, **current):
    base = dict(
        weights_hash="ab" * 32,
        config=artifacts.config_subset(RunConfig().validate()),
        precision="fp16",
        max_keyframes=3,
        tensorrt_version="10.3.0",
        gpu_name="NVIDIA H100 80GB HBM3",
        compute_capability="9.0",
    )
    base.update(current)
    artifacts.check_sidecar(meta, "e.engine", rebuild="personalive build-engine --weights w", **base)


def test_matching_sidecar_passes():
    _check(_sidecar())
    _check(_sidecar(max_keyframes=5))  # an engine that takes more keyframes than the run adds is fine


@pytest.mark.parametrize(
    ("field", "built", "current"),
    [
        ("gpu_name", "NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3"),
        ("tensorrt_version", "10.1.0", "10.3.0"),
        ("compute_capability", "8.9", "9.0"),
        ("weights_hash", "cd" * 32, "ab" * 32),
        ("precision", "bf16", "fp16"),
    ],
)
def test_mismatch_names_field_both_values_and_rebuild(field, built, current):
    with pytest.raises(EngineMismatchError) as info:
        _check(_sidecar(**{field: built}))
    message = str(info.value)
    assert f"{field} differs" in message
    assert repr(built) in message and repr(current) in message
    assert "rebuild with `personalive build-engine --weights w`" in message
    assert info.value.exit_code == 2


def test_config_mismatch_names_nested_key():
    cfg = RunConfig().validate()
    cfg.generation.adaptive_steps = 2
    cfg.generation.inference_steps = 4
    with pytest.raises(EngineMismatchError, match=r"config\.adaptive_steps differs: built for 4, current 2"):
        _check(_sidecar(), config=artifacts.config_subset(cfg))
    cfg = RunConfig().validate()
    cfg.scheduler.beta_end = 0.012
    with pytest.raises(EngineMismatchError, match=r"config\.scheduler\.beta_end differs"):
        _check(_sidecar(), config=artifacts.config_subset(cfg))


def test_too_few_keyframes_refused():
    with pytest.raises(EngineMismatchError, match="at most 1 history keyframes, the config allows 3"):
        _check(_sidecar(max_keyframes=1))


def test_engine_name_changes_with_every_dependency():
    cfg = RunConfig().validate()
    subset = artifacts.config_subset(cfg)
    args = dict(
        engine_dir="engines",
        weights_hash="0123456789abcdef" * 4,
        subset=subset,
        precision="fp16",
        max_keyframes=3,
        compute_capability="8.9",
        tensorrt_version="10.3.0",
    )
    path = artifacts.default_engine_path(**args)
    assert path.parent.name == "engines" and path.suffix == ".engine"
    assert path.name.startswith("window_step-0123456789ab-512x512-fp16-k3-c")
    assert path.name.endswith("-sm89-trt10.3.0.engine")
    other_cfg = RunConfig().validate()
    other_cfg.generation.window = 2
    variants = [
        {"weights_hash": "f" * 64},
        {"precision": "bf16"},
        {"max_keyframes": 0},
        {"compute_capability": "9.0"},
        {"tensorrt_version": "10.4.0"},
        {"subset": {**subset, "height": 768}},
        {"subset": artifacts.config_subset(other_cfg)},
    ]
    names = {artifacts.default_engine_path(**{**args, **v}).name for v in variants}
    assert path.name not in names and len(names) == len(variants)
    # the ONNX name is the device-independent part
    onnx = artifacts.default_onnx_path("engines", args["weights_hash"], subset, "fp16", 3)
    assert onnx.parent.name in path.name and onnx.name == "window_step.onnx"


def test_engine_keyframes_follows_history_switch():
    cfg = RunConfig().validate()
    assert artifacts.engine_keyframes(cfg) == cfg.generation.max_keyframes == 3
    cfg.generation.history_keyframes = False
    assert artifacts.engine_keyframes(cfg) == 0
