"""The denoising UNet: PersonaLive's 3D UNet that predicts the noise of a window of frames.

It is upstream's ``UNet3DConditionModel`` as built by ``from_pretrained_2d`` from the image-variations UNet config
plus ``unet_additional_kwargs`` (``inference_stage3.yaml``): an SD 1.x UNet applied per frame, whose transformers also
attend to the reference features, with a motion module (cross-attention to motion tokens) and a temporal module
(attention over frames) after every layer. Parameter names and shapes equal upstream's, so ``denoising_unet.pth`` +
``temporal_module.pth`` load strictly. Unlike upstream, the reference features are a forward argument (a list in
:func:`~personalive.models.reference_features.reference_feature_specs` order) and each frame has its own timestep.
The window step passes them already projected to each block's keys and values (:meth:`DenoisingUNet.project_reference`,
once per reference image), ``reference_kv``; raw features (``reference_features``) are projected on every call.
"""

from __future__ import annotations

import logging

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from personalive.errors import ConfigError, PersonaLiveError
from personalive.models.attention_3d import per_frame, project_reference
from personalive.models.motion_module import MotionAttention
from personalive.models.reference_features import reference_feature_specs, transformer_layout
from personalive.models.unet_3d_blocks import BlockSettings, DownBlock3D, FrameContext, MidBlock3D, UpBlock3D

__all__ = ["DenoisingUNet", "build_denoising_unet", "motion_cross_attention_modules"]

logger = logging.getLogger(__name__)

# The UNet options this implementation reproduces; any other value of these keys changes the network.
_REQUIRED = {
    "center_input_sample": False,
    "class_embed_type": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "dual_cross_attention": False,
    "upcast_attention": False,
}
_REQUIRED_EXTRA = {
    "use_inflated_groupnorm": True,
    "unet_use_cross_frame_attention": False,
    "unet_use_temporal_attention": False,
}


def _check_options(unet_config: dict, extra: dict) -> None:
    for key, expected in _REQUIRED.items():
        if unet_config.get(key, expected) != expected:
            raise ConfigError(f"unet/config.json: {key}={unet_config[key]!r} is not supported; expected {expected!r}")
    for key, expected in _REQUIRED_EXTRA.items():
        if bool(extra.get(key, expected)) != expected:
            raise ConfigError(
                f"unet_additional_kwargs.{key}={extra[key]!r} is not supported; the release uses {expected!r}"
            )
    if unet_config.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise ConfigError(f"unet/config.json: mid_block_type={unet_config['mid_block_type']!r} is not supported")


