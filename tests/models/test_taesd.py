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


def test_window_step_decodes_with_taesd_when_asked(tiny_weights):
    from personalive.config import load_config
    from personalive.pipeline.window import build_window_module, example_window_inputs
    from personalive.weights import load_models

    models = load_models(tiny_weights, torch.float32, "cpu")
    assert (tiny_weights / "taesd" / "config.json").is_file()  # random layouts include it
    frames = {}
    for decoder in ("vae", "taesd"):
        config = load_config(None, [f"model.decoder={decoder}"], {"generation.height": 128, "generation.width": 128})
        module = build_window_module(models, config)
        assert type(module.vae).__name__ == ("AutoencoderTiny" if decoder == "taesd" else "AutoencoderKL")
        inputs = example_window_inputs(models, config, torch.device("cpu"), torch.float32, 0)
        with torch.no_grad():
            out = module(*inputs.values())
        frames[decoder] = out[0]
        assert out[0].shape == (1, 4, 3, 128, 128) and 0 <= out[0].min() and out[0].max() <= 1
    assert models.taesd is not None and models.vae is not None  # loaded once, next to the VAE (still the encoder)
    assert (frames["vae"] - frames["taesd"]).abs().max() > 0.05  # another decoder, another picture
