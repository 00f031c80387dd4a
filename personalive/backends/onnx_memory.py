"""How much host memory checking an ONNX graph of the window step on onnxruntime's CPU provider takes, up front.

onnxruntime runs the exported graph's attention as MatMul -> Softmax -> MatMul, so it materialises every score
matrix: per spatial self-attention, (frames x heads) matrices of ``tokens x tokens * (2 + keyframes)`` entries
(the frame's own tokens, the reference image's and each history keyframe's). PyTorch's reference uses fused
attention and never holds them. At 512x512 the first down block has 64 x 64 = 4096 tokens, so one such tensor is
16 frames x 8 heads x 4096 x 8192 x 4 bytes = 17 GiB with no keyframe, whatever the channel widths (the tiny
random UNet has the same heads and token counts as the real one). The kernel's out-of-memory killer then ends
the check with no message (exit 137); :func:`check_verify_memory` refuses before loading anything instead.

The estimate: the graph's weights twice (the ONNX model proto and the session's initialisers are alive together
while the session is created) plus ``SCORE_COPIES`` score tensors of the largest attention (scores and their
softmax are alive together), plus a fixed margin for everything else. Measured on the tiny graph at 192x192
(onnxruntime 1.32, CPU provider, the session options of verify-engine): peak minus loaded session 813 MiB with
no keyframe and 1819 MiB with 3, for score tensors of 324 and 810 MiB: 2.07 copies; a full-size fp32 graph at
256x256 with 1 keyframe peaked at 15.5 GB (7.2 GB of weights, 2 x 1.6 GB of scores).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from personalive.errors import PersonaLiveError

log = logging.getLogger(__name__)

SCORE_COPIES = 2.2  # score-sized tensors alive at the peak: 2.07 measured (see the module docstring)
MARGIN_BYTES = 1 << 30  # activations, the inputs and outputs of the draws, the interpreter, the libraries
GIB = 1 << 30


class MemoryCheckError(PersonaLiveError):
    """The check would not fit in this machine's memory."""


def heads_per_block(unet_config: dict) -> int:
    """The largest number of attention heads of any transformer block (diffusers' SD configs call it
    ``attention_head_dim``; an int or one value per block)."""
    heads = unet_config.get("attention_head_dim", 8)
    return int(max(heads)) if isinstance(heads, (list, tuple)) else int(heads)


def largest_attention_elements(
    unet_config: dict, latent_height: int, latent_width: int, frames: int, keyframes: int
) -> int:
    """Entries of the largest self-attention score tensor of one UNet call (frames x heads x q x kv)."""
    from personalive.models.reference_features import reference_feature_specs

    heads = heads_per_block(unet_config)
    specs = reference_feature_specs(unet_config, latent_height, latent_width)
    tokens = max(spec.tokens for spec in specs)
    return frames * heads * tokens * tokens * (2 + keyframes)


def verify_memory_bytes(
    unet_config: dict,
    *,
    height: int,
    width: int,
    vae_factor: int,
    frames: int,
    keyframes: int,
    element_bytes: int,
    weight_bytes: int,
) -> int:
    """Estimated peak host memory of an onnxruntime CPU check of the window step (see the module docstring)."""
    scores = largest_attention_elements(unet_config, height // vae_factor, width // vae_factor, frames, keyframes)
    return int(2 * weight_bytes + SCORE_COPIES * scores * element_bytes + MARGIN_BYTES)


def available_memory_bytes() -> int | None:
    """Memory this process can still take: MemAvailable, capped by a cgroup (v2 or v1) limit; None if unknown."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text.isdigit() and int(limit_text) < 1 << 60:  # "max" or a huge number means no limit
            room = int(limit_text) - usage
            available = room if available is None else min(available, room)
        break
    if available is None and hasattr(os, "sysconf"):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    return available


def check_verify_memory(path: str | Path, needed: int, available: int | None, *, height: int, width: int) -> None:
    """Raise MemoryCheckError when ``needed`` exceeds ``available``; say what fits instead."""
    if available is None:
        log.warning("cannot read the available memory; the check needs about %.1f GiB", needed / GIB)
        return
    log.info("onnxruntime check needs about %.1f GiB, %.1f GiB available", needed / GIB, available / GIB)
    if needed <= available:
        return
    # attention memory grows with the 4th power of the side: the largest square size that fits
    scale = math.sqrt(math.sqrt(max(available - MARGIN_BYTES, 1) / needed))
    side = max(64, int(min(height, width) * scale) // 64 * 64)
    raise MemoryCheckError(
        f"{path}: checking this graph on onnxruntime's CPU provider needs about {needed / GIB:.1f} GiB of memory "
        f"at {height}x{width} (attention score matrices), {available / GIB:.1f} GiB is available; export and "
        f"verify at a smaller size (build-engine --onnx-only --height {side} --width {side}), with fewer history "
        "keyframes (--max-keyframes), or run verify-engine on a machine with onnxruntime's CUDA provider "
        "(onnxruntime-gpu) and --device cuda"
    )
