"""The one contract of the per-window denoising step, shared by the eager, compiled and TensorRT backends.

A window step takes the state of the stream after window ``i - 1`` plus the ``window`` new driving frames'
conditioning inputs, runs the pose guider and motion encoder on the new frames, the denoising UNet (once per
DDIM jump) over ``adaptive_steps x window`` latent frames at staggered noise levels, the DDIM step, and the VAE
decode of the ``window`` frames that reached t=0; it returns the decoded frames and the state for window
``i + 1``. Everything is a tensor with a fixed name, so the same inputs can be bound by name to a TensorRT
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
``ref_<block>`` x 16       (B, L_i * (1 + K), C_i)               reference features (K history keyframes)
=========================  ====================================  =============================================

The pose canvas is (Hc, Wc) = (h, w) * 2 ** (stride-2 stages of the pose guider): the image size for the
released guider (8x), 512 for the oracle's tiny guider at 128x128 (32x); see upstream deviation 3.

The reference-feature names, their order and their shapes come from one function,
:func:`personalive.models.reference_features.reference_feature_specs`, used by the model, the export, the
engine profile and the runtime.

Outputs:

=============================  ============================  =================================================
``frames``                     (B, W, 3, H, W_img) in [0,1]  the decoded frames that reached t=0 (oldest first)
``clean_latents``              (B, 4, W, h, w)               their predicted clean latents (keyframe source)
``next_latents``               (B, 4, A*W, h, w)             the shifted window with ``new_latents`` appended
``next_pose_cond_fea``         (B, C0, P, h, w)              pose features for the next window
``next_motion_hidden_states``  (B, P, 32, 16)                motion tokens for the next window
``new_motion_hidden_states``   (B, W, 32, 16)                the new frames' motion tokens (keyframe bank)
=============================  ============================  =================================================

The timesteps of the staggered schedule are constants of a step (derived from the config), not inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

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


class WindowStep(Protocol):
    """Anything that runs one window: ``outputs = step(inputs)``, both dicts of tensors keyed by name.

    ``inputs`` holds every name of :data:`STATE_INPUT_NAMES` plus the reference-feature names; the result holds
    every name of :data:`OUTPUT_NAMES`. Implementations must not keep references to the input tensors after
    returning (the caller reuses them) and must run on the caller's current CUDA stream.
    """

    name: str

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...
