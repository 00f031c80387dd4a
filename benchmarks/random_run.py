"""The set-up the job-body benchmarks share: random networks on the device and the run options that fit them."""

from __future__ import annotations

from typing import Any

import torch


def random_run(size: str, device_name: str, weights: Any = None) -> tuple[Any, torch.device, dict[str, Any]]:
    """Random ``size`` networks (fp16 on CUDA, fp32 elsewhere), the device, and the matching config overrides
    (dtype, device; the tiny networks' own resolution at ``tiny``). cuDNN autotuning as the product's default
    ``runtime.cudnn_benchmark`` (off: on an H200 it chose kernels no faster than the heuristics' and cost the first
    calls ~6 s, call R of the seventh session)."""
    from personalive.config import RuntimeConfig
    from personalive.environment import apply_cudnn_setting
    from personalive.random_weights import random_models

    device = torch.device(device_name)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    apply_cudnn_setting(device, RuntimeConfig().cudnn_benchmark)
    if weights is None:
        models = random_models(size, device, dtype)
    else:  # from files, as the product loads them (an engine tied to their hash can run)
        from personalive.weights import load_models

        models = load_models(weights, dtype, device)
    options: dict[str, Any] = {
        "model.dtype": "fp16" if dtype == torch.float16 else "fp32",
        "runtime.device": str(device),
    }
    if weights is not None:
        options["model.weights_dir"] = str(weights)
    if size == "tiny":
        options |= {"generation.height": models.sizes.height, "generation.width": models.sizes.width}
    return models, device, options
