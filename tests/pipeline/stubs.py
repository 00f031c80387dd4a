"""Small stand-in networks with the real ones' signatures, so that the window loop's logic tests run in ms.

Each stand-in depends on its inputs (so motion, pose and keyframes change the output) and is deterministic.
"""

from __future__ import annotations

from collections import namedtuple
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

UNET = {
    "block_out_channels": [8, 8],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1,
    "cross_attention_dim": 8,
}


class StubVAE(nn.Module):
    config = SimpleNamespace(scaling_factor=0.5, block_out_channels=[4, 4, 4, 4], latent_channels=4)
    dtype = torch.float32

    def encode(self, x):  # (B, 3, H, W) -> (B, 4, H/8, W/8)
        z = F.avg_pool2d(x, 8)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=torch.cat([z, z.mean(1, keepdim=True)], 1)))

    def decode(self, z):
        return SimpleNamespace(sample=torch.tanh(F.interpolate(z[:, :3], scale_factor=8.0)))


Decoded = namedtuple("Decoded", "sample")


class FullGraphStubVAE(StubVAE):
    """Its decode returns a namedtuple, which dynamo traces into one graph (a SimpleNamespace breaks the graph). Not
    the default: with it, inductor's FX graphs of the compile backend's decode missed the cache in a new process
    (test_compile_cache_engine), with the SimpleNamespace they hit."""

    def decode(self, z):
        return Decoded(torch.tanh(F.interpolate(z[:, :3], scale_factor=8.0)))  # StubVAE's picture


class StubPoseGuider(nn.Module):
    downscale_factor = 4

    def forward(self, canvas):  # (B, 3, F, Hc, Wc) -> (B, 8, F, Hc/4, Wc/4)
        b, c, f, h, w = canvas.shape
        x = F.avg_pool2d(canvas.transpose(1, 2).reshape(b * f, c, h, w), 4)
        return x.repeat(1, 3, 1, 1)[:, :8].reshape(b, f, 8, h // 4, w // 4).transpose(1, 2)


class StubMotionEncoder(nn.Module):
    num_tokens, token_channels = 32, 16

    def forward(self, faces):  # (B, 3, F, 224, 224) -> (B, F, 32, 16), RMS ~40 like the real one
        pooled = F.adaptive_avg_pool2d(faces.transpose(1, 2).flatten(0, 1), (16, 16))  # (B*F, 3, 16, 16)
        tokens = pooled.flatten(1)[:, :512].reshape(-1, 32, 16) * 60
        return tokens.reshape(faces.shape[0], faces.shape[2], 32, 16)


class StubMotionExtractor(nn.Module):
    def forward(self, images):  # (B, 3, 256, 256) in [0, 1]
        b = images.shape[0]
        m = images.mean(dim=(1, 2, 3))
        bins = torch.arange(66, dtype=images.dtype)
        logits = -((bins[None] - 33 - 20 * (m[:, None] - 0.5)) ** 2) / 8
        kp = torch.linspace(-0.3, 0.3, 63).repeat(b, 1)
        t = torch.stack([m - 0.5, 0.5 - m, m * 0], dim=1) * 0.2
        return {
            "pitch": logits,
            "yaw": logits * 0.5,
            "roll": logits * 0.2,
            "t": t,
            "scale": 1 + 0 * m[:, None],
            "kp": kp,
        }


class StubImageEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 8)

    def forward(self, pixels):
        return SimpleNamespace(image_embeds=self.proj(pixels.mean(dim=(2, 3))))


class StubReferenceExtractor(nn.Module):
    """latents (B, 4, h, w) -> features in reference_feature_specs(UNET) order: down0_0, mid_0, up1_0, up1_1."""

    def forward(self, latents, embeddings):
        full = latents.flatten(2).transpose(1, 2)  # (B, h*w, 4)
        half = F.avg_pool2d(latents, 2).flatten(2).transpose(1, 2)
        full, half = full.repeat(1, 1, 2), half.repeat(1, 1, 2)
        return [full, half, full * 0.5, full * 0.25]


class StubUNet(nn.Module):
    def project_reference(self, features):  # (B, R, C) -> (B, R, 2C), token-wise like the real projection
        return [torch.cat([f, 2 * f], dim=-1) for f in features]

    def forward(self, sample, timestep, embeddings, motion, pose, reference_kv):
        feature_term = sum(f.mean() for f in reference_kv) / len(reference_kv)
        motion_term = motion.mean(dim=(2, 3))[:, None, :, None, None] / 40  # (B, 1, F, 1, 1)
        t = timestep.to(sample.dtype).view(1, 1, -1, 1, 1) / 1000
        return 0.5 * sample + 0.1 * pose[:, :4] + 0.1 * motion_term + 0.05 * feature_term + 0.01 * t


def stub_models(full_graph: bool = False):
    """The stand-ins; ``full_graph``: a VAE whose decode dynamo traces whole (:class:`FullGraphStubVAE`)."""
    torch.manual_seed(0)
    return SimpleNamespace(
        reference_unet=StubReferenceExtractor(),
        denoising_unet=StubUNet(),
        pose_guider=StubPoseGuider(),
        motion_encoder=StubMotionEncoder(),
        motion_extractor=StubMotionExtractor(),
        vae=FullGraphStubVAE() if full_graph else StubVAE(),
        image_encoder=StubImageEncoder(),
        sizes=SimpleNamespace(unet=UNET),
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
