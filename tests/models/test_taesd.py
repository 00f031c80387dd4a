"""The TAESD decoder: random weights in the released layout, strict loading, what it decodes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from personalive.errors import WeightsError
from personalive.models.taesd import TAESD_FULL, build_taesd, load_taesd, write_random_taesd


def test_random_tiny_taesd_decodes_latents_to_8x_images_in_range(tmp_path):
    folder = write_random_taesd(tmp_path / "taesd", "tiny", seed=0)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    model = load_taesd(folder, torch.float32, "cpu")
    assert model.config.scaling_factor == 1.0  # the UNet's latents go in unscaled
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = model.decode(latents).sample
    assert images.shape == (4, 3, 64, 64)
    assert images.std() > 0.05 and images.abs().max() < 10  # real spatial detail, not saturated
    assert not torch.allclose(images[0], images[1])  # different latents, different pictures


def test_full_structure_matches_the_released_parameter_count():
    model = build_taesd(TAESD_FULL)
    decoder = sum(p.numel() for p in model.decoder.parameters())
    assert 1_200_000 < decoder < 1_250_000  # madebyollin/taesd: ~1.22 M decoder parameters


def test_strict_loading_names_the_file_and_the_key(tmp_path):
    folder = write_random_taesd(tmp_path / "taesd", "tiny", seed=0)
    path = folder / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    key = sorted(state)[0]
    del state[key]
    save_file(state, str(path))
    with pytest.raises(WeightsError, match=f"{path}: 1 problem\\(s\\): missing key {key}"):
        load_taesd(folder, torch.float32, "cpu")
    (folder / "config.json").unlink()
    with pytest.raises(WeightsError, match="config.json: missing; fetch it with `personalive weights download`"):
        load_taesd(folder, torch.float32, "cpu")


def test_config_of_another_structure_is_a_shape_error(tmp_path):
    folder = write_random_taesd(tmp_path / "taesd", "tiny", seed=0)
    config = json.loads((folder / "config.json").read_text())
    config["decoder_block_out_channels"] = [32, 32, 32, 32]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="the architecture needs"):
        load_taesd(folder, torch.float32, "cpu")
