"""Weights in the official ``pretrained_weights`` layout: paths, strict loading, checks, random weights.

Layout (one root; the release's file names)::

    personalive/{denoising_unet,reference_unet,motion_encoder,pose_guider,temporal_module,motion_extractor}.pth
    sd-image-variations-diffusers/model_index.json, unet/config.json (+ weights, unused: every UNet key comes
        from the .pth files), image_encoder/config.json + pytorch_model.bin or model.safetensors
    sd-vae-ft-mse/config.json + diffusion_pytorch_model.bin or .safetensors
    personalive/config.json   (optional, not in the release: sizes of a tiny/random layout, see model_sizes)

Every state dict is loaded strictly: a missing or unexpected key or a shape mismatch is a :class:`WeightsError`
naming the file, the key and the shapes. The denoising UNet is ``denoising_unet.pth`` together with
``temporal_module.pth`` (the ``.temporal_modules.`` keys), which must cover every parameter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from personalive.errors import ConfigError, WeightsError
from personalive.model_sizes import EXTRA_FULL, SIZE_NAMES, ModelSizes

logger = logging.getLogger(__name__)

PERSONALIVE_DIR = "personalive"
BASE_DIR = "sd-image-variations-diffusers"
VAE_DIR = "sd-vae-ft-mse"
SIZES_FILE = "personalive/config.json"
ORACLE_SIZES_FILE = "oracle_config.json"  # the upstream oracle's layout describes itself here
TEMPORAL_KEY = ".temporal_modules."  # keys of the denoising UNet stored in temporal_module.pth
NETWORKS = (
    "pose_guider",
    "motion_encoder",
    "motion_extractor",
    "vae",
    "image_encoder",
    "reference_unet",
    "denoising_unet",
)
HASH_CHUNK = 1 << 20  # bytes hashed at the start and at the end of every file
_FIX = "run `personalive weights download` again, or `personalive weights check DIR` for the full list"


@dataclass(frozen=True)
class WeightsLayout:
    """Paths of every file of the official layout under ``root``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def _pth(self, name: str) -> Path:
        return self.root / PERSONALIVE_DIR / f"{name}.pth"

    @property
    def denoising_unet(self) -> Path:
        return self._pth("denoising_unet")

    @property
    def temporal_module(self) -> Path:
        return self._pth("temporal_module")

    @property
    def reference_unet(self) -> Path:
        return self._pth("reference_unet")

    @property
    def motion_encoder(self) -> Path:
        return self._pth("motion_encoder")

    @property
    def pose_guider(self) -> Path:
        return self._pth("pose_guider")

    @property
    def motion_extractor(self) -> Path:
        return self._pth("motion_extractor")

    @property
    def model_index(self) -> Path:
        return self.root / BASE_DIR / "model_index.json"

    @property
    def unet_config(self) -> Path:
        return self.root / BASE_DIR / "unet" / "config.json"

    @property
    def unet_weights(self) -> Path:
        return _first_existing(
            self.root / BASE_DIR / "unet", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
        )

    @property
    def image_encoder_config(self) -> Path:
        return self.root / BASE_DIR / "image_encoder" / "config.json"

    @property
    def image_encoder_weights(self) -> Path:
        return _first_existing(self.root / BASE_DIR / "image_encoder", ("model.safetensors", "pytorch_model.bin"))

    @property
    def vae_config(self) -> Path:
        return self.root / VAE_DIR / "config.json"

    @property
    def vae_weights(self) -> Path:
        return _first_existing(
            self.root / VAE_DIR, ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
        )

    @property
    def sizes_file(self) -> Path:
        return self.root / SIZES_FILE

    @property
    def oracle_sizes_file(self) -> Path:
        return self.root / ORACLE_SIZES_FILE

    def network_files(self, network: str) -> list[Path]:
        """The weight file(s) one network is loaded from."""
        return {
            "denoising_unet": [self.denoising_unet, self.temporal_module],
            "reference_unet": [self.reference_unet],
            "motion_encoder": [self.motion_encoder],
            "pose_guider": [self.pose_guider],
            "motion_extractor": [self.motion_extractor],
            "vae": [self.vae_weights],
            "image_encoder": [self.image_encoder_weights],
        }[network]

    def required_files(self) -> list[Path]:
        """Files the loader reads (the base UNet weights and model_index.json are not needed)."""
        files = [p for n in NETWORKS for p in self.network_files(n)]
        return files + [self.unet_config, self.image_encoder_config, self.vae_config]

    def hashed_files(self) -> list[Path]:
        sizes = [p for p in (self.sizes_file, self.oracle_sizes_file) if p.is_file()]
        return sorted(set(self.required_files() + sizes))


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return folder / names[-1]  # the release's name, for messages


