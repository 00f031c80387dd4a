"""The per-window step as one ``nn.Module``: the hot path every backend runs (eager, torch.compile, ONNX/TensorRT).

One call takes the stream's state after window ``i - 1`` and the new frames' conditioning inputs, and:

1. runs the pose guider on the ``W`` new pose canvases and the motion encoder on the ``W`` new face crops,
   appending them to the ``P = (A - 1) * W`` older frames' features;
2. runs the denoising UNet over the ``A * W`` latent frames at staggered noise levels and the DDIM step (once
   per DDIM jump, ``inference_steps // adaptive_steps`` times);
3. decodes the ``W`` oldest frames, which reached t=0, with the VAE;
4. shifts the window: drops those frames and appends ``new_latents`` (the next window's noised latents).

The timesteps are constants of the module (buffers derived from the config), not inputs.

The window-step contract (every backend runs it; the pipeline owns it)
----------------------------------------------------------------------

Every input and output is a tensor with a fixed name, so the same inputs can be bound by name to a TensorRT
engine, fed to onnxruntime, or passed as keyword arguments to the PyTorch module.

Inputs (B = 1, W = window, A = adaptive_steps, P = (A - 1) * W, h, w = latent size, H, W_img = image size):

=========================  ====================================  =============================================
name                       shape                                 what it is
=========================  ====================================  =============================================
``latents``                (B, 4, A*W, h, w)                     noisy latents, oldest (t lowest) first
``pose_cond_fea``          (B, C0, P, h, w)                      pose-guider features of the P older frames
``pose``                   (B, 3, W, Hc, Wc) in [0, 1]           keypoint canvases of the W new frames
``motion_hidden_states``   (B, P, 32, 16)                        motion tokens of the P older frames
``motion``                 (B, 3, W, 224, 224) in [-1, 1]        face crops of the W new frames
``encoder_hidden_states``  (B, 1, D)                             CLIP image embedding of the reference
``new_latents``            (B, 4, W, h, w)                       next window's fresh latents (noised at t_max)
``ref_<block>`` x 16       (B, L_i * (1 + K), 2 * C_i)           reference keys | values (K history keyframes)
=========================  ====================================  =============================================

The pose canvas is (Hc, Wc) = (h, w) * 2 ** (stride-2 stages of the pose guider): the image size for the
released guider (8x), 512 for the oracle's tiny guider at 128x128 (32x); see upstream deviation 3.

The reference-feature names, their order and their shapes come from one function,
:func:`personalive.models.reference_features.reference_feature_specs`, used by the model, the export, the
engine profile and the runtime. Each ``ref_<block>`` holds that block's self-attention keys and values of the
reference tokens (:meth:`WindowStep.project_reference`): they are the same in every window, so they are computed
once per reference image and once per history keyframe, not in the step.

Outputs:

=============================  ============================  =================================================
``frames``                     (B, W, 3, H, W_img) in [0,1]  the decoded frames that reached t=0 (oldest first)
``clean_latents``              (B, 4, W, h, w)               their predicted clean latents (keyframe source)
``next_latents``               (B, 4, A*W, h, w)             the shifted window with ``new_latents`` appended
``next_pose_cond_fea``         (B, C0, P, h, w)              pose features for the next window
``next_motion_hidden_states``  (B, P, 32, 16)                motion tokens for the next window
``new_motion_hidden_states``   (B, W, 32, 16)                the new frames' motion tokens (keyframe bank)
=============================  ============================  =================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn

from personalive.models.memory_layout import set_decoder_layout
from personalive.models.reference_features import reference_feature_specs
from personalive.pipeline.conditioning import FACE_CROP_SIZE
from personalive.pipeline.keypoints import draw_keypoints
from personalive.pipeline.scheduler import StaggeredDDIM, ddim_step

if TYPE_CHECKING:
    from personalive.config import RunConfig

STATE_INPUT_NAMES: tuple[str, ...] = (
    "latents",
    "pose_cond_fea",
    "pose",
    "motion_hidden_states",
    "motion",
    "encoder_hidden_states",
    "new_latents",
)
OUTPUT_NAMES: tuple[str, ...] = (
    "frames",
    "clean_latents",
    "next_latents",
    "next_pose_cond_fea",
    "next_motion_hidden_states",
    "new_motion_hidden_states",
)


# the networks WindowStepModule runs; a backend that runs the module in PyTorch needs them loaded
WINDOW_STEP_NETWORKS: tuple[str, ...] = ("pose_guider", "motion_encoder", "denoising_unet", "vae")


class WindowStep(Protocol):
    """Anything that runs one window: ``outputs = step(inputs)``, both dicts of tensors keyed by name.

    ``inputs`` holds every name of :attr:`input_names` (:data:`STATE_INPUT_NAMES` then :attr:`feature_names`,
    the reference-feature names); the result holds every name of :data:`OUTPUT_NAMES`. Implementations must not
    keep references to the input tensors after returning (the caller reuses them) and must run on the caller's
    current CUDA stream. Backends (``personalive.backends.BACKENDS``) also say which PyTorch networks they need
    (``networks``) and build themselves with ``from_models(models, config, device, engine=None)``.
    """

    name: ClassVar[str]

    @property
    def input_names(self) -> list[str]: ...

    @property
    def feature_names(self) -> list[str]: ...

    def project_reference(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The reference UNet's attention features (1, tokens, C) -> the step's reference inputs (1, tokens, 2C).

        Keys and values of the reference tokens in the denoising UNet's self-attentions
        (``DenoisingUNet.project_reference``): the pipeline calls this once per reference image and once per
        history keyframe, so the steps do not repeat it in every window.
        """
        ...

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


