"""Strict loading of the networks of a weights layout (see :mod:`.layout`), and its identity hash.

Networks are built without initialising their parameters and the checkpoint's tensors are copied once, from the
memory-mapped files straight to the device in the run's dtype (:mod:`.materialize`); where the time goes is in a
:class:`~.report.LoadReport`. At load every ``.pth`` gets the cheap archive check and every tensor the finiteness
check of :mod:`.integrity`; ``weights check`` verifies every CRC.

Every state dict is loaded strictly: a missing or unexpected key or a shape mismatch is a :class:`WeightsError`
naming the file, the key and the shapes. The denoising UNet is ``denoising_unet.pth`` together with
``temporal_module.pth`` (the ``.temporal_modules.`` keys), which must cover every parameter. All problems of all
files are collected into one error.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from personalive.device_plans import PlanBook
from personalive.device_warmup import DeviceWarmup
from personalive.errors import WeightsError
from personalive.model_sizes import ModelSizes
from personalive.weights import projections
from personalive.weights.configs import DOWNLOAD_AGAIN, FIX, read_sizes
from personalive.weights.integrity import check_archive_structure, check_finite, content_hash
from personalive.weights.layout import NETWORKS, TEMPORAL_KEY, WeightsLayout
from personalive.weights.materialize import MappedPages, assign_state, build_empty
from personalive.weights.report import LoadReport

logger = logging.getLogger(__name__)


@dataclass
class ModelSet:
    """The networks of PersonaLive that a run needs, loaded, in eval mode, on one device.

    A network that was not asked for (see ``load_models(networks=...)``) is None. ``dtype`` is the networks'
    precision; the image encoder runs in ``clip_dtype`` (cast its output). :attr:`weights_hash`: see
    :func:`weights_hash`.
    """

    sizes: ModelSizes
    weights_dir: Path
    device: torch.device
    dtype: torch.dtype
    clip_dtype: torch.dtype
    reference_unet: nn.Module | None = None
    denoising_unet: nn.Module | None = None
    pose_guider: nn.Module | None = None
    motion_encoder: nn.Module | None = None
    motion_extractor: nn.Module | None = None
    vae: nn.Module | None = None
    image_encoder: nn.Module | None = None
    # the denoising UNet's reference keys/values layers alone, for engines (see .projections)
    reference_projections: nn.Module | None = None
    taesd: nn.Module | None = None  # loaded by the window step on first use, for model.decoder=taesd
    load_report: LoadReport | None = None  # where loading spent its time (None: not loaded from files)
    known_hash: str | None = None  # the weights' identity once computed (or given, for random weights)

    @property
    def weights_hash(self) -> str:
        """:func:`weights_hash` of ``weights_dir``, computed on first use: only engines need it, and the first hash
        of new or changed files reads every byte (7 GB at full size), so a run that needs none never pays it."""
        if self.known_hash is None:
            self.known_hash = weights_hash(self.weights_dir)
        return self.known_hash


# ------------------------------------------------------------------------------------------------ networks
def config_file(name: str, layout: WeightsLayout, sizes: ModelSizes) -> str:
    """The config file a network's sizes come from (named when it cannot be built)."""
    base = {"reference_unet": layout.unet_config, "denoising_unet": layout.unet_config}
    base |= {"vae": layout.vae_config, "image_encoder": layout.image_encoder_config}
    return str(base[name]) if name in base else sizes.source


def build_network(name: str, sizes: ModelSizes, source: str | None = None) -> nn.Module:
    """One network with default-initialised weights (use ``torch.device('meta')`` as context for shapes only).
    ``source`` is the config file named when the sizes are wrong (default: the sizes' own source). Its GroupNorms
    compute their statistics in a form that fills a GPU (:mod:`personalive.models.group_norm`: same function, same
    keys), and its diffusers residual blocks skip two passes that change nothing (:mod:`personalive.models.resnet`)."""
    from personalive.models.group_norm import split_group_norms
    from personalive.models.resnet import lean_resnets

    network = _build_network(name, sizes, source)
    split_group_norms(network)
    lean_resnets(network)
    return network


def _build_network(name: str, sizes: ModelSizes, source: str | None) -> nn.Module:
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
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, ZeroDivisionError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise WeightsError(
            f"{source or sizes.source}: cannot build {name} from it ({type(exc).__name__}: {reason})"
        ) from exc
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
        raise WeightsError(f"{path}: missing; {FIX}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            check_archive_structure(path)  # cheap: directory, member bounds, the pickle's CRC
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):  # legacy (non-zip) files cannot be memory-mapped
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader error means a damaged file
        reason = (str(exc).splitlines() or [""])[0][:160]
        raise WeightsError(
            f"{path}: cannot be read, truncated or corrupt ({type(exc).__name__}: {reason}); {FIX}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors (found {type(state).__name__}); {FIX}")
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
    fix = FIX if more else DOWNLOAD_AGAIN  # every problem is named: no fuller list to point to
    return f"{root}: {len(problems)} weights problem(s): {head}{more}; {fix}"


# --------------------------------------------------------------------------------------------------- loading
def default_threads(device: torch.device) -> int:
    """Copy threads: a copy releases the GIL, so page faults and transfers of several tensors overlap."""
    return max(1, min(4, os.cpu_count() or 1))


def _init_device(device: torch.device) -> None:
    """Create the device's context now (CUDA's first call takes a while), so the first network is not charged."""
    if device.type == "cuda":
        torch.empty(0, device=device)


def _import_networks(names: list[str]) -> None:
    """The network modules (and diffusers, transformers behind them), timed apart from building."""
    import importlib

    for name in names:  # each network is built by the module of its name
        importlib.import_module(f"personalive.models.{name}")