class DenoisingUNet(nn.Module):
    """Noise prediction for a window of F frames at per-frame timesteps.

    Build it with :func:`build_denoising_unet`. Internally frames are folded into the batch, (B*F, C, H, W).
    """

    def __init__(self, unet_config: dict, unet_additional_kwargs: dict) -> None:
        super().__init__()
        cfg, extra = dict(unet_config), dict(unet_additional_kwargs)
        _check_options(cfg, extra)
        self.unet_config, self.unet_additional_kwargs = cfg, extra
        channels = list(cfg["block_out_channels"])
        settings = _block_settings(cfg, extra)
        self.conv_in = nn.Conv2d(int(cfg.get("in_channels", 4)), channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(
            channels[0], bool(cfg.get("flip_sin_to_cos", True)), float(cfg.get("freq_shift", 0))
        )
        self.time_embedding = TimestepEmbedding(channels[0], settings.temb_channels)
        # upstream registers up_blocks before mid_block (module order down, up, mid); kept for identical iteration
        self.down_blocks, self.up_blocks, self.mid_block = _build_blocks(cfg, extra, settings)
        self.conv_norm_out = nn.GroupNorm(settings.groups, channels[0], eps=settings.eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], int(cfg.get("out_channels", 4)), kernel_size=3, padding=1)
        self.reference_channels = [c for _, _, c, _ in transformer_layout(cfg)]

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    def _frame_timesteps(self, timestep: torch.Tensor | float, batch: int, frames: int) -> torch.Tensor:
        # float32 on purpose: the sinusoidal embedding needs exact timesteps (bf16 cannot hold 999); it is cast after
        t = torch.as_tensor(timestep, device=self.conv_in.weight.device).to(torch.float32).reshape(-1)
        if t.numel() == 1:
            return t.expand(batch * frames)
        if t.numel() == frames:
            return t.repeat(batch)
        if t.numel() == batch * frames:
            return t
        raise PersonaLiveError(
            f"timestep must be a scalar, (F,) or (B*F,) with B={batch}, F={frames}; got {t.numel()}"
        )

    def reference_attentions(self) -> list[Attention]:
        """The self-attention (``attn1``) of every spatial transformer, in reference_feature_specs order."""
        blocks = [*self.down_blocks, self.mid_block, *self.up_blocks]
        return [
            transformer.transformer_blocks[0].attn1
            for block in blocks
            for transformer in (getattr(block, "attentions", None) or [])
            if transformer is not None
        ]

    def project_reference(self, reference_features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Raw reference features (B, R, C) per block -> that block's ``[keys | values]`` (B, R, 2C).

        What ``forward`` takes as ``reference_kv``. Token-wise, so the projection of features concatenated along
        the token axis (reference + history keyframes) is the concatenation of their projections.
        """
        attentions = self.reference_attentions()
        if len(reference_features) != len(attentions):
            raise PersonaLiveError(
                f"reference_features: expected {len(attentions)} tensors in reference_feature_specs order, "
                f"got {len(reference_features)}"
            )
        return [project_reference(attn, ref) for attn, ref in zip(attentions, reference_features, strict=True)]

    def _check_references(
        self,
        references: list[torch.Tensor],
        height: int,
        width: int,
        what: str = "reference_features",
        factor: int = 1,
    ) -> None:
        if len(references) != len(self.reference_channels):
            raise PersonaLiveError(
                f"{what}: expected {len(self.reference_channels)} tensors in reference_feature_specs "
                f"order, got {len(references)}"
            )
        for i, (ref, channels) in enumerate(zip(references, self.reference_channels, strict=True)):
            if ref.ndim != 3 or ref.shape[-1] != channels * factor:
                raise PersonaLiveError(
                    f"{what}[{i}]: expected (B, tokens, {channels * factor}), got {tuple(ref.shape)}"
                )
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return  # token counts depend on the latent size, which may be symbolic while tracing
        specs = reference_feature_specs(self.unet_config, height, width)
        for ref, spec in zip(references, specs, strict=True):
            if ref.shape[1] % spec.tokens:
                raise PersonaLiveError(
                    f"reference feature {spec.name}: {ref.shape[1]} tokens is not a multiple of {spec.tokens}, the "
                    f"count for {height}x{width} latents; extract the reference features at the sample's latent size"
                )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        motion_hidden_states: torch.Tensor,
        pose_cond_fea: torch.Tensor | None = None,
        reference_features: list[torch.Tensor] | None = None,
        reference_kv: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Predict the noise of ``sample``.

        sample (B, 4, F, h, w); timestep scalar, (F,) or (B*F,); encoder_hidden_states (B, 1, D) CLIP image embedding;
        motion_hidden_states (B, F, M, Dm) motion tokens; pose_cond_fea (B, C0, F, h, w) pose guider output;
        reference_features: per transformer block (B, tokens * (1 + keyframes), C), in reference_feature_specs
        order, or None for none; or instead ``reference_kv``, the same projected by :meth:`project_reference`
        (B, tokens * (1 + keyframes), 2C), which is what the window step passes.
        Returns (B, out_channels, F, h, w) in the module's dtype.
        """
        batch, _, frames, height, width = sample.shape
        dtype = self.dtype
        if reference_features is not None and reference_kv is not None:
            raise PersonaLiveError("pass reference_features or reference_kv, not both")
        references = None
        if reference_features is not None and len(reference_features) > 0:
            self._check_references(reference_features, height, width)
            references = self.project_reference(reference_features)
        elif reference_kv is not None and len(reference_kv) > 0:
            self._check_references(reference_kv, height, width, "reference_kv", factor=2)
            references = [kv.to(dtype) for kv in reference_kv]

        # 1. per-frame conditioning, frames folded into the batch: (B*F, ...)
        t_emb = self.time_proj(self._frame_timesteps(timestep, batch, frames)).to(dtype)
        ctx = FrameContext(
            temb=self.time_embedding(t_emb),
            image_tokens=per_frame(encoder_hidden_states.to(dtype), frames),
            motion_tokens=motion_hidden_states.to(dtype).reshape(batch * frames, *motion_hidden_states.shape[2:]),
            num_frames=frames,
        )

        # 2. input: (B, C, F, h, w) -> (B*F, C, h, w)
        hidden_states = self.conv_in(_fold(sample.to(dtype)))
        if pose_cond_fea is not None:
            hidden_states = hidden_states + _fold(pose_cond_fea.to(dtype))

        # 3. down, mid, up; each cross-attention block takes its share of the reference features in order
        cursor = 0

        def take(block: nn.Module) -> list[torch.Tensor] | None:
            nonlocal cursor
            count = len(block.attentions)
            chunk = references[cursor : cursor + count] if references is not None else None
            cursor += count
            return chunk

        skips: tuple[torch.Tensor, ...] = (hidden_states,)
        for block in self.down_blocks:
            hidden_states, block_skips = block(hidden_states, ctx, take(block))
            skips += block_skips
        hidden_states = self.mid_block(hidden_states, ctx, take(self.mid_block))
        upsample_factor = 2 ** (len(self.up_blocks) - 1)
        odd_size = height % upsample_factor != 0 or width % upsample_factor != 0
        for block in self.up_blocks:
            count = len(block.resnets)
            block_skips, skips = skips[-count:], skips[:-count]
            size = tuple(skips[-1].shape[-2:]) if odd_size and block.upsamplers is not None else None
            hidden_states = block(hidden_states, block_skips, ctx, take(block), size)

        # 4. output head, back to (B, C, F, h, w)
        hidden_states = self.conv_out(self.conv_act(self.conv_norm_out(hidden_states)))
        return hidden_states.reshape(batch, frames, *hidden_states.shape[1:]).transpose(1, 2)


def _block_settings(cfg: dict, extra: dict) -> BlockSettings:
    return BlockSettings(
        temb_channels=int(cfg["block_out_channels"][0]) * 4,
        eps=float(cfg.get("norm_eps", 1e-5)),
        groups=int(cfg.get("norm_num_groups", 32)),
        act_fn=cfg.get("act_fn", "silu"),
        cross_attention_dim=int(cfg["cross_attention_dim"]),
        use_linear_projection=bool(cfg.get("use_linear_projection", False)),
        resnet_time_scale_shift=cfg.get("resnet_time_scale_shift", "default"),
        motion_module_type=extra.get("motion_module_type", "Vanilla"),
        motion_module_kwargs=dict(extra.get("motion_module_kwargs", {})),
        temporal_module_type=extra.get("temporal_module_type", "Vanilla"),
        temporal_module_kwargs=dict(extra.get("temporal_module_kwargs", {})),
    )


def _build_blocks(cfg: dict, extra: dict, settings: BlockSettings) -> tuple[nn.ModuleList, nn.ModuleList, MidBlock3D]:
    """Down, up and mid blocks as upstream's UNet3DConditionModel builds them from the 2D config."""
    channels = list(cfg["block_out_channels"])
    depth, layers = len(channels), int(cfg.get("layers_per_block", 2))
    heads = cfg.get("attention_head_dim", 8)  # diffusers' SD configs name the number of heads this way
    heads = [heads] * depth if isinstance(heads, int) else list(heads)
    use_motion, use_temporal = bool(extra.get("use_motion_module")), bool(extra.get("use_temporal_module"))
    # motion/temporal modules sit where the resolution divisor 2**level is in motion_module_resolutions
    resolutions = set(extra.get("motion_module_resolutions", (1, 2, 4, 8)))
    decoder_only = bool(extra.get("motion_module_decoder_only", False))
    down = nn.ModuleList()
    for i, block_type in enumerate(cfg["down_block_types"]):
        here = 2**i in resolutions and not decoder_only
        down.append(
            DownBlock3D(
                settings,
                channels[max(i - 1, 0)],
                channels[i],
                layers,
                heads[i] if "CrossAttn" in block_type else None,
                add_downsample=i < depth - 1,
                downsample_padding=int(cfg.get("downsample_padding", 1)),
                motion=use_motion and here,
                temporal=use_temporal and here,
            )
        )
    up = nn.ModuleList()
    rev_channels, rev_heads = channels[::-1], heads[::-1]
    for i, block_type in enumerate(cfg["up_block_types"]):
        here = 2 ** (depth - 1 - i) in resolutions
        up.append(
            UpBlock3D(
                settings,
                in_channels=rev_channels[min(i + 1, depth - 1)],
                prev_output_channels=rev_channels[max(i - 1, 0)],
                out_channels=rev_channels[i],
                num_layers=layers + 1,
                heads=rev_heads[i] if "CrossAttn" in block_type else None,
                add_upsample=i < depth - 1,
                motion=use_motion and here,
                temporal=use_temporal and here,
            )
        )
    in_mid = bool(extra.get("motion_module_mid_block", False))
    mid_scale = float(cfg.get("mid_block_scale_factor", 1.0))
    mid = MidBlock3D(
        settings, channels[-1], heads[-1], mid_scale, motion=use_motion and in_mid, temporal=use_temporal and in_mid
    )
    return down, up, mid


def _fold(x: torch.Tensor) -> torch.Tensor:
    # (B, C, F, H, W) -> (B*F, C, H, W)
    b, c, f, h, w = x.shape
    return x.transpose(1, 2).reshape(b * f, c, h, w)


def build_denoising_unet(unet_config: dict, unet_additional_kwargs: dict) -> DenoisingUNet:
    """The denoising UNet from the 2D UNet config.json dict and ``unet_additional_kwargs``, without weights."""
    return DenoisingUNet(unet_config, unet_additional_kwargs)


def motion_cross_attention_modules(model: nn.Module) -> list[Attention]:
    """The motion modules' cross-attentions to the motion tokens (the only consumers of those tokens)."""
    return [m for m in model.modules() if isinstance(m, MotionAttention) and m.is_cross_attention]
