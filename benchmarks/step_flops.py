"""The window step's arithmetic, counted exactly: FLOPs by network and by operator, and the bytes of its weights.

Runs on the CPU in seconds without weights: the full-size networks are built on the meta device (shapes only) and
one window step runs under ``torch.utils.flop_counter.FlopCounterMode`` at 0..3 keyframes, with the attention
over the joined keys (what the compiled, precompiled and AOTInductor steps trace). From the counts and a rate per
kind of operator (``--rates``), a floor on the window's GPU time: what no kernel choice can beat at those rates.

    python benchmarks/step_flops.py [--size full] [--keyframes 0 3] [--decoder vae|taesd] [--json out.json]

Default rates are H200 fp16 figures from this project's measurements (RESULTS.md): dense matmul ~790 TFLOP/s (the
issue's figure for a large matmul), attention 277 TFLOP/s (cuDNN's kernel on the top-level reference attention at
3 keyframes, call AG: 5 calls of 1.72 TFLOP in 31 ms; head size 40 is padded to 64 inside it).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger("step_flops")

# operator -> kind; anything else FlopCounterMode counts is reported under its own name
KINDS = {
    "convolution": "convolution",
    "_convolution": "convolution",
    "conv2d": "convolution",
    "conv3d": "convolution",
    "mm": "matmul",
    "addmm": "matmul",
    # the only batched matmuls of the step are attention's (SDPA decomposed on the meta device)
    "bmm": "attention",
    "baddbmm": "attention",
    "_scaled_dot_product_efficient_attention": "attention",
    "_scaled_dot_product_flash_attention": "attention",
    "_scaled_dot_product_cudnn_attention": "attention",
    "_scaled_dot_product_flash_attention_for_cpu": "attention",
}
DEFAULT_RATES = {"matmul": 790e12, "convolution": 790e12, "attention": 277e12}
NETWORKS = ("pose_guider", "motion_encoder", "denoising_unet", "vae")


def build_meta_models(size: str, decoder: str):
    """The step's networks at ``size`` on the meta device, in a stand-in for ``ModelSet`` (no weights read)."""
    from personalive.random_weights import sizes_for
    from personalive.weights.load import build_network

    sizes = sizes_for(size)
    models = SimpleNamespace(sizes=sizes, device=torch.device("meta"), dtype=torch.float16, taesd=None)
    with torch.device("meta"):
        for name in NETWORKS:
            setattr(models, name, build_network(name, sizes).eval().to(torch.float16))
        if decoder == "taesd":
            from personalive.models.taesd import TAESD_FULL, TAESD_TINY, build_taesd

            models.taesd = build_taesd(TAESD_FULL if size == "full" else TAESD_TINY).eval().to(torch.float16)
    return models


def count(models, config, keyframes: int) -> dict:
    """FLOPs of one window step at ``keyframes``: total, by top-level network, by operator kind."""
    from personalive.models import attention_kernels
    from personalive.pipeline.window import build_window_module, example_window_inputs

    module = build_window_module(models, config)
    cpu = example_window_inputs(models, config, torch.device("cpu"), torch.float16, num_keyframes=keyframes)
    inputs = {name: tensor.to("meta") for name, tensor in cpu.items()}
    was = attention_kernels.enabled
    attention_kernels.enabled = False  # the joined keys, as the compiled steps trace it
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*inputs.values())
    finally:
        attention_kernels.enabled = was
    counts = counter.get_flop_counts()
    by_network: dict[str, float] = {}
    for name in NETWORKS:
        # a network called through a method (the VAE's decode) has no entry of its own: its shallowest submodules'
        base = f"{type(module).__name__}.{name}"
        inside = [k for k in counts if k == base or k.startswith(base + ".")]
        if inside:
            depth = min(k.count(".") for k in inside)
            by_network[name] = float(sum(sum(counts[k].values()) for k in inside if k.count(".") == depth))
    by_kind: dict[str, float] = defaultdict(float)
    for op, flops in counts["Global"].items():
        name = str(op).split(".")[1] if "." in str(op) else str(op)
        by_kind[KINDS.get(name, name)] += float(flops)
    return {"total": float(sum(counts["Global"].values())), "by_network": by_network, "by_kind": dict(by_kind)}


def floor_ms(by_kind: dict[str, float], rates: dict[str, float]) -> float:
    """Milliseconds the counted FLOPs need at ``rates`` (a kind without a rate at the matmul rate)."""
    return sum(flops / rates.get(kind, rates["matmul"]) for kind, flops in by_kind.items()) * 1e3


def main(argv: list[str] | None = None) -> dict:
    from personalive.config import RunConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="full", choices=("tiny", "full"))
    parser.add_argument("--keyframes", type=int, nargs="+", default=[0, 3])
    parser.add_argument("--decoder", default="vae", choices=("vae", "taesd"))
    parser.add_argument("--rates", type=json.loads, default=DEFAULT_RATES, help="JSON {kind: FLOP/s}")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = RunConfig()
    config.model.decoder = args.decoder
    if args.size == "tiny":
        config.generation.height = config.generation.width = 128
    models = build_meta_models(args.size, args.decoder)
    result: dict = {"size": args.size, "decoder": args.decoder, "rates": args.rates, "keyframes": {}}
    for k in args.keyframes:
        c = count(models, config, k)
        c["floor_ms"] = floor_ms(c["by_kind"], args.rates)
        result["keyframes"][k] = c
        log.info(
            "%d keyframes: %.2f TFLOP (%s); by kind %s; floor at the rates %.1f ms a window",
            k,
            c["total"] / 1e12,
            ", ".join(f"{n} {v / 1e12:.2f}" for n, v in c["by_network"].items()),
            ", ".join(f"{n} {v / 1e12:.2f}" for n, v in sorted(c["by_kind"].items())),
            c["floor_ms"],
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
