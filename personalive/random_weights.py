"""Random weights in the official layout, for tests (tiny) and benchmarks (full size).

Same files, key names, formats and config files as the release; values are random but usable:

* variance-preserving: every matrix/kernel ~ N(0, 1/fan_in); norm scales 1 + 0.1 N(0, 1); biases 0.02 N(0, 1);
  BatchNorm running mean 0.1 N(0, 1), running variance U(0.5, 1.5). Layers upstream zero-initialises (pose
  guider output, motion-encoder attention outputs, UNet output projections) get random values too, so every path
  is exercised.
* the motion extractor's heads are rescaled so keypoints land on the pose canvas (LivePortrait's trained heads give
  keypoints in [-1, 1]);
* the motion modules' cross-attention ``to_k``/``to_v`` are scaled by 1 / RMS of the motion tokens that the random
  motion encoder produces (measured here: about 40 tiny, 70 full), without which the random denoising UNet
  saturates and becomes chaotic.

Each network has its own generator seeded from ``seed``, so the files are a deterministic function of (size, seed).
Networks are built, randomised, written and freed one at a time (peak memory: one network in fp32).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from personalive.errors import ConfigError, OutputError
from personalive.media.outputs import shown
from personalive.model_sizes import MODEL_INDEX, SIZE_NAMES, ModelSizes, preset
from personalive.weights.layout import NETWORKS, TEMPORAL_KEY, WeightsLayout
from personalive.weights.load import build_network, weights_hash

logger = logging.getLogger(__name__)

SEED_OFFSETS = {name: i + 1 for i, name in enumerate(NETWORKS)} | {"base_unet": len(NETWORKS) + 1}
# motion-extractor heads: (weight std x sqrt(fan_in), bias mean, bias std); keeps keypoints inside the canvas
_HEAD_SCALES = {
    "fc_kp": (0.35, 0.0, 0.1),
    "fc_scale": (0.05, 1.0, 0.0),
    "fc_t": (0.1, 0.0, 0.0),
    "fc_pitch": (2.0, 0.0, 0.0),
    "fc_yaw": (2.0, 0.0, 0.0),
    "fc_roll": (2.0, 0.0, 0.0),
}
DEFAULT_SAVE_DTYPE = {"tiny": torch.float32, "full": torch.float16}  # full like the release


def sizes_for(size: str) -> ModelSizes:
    cfg = preset(size)
    extra = cfg["extra"]
    return ModelSizes(
        unet=cfg["unet"],
        clip=cfg["clip"],
        vae=cfg["vae"],
        pose_guider=extra["pose_guider"],
        motion_extractor=extra["motion_extractor"],
        motion_encoder=extra["motion_encoder"],
        width=extra["width"],
        height=extra["height"],
        source=f"{size} preset",
    )


@torch.no_grad()
def randomize_(module: nn.Module, seed: int) -> None:
    """Deterministic variance-preserving values for every parameter and BatchNorm statistic (see module doc)."""
    g = torch.Generator("cpu").manual_seed(int(seed))

    def randn(shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=g, dtype=torch.float32)

    for name, p in module.named_parameters():
        if p.ndim >= 2:
            value = randn(p.shape) / math.sqrt(max(p[0].numel(), 1))
        elif name.endswith("weight"):
            value = 1.0 + 0.1 * randn(p.shape)
        elif name.endswith("bias"):
            value = 0.02 * randn(p.shape)
        else:  # GRN-like gains, CLIP class embedding
            value = 0.1 * randn(p.shape)
        p.copy_(value)
    for name, b in module.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(0.1 * randn(b.shape))
        elif name.endswith("running_var"):
            b.copy_(0.5 + torch.rand(b.shape, generator=g))


@torch.no_grad()
def tune_motion_extractor_heads_(extractor: nn.Module, seed: int) -> None:
    g = torch.Generator("cpu").manual_seed(int(seed) + 1000)
    for head, (w_std, b_mean, b_std) in _HEAD_SCALES.items():
        linear: nn.Linear = getattr(extractor.detector, head)
        fan_in = linear.weight.shape[1]
        linear.weight.copy_(torch.randn(linear.weight.shape, generator=g) * (w_std / math.sqrt(fan_in)))
        linear.bias.copy_(torch.randn(linear.bias.shape, generator=g) * b_std + b_mean)


@torch.no_grad()
def motion_token_rms(motion_encoder: nn.Module, seed: int) -> float:
    """RMS of the tokens of ``motion_encoder`` on smooth random 224x224 'faces' in [-1, 1] (2 frames)."""
    g = torch.Generator("cpu").manual_seed(int(seed) + 2000)
    coarse = torch.randn(2, 3, 8, 8, generator=g)
    faces = torch.tanh(nn.functional.interpolate(coarse, size=(224, 224), mode="bilinear", align_corners=False))
    tokens = motion_encoder.eval()(faces.permute(1, 0, 2, 3).unsqueeze(0))  # (1, 2, 32, 16)
    return float(tokens.float().pow(2).mean().sqrt())


@torch.no_grad()
def scale_motion_cross_attention_(denoising_unet: nn.Module, gain: float) -> int:
    from personalive.models.denoising_unet import motion_cross_attention_modules

    modules = motion_cross_attention_modules(denoising_unet)
    if not modules:
        raise RuntimeError("no motion-module cross-attention found in the denoising UNet")
    for attention in modules:
        attention.to_k.weight.mul_(gain)
        attention.to_v.weight.mul_(gain)
    return len(modules)


def _save(module: nn.Module, path: Path, dtype: torch.dtype, keep=None) -> None:
    nn.Module.to(module, dtype=dtype)  # in place, one tensor at a time
    state = {k: v.detach().cpu() for k, v in module.state_dict().items() if keep is None or keep(k)}
    torch.save(state, path)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_random_layout(root: Path, size: str = "tiny", seed: int = 0, save_dtype: torch.dtype | None = None) -> Path:
    """Write the whole layout under ``root``; returns ``root``. Existing files of the layout are replaced."""
    if size not in SIZE_NAMES:
        raise ValueError(f"size {size!r}: expected one of {', '.join(SIZE_NAMES)}")
    dtype = save_dtype or DEFAULT_SAVE_DTYPE[size]
    layout = WeightsLayout(root)
    sizes = sizes_for(size)
    for folder in (
        layout.denoising_unet.parent,
        layout.unet_config.parent,
        layout.image_encoder_config.parent,
        layout.vae_config.parent,
    ):
        folder.mkdir(parents=True, exist_ok=True)
    _write_json(layout.unet_config, sizes.unet)
    _write_json(layout.image_encoder_config, sizes.clip)
    _write_json(layout.vae_config, sizes.vae)
    _write_json(layout.model_index, MODEL_INDEX)
    _write_json(layout.sizes_file, {"size": size, "seed": seed, **sizes.personalive_config()})

    token_rms = None
    for name in ("motion_encoder", *[n for n in NETWORKS if n != "motion_encoder"]):
        module = build_network(name, sizes)
        randomize_(module, seed * 100 + SEED_OFFSETS[name])
        if name == "motion_extractor":
            tune_motion_extractor_heads_(module, seed)
        if name == "motion_encoder":
            token_rms = motion_token_rms(module, seed)
            logger.info("random motion tokens: RMS %.1f", token_rms)
        if name == "denoising_unet":
            count = scale_motion_cross_attention_(module, 1.0 / token_rms)
            logger.debug("scaled %d motion cross-attentions by 1/%.1f", count, token_rms)
            _save(module, layout.denoising_unet, dtype, keep=lambda k: TEMPORAL_KEY not in k)
            _save(module, layout.temporal_module, dtype, keep=lambda k: TEMPORAL_KEY in k)
        else:
            _save(module, layout.network_files(name)[0], dtype)
        logger.debug("wrote %s", name)
        del module
    _write_base_unet(layout, sizes, seed, dtype)
    from personalive.models.taesd import write_random_taesd

    write_random_taesd(layout.taesd_config.parent, size, seed)
    return root


def _write_base_unet(layout: WeightsLayout, sizes: ModelSizes, seed: int, dtype: torch.dtype) -> None:
    """``sd-image-variations-diffusers/unet`` weights: a random SD UNet (every key is overwritten at load time by
    the .pth files, so the loader does not read it; written for a complete layout)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(sizes.unet)
    randomize_(unet, seed * 100 + SEED_OFFSETS["base_unet"])
    _save(unet, layout.unet_weights, dtype)


