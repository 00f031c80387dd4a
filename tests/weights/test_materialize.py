"""Networks built without initialisation put every buffer on the target device, even one made from host data."""

from __future__ import annotations

import torch

from personalive.models.motion_encoder_fan import PatchEmbed
from personalive.weights.materialize import build_empty


def test_buffers_made_from_numpy_follow_the_target_device():
    # the motion encoder's sin-cos table comes from numpy (torch.from_numpy ignores the device context); on the
    # H200 it stayed on the CPU while every other tensor went to cuda:0. 'meta' stands in for a second device here
    module = build_empty(lambda: PatchEmbed(64, 16, 3, 32), torch.device("meta"), torch.float16)
    assert module.pos_embed.device.type == "meta"
    assert module.proj.weight.device.type == "meta"
    assert module.pos_embed.dtype == torch.float16
