"""DDIM with a fixed step length over a staggered window of noise levels (PersonaLive's streaming schedule).

The streaming pipeline keeps ``adaptive_steps x window`` latent frames alive at once: the oldest ``window``
frames sit at the lowest noise level, the newest at ``t_max``. Every denoising call moves every frame one DDIM
jump down, so after each call the oldest group reaches t=0 (and leaves the window) and a fresh group enters at
``t_max``. With ``inference_steps = 4`` and ``adaptive_steps = 4`` (upstream's setting) the levels are
999, 666, 333, 0 and the step length is 333 (upstream ``scheduler_ddim.py``: ``set_step_length(333)``).

The noise table (betas, cumulative alphas) comes from diffusers' :class:`~diffusers.DDIMScheduler` built from
:class:`personalive.config.SchedulerConfig`; the per-frame update below is DDIM with eta = 0, written for a
vector of per-frame timesteps (diffusers' ``step`` takes one timestep per call).
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from personalive.config import GenerationConfig, SchedulerConfig
from personalive.errors import ConfigError


def staggered_timesteps(num_train_timesteps: int, inference_steps: int) -> tuple[list[int], int]:
    """The ``inference_steps`` DDIM timesteps from ``num_train_timesteps - 1`` down to 0 and their spacing.

    Evenly spaced with a fixed integer step length ``(T - 1) // (steps - 1)``; for 1000 training steps and 4
    inference steps: ``[999, 666, 333, 0]`` with step length 333 (upstream's hard-coded values). A single step
    uses step length T, so that its previous timestep is negative and the final alpha applies.
    """
    top = num_train_timesteps - 1
    if inference_steps < 1 or inference_steps > num_train_timesteps:
        raise ConfigError(
            f"generation.inference_steps={inference_steps}: must be between 1 and "
            f"scheduler.num_train_timesteps={num_train_timesteps}"
        )
    if inference_steps == 1:
        return [top], num_train_timesteps
    step_length = top // (inference_steps - 1)
    return [top - k * step_length for k in range(inference_steps)], step_length


class StaggeredDDIM:
    """Noise table and per-frame DDIM updates for the streaming window.

    Frame order everywhere is oldest first: in a window of ``A = adaptive_steps`` groups of ``W = window``
    frames, group 0 has the lowest timestep. ``jump = inference_steps // adaptive_steps`` denoising calls run
    per window; call ``j`` uses levels ``timesteps[j::jump]`` (reversed, so oldest first).
    """

    def __init__(self, scheduler: SchedulerConfig, generation: GenerationConfig) -> None:
        from diffusers import DDIMScheduler

        # the config's rules (prediction type, inference_steps a multiple of adaptive_steps) are checked once, in
        # RunConfig.validate
        self._coefficient_cache: dict[tuple, torch.Tensor] = {}
        table = DDIMScheduler(**asdict(scheduler))
        # float32 like diffusers: the table is indexed per frame and cast to the sample dtype where used
        self.alphas_cumprod: torch.Tensor = table.alphas_cumprod.to(torch.float32)
        self.final_alpha_cumprod: torch.Tensor = torch.as_tensor(table.final_alpha_cumprod, dtype=torch.float32)
        self.window = generation.window
        self.adaptive_steps = generation.adaptive_steps
        self.jump = generation.inference_steps // generation.adaptive_steps
        self.timesteps, self.step_length = staggered_timesteps(
            scheduler.num_train_timesteps, generation.inference_steps
        )

    @property
    def t_max(self) -> int:
        return self.timesteps[0]

    @property
    def padding_frames(self) -> int:
        """Latent frames older than the newest group: ``(adaptive_steps - 1) * window``."""
        return (self.adaptive_steps - 1) * self.window

    def call_timesteps(self, j: int) -> torch.Tensor:
        """Per-frame timesteps (A*W,) int64 of denoising call ``j`` of a window, oldest frame first."""
        levels = self.timesteps[j :: self.jump][::-1]
        return torch.tensor(levels, dtype=torch.int64).repeat_interleave(self.window)

    def startup_timesteps(self) -> torch.Tensor:
        """Per-frame timesteps (P,) of the start-up padding latents: every level of call 0 except ``t_max``."""
        return self.call_timesteps(0)[: self.padding_frames]

    def step_coefficients(self, timesteps: torch.Tensor) -> torch.Tensor:
        """(4, F) float32 rows: sqrt(a_t), sqrt(1 - a_t), sqrt(a_prev), sqrt(1 - a_prev) for each frame's DDIM step."""
        alpha_t = self.alphas_cumprod[timesteps]
        prev = timesteps - self.step_length
        alpha_prev = torch.where(prev >= 0, self.alphas_cumprod[prev.clamp(min=0)], self.final_alpha_cumprod)
        return torch.stack([alpha_t**0.5, (1 - alpha_t) ** 0.5, alpha_prev**0.5, (1 - alpha_prev) ** 0.5])

    def noise_coefficients(self, timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(2, F) rows sqrt(a_t), sqrt(1 - a_t) in ``dtype`` (diffusers' add_noise casts the table first)."""
        alpha_t = self.alphas_cumprod.to(dtype)[timesteps]
        return torch.stack([alpha_t**0.5, (1 - alpha_t) ** 0.5])

    def _noise_coefficients_on(
        self, timesteps: torch.Tensor, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        # cached per (timesteps, dtype, device): the same few are used in every window, and copying them to the
        # device afresh each time would make the host wait for the GPU (see keypoints.device_constant)
        key = (tuple(timesteps.reshape(-1).tolist()), dtype, str(device))
        if key not in self._coefficient_cache:
            self._coefficient_cache[key] = self.noise_coefficients(timesteps.cpu(), dtype).to(device)
        return self._coefficient_cache[key]

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward-diffuse clean ``latents`` (B, C, F, H, W) to per-frame ``timesteps`` (F,) (or one, broadcast)."""
        coef = self._noise_coefficients_on(timesteps, latents.dtype, latents.device)
        sqrt_alpha, sqrt_one_minus = (c.view(1, 1, -1, 1, 1) for c in coef)
        return sqrt_alpha * latents + sqrt_one_minus * noise


def ddim_step(
    noise_pred: torch.Tensor, sample: torch.Tensor, coefficients: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM (eta = 0) jump of every frame: returns (previous sample, predicted clean sample).

    ``noise_pred`` and ``sample`` are (B, C, F, H, W); ``coefficients`` (4, F) from
    :meth:`StaggeredDDIM.step_coefficients`, float32. The arithmetic runs in float32 (the coefficients'
    dtype, as in diffusers) and the results are cast back to the sample dtype.
    """
    sqrt_alpha, sqrt_beta, sqrt_alpha_prev, sqrt_beta_prev = (c.view(1, 1, -1, 1, 1) for c in coefficients)
    pred_original = (sample - sqrt_beta * noise_pred) / sqrt_alpha
    prev_sample = sqrt_alpha_prev * pred_original + sqrt_beta_prev * noise_pred
    return prev_sample.to(sample.dtype), pred_original.to(sample.dtype)
