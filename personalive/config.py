"""The run configuration: typed dataclasses, merged as defaults <- YAML file <- CLI options <- ``--set key=value``.

These dataclasses are the only home of the defaults: ``personalive config show`` prints them merged with a file
and overrides, and ``configs/default.yaml`` is generated from them (a test fails when it drifts). Choices are
``Enum`` fields, so OmegaConf rejects a value outside them. Upstream's own prompt YAML files
(``configs/prompts/personalive_offline.yaml`` / ``personalive_online.yaml``) are accepted too and mapped onto
these keys (see :mod:`personalive.upstream_config`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from personalive.backends import BACKENDS
from personalive.config_checks import check_values
from personalive.config_text import flatten_keys, parse_override, read_yaml
from personalive.errors import ConfigError
from personalive.upstream_config import is_upstream, map_upstream


class Choice(str, Enum):
    """A config choice: compares, hashes, prints and serialises as its value (the same as its name)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Dtype(Choice):
    fp16 = "fp16"
    bf16 = "bf16"
    fp32 = "fp32"


class ModelDtype(Choice):
    auto = "auto"  # fp16 on CUDA, fp32 on the CPU (resolved with the device)
    fp16 = "fp16"
    bf16 = "bf16"
    fp32 = "fp32"


class CropMode(Choice):
    center = "center"
    pad = "pad"
    stretch = "stretch"


class CudaGraphs(Choice):
    # auto: on where a measurement found that replaying saves more than the captures cost (each backend cites
    # its own): every backend now (eager since the eleventh session, when captures became cheap: 0.1-0.17 s)
    auto = "auto"
    on = "on"
    off = "off"


class Decoder(Choice):
    vae = "vae"  # the KL VAE (sd-vae-ft-mse), as released
    taesd = "taesd"  # the tiny autoencoder's decoder (taesd/): faster, another picture (docs/engines.md)


# max_autotune: inductor times kernel choices while compiling (no CUDA graphs of its own)
CompileMode = Choice("CompileMode", {"default": "default", "max_autotune": "max_autotune"})


class CompileScope(Choice):
    whole = "whole"  # the denoising UNet as one graph
    regional = "regional"  # each of its blocks' modules on its own (personalive.backends.regions): traced faster


# one member per entry of the backend table: a new backend needs no change here
Backend = Choice("Backend", {name: name for name in BACKENDS})


class FaceCrop(Choice):
    auto = "auto"  # landmarks with the personalive[faces] extra, else keypoints
    landmarks = "landmarks"  # upstream's offline crop_face (FaceMesh landmark box x 1.1)
    keypoints = "keypoints"  # the motion extractor's keypoint box (upstream's online path)


class DrivingCrop(Choice):
    auto = "auto"  # face with the extra and a face found, else none
    face = "face"  # a tracked square about the face
    center = "center"  # the largest centred square
    none = "none"  # the whole frame by media.crop


class ReferenceCrop(Choice):
    auto = "auto"  # face with the extra and a face found, else center
    face = "face"  # the square about the face; an error when none is found
    center = "center"  # by media.crop


def default_weights_dir() -> str:
    return os.environ.get("PERSONALIVE_WEIGHTS", "./pretrained_weights")


