"""The tiny autoencoder (TAESD, ``madebyollin/taesd``): a fast stand-in for the VAE decoder, off by default.

diffusers' ``AutoencoderTiny`` carries the released weights (``taesd/config.json`` +
``diffusion_pytorch_model.safetensors``, the folder upstream's ``configs/prompts/personalive_offline.yaml`` names
``vae_tiny_path``). Only its decoder runs: the reference image is still encoded by the full VAE, whose latent space
TAESD was trained to decode. TAESD takes the UNet's latents as they are (its ``scaling_factor`` is 1.0, where the
KL VAE's is 0.18215) and returns images in [-1, 1], so the window step's ``decode`` needs no special case: it
divides by the decoder's own scaling factor, as upstream's unused ``decode_latents_tiny`` does implicitly.

It changes the picture (a distilled decoder, smoother, less detail), so it is chosen explicitly with
``--set model.decoder=taesd`` and benchmarked as its own row.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderTiny

from personalive.weights.layout import TAESD_DIR, TAESD_REPO

TAESD_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
__all__ = ["TAESD_DIR", "TAESD_FILES", "TAESD_REPO", "build_taesd", "load_taesd", "write_random_taesd"]

# the released config (madebyollin/taesd config.json), spelled out so random layouts need no download
TAESD_FULL: dict = {
    "_class_name": "AutoencoderTiny",
    "act_fn": "relu",
    "decoder_block_out_channels": [64, 64, 64, 64],
    "encoder_block_out_channels": [64, 64, 64, 64],
    "force_upcast": False,
    "in_channels": 3,
    "latent_channels": 4,
    "latent_magnitude": 3,
    "latent_shift": 0.5,
    "num_decoder_blocks": [3, 3, 3, 1],
    "num_encoder_blocks": [1, 3, 3, 3],
    "out_channels": 3,
    "scaling_factor": 1.0,
    "upsampling_scaling_factor": 2,
}
# same structure (8x up/downsampling, 4 latent channels), fewer channels and blocks: a fast random stand-in
TAESD_TINY: dict = {
    **TAESD_FULL,
    "decoder_block_out_channels": [16, 16, 16, 16],
    "encoder_block_out_channels": [16, 16, 16, 16],
    "num_decoder_blocks": [1, 1, 1, 1],
    "num_encoder_blocks": [1, 1, 1, 1],
}


def build_taesd(config: dict) -> AutoencoderTiny:
    """``AutoencoderTiny`` from a diffusers config dict, default-initialised (weights are loaded strictly later)."""
    return AutoencoderTiny.from_config(config)


def taesd_config(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "config.json").read_text())


def write_random_taesd(folder: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a randomly initialised TAESD (``tiny`` or ``full`` structure) in the released file layout.

    Default initialisation gives near-constant images after 8x upsampling through ReLUs; the weights are re-drawn
    with a per-tensor scale that keeps activations O(1), so a decode of random latents has real spatial detail.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = TAESD_TINY if size == "tiny" else TAESD_FULL
    model = build_taesd(config)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if value.ndim > 1:  # conv kernels: He-style scale over the fan-in
            fan_in = value[0].numel()
            state[key] = torch.randn(value.shape, generator=generator) * (2.0 / fan_in) ** 0.5
        else:
            state[key] = torch.randn(value.shape, generator=generator) * 0.01
    last = max((k for k in state if k.startswith("decoder.") and k.endswith(".weight")), key=_layer_order)
    state[last] *= 0.05  # the output convolution: images of random latents within about [-1, 1]
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_taesd(folder: str | Path, dtype: torch.dtype, device: torch.device | str) -> AutoencoderTiny:
    """Build from ``folder/config.json`` and load ``diffusion_pytorch_model.safetensors`` strictly; eval, no grad."""
    from safetensors.torch import load_file

    from personalive.errors import WeightsError

    folder = Path(folder)
    fix = f"fetch it with `personalive weights download` (it includes {TAESD_REPO}) or drop model.decoder=taesd"
    config_path, weights_path = folder / "config.json", folder / TAESD_FILES[1]
    for path in (config_path, weights_path):
        if not path.is_file():
            raise WeightsError(f"{path}: missing; {fix}")
    try:
        model = build_taesd(json.loads(config_path.read_text()))
        state = load_file(str(weights_path))
    except Exception as exc:  # noqa: BLE001 - any reader error means a damaged file
        raise WeightsError(f"{folder}: TAESD cannot be read ({type(exc).__name__}: {exc}); {fix}") from exc
    expected = model.state_dict()
    problems = [f"missing key {k}" for k in expected if k not in state]
    problems += [f"unexpected key {k}" for k in state if k not in expected]
    problems += [
        f"{k} has shape {tuple(v.shape)}, the architecture needs {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise WeightsError(f"{weights_path}: {len(problems)} problem(s): {'; '.join(problems[:3])}{more}; {fix}")
    model.load_state_dict(state, strict=True)
    # nn.Module.to: diffusers' own .to() warns about fp32-only modules, which AutoencoderTiny has none of
    return torch.nn.Module.to(model, device=device, dtype=dtype).eval().requires_grad_(False)


def _layer_order(key: str) -> tuple[int, ...]:
    """``decoder.layers.12.conv.4.weight`` -> (12, 4): sorts keys in the order the layers run."""
    return tuple(int(part) for part in key.split(".") if part.isdigit())