def init_random_weights(
    directory: str | os.PathLike, size: str = "tiny", seed: int = 0, save_dtype: torch.dtype | None = None
) -> Path:
    """Write random weights in the official layout under ``directory``; returns it."""
    return write_random_layout(Path(directory), size=size, seed=seed, save_dtype=save_dtype)


def init_random_command(
    directory: str | os.PathLike, size: str = "tiny", seed: int = 0, overwrite: bool = False
) -> None:
    """``personalive weights init-random``: tiny in fp32, full in fp16 like the release. A folder that already
    holds weights files is refused without ``overwrite``: a slip of the path would replace a 10 GB download with
    noise."""
    if size not in SIZE_NAMES:
        raise ConfigError(f"--size {size!r}: expected one of {', '.join(SIZE_NAMES)}")
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise OutputError(f"{shown(root)}: is a file, not a folder for the weights")
    existing = [p for p in WeightsLayout(root).required_files() if p.exists()]
    if existing and not overwrite:
        raise OutputError(
            f"{shown(root)}: already holds weights ({len(existing)} files of the layout, e.g. "
            f"{shown(existing[0].relative_to(root))}) that random ones would replace; pass --overwrite, or choose "
            "another folder"
        )
    root = init_random_weights(root, size=size, seed=seed)
    logger.info("wrote %s random weights (seed %d) to %s; hash %s", size, seed, root, weights_hash(root))
    logger.warning("random weights produce meaningless pictures; use `personalive weights download` for real ones")


