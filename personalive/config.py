"""The run configuration: typed dataclasses, merged as defaults <- YAML file <- ``--set key=value``.

``configs/default.yaml`` mirrors :class:`RunConfig`'s defaults. Upstream's own prompt YAML files
(``configs/prompts/personalive_offline.yaml`` / ``personalive_online.yaml``) are accepted too and mapped
onto these keys (see :func:`_map_upstream`).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from personalive.errors import ConfigError

DTYPES = ("fp16", "bf16", "fp32")
BACKENDS = ("eager", "compile", "tensorrt")
CROP_MODES = ("center", "pad", "stretch")


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
    dtype: str = "auto"  # auto = fp16 on CUDA, fp32 on the CPU (resolved with the device); fp16 | bf16 | fp32
    # upstream's fp16 CLIP image encoder hit CUBLAS errors; run it in fp32 and cast its output
    clip_dtype: str = "fp32"


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


@dataclass
class RuntimeConfig:
    """Where and how the window step runs."""

    device: str = "auto"  # auto = cuda:0 when available, else cpu; resolved at the CLI edge
    backend: str = "eager"
    engine: str | None = None
    engine_dir: str = "engines"


@dataclass
class MediaConfig:
    """Input preprocessing and the output encoder."""

    crop: str = "center"  # how non-square frames and references become square: center | pad | stretch
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    crf: int = 18
    preset: str = "medium"
    audio: bool = True
    max_frames: int | None = None


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    media: MediaConfig = field(default_factory=MediaConfig)

    def validate(self) -> RunConfig:
        g, m, r, md = self.generation, self.model, self.runtime, self.media
        _choice("model.dtype", m.dtype, ("auto", *DTYPES))
        _choice("model.clip_dtype", m.clip_dtype, DTYPES)
        _choice("runtime.backend", r.backend, BACKENDS)
        _choice("media.crop", md.crop, CROP_MODES)
        for key, value in (("generation.height", g.height), ("generation.width", g.width)):
            if value <= 0 or value % 64:
                raise ConfigError(f"{key}={value}: must be a positive multiple of 64 (e.g. 512)")
        for key, value in (
            ("generation.window", g.window),
            ("generation.adaptive_steps", g.adaptive_steps),
            ("generation.inference_steps", g.inference_steps),
        ):
            if value < 1:
                raise ConfigError(f"{key}={value}: must be >= 1")
        if g.inference_steps % g.adaptive_steps:
            raise ConfigError(
                f"generation.inference_steps={g.inference_steps} must be a multiple of "
                f"generation.adaptive_steps={g.adaptive_steps}"
            )
        if g.max_keyframes < 0:
            raise ConfigError(f"generation.max_keyframes={g.max_keyframes}: must be >= 0")
        if not 0 <= md.crf <= 51:
            raise ConfigError(f"media.crf={md.crf}: must be between 0 and 51")
        if md.max_frames is not None and md.max_frames < 1:
            raise ConfigError(f"media.max_frames={md.max_frames}: must be >= 1")
        return self


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: expected one of {', '.join(choices)}")


# ---------------------------------------------------------------------------------------------- merging


def _structured():
    from omegaconf import OmegaConf

    return OmegaConf.structured(RunConfig)


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


def _merge(base, other: dict, source: str):
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, ValidationError

    try:
        return OmegaConf.merge(base, other)
    except ConfigKeyError as exc:
        raise _unknown_key_error(str(exc.full_key), source) from exc
    except ValidationError as exc:
        raise ConfigError(f"{source}: wrong type for {exc.full_key!r}: {exc.msg.splitlines()[0]}") from exc


def flatten_keys(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _unflatten(flat: dict[str, Any]) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


# upstream prompt-YAML keys -> ours; None means "accepted and ignored" (paths inside the weights root,
# which we derive from one root, and settings that have no meaning offline)
_UPSTREAM_KEYS: dict[str, str | None] = {
    "height": "generation.height",
    "width": "generation.width",
    "temporal_adaptive_step": "generation.adaptive_steps",
    "temporal_window_size": "generation.window",
    "num_inference_steps": "generation.inference_steps",
    "seed": "generation.seed",
    "dtype": "model.dtype",
    "weight_dtype": "model.dtype",
    "reference_image_height": None,
    "reference_image_width": None,
    "batch_size": None,
    "fps": None,  # the output keeps the driving video's frame rate
    "vae_model_path": None,
    "vae_path": None,
    "vae_tiny_path": None,
    "image_encoder_path": None,
    "reference_unet_weight_path": None,
    "denoising_unet_path": None,
    "pose_guider_path": None,
    "motion_encoder_path": None,
    "temporal_module_path": None,
    "pose_encoder_path": None,
    "onnx_path": None,
    "onnx_opt_path": None,
    "tensorrt_target_model": None,
    "inference_config": None,
    "test_cases": None,
}


def _is_upstream(data: dict) -> bool:
    return "pretrained_base_model_path" in data or "inference_config" in data


def _map_upstream(data: dict, source: Path) -> dict:
    """Map one of upstream's prompt YAML files onto our keys."""
    flat: dict[str, Any] = {}
    base = data.get("pretrained_base_model_path")
    if base:
        # upstream lays every weight under one root: <root>/sd-image-variations-diffusers
        root = Path(base).parent
        flat["model.weights_dir"] = str(root if root.is_absolute() else (source.parent / root))
    for key, value in data.items():
        if key == "pretrained_base_model_path":
            continue
        if key not in _UPSTREAM_KEYS:
            raise ConfigError(f"{source}: unknown key {key!r} in an upstream PersonaLive config")
        target = _UPSTREAM_KEYS[key]
        if target is not None:
            flat[target] = value
    return _unflatten(flat)


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value); the value is parsed as YAML (so 1, 1.5, true, null, [1,2] work)."""
    import yaml

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set generation.seed=7")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults <- YAML file at ``path`` <- ``extra`` (flat keys from CLI options) <- ``overrides``."""
    import yaml
    from omegaconf import OmegaConf

    cfg = _structured()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
        if _is_upstream(data):
            data = _map_upstream(data, path)
        cfg = _merge(cfg, data, str(path))
    if extra:
        cfg = _merge(cfg, _unflatten({k: v for k, v in extra.items() if v is not None}), "option")
    for item in overrides:
        key, value = parse_override(item)
        cfg = _merge(cfg, _unflatten({key: value}), f"--set {item}")
    run: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    return run.validate()


def to_dict(cfg: RunConfig) -> dict:
    from dataclasses import asdict

    return asdict(cfg)


def flat_items(cfg: RunConfig) -> dict[str, Any]:
    return flatten_keys(to_dict(cfg))