@dataclass
class SchedulerConfig:
    """DDIM settings; the values of upstream's ``configs/inference/inference_stage3.yaml``."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.02
    beta_schedule: str = "scaled_linear"
    clip_sample: bool = False
    steps_offset: int = 1
    prediction_type: str = "epsilon"
    timestep_spacing: str = "trailing"
    set_alpha_to_one: bool = True


@dataclass
class ModelConfig:
    """Where the weights live and in which precision the networks run."""

    weights_dir: str = field(default_factory=default_weights_dir)
    dtype: ModelDtype = ModelDtype.auto  # auto = fp16 on CUDA, fp32 on the CPU (resolved with the device)
    # upstream's fp16 CLIP image encoder hit CUBLAS errors; run it in fp32 and cast its output
    clip_dtype: Dtype = Dtype.fp32
    decoder: Decoder = Decoder.vae  # the window step's decoder; the reference is always encoded by the VAE


@dataclass
class GenerationConfig:
    """The streaming generation: resolution, micro-chunk windows, DDIM steps, keyframes, keypoints."""

    height: int = 512
    width: int = 512
    window: int = 4  # temporal_window_size: frames emitted per denoising call
    adaptive_steps: int = 4  # temporal_adaptive_step: noise levels alive in one window
    inference_steps: int = 4  # DDIM steps from t=999 to 0
    seed: int = 42
    keyframe_threshold: float = 17.0  # motion-token distance that makes a frame a history keyframe
    max_keyframes: int = 3  # history keyframes added at most (upstream's online wrapper)
    history_keyframes: bool = True
    # LivePortrait-style relative keypoints: driving translation scaled by this, scale from the reference
    translation_scale: float = 0.5
    use_reference_scale: bool = True
    min_face_box: int = 64  # smallest face crop side in pixels at the model resolution (no-face frames)
    # temporal filter on the driving keypoints: Gaussian sigma in frames, with look-ahead; 0 = off (bit-identical)
    smoothing: float = 0.0


@dataclass
class RuntimeConfig:
    """Where and how the window step runs."""

    device: str = "auto"  # auto = cuda:0 when available, else cpu; resolved at the CLI edge
    backend: Backend = Backend.eager  # type: ignore[valid-type]  # a key of personalive.backends.BACKENDS
    engine: str | None = None
    engine_dir: str = "engines"
    compile_unet_mode: CompileMode = CompileMode.default  # type: ignore[valid-type]  # --backend compile, per network
    # regional: as fast as the whole UNet on an H200 (114.9 / 114.2 ms a window), its warm start ~10 s shorter
    # (call AT: first frame 30.2 / 39.8 s after loading) and its first compilation ~11 s (call AS)
    compile_unet_scope: CompileScope = CompileScope.regional  # type: ignore[valid-type]
    # the decoder in inductor's default mode too: max-autotune's search took over 5 minutes at full size on an H200
    # (call AN) for a gain never measured on the whole step; the default-mode step is 2x upstream's (call AQ)
    compile_vae_mode: CompileMode = CompileMode.default  # type: ignore[valid-type]
    cuda_graphs: CudaGraphs = CudaGraphs.auto  # on a CUDA device: the whole step replayed from CUDA graphs
    # torch.backends.cudnn.benchmark on a CUDA device: cuDNN times its algorithms for each new convolution shape and
    # keeps the fastest; off, its heuristics choose (PyTorch's default)
    cudnn_benchmark: bool = False
    # on a CUDA device: record the shapes of the first calls' cuDNN plans in the user cache folder and replay them
    # while the next process imports its network code (personalive.device_plans)
    plan_cache: bool = True


@dataclass
class MediaConfig:
    """Input preprocessing and the output encoder."""

    crop: CropMode = CropMode.center  # how non-square frames and references become square
    # face finding (the personalive[faces] extra; without it `auto` keeps the behaviour before face finding)
    face_crop: FaceCrop = FaceCrop.auto  # the motion encoder's face image
    driving_crop: DrivingCrop = DrivingCrop.auto  # how driving frames become the model's square
    reference_crop: ReferenceCrop = ReferenceCrop.auto  # how the reference photo becomes the model's square
    paste_back: bool = False  # paste each generated square back into the full reference photo
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    crf: int = 18
    preset: str = "medium"
    audio: bool = True
    max_frames: int | None = None
    # encode in a child process (its own interpreter lock): PyAV holds the lock while it converts, encodes and
    # muxes, so on a thread of this process it takes turns with the thread queueing the GPU's work (H200: 31 ms a
    # frame on a thread, 24 ms in a child; the same loop speed at the eager step's 17 fps)
    encode_process: bool = True


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    media: MediaConfig = field(default_factory=MediaConfig)

    def validate(self) -> RunConfig:
        """Rules across fields or ranges that the types do not express; returns ``self``."""
        generation, media = self.generation, self.media
        for key, value in (("generation.height", generation.height), ("generation.width", generation.width)):
            if value <= 0 or value % 64:
                raise ConfigError(f"{key}={value}: must be a positive multiple of 64 (e.g. 512)")
        for key, value in (
            ("generation.window", generation.window),
            ("generation.adaptive_steps", generation.adaptive_steps),
            ("generation.inference_steps", generation.inference_steps),
        ):
            if value < 1:
                raise ConfigError(f"{key}={value}: must be >= 1")
        if generation.inference_steps % generation.adaptive_steps:
            raise ConfigError(
                f"generation.inference_steps={generation.inference_steps} must be a multiple of "
                f"generation.adaptive_steps={generation.adaptive_steps}"
            )
        if self.scheduler.prediction_type != "epsilon":
            raise ConfigError(
                f"scheduler.prediction_type={self.scheduler.prediction_type!r}: PersonaLive predicts noise; "
                "use 'epsilon'"
            )
        if not 0 <= generation.smoothing <= 50:
            raise ConfigError(
                f"generation.smoothing={generation.smoothing}: must be a sigma in frames between 0 (off) and 50"
            )
        if generation.max_keyframes < 0:
            raise ConfigError(f"generation.max_keyframes={generation.max_keyframes}: must be >= 0")
        if not 0 <= media.crf <= 51:
            raise ConfigError(f"media.crf={media.crf}: must be between 0 and 51")
        if media.max_frames is not None and media.max_frames < 1:
            raise ConfigError(f"media.max_frames={media.max_frames}: must be >= 1")
        check_values(self)  # the values that used to pass here and fail after the models had loaded
        return self


# ---------------------------------------------------------------------------------------------- merging
def _structured(config: RunConfig | None = None):
    from omegaconf import OmegaConf

    return OmegaConf.structured(config if config is not None else RunConfig)


def _all_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    keys = []
    for f in fields(cls):
        name = f"{prefix}{f.name}"
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if is_dataclass(default):
            keys += _all_keys(type(default), name + ".")
        else:
            keys.append(name)
    return keys


def _field_type(key: str) -> Any:
    """The annotated type of a dotted config key (None when there is no such key)."""
    cls: Any = RunConfig
    for part in key.split("."):
        if not is_dataclass(cls):
            return None
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        cls = hints[part]
    return cls


def _unknown_key_error(key: str, source: str) -> ConfigError:
    known = _all_keys()
    close = difflib.get_close_matches(key, known, n=1) or difflib.get_close_matches(
        key.split(".")[-1], [k.split(".")[-1] for k in known], n=1
    )
    hint = ""
    if close:
        match = close[0] if "." in close[0] else next(k for k in known if k.endswith("." + close[0]))
        hint = f" (did you mean {match!r}?)"
    return ConfigError(f"{source}: unknown config key {key!r}{hint}")


def _value_error(exc: Exception, source: str) -> ConfigError:
    key = str(getattr(exc, "full_key", ""))
    kind = _field_type(key)
    if isinstance(kind, type) and issubclass(kind, Enum):
        value = getattr(exc, "value", None)
        where = "" if source.startswith(("--set", "option")) else f"{source}: "
        return ConfigError(f"{where}{key}={str(value)!r}: expected one of {', '.join(m.value for m in kind)}")
    return ConfigError(f"{source}: wrong type for {key!r}: {str(getattr(exc, 'msg', exc)).splitlines()[0]}")


def _yaml_bool_choice(key: str, value: Any) -> Any:
    """YAML 1.1 reads ``on``/``off`` (and ``yes``/``no``) as booleans: for a choice that has ``on`` and ``off``
    (``runtime.cuda_graphs``), give the boolean back as the word the user wrote (in ``--set`` or a file)."""
    kind = _field_type(key)
    if isinstance(value, bool) and isinstance(kind, type) and issubclass(kind, Enum):
        values = {m.value for m in kind}
        if {"on", "off"} <= values:
            return "on" if value else "off"
    return value


def _bool_choices(data: Any, prefix: str = "") -> Any:
    """:func:`_yaml_bool_choice` over a nested mapping (a YAML file's)."""
    if not isinstance(data, dict):
        return _yaml_bool_choice(prefix, data) if prefix else data
    return {k: _bool_choices(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in data.items()}


def _merge(cfg, data: dict, source: str):
    """``cfg`` with a nested mapping merged in (a YAML file)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    try:
        return OmegaConf.merge(cfg, _bool_choices(data))
    except (ConfigKeyError, ConfigAttributeError) as exc:
        raise _unknown_key_error(str(exc.full_key), source) from exc
    except ValidationError as exc:
        raise _value_error(exc, source) from exc


def _update(cfg, key: str, value: Any, source: str) -> None:
    """Set one dotted key of ``cfg`` in place (OmegaConf checks the key exists and the value fits its type)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    try:
        OmegaConf.update(cfg, key, _yaml_bool_choice(key, value), merge=True)
    except (ConfigKeyError, ConfigAttributeError) as exc:
        raise _unknown_key_error(key, source) from exc
    except ValidationError as exc:
        raise _value_error(exc, source) from exc


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    options: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults <- YAML file at ``path`` <- ``options`` (flat keys set by CLI options) <- ``overrides`` (``--set``)."""
    from omegaconf import OmegaConf

    cfg = _structured()
    if path is not None:
        path = Path(path)
        data = read_yaml(path)
        if is_upstream(data):
            for key, value in map_upstream(data, path).items():
                _update(cfg, key, value, str(path))
        else:
            cfg = _merge(cfg, data, str(path))
    for key, value in (options or {}).items():
        if value is not None:
            _update(cfg, key, value, "option")
    for item in overrides:
        key, value = parse_override(item)
        _update(cfg, key, value, f"--set {item}")
    run: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    return run.validate()


def with_overrides(config: RunConfig, flat: dict[str, Any], source: str) -> RunConfig:
    """A validated copy of ``config`` with flat ``key: value`` overrides (a manifest job's ``set:``)."""
    from omegaconf import OmegaConf

    cfg = _structured(config)
    for key, value in flat.items():
        _update(cfg, key, value, source)
    run: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    return run.validate()


def config_yaml(config: RunConfig) -> str:
    """``config`` as YAML, every key (what ``personalive config show`` prints and ``configs/default.yaml`` holds)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(_structured(config))


def flat_items(config: RunConfig) -> dict[str, Any]:
    """Every key of ``config`` as ``{"section.key": value}`` (choices as their string values)."""
    return {k: v.value if isinstance(v, Enum) else v for k, v in flatten_keys(dataclasses.asdict(config)).items()}
