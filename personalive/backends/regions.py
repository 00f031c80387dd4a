"""Regional compilation: the denoising UNet compiled block by block instead of as one graph.

Why: a second process of ``--backend compile`` finds every kernel in inductor's cache but still pays dynamo's
tracing of each network, which no cache spares; for the whole UNet that was 24.6 s of a 33.4 s warm start on an
H200's host (call AP, fourteenth session). The UNet repeats a few block shapes: compiled one region at a time --
each ResNet, spatial transformer, motion and temporal module and each down/upsampler -- dynamo traces one graph per
(class, input shapes) and reuses it for every other instance of that class and shape, whose parameters are graph
inputs. On the 2-core CPU at full size that traced the UNet in 16.1 s instead of 47.3 s, with 36 graphs
(``benchmarks/compile_tracing.py``). The code between the regions (time embedding, skips, the output head) runs
eagerly; on a GPU the step is replayed from CUDA graphs, so its launches cost nothing there.

The regions are compiled on a copy of the UNet that shares its parameters and buffers: the networks of a model set
are shared by every backend built from it (``verify-engine`` compares against an eager step of the same networks),
and ``nn.Module.compile`` would otherwise change them for all.
"""

from __future__ import annotations

import copy
import itertools
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

# the lists of a UNet block whose modules are compiled one by one (each present in some blocks only)
REGION_LISTS = ("resnets", "attentions", "motion_modules", "temporal_modules", "downsamplers", "upsamplers")


def unet_regions(unet: nn.Module) -> list[nn.Module]:
    """Every compiled region of a denoising UNet, in call order within each block; none for a network without the
    UNet's blocks (the stand-in networks of tests)."""
    if not all(hasattr(unet, name) for name in ("down_blocks", "mid_block", "up_blocks")):
        return []
    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    return [m for b in blocks for name in REGION_LISTS for m in getattr(b, name, None) or () if m is not None]


def shared_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module``'s structure holding the very same parameter and buffer tensors (no memory copied)."""
    memo = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, memo)


def compile_unet_regions(unet: nn.Module, mode: str | None) -> nn.Module:
    """A parameter-sharing copy of ``unet`` with each region compiled (inductor ``mode``, static shapes except the
    axes the caller marks dynamic: the reference features' token axis reaches the spatial transformers as the
    very tensors the window step marked)."""
    clone = shared_copy(unet)
    regions = unet_regions(clone)
    if not regions:  # no blocks: the network is its own one region
        return torch.compile(unet, mode=mode, dynamic=False)
    for region in regions:
        region.compile(mode=mode, dynamic=False)
    # dynamo keeps one cache entry per input shapes under each class's forward: the ResNets' alone took 16 at full
    # size (call AT), past its default limit of 8, beyond which it would run the rest uncompiled
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), len(regions) + 16))
    log.debug("compiling %d UNet regions one by one", len(regions))
    return clone
