"""The config files of a weights layout, read and checked: the sizes every network is built with."""

from __future__ import annotations

import json
from pathlib import Path

from personalive.errors import WeightsError
from personalive.model_sizes import EXTRA_FULL, ModelSizes
from personalive.weights.layout import WeightsLayout

# keys that fix the shapes of each base-model config; a config without them would build diffusers' defaults
REQUIRED_CONFIG_KEYS = {
    "unet": (
        "block_out_channels",
        "down_block_types",
        "up_block_types",
        "layers_per_block",
        "cross_attention_dim",
        "attention_head_dim",
        "in_channels",
        "out_channels",
    ),
    "vae": (
        "block_out_channels",
        "down_block_types",
        "up_block_types",
        "layers_per_block",
        "latent_channels",
        "in_channels",
        "out_channels",
    ),
    "clip": (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "image_size",
        "patch_size",
        "projection_dim",
    ),
}
DOWNLOAD_AGAIN = "run `personalive weights download` again"
FIX = f"{DOWNLOAD_AGAIN}, or `personalive weights check DIR` for the full list"


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise WeightsError(f"{path}: missing; {FIX}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: not valid JSON ({str(exc).splitlines()[0]}); {FIX}") from exc
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object at the top level")
    return data


def read_sizes(layout: WeightsLayout) -> ModelSizes:
    """Sizes of a layout: base-model configs + ``personalive/config.json`` (or the oracle's), else full defaults."""
    configs = {
        "unet": (layout.unet_config, _read_json(layout.unet_config)),
        "clip": (layout.image_encoder_config, _read_json(layout.image_encoder_config)),
        "vae": (layout.vae_config, _read_json(layout.vae_config)),
    }
    for kind, (path, data) in configs.items():
        missing = [key for key in REQUIRED_CONFIG_KEYS[kind] if key not in data]
        if missing:
            raise WeightsError(f"{path}: missing {', '.join(missing)}; {FIX}")
    sizes = ModelSizes(unet=configs["unet"][1], clip=configs["clip"][1], vae=configs["vae"][1])
    for path in (layout.sizes_file, layout.oracle_sizes_file):
        if path.is_file():
            doc = _read_json(path)
            source = path
            break
    else:
        doc, source = {"extra": EXTRA_FULL}, None
    extra = doc.get("extra")
    if not isinstance(extra, dict):
        raise WeightsError(f"{source}: expected an 'extra' object with pose_guider/motion_extractor/motion_encoder")
    for key in ("pose_guider", "motion_extractor", "motion_encoder"):
        value = extra.get(key, {})
        if not isinstance(value, dict):
            raise WeightsError(f"{source}: extra.{key} must be an object of constructor arguments")
        setattr(sizes, key, dict(value))
    sizes.width = int(extra.get("width", 512))
    sizes.height = int(extra.get("height", 512))
    if "unet_additional_kwargs" in doc:
        sizes.unet_additional_kwargs = dict(doc["unet_additional_kwargs"])
    sizes.source = str(source) if source else "full-size defaults (no personalive/config.json)"
    return sizes