NUM_KEYPOINTS = 21  # the motion extractor's implicit keypoints (num_kp of the release)
MOTION_TOKEN_RMS = 40.0  # typical RMS of the motion encoder's tokens (oracle README); example inputs use it


class WindowStepModule(nn.Module):
    """``forward(*inputs)`` with inputs in :func:`window_input_names` order -> outputs in ``OUTPUT_NAMES`` order."""

    def __init__(
        self,
        pose_guider: nn.Module,
        motion_encoder: nn.Module,
        denoising_unet: nn.Module,
        vae: nn.Module,
        scheduler: StaggeredDDIM,
        feature_names: list[str],
    ) -> None:
        super().__init__()
        self.pose_guider = pose_guider
        self.motion_encoder = motion_encoder
        self.denoising_unet = denoising_unet
        self.vae = vae
        self.window = scheduler.window
        self.jump = scheduler.jump
        self.feature_names = list(feature_names)
        self.latent_scale = float(vae.config.scaling_factor)
        timesteps = torch.stack([scheduler.call_timesteps(j) for j in range(scheduler.jump)])  # (jump, A*W)
        coefficients = torch.stack([scheduler.step_coefficients(t) for t in timesteps])  # (jump, 4, A*W) fp32
        self.register_buffer("timesteps", timesteps, persistent=False)
        self.register_buffer("coefficients", coefficients, persistent=False)

    @property
    def input_names(self) -> list[str]:
        return [*STATE_INPUT_NAMES, *self.feature_names]

    def forward(
        self,
        latents: torch.Tensor,
        pose_cond_fea: torch.Tensor,
        pose: torch.Tensor,
        motion_hidden_states: torch.Tensor,
        motion: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        new_latents: torch.Tensor,
        *reference_features: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        w = self.window
        # 1. conditioning of the new frames, appended to the older frames': (B, C0, A*W, h, w), (B, A*W, 32, 16)
        new_pose = self.pose_guider(pose).to(pose_cond_fea.dtype)
        pose_all = torch.cat([pose_cond_fea, new_pose], dim=2)
        new_motion = self.motion_encoder(motion).to(motion_hidden_states.dtype)
        motion_all = torch.cat([motion_hidden_states, new_motion], dim=1)
        # 2. one UNet call and DDIM jump per level group; the oldest group reaches t=0 in the last one
        sample, clean = latents, latents
        for j in range(self.jump):
            noise_pred = self.denoising_unet(
                sample,
                self.timesteps[j],
                encoder_hidden_states,
                motion_all,
                pose_all,
                reference_kv=list(reference_features),
            )
            sample, clean = ddim_step(noise_pred, sample, self.coefficients[j])
        clean = clean[:, :, :w]  # (B, 4, W, h, w)
        # 3. decode the emitted frames: (B, W, 3, H, W) in [0, 1]
        frames = self.decode(clean)
        # 4. shift: drop the emitted frames, append the next window's fresh latents
        next_latents = torch.cat([sample[:, :, w:], new_latents.to(sample.dtype)], dim=2)
        return frames, clean, next_latents, pose_all[:, :, w:], motion_all[:, w:], new_motion

    def decode(self, clean: torch.Tensor) -> torch.Tensor:
        """Clean latents (B, 4, F, h, w) -> RGB (B, F, 3, H, W) in [0, 1]."""
        b, c, f, h, w = clean.shape
        flat = clean.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w) / self.latent_scale
        images = self.vae.decode(flat.to(self.vae.dtype)).sample  # (B*F, 3, H, W) in [-1, 1]
        images = (images / 2 + 0.5).clamp(0, 1)
        return images.reshape(b, f, *images.shape[1:])