# ---------------------------------------------------------------------------------- in memory, for benchmarks
@torch.no_grad()
def random_models(size: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Any:
    """Every network at ``size`` with random weights (this module's recipe), built on ``device``.

    Built directly on the device (default initialisation there is fast), filled with values from a generator on
    the device, cast to ``dtype``; nothing is written to disk. Values differ from :func:`write_random_layout`'s
    (another generator); magnitudes are the same.
    """
    from personalive.weights import ModelSet

    sizes = sizes_for(size)
    networks: dict[str, torch.nn.Module] = {}
    token_rms = 40.0
    for name in ("motion_encoder", *[n for n in NETWORKS if n != "motion_encoder"]):
        with torch.device(device):
            module = build_network(name, sizes).eval().requires_grad_(False)
        _randomize_on_device_(module, seed * 100 + SEED_OFFSETS[name])
        if name == "motion_extractor":
            tune_motion_extractor_heads_(module, seed)
        if name == "motion_encoder":
            token_rms = motion_token_rms(module.cpu(), seed)
            module.to(device)
        if name == "denoising_unet":
            scale_motion_cross_attention_(module, 1.0 / token_rms)
        torch.nn.Module.to(module, dtype=torch.float32 if name == "image_encoder" else dtype)
        networks[name] = module
    return ModelSet(
        **networks,
        sizes=sizes,
        known_hash=f"random-{size}-{seed}",
        weights_dir=Path(f"<random {size}>"),
        device=device,
        dtype=dtype,
        clip_dtype=torch.float32,
    )


def _randomize_on_device_(module: torch.nn.Module, seed: int) -> None:
    """:func:`randomize_`'s distributions, drawn on the parameters' device (seconds, not minutes)."""
    for i, (name, p) in enumerate(module.named_parameters()):
        g = torch.Generator(p.device).manual_seed(seed * 100_003 + i)
        value = torch.randn(p.shape, generator=g, device=p.device, dtype=torch.float32)
        if p.ndim >= 2:
            value /= max(p[0].numel(), 1) ** 0.5
        elif name.endswith("weight"):
            value = 1.0 + 0.1 * value
        else:
            value *= 0.02 if name.endswith("bias") else 0.1
        p.copy_(value)
    for name, b in module.named_buffers():
        g = torch.Generator(b.device).manual_seed(seed)
        if name.endswith("running_mean"):
            b.copy_(0.1 * torch.randn(b.shape, generator=g, device=b.device))
        elif name.endswith("running_var"):
            b.copy_(0.5 + torch.rand(b.shape, generator=g, device=b.device))


def save_layout(models: Any, root: Path) -> Path:
    """Write a model set in the official layout under ``root`` (for timing real loading of full-size weights)."""
    layout = WeightsLayout(root)
    sizes = models.sizes
    _write_json(layout.unet_config, sizes.unet)
    _write_json(layout.image_encoder_config, sizes.clip)
    _write_json(layout.vae_config, sizes.vae)
    _write_json(layout.model_index, MODEL_INDEX)
    _write_json(layout.sizes_file, {"size": "random", "seed": 0, **sizes.personalive_config()})
    layout.denoising_unet.parent.mkdir(parents=True, exist_ok=True)
    for name in NETWORKS:
        module = getattr(models, name)
        dtype = next(module.parameters()).dtype
        if name == "denoising_unet":
            _save(module, layout.denoising_unet, dtype, keep=lambda k: TEMPORAL_KEY not in k)
            _save(module, layout.temporal_module, dtype, keep=lambda k: TEMPORAL_KEY in k)
        else:
            _save(module, layout.network_files(name)[0], dtype)
    return root  # without the base UNet's weights, which the loader does not read
