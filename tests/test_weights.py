"""The weights layer: random layout round trip, strict loading errors, checks, CLI, oracle layout."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from personalive.cli import app
from personalive.errors import WeightsError
from personalive.weights import WeightsLayout, check_layout, load_models, weights_hash

pytest.importorskip("personalive.models.denoising_unet")

runner = CliRunner()


@pytest.fixture
def tiny_layout(tiny_weights) -> Path:
    return tiny_weights


@pytest.fixture(scope="module")
def loaded(tiny_weights):
    return load_models(tiny_weights, torch.float32, "cpu")


@pytest.fixture
def broken(tiny_layout, tmp_path) -> Path:
    """A private copy of the tiny layout to damage."""
    return Path(shutil.copytree(tiny_layout, tmp_path / "copy"))


def _file_digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_has_the_release_file_names(tiny_layout):
    names = set(_file_digests(tiny_layout))
    for name in (
        "denoising_unet",
        "reference_unet",
        "motion_encoder",
        "pose_guider",
        "temporal_module",
        "motion_extractor",
    ):
        assert f"personalive/{name}.pth" in names
    assert {
        "sd-image-variations-diffusers/model_index.json",
        "sd-image-variations-diffusers/unet/config.json",
        "sd-image-variations-diffusers/unet/diffusion_pytorch_model.bin",
        "sd-image-variations-diffusers/image_encoder/config.json",
        "sd-image-variations-diffusers/image_encoder/pytorch_model.bin",
        "sd-vae-ft-mse/config.json",
        "sd-vae-ft-mse/diffusion_pytorch_model.bin",
        "personalive/config.json",
    } <= names
    temporal = torch.load(tiny_layout / "personalive/temporal_module.pth", weights_only=True)
    denoising = torch.load(tiny_layout / "personalive/denoising_unet.pth", weights_only=True)
    assert temporal and all(".temporal_modules." in k for k in temporal)
    assert not any(".temporal_modules." in k for k in denoising)
    extractor = torch.load(tiny_layout / "personalive/motion_extractor.pth", weights_only=True)
    assert {k.split(".")[0] for k in extractor} == {"detector", "idx_tensor"}


@torch.no_grad()
def test_round_trip_loads_strictly_and_runs(tiny_layout, loaded):
    models = loaded
    assert models.sizes.width == 128 and models.pose_guider.downscale_factor == 2**5
    assert len(models.weights_hash) == 64 and models.weights_hash == weights_hash(tiny_layout)
    saved = torch.load(tiny_layout / "personalive/pose_guider.pth", weights_only=True)
    for key, value in models.pose_guider.state_dict().items():
        assert torch.equal(value, saved[key]), key
    pose = models.pose_guider(torch.rand(1, 3, 2, 512, 512))
    assert pose.shape == (1, 32, 2, 16, 16)
    kp = models.motion_extractor(torch.rand(2, 3, 256, 256))["kp"]
    assert kp.shape == (2, 63)
    embeds = models.image_encoder(torch.randn(1, 3, 224, 224)).image_embeds
    assert embeds.shape == (1, 64)
    latents = models.vae.encode(torch.rand(1, 3, 128, 128) * 2 - 1).latent_dist.mean
    assert latents.shape == (1, 4, 16, 16)
    assert not any(m.training for m in (models.motion_encoder, models.motion_extractor, models.vae))


def test_random_motion_cross_attention_is_scaled(loaded):
    """to_k/to_v of the motion cross-attention are the random init divided by the measured token RMS."""
    from personalive.models.denoising_unet import motion_cross_attention_modules

    models = loaded
    attention = motion_cross_attention_modules(models.denoising_unet)[0]
    k_std = float(attention.to_k.weight.std()) * attention.to_k.weight.shape[1] ** 0.5
    q_std = float(attention.to_q.weight.std()) * attention.to_q.weight.shape[1] ** 0.5
    assert 0.8 < q_std < 1.2  # variance-preserving
    assert k_std < q_std / 2  # divided by the token RMS (> 2 for any random encoder)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@torch.no_grad()
def test_every_dtype_loads_and_runs(tiny_layout, dtype):
    models = load_models(tiny_layout, dtype, "cpu")
    assert models.pose_guider.conv_in.weight.dtype == dtype
    assert models.denoising_unet.conv_in.weight.dtype == dtype
    assert models.image_encoder.visual_projection.weight.dtype == torch.float32  # clip_dtype default
    assert models.pose_guider(torch.rand(1, 3, 1, 512, 512, dtype=dtype)).dtype == dtype
    assert models.motion_extractor(torch.rand(1, 3, 256, 256))["kp"].dtype == dtype


def test_truncated_file_is_named(broken):
    path = broken / "personalive" / "motion_extractor.pth"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match=r"motion_extractor\.pth: cannot be read, truncated or corrupt"):
        load_models(broken, torch.float32, "cpu")
    assert any("motion_extractor.pth" in p for p in check_layout(broken))


def test_missing_file_and_directory_are_named(broken, tmp_path):
    (broken / "personalive" / "temporal_module.pth").unlink()
    with pytest.raises(WeightsError, match=r"temporal_module\.pth: missing"):
        load_models(broken, torch.float32, "cpu")
    with pytest.raises(WeightsError, match="weights directory not found"):
        load_models(tmp_path / "nowhere", torch.float32, "cpu")


def test_wrong_keys_and_shapes_are_reported_by_name(broken):
    path = broken / "personalive" / "pose_guider.pth"
    state = torch.load(path, weights_only=True)
    state["conv_extra.weight"] = state.pop("conv_in.bias")
    state["blocks.0.weight"] = torch.zeros(8, 8, 5, 5)
    torch.save(state, path)
    temporal = broken / "personalive" / "temporal_module.pth"
    state = torch.load(temporal, weights_only=True)
    dropped = next(iter(state))
    del state[dropped]
    torch.save(state, temporal)
    with pytest.raises(WeightsError) as info:
        load_models(broken, torch.float32, "cpu")
    message = str(info.value)
    assert "\n" not in message and "4 weights problem(s)" in message
    assert "pose_guider.pth: missing key conv_in.bias (8)" in message
    assert "pose_guider.pth: unexpected key conv_extra.weight (8)" in message
    assert "blocks.0.weight has shape (8,8,5,5), the architecture needs (8,8,3,3)" in message
    assert f"temporal_module.pth: missing key {dropped}" in message
    assert len(check_layout(broken)) == 4


def test_check_layout_clean(tiny_layout):
    assert check_layout(tiny_layout) == []
    assert WeightsLayout(tiny_layout).vae_weights.name == "diffusion_pytorch_model.bin"


def test_cli_init_random_is_deterministic_and_checks(tmp_path, tiny_layout, broken):
    target = tmp_path / "cli"
    result = runner.invoke(app, ["weights", "init-random", str(target), "--size", "tiny", "--seed", "0"])
    assert result.exit_code == 0, result.output
    # same seed -> byte-identical files and the same weights hash
    assert _file_digests(target) == _file_digests(tiny_layout)
    assert weights_hash(target) == weights_hash(tiny_layout)
    assert runner.invoke(app, ["weights", "check", str(target)]).exit_code == 0
    (broken / "sd-vae-ft-mse" / "config.json").unlink()
    result = runner.invoke(app, ["weights", "check", str(broken)])
    assert result.exit_code == 2
    assert "sd-vae-ft-mse/config.json" in result.output.replace("\n", "")
    result = runner.invoke(app, ["weights", "init-random", str(tmp_path / "x"), "--size", "huge"])
    assert result.exit_code == 2 and "--size" in result.output


@pytest.mark.oracle
@torch.no_grad()
def test_oracle_layout_loads_strictly_and_matches(oracle_dir):
    models = load_models(oracle_dir / "pretrained_weights", torch.float32, "cpu")
    assert models.sizes.source.endswith("oracle_config.json")
    bundle = torch.load(oracle_dir / "bundle_modules.pt", weights_only=False)

    def rel(a, b):
        return float((a - b).abs().max() / b.abs().max())

    record = bundle["pose_guider"]
    assert rel(models.pose_guider(record["in_u8_over_255"].float() / 255), record["out"]) < 1e-4
    record = bundle["motion_extractor"]
    out = models.motion_extractor(record["in"])
    assert all(rel(out[k], v) < 1e-4 for k, v in record["detector_out"].items())
    record = bundle["image_encoder"]
    assert rel(models.image_encoder(record["pixel_values"]).image_embeds, record["image_embeds"]) < 1e-4
    record = bundle["vae"]
    assert rel(models.vae.encode(record["encode_in"]).latent_dist.mean, record["encode_latent_mean"]) < 1e-4


def test_check_names_each_problem_once_and_says_the_fix_once(broken, tmp_path):
    (broken / "sd-vae-ft-mse" / "config.json").unlink()  # also makes the sizes unreadable: not a second problem
    result = runner.invoke(app, ["weights", "check", str(broken)], env={"COLUMNS": "400"})
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output  # one problem: the command's own line alone
    assert errors[0].count("sd-vae-ft-mse/config.json: missing") == 1
    assert errors[0].count("weights download") == 1 and "for the full list" not in errors[0]
    result = runner.invoke(app, ["weights", "check", str(tmp_path / "nope")], env={"COLUMNS": "400"})
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        f"error: {tmp_path / 'nope'}: 1 weights problem(s): {tmp_path / 'nope'}: weights directory not found; "
        "run `personalive weights download` again"
    ]


def test_init_random_refuses_a_folder_holding_weights_without_overwrite(broken, tmp_path):
    before = _file_digests(broken)
    result = runner.invoke(app, ["weights", "init-random", str(broken), "--seed", "3"], env={"COLUMNS": "400"})
    assert result.exit_code == 2
    assert f"{broken}: already holds weights" in result.output and "--overwrite" in result.output
    assert _file_digests(broken) == before  # nothing replaced
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["weights", "init-random", str(tmp_path / "file")])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output
    result = runner.invoke(app, ["weights", "init-random", str(broken), "--seed", "3", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert _file_digests(broken) != before