def build_window_module(models: Any, config: RunConfig, channels_last_decoder: bool = False) -> WindowStepModule:
    """The window step of a loaded model set (``personalive.weights.ModelSet``) for ``config``.

    ``channels_last_decoder``: the decoder's convolution weights channels-last, so that its activations are too
    (the eager backend on CUDA, :func:`personalive.models.memory_layout.set_decoder_layout`); otherwise NCHW, set
    here either way so that one backend's choice does not carry over to another built from the same networks."""
    sizes = tensor_sizes(models, config)
    specs = reference_feature_specs(unet_config(models), sizes["latent_height"], sizes["latent_width"])
    module = WindowStepModule(
        models.pose_guider,
        models.motion_encoder,
        models.denoising_unet,
        step_decoder(models, config),
        StaggeredDDIM(config.scheduler, config.generation),
        [s.name for s in specs],
    )
    set_decoder_layout(module.vae, channels_last_decoder)
    # the networks already sit on the models' device; this moves the step's own buffers (DDIM coefficients)
    device = getattr(models, "device", None)
    return module if device is None else module.to(device=device)


def step_decoder(models: Any, config: RunConfig) -> nn.Module:
    """The autoencoder whose decoder the step runs: the VAE, or for ``model.decoder=taesd`` TAESD, loaded on first
    use from the weights directory's ``taesd/`` into ``models.taesd`` (the reference is still encoded by the VAE)."""
    if str(config.model.decoder) != "taesd":
        return models.vae
    if getattr(models, "taesd", None) is None:
        from pathlib import Path

        from personalive.models.taesd import TAESD_DIR, load_taesd

        models.taesd = load_taesd(Path(models.weights_dir) / TAESD_DIR, models.dtype, models.device)
    return models.taesd


def unet_config(models: Any) -> dict:
    """The UNets' ``config.json`` (the layout's ``sd-image-variations-diffusers/unet``) of a model set."""
    return dict(models.sizes.unet)


def tensor_sizes(models: Any, config: RunConfig) -> dict[str, int]:
    """Image, latent and pose-canvas sizes for ``config`` (canvas = latent x the pose guider's downscale)."""
    vae_factor = 2 ** (len(models.vae.config.block_out_channels) - 1)
    g = config.generation
    lh, lw = g.height // vae_factor, g.width // vae_factor
    down = models.pose_guider.downscale_factor
    return {
        "height": g.height,
        "width": g.width,
        "latent_height": lh,
        "latent_width": lw,
        "canvas_height": lh * down,
        "canvas_width": lw * down,
        "latent_channels": int(models.vae.config.latent_channels),
        "pose_channels": int(unet_config(models)["block_out_channels"][0]),
        "embedding_dim": int(unet_config(models)["cross_attention_dim"]),
        "motion_tokens": int(models.motion_encoder.num_tokens),
        "motion_channels": int(models.motion_encoder.token_channels),
    }


def window_input_names(models: Any, config: RunConfig) -> list[str]:
    """Input names in ``WindowStepModule.forward`` order: ``STATE_INPUT_NAMES`` then the reference features."""
    s = tensor_sizes(models, config)
    specs = reference_feature_specs(unet_config(models), s["latent_height"], s["latent_width"])
    return [*STATE_INPUT_NAMES, *(spec.name for spec in specs)]


def example_window_inputs(
    models: Any,
    config: RunConfig,
    device: torch.device,
    dtype: torch.dtype,
    num_keyframes: int = 0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Random window inputs at realistic magnitudes (for export, engine profiles and verification).

    Latents ~ N(0, 1); pose canvases drawn from random keypoints (values in [0, 1]); face crops uniform in
    [-1, 1]; motion tokens at RMS 40 like the motion encoder's; reference keys/values ~ N(0, 1) with
    ``1 + num_keyframes`` reference images' tokens.
    """
    g = generator if generator is not None else torch.Generator(device).manual_seed(0)
    s = tensor_sizes(models, config)
    gen = config.generation
    w, p = gen.window, (gen.adaptive_steps - 1) * gen.window
    lh, lw, lc = s["latent_height"], s["latent_width"], s["latent_channels"]
    face = FACE_CROP_SIZE

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(shape, generator=g, device=device, dtype=torch.float32) * scale).to(dtype)

    keypoints = (torch.rand((w, NUM_KEYPOINTS, 3), generator=g, device=device) * 2 - 1) * 0.8
    canvas = draw_keypoints(keypoints, s["canvas_height"], s["canvas_width"])  # (W, 3, Hc, Wc)
    inputs = {
        "latents": randn(1, lc, gen.adaptive_steps * w, lh, lw),
        "pose_cond_fea": randn(1, s["pose_channels"], p, lh, lw, scale=0.5),
        "pose": canvas.permute(1, 0, 2, 3)[None].to(dtype),
        "motion_hidden_states": randn(1, p, s["motion_tokens"], s["motion_channels"], scale=MOTION_TOKEN_RMS),
        "motion": (torch.rand((1, 3, w, face, face), generator=g, device=device) * 2 - 1).to(dtype),
        "encoder_hidden_states": randn(1, 1, s["embedding_dim"]),
        "new_latents": randn(1, lc, w, lh, lw),
    }
    for spec in reference_feature_specs(unet_config(models), lh, lw):
        inputs[spec.name] = randn(1, spec.tokens * (1 + num_keyframes), spec.kv_channels)
    return inputs
