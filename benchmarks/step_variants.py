"""The eager step's fast-path rewrites on and off, timed in one process, with the output deviation between them.

    python -m benchmarks.step_variants --out FILE.json [--size full|tiny] [--device cuda|cpu] [--rounds 4]

Variants (the networks' weights are shared; only the code path differs):

* ``fast``: the product (split GEGLU projections, reference keys/values appended per frame without an
  intermediate copy, the VAE's attention output back in NCHW, contiguous / frame-major tokens in the transformers
  with their 1x1 convolutions as matmuls);
* ``before``: diffusers' GEGLU forward, the per-frame copy then the concatenation, diffusers' attention processor
  in the VAE, the transformers' permuted token views and convolutions (the code before the sixth session).

For 0 and 3 keyframes: plain eager (the flag set before each round of calls) and with CUDA graphs (one capture
per variant: the kernels are fixed at capture). Rounds alternate the variants, so a GPU shared with another job
slows both alike; CUDA-event medians over all rounds. The deviation of ``fast`` from ``before`` (fp16 on the GPU)
is reported for the decoded frames and the next latents.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
from pathlib import Path

import torch

log = logging.getLogger("benchmarks.step_variants")


@contextlib.contextmanager
def before(module: torch.nn.Module):
    """The code path before the fast-path rewrites, for the duration of the block."""
    from personalive.models import attention_3d
    from personalive.models.feed_forward import SplitGEGLU

    def old_append(tokens, shared, frames):
        return torch.cat([tokens, attention_3d.per_frame(shared, frames)], dim=1)

    from diffusers.models.attention_processor import AttnProcessor2_0

    from personalive.models.attention_3d import SpatialTransformer
    from personalive.models.motion_module import TemporalTransformer
    from personalive.models.vae import NCHWAttnProcessor

    layouts = [m for m in module.modules() if isinstance(m, (SpatialTransformer, TemporalTransformer))]
    gegl = [m for m in module.modules() if isinstance(m, SplitGEGLU)]
    saved = attention_3d._append_per_frame
    attention_3d._append_per_frame = old_append
    for m in gegl:
        m.split = False
    module.vae.set_attn_processor(AttnProcessor2_0())
    for m in layouts:
        m.fast_layout = False
    try:
        yield
    finally:
        attention_3d._append_per_frame = saved
        for m in gegl:
            m.split = True
        module.vae.set_attn_processor(NCHWAttnProcessor())
        for m in layouts:
            del m.fast_layout  # back to the class default


def timed_ms(fn, device: torch.device, iters: int) -> list[float]:
    """``iters`` calls, ms each, on the product's benchmark clock (CUDA events on a GPU)."""
    from personalive.bench import Clock

    clock = Clock(device)
    return [1000 * clock.time(fn) for _ in range(iters)]


def deviation(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """max|a - b| / max|b|, as ``verify-engine`` measures it."""
    from personalive.backends.verify import OutputReport, update_report

    report = OutputReport("output")
    update_report(report, actual, reference)
    return report.rel


def compare(module, inputs: dict, device: torch.device, graphs: bool, rounds: int, iters: int) -> dict:
    """Deviation of ``fast`` from ``before``, then both timed in alternating rounds, plain and (CUDA) graphed."""
    from personalive.backends.eager import EagerWindowStep

    plain = EagerWindowStep(module)
    fast_out = plain(inputs)
    with before(module):
        before_out = plain(inputs)
    row = {
        "deviation_frames": deviation(fast_out["frames"], before_out["frames"]),
        "deviation_next_latents": deviation(fast_out["next_latents"], before_out["next_latents"]),
    }
    graphed = {}
    if graphs:  # one capture per variant: the replayed kernels are fixed at capture
        graphed["fast"] = EagerWindowStep(module, cuda_graphs=True)
        graphed["fast"](inputs)
        with before(module):
            graphed["before"] = EagerWindowStep(module, cuda_graphs=True)
            graphed["before"](inputs)
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name in ("fast", "before"):
            with before(module) if name == "before" else contextlib.nullcontext():
                plain(inputs)  # this path's warm-up
                times.setdefault(name, []).extend(timed_ms(lambda: plain(inputs), device, iters))
            if name in graphed:
                step = graphed[name]
                times.setdefault(f"{name}+graphs", []).extend(timed_ms(lambda: step(inputs), device, iters))  # noqa: B023
    for name, values in times.items():
        row[f"{name}_ms"] = round(statistics.median(values), 2)
    row["n_per_variant"] = rounds * iters
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from benchmarks.random_run import random_run
    from personalive.config import load_config
    from personalive.pipeline.window import build_window_module, example_window_inputs

    models, device, options = random_run(args.size, args.device)
    config = load_config(options={**options, "runtime.cuda_graphs": "off"})
    module = build_window_module(models, config).eval()
    dtype = next(module.denoising_unet.parameters()).dtype
    result: dict = {"torch": torch.__version__, "rows": []}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))

    graphs = device.type == "cuda"
    for keyframes in (0, 3):
        g = torch.Generator(device).manual_seed(keyframes)
        inputs = example_window_inputs(models, config, device, dtype, num_keyframes=keyframes, generator=g)
        with torch.inference_mode():
            row = {"keyframes": keyframes, **compare(module, inputs, device, graphs, args.rounds, args.iters)}
        result["rows"].append(row)
        log.info("%s", row)
        save()
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