def _load_network(
    name: str,
    layout: WeightsLayout,
    sizes: ModelSizes,
    device: torch.device,
    dtype: torch.dtype,
    report: LoadReport,
    threads: int,
) -> tuple[nn.Module | None, list[str]]:
    """One network built without initialisation and loaded strictly (see :mod:`.materialize`): (module, problems)."""
    source = config_file(name, layout, sizes)
    with report.phase("build", name):
        module = build_empty(lambda: build_network(name, sizes, source), device, dtype)
    files = layout.network_files(name)
    with report.phase("read", name):
        state, origin = _read_network_state(name, layout)
        pages = MappedPages(files)
    with report.phase("compare", name):
        found = compare_state(_expected_shapes(module), state, origin, files)
    if found:
        return None, found
    with report.phase("copy", name):
        # from the memory-mapped files straight into new device tensors (cast on the way, as .to(dtype) would);
        # each tensor's file pages are given back once copied
        report.bytes_copied += assign_state(module, state, device, pages, threads)
        del state
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    with report.phase("finite", name):
        # NaN or inf in the file (or overflowing the cast to fp16) would animate black frames: refuse them here,
        # on the device (fast on a GPU), naming the file and the key
        check_finite(module.state_dict(), origin)
    logger.debug("loaded %s (%.1f M parameters)", name, sum(p.numel() for p in module.parameters()) / 1e6)
    return module.eval().requires_grad_(False), []


def load_models(
    weights_dir: str | os.PathLike,
    dtype: torch.dtype,
    device: torch.device | str,
    clip_dtype: torch.dtype = torch.float32,
    networks: tuple[str, ...] | list[str] = NETWORKS,
    *,
    report: LoadReport | None = None,
    threads: int | None = None,
    plans: PlanBook | None = None,
) -> ModelSet:
    """Build and strictly load ``networks`` (default: all) of the layout at ``weights_dir``; eval mode, no grad.

    Networks run in ``dtype`` on ``device``; the CLIP image encoder in ``clip_dtype``. All problems (missing,
    unexpected, mis-shaped keys) are collected over all files and raised as one :class:`WeightsError`.
    Where the time went is filled into ``report`` (also ``ModelSet.load_report``; see :mod:`.report`);
    ``threads`` copy tensors in parallel (default :func:`default_threads`). ``plans``: cuDNN plans to replay while
    the network code is imported (see :mod:`personalive.device_warmup`).
    """
    report = report if report is not None else LoadReport()
    started = report.start()
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
    unknown = sorted(set(networks) - set(NETWORKS) - {projections.NAME})
    if unknown:
        raise ValueError(f"unknown networks {unknown}: expected names of {NETWORKS} or {projections.NAME!r}")
    names = [n for n in NETWORKS if n in networks]
    threads = threads or default_threads(device)
    with report.phase("device_init"):
        _init_device(device)
    # the network code (diffusers, transformers) is imported on a thread while this thread warms the device up
    warmup = DeviceWarmup(device, (dtype, clip_dtype), plans)
    imported = names + (["denoising_unet"] if projections.NAME in networks else [])
    started_imports = time.perf_counter()
    warmup.beside(lambda: _import_networks(imported))
    report.record_warmup(time.perf_counter() - started_imports, warmup)
    loaded: dict[str, nn.Module] = {}
    problems: list[str] = []
    if projections.NAME in networks and "denoising_unet" not in networks:
        with report.phase("copy", projections.NAME):
            problems += _load_projections(layout, sizes, device, dtype, loaded)
    for name in names:
        net_dtype = clip_dtype if name == "image_encoder" else dtype
        module, found = _load_network(name, layout, sizes, device, net_dtype, report, threads)
        problems += found
        if module is not None:
            loaded[name] = module
    if problems:
        raise WeightsError(summarize_problems(layout.root, problems))
    report.finish(started)
    return ModelSet(
        **loaded,
        sizes=sizes,
        weights_dir=layout.root,
        device=device,
        dtype=dtype,
        clip_dtype=clip_dtype,
        load_report=report,
    )


def _load_projections(
    layout: WeightsLayout, sizes: ModelSizes, device: torch.device, dtype: torch.dtype, loaded: dict[str, nn.Module]
) -> list[str]:
    """The denoising UNet's reference key/value layers alone (see :mod:`.projections`), strictly, into ``loaded``."""
    source = config_file("denoising_unet", layout, sizes)
    module = projections.build_projections(lambda: build_network("denoising_unet", sizes, source), device, dtype)
    state, origin = _read_network_state("denoising_unet", layout)
    own, wanted, wanted_origin = projections.select_state(module, state, origin)
    expected = {unet_key: module.state_dict()[own_key].shape for own_key, unet_key in module.unet_keys().items()}
    found = compare_state(expected, wanted, wanted_origin, layout.network_files("denoising_unet"))
    if found:
        return found
    module.load_state_dict(own, strict=True)
    check_finite(wanted, wanted_origin)
    loaded[projections.NAME] = module.eval().requires_grad_(False)
    return []


def weights_hash(weights_dir: str | os.PathLike, *, use_cache: bool = True) -> str:
    """Identity of a layout: sha256 over, per file the loader reads (sorted), its relative path, its size and the
    sha256 of all its bytes. Each file's digest is cached by path, size, inode, mtime and ctime (see
    :func:`personalive.weights.integrity.content_hash`), so only the first load after a change reads every byte."""
    layout = WeightsLayout(Path(weights_dir))
    return content_hash(layout.root, layout.hashed_files(), use_cache=use_cache)
