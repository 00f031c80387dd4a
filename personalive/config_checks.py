"""Config values that pass their types yet would fail after the models load: checked in
:meth:`personalive.config.RunConfig.validate`, so a bad value is an exit-2 error naming the key and the allowed
values before any work starts."""

from __future__ import annotations

import math
from typing import Any

from personalive.errors import ConfigError

# what diffusers' DDIMScheduler accepts
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes a 64-bit unsigned seed


def check_values(config: Any) -> None:
    """Raise :class:`ConfigError` for the first value of a ``RunConfig`` the run cannot use (typed ``Any``: this
    module is imported by ``personalive.config``)."""
    _generation(config)
    _scheduler(config)
    from personalive.media.encoder import check_encoder_settings

    media = config.media
    check_encoder_settings(media.codec, media.pix_fmt, media.preset)


def _generation(config: Any) -> None:
    g, sch = config.generation, config.scheduler
    if g.adaptive_steps < 2:
        # the window staggers adaptive_steps noise levels; with one there are no start-up frames to denoise
        raise ConfigError(
            f"generation.adaptive_steps={g.adaptive_steps}: must be >= 2 and divide "
            f"generation.inference_steps={g.inference_steps} (upstream uses 4 and 4)"
        )
    if g.inference_steps > sch.num_train_timesteps:
        raise ConfigError(
            f"generation.inference_steps={g.inference_steps}: must be at most "
            f"scheduler.num_train_timesteps={sch.num_train_timesteps}"
        )
    if not 0 <= g.seed < SEED_LIMIT:
        raise ConfigError(f"generation.seed={g.seed}: must be between 0 and 2**64 - 1")
    if not 1 <= g.min_face_box <= min(g.height, g.width):
        raise ConfigError(
            f"generation.min_face_box={g.min_face_box}: must be between 1 and the model's size "
            f"{min(g.height, g.width)} (pixels at the model resolution)"
        )
    for key, value in (
        ("generation.keyframe_threshold", g.keyframe_threshold),
        ("generation.translation_scale", g.translation_scale),
    ):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{key}={value}: must be a finite number >= 0")


def _scheduler(config: Any) -> None:
    sch = config.scheduler
    if sch.num_train_timesteps < 1:
        raise ConfigError(f"scheduler.num_train_timesteps={sch.num_train_timesteps}: must be >= 1")
    if not 0 < sch.beta_start < sch.beta_end < 1:
        raise ConfigError(
            f"scheduler.beta_start={sch.beta_start}, scheduler.beta_end={sch.beta_end}: "
            "need 0 < beta_start < beta_end < 1"
        )
    _one_of("scheduler.beta_schedule", sch.beta_schedule, BETA_SCHEDULES)
    _one_of("scheduler.timestep_spacing", sch.timestep_spacing, TIMESTEP_SPACINGS)
    _one_of("scheduler.prediction_type", sch.prediction_type, ("epsilon",))  # PersonaLive predicts noise
    if sch.steps_offset < 0:
        raise ConfigError(f"scheduler.steps_offset={sch.steps_offset}: must be >= 0")


def _one_of(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r}: expected one of {', '.join(choices)}")
