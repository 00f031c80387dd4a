"""How long dynamo's tracing of the denoising UNet takes: the whole network as one region, or block by block.

    python -m benchmarks.compile_tracing --out FILE.json [--size full|tiny] [--device cpu] [--latent 8]

A warm second process of ``--backend compile`` spends most of its start in dynamo's tracing, which no cache spares
(call AP of the fourteenth session: 23.5 s of 33.4 s, the UNet 24.6 s of it). Regional compilation -- each residual,
attention, motion and temporal module compiled on its own -- traces a block class once per distinct input shape
and reuses it for the other instances (their parameters are graph inputs), so it should trace far less. This script
measures both with a backend that returns the traced graph unchanged (no AOTAutograd, no inductor): what is timed is
dynamo alone, device-independent (fake tensors), at full channel widths on a small latent (``--latent`` x
``--latent``) so that the CPU runs the graphs quickly. Each variant: the first call (tracing + running) minus the
second call (running), the number of graphs traced, and the largest relative difference of its output from the
uncompiled UNet's. Reference-feature token axis: 0 keyframes only (the product marks it dynamic).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from personalive.backends.regions import unet_regions  # the product's regions

log = logging.getLogger("benchmarks.compile_tracing")


class GraphCounter:
    """A dynamo backend that runs the traced graph as it is and counts the graphs."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> Any:
        self.graphs += 1
        return gm.forward


def sample(out: Any) -> torch.Tensor:
    """The UNet's output tensor, whether it returns a tuple, an output object or the tensor itself."""
    return out[0] if isinstance(out, tuple) else getattr(out, "sample", out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", default="full")
    p.add_argument("--device", default="cpu")
    p.add_argument("--latent", type=int, default=8)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from benchmarks.random_run import random_run
    from personalive.config import load_config
    from personalive.pipeline.window import build_window_module, example_window_inputs

    models, device, options = random_run(args.size, args.device)
    side = args.latent * 8
    config = load_config(options=options | {"generation.height": side, "generation.width": side})
    module = build_window_module(models, config)
    with torch.inference_mode():
        inputs = example_window_inputs(models, config, device, models.dtype, num_keyframes=0)
    unet = module.denoising_unet
    captured: dict[str, tuple] = {}

    def capture(mod, call_args, call_kwargs):  # the UNet's own arguments in one window step
        captured.setdefault("call", (call_args, call_kwargs))

    handle = unet.register_forward_pre_hook(capture, with_kwargs=True)
    with torch.inference_mode():
        module(*(inputs[n] for n in module.input_names))
    handle.remove()
    call_args, call_kwargs = captured["call"]

    def time_call(fn) -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        with torch.inference_mode():
            out = fn(*call_args, **call_kwargs)
        return time.perf_counter() - start, sample(out)

    plain_s, ref = time_call(unet)
    result: dict[str, Any] = {"size": args.size, "latent": args.latent, "torch": torch.__version__, "rows": []}
    torch._dynamo.config.cache_size_limit = 256  # one code object per block class, one entry per shape
    for variant in ("whole", "regional"):
        torch._dynamo.reset()
        counter = GraphCounter()
        if variant == "whole":
            fn = torch.compile(unet, backend=counter, dynamic=False)
        else:
            for m in unet_regions(unet):
                m.compile(backend=counter, dynamic=False)
            fn = unet
        first_s, out = time_call(fn)
        second_s, _ = time_call(fn)
        if variant == "regional":
            for m in unet_regions(unet):
                m._compiled_call_impl = None  # back to the plain module
        row = {
            "variant": variant,
            "tracing_s": round(first_s - second_s, 2),
            "first_call_s": round(first_s, 2),
            "second_call_s": round(second_s, 2),
            "graphs": counter.graphs,
            "max_rel_diff": float(((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()),
        }
        log.info("%s", row)
        result["rows"].append(row)
    result["uncompiled_call_s"] = round(plain_s, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