@dataclass
class ModelSet:
    """Every network of PersonaLive, loaded, in eval mode, on one device.

    ``dtype`` is the networks' precision; the image encoder runs in ``clip_dtype`` (cast its output).
    ``weights_hash``: see :func:`weights_hash`.
    """

    reference_unet: nn.Module
    denoising_unet: nn.Module
    pose_guider: nn.Module
    motion_encoder: nn.Module
    motion_extractor: nn.Module
    vae: nn.Module
    image_encoder: nn.Module
    sizes: ModelSizes
    weights_hash: str
    weights_dir: Path
    device: torch.device
    dtype: torch.dtype
    clip_dtype: torch.dtype


# ------------------------------------------------------------------------------------------------------ sizes
def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise WeightsError(f"{path}: missing; {_FIX}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: not valid JSON ({str(exc).splitlines()[0]}); {_FIX}") from exc
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object at the top level")
    return data


def read_sizes(layout: WeightsLayout) -> ModelSizes:
    """Sizes of a layout: base-model configs + ``personalive/config.json`` (or the oracle's), else full defaults."""
    sizes = ModelSizes(
        unet=_read_json(layout.unet_config),
        clip=_read_json(layout.image_encoder_config),
        vae=_read_json(layout.vae_config),
    )
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
    for key in ("unet_additional_kwargs", "noise_scheduler_kwargs"):
        if key in doc:
            setattr(sizes, key, dict(doc[key]))
    sizes.source = str(source) if source else "full-size defaults (no personalive/config.json)"
    return sizes


# ------------------------------------------------------------------------------------------------ networks
def build_network(name: str, sizes: ModelSizes) -> nn.Module:
    """One network with default-initialised weights (use ``torch.device('meta')`` as context for shapes only)."""
    try:
        if name == "pose_guider":
            from personalive.models.pose_guider import PoseGuider

            return PoseGuider(**sizes.pose_guider)
        if name == "motion_encoder":
            from personalive.models.motion_encoder import MotionEncoder

            return MotionEncoder(**sizes.motion_encoder)
        if name == "motion_extractor":
            from personalive.models.motion_extractor import MotionExtractor

            return MotionExtractor(**sizes.motion_extractor)
        if name == "vae":
            from personalive.models.vae import build_vae

            return build_vae(sizes.vae)
        if name == "image_encoder":
            from personalive.models.image_encoder import build_image_encoder

            return build_image_encoder(sizes.clip)
        if name == "reference_unet":
            from personalive.models.reference_unet import build_reference_unet

            return build_reference_unet(sizes.unet)
        if name == "denoising_unet":
            from personalive.models.denoising_unet import build_denoising_unet

            return build_denoising_unet(sizes.unet, sizes.unet_additional_kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise WeightsError(f"cannot build {name} from {sizes.source}: {exc}") from exc
    raise ValueError(f"unknown network {name!r}")


def _fixups(name: str) -> Callable[[dict], dict]:
    """Explicit key conversions for checkpoints written by older library versions."""
    if name == "vae":
        from personalive.models.vae import convert_legacy_vae_keys

        return convert_legacy_vae_keys
    if name == "image_encoder":
        from personalive.models.image_encoder import drop_legacy_buffers

        return drop_legacy_buffers
    return lambda sd: sd


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth``/``.bin`` (``torch.load(weights_only=True)``, memory-mapped when possible) or
    ``.safetensors`` file; any failure is a WeightsError naming the file."""
    if not path.is_file():
        raise WeightsError(f"{path}: missing; {_FIX}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):  # legacy (non-zip) files cannot be memory-mapped
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader error means a damaged file
        reason = (str(exc).splitlines() or [""])[0][:160]
        raise WeightsError(
            f"{path}: cannot be read, truncated or corrupt ({type(exc).__name__}: {reason}); {_FIX}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors (found {type(state).__name__}); {_FIX}")
    return state


def _read_network_state(name: str, layout: WeightsLayout) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    """(state dict, key -> file it came from); the denoising UNet's two files are merged."""
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    for path in layout.network_files(name):
        part = _fixups(name)(read_state_dict(path))
        for key in part:
            if key in state:
                raise WeightsError(f"{path}: key {key} also in {origin[key].name}; each key must be in one file")
            origin[key] = path
        state.update(part)
    return state, origin


def _shape(t: Any) -> str:
    return "(" + ",".join(str(d) for d in t) + ")"


def compare_state(
    expected: dict[str, torch.Size], found: dict[str, torch.Tensor], origin: dict[str, Path], files: list[Path]
) -> list[str]:
    """Problems between a network's expected key shapes and a state dict, each naming file, key and shapes."""
    problems = []

    def owner(key: str) -> str:
        if len(files) > 1:  # the denoising UNet: .temporal_modules. keys belong to temporal_module.pth
            return str(files[1] if TEMPORAL_KEY in key else files[0])
        return str(files[0])

    for key, shape in expected.items():
        if key not in found:
            problems.append(f"{owner(key)}: missing key {key} {_shape(shape)}")
        elif tuple(found[key].shape) != tuple(shape):
            problems.append(
                f"{origin[key]}: {key} has shape {_shape(found[key].shape)}, the architecture needs {_shape(shape)}"
            )
    problems += [
        f"{origin[key]}: unexpected key {key} {_shape(found[key].shape)}" for key in found if key not in expected
    ]
    return problems


def _expected_shapes(module: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in module.state_dict().items()}


def summarize_problems(root: Path | str, problems: list[str], shown: int = 5) -> str:
    head = "; ".join(problems[:shown])
    more = f" (+{len(problems) - shown} more)" if len(problems) > shown else ""
    return f"{root}: {len(problems)} weights problem(s): {head}{more}; {_FIX}"


# --------------------------------------------------------------------------------------------------- loading
def load_models(
    weights_dir: str | os.PathLike,
    dtype: torch.dtype,
    device: torch.device | str,
    clip_dtype: torch.dtype = torch.float32,
) -> ModelSet:
    """Build and strictly load every network of the layout at ``weights_dir``; eval mode, no grad.

    Networks run in ``dtype`` on ``device``; the CLIP image encoder in ``clip_dtype``. All problems (missing,
    unexpected, mis-shaped keys) are collected over all files and raised as one :class:`WeightsError`.
    """
    layout = WeightsLayout(Path(weights_dir))
    if not layout.root.is_dir():
        raise WeightsError(
            f"{layout.root}: weights directory not found; run `personalive weights download {layout.root}`"
        )
    missing = [str(p) for p in layout.required_files() if not p.is_file()]
    if missing:
        raise WeightsError(summarize_problems(layout.root, [f"{p}: missing" for p in missing]))
    sizes = read_sizes(layout)
    device = torch.device(device)
    networks: dict[str, nn.Module] = {}
    problems: list[str] = []
    for name in NETWORKS:
        module = build_network(name, sizes)
        state, origin = _read_network_state(name, layout)
        found = compare_state(_expected_shapes(module), state, origin, layout.network_files(name))
        if found:
            problems += found
            continue
        module.load_state_dict(state, strict=True)
        del state
        # nn.Module.to: diffusers' ModelMixin.to warns about fp32-kept modules that these networks do not have
        nn.Module.to(module, device=device, dtype=clip_dtype if name == "image_encoder" else dtype)
        networks[name] = module.eval().requires_grad_(False)
        logger.debug("loaded %s (%.1f M parameters)", name, sum(p.numel() for p in module.parameters()) / 1e6)
    if problems:
        raise WeightsError(summarize_problems(layout.root, problems))
    return ModelSet(
        **networks,
        sizes=sizes,
        weights_hash=weights_hash(layout.root),
        weights_dir=layout.root,
        device=device,
        dtype=dtype,
        clip_dtype=clip_dtype,
    )


def weights_hash(weights_dir: str | os.PathLike) -> str:
    """Cheap identity of a layout: sha256 over, per file the loader reads (sorted), its relative path, its size,
    and its first and last MiB. Detects other weights or a re-download of different files without reading GBs."""
    layout = WeightsLayout(Path(weights_dir))
    digest = hashlib.sha256()
    for path in layout.hashed_files():
        if not path.is_file():
            continue
        size = path.stat().st_size
        digest.update(f"{path.relative_to(layout.root).as_posix()}\0{size}\0".encode())
        with path.open("rb") as f:
            digest.update(f.read(HASH_CHUNK))
            if size > HASH_CHUNK:
                f.seek(max(HASH_CHUNK, size - HASH_CHUNK))
                digest.update(f.read(HASH_CHUNK))
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- checks
def check_layout(directory: str | os.PathLike) -> list[str]:
    """Every problem of a layout (files present and readable, keys and shapes versus the architecture built on the
    meta device); no network is run. An empty list means the layout loads."""
    layout = WeightsLayout(Path(directory))
    if not layout.root.is_dir():
        return [f"{layout.root}: weights directory not found"]
    problems = [f"{p}: missing" for p in layout.required_files() if not p.is_file()]
    try:
        sizes = read_sizes(layout)
    except WeightsError as exc:
        return problems + [str(exc)]
    for name in NETWORKS:
        files = layout.network_files(name)
        if not all(p.is_file() for p in files):
            continue
        try:
            with torch.device("meta"):
                module = build_network(name, sizes)
            state, origin = _read_network_state(name, layout)
        except WeightsError as exc:
            problems.append(str(exc))
            continue
        problems += compare_state(_expected_shapes(module), state, origin, files)
    return problems


def check_command(directory: str | os.PathLike | None = None) -> None:
    """``personalive weights check``: log a summary, or raise a WeightsError naming every problem."""
    from personalive.config import default_weights_dir

    root = Path(directory if directory is not None else default_weights_dir())
    problems = check_layout(root)
    if problems:
        for problem in problems:
            logger.error("%s", problem)
        raise WeightsError(summarize_problems(root, problems, shown=len(problems)))
    sizes = read_sizes(WeightsLayout(root))
    logger.info("%s: all %d networks match their architecture (sizes: %s)", root, len(NETWORKS), sizes.source)
    logger.info("weights hash %s", weights_hash(root))


# ------------------------------------------------------------------------------------------------ random init
def init_random_weights(
    directory: str | os.PathLike, size: str = "tiny", seed: int = 0, save_dtype: torch.dtype | None = None
) -> Path:
    """Write random weights in the official layout (see :mod:`personalive.weights_init`)."""
    from personalive.weights_init import write_random_layout

    return write_random_layout(Path(directory), size=size, seed=seed, save_dtype=save_dtype)


def init_random_command(directory: str | os.PathLike, size: str = "tiny", seed: int = 0) -> None:
    """``personalive weights init-random``: tiny in fp32, full in fp16 like the release."""
    if size not in SIZE_NAMES:
        raise ConfigError(f"--size {size!r}: expected one of {', '.join(SIZE_NAMES)}")
    root = init_random_weights(directory, size=size, seed=seed)
    logger.info("wrote %s random weights (seed %d) to %s; hash %s", size, seed, root, weights_hash(root))
    logger.warning("random weights produce meaningless pictures; use `personalive weights download` for real ones")
