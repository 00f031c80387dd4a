"""The eager backend with and without CUDA graphs, on one GPU, full-size random weights built in memory.

    python -m benchmarks.graphs_gpu --out DIR [--size full|tiny] [--device cuda|cpu] [--video-frames 300]

Rows (``OUT/graphs.json``): the window step plain and replayed from CUDA graphs (0 and 3 keyframes); the largest
relative difference between the two on fresh draws (0, 1, 3 keyframes: a replay must read its new inputs); the
same with the TAESD decoder; the stream over ``--frames`` device frames and the animate job body on a generated
clip (PyAV decode and encode, audio) with graphs, whose frames per second set against the step alone is issue 12's
end-to-end figure. ``--weights DIR`` also writes the random weights there (official layout, fp16, + taesd/).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

log = logging.getLogger("benchmarks.graphs_gpu")


def max_relative(a: dict, b: dict) -> dict:
    """max|a - b| / max|b| per output (the verify-engine measure)."""
    out = {}
    for name, ref in b.items():
        ref32, got = ref.float(), a[name].float()
        out[name] = float((got - ref32).abs().max() / ref32.abs().max().clamp_min(1e-12))
    return out


def main() -> None:
    from personalive import bench
    from personalive.backends.eager import EagerWindowStep
    from personalive.config import load_config
    from personalive.environment import cuda_devices, versions
    from personalive.pipeline.window import example_window_inputs
    from personalive.random_weights import random_models, save_layout

    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", default="full")
    p.add_argument("--device", default="cuda")
    p.add_argument("--frames", type=int, default=96)
    p.add_argument("--video-frames", type=int, default=300)
    p.add_argument("--iters", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--weights", type=Path, default=None, help="also write the random weights here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    from personalive.config import RuntimeConfig

    torch.backends.cudnn.benchmark = RuntimeConfig().cudnn_benchmark  # as the product runs
    results: dict = {"card": cuda_devices(), "versions": versions(), "date": time.strftime("%Y-%m-%d %H:%M UTC")}
    path = args.out / "graphs.json"

    def save(key: str, value) -> None:
        results[key] = value
        log.info("%s: %s", key, json.dumps(value, default=str)[:400])
        path.write_text(json.dumps(results, indent=1, default=str) + "\n")

    start = time.perf_counter()
    models = random_models(args.size, device, dtype)
    bench.Clock(device).sync()
    save("random_build_s", round(time.perf_counter() - start, 2))
    if args.weights:
        from personalive.models.taesd import write_random_taesd

        start = time.perf_counter()
        save_layout(models, args.weights)
        write_random_taesd(args.weights / "taesd", size=args.size, seed=0)
        models.weights_dir = args.weights  # where the step finds taesd/ for model.decoder=taesd
        save("weights_written_s", round(time.perf_counter() - start, 2))
    extra = {"model.dtype": "fp16" if dtype == torch.float16 else "fp32", "runtime.device": str(device)}
    if args.size == "tiny":
        extra |= {"generation.height": models.sizes.height, "generation.width": models.sizes.width}

    def config(graphs: bool, decoder: str = "vae"):
        return load_config(
            options={**extra, "runtime.cuda_graphs": "on" if graphs else "off", "model.decoder": decoder}
        )

    if args.weights:  # TAESD is read from the weights folder by the step
        extra["model.weights_dir"] = str(args.weights)
    options = bench.BenchOptions(random=args.size, frames=args.frames, iters=args.iters, warmup=args.warmup)
    for decoder, counts in (("vae", (0, 3)), ("taesd", (0,))):
        if decoder == "taesd" and not args.weights:
            continue
        for graphs in (False, True):
            rows = [bench.measure_step(models, config(graphs, decoder), device, options, k) for k in counts]
            save(f"step_{decoder}_{'graphs' if graphs else 'plain'}", rows)
        plain = EagerWindowStep.from_models(models, config(False, decoder), device)
        graphed = EagerWindowStep.from_models(models, config(True, decoder), device)
        generator = torch.Generator(device).manual_seed(123)
        worst: dict = {}
        for k in (0, 1, 3, 0):
            inputs = example_window_inputs(models, config(False, decoder), device, dtype, k, generator)
            for name, value in max_relative(graphed(inputs), plain(inputs)).items():
                worst[name] = max(worst.get(name, 0.0), value)
        save(f"graphs_vs_plain_{decoder}", {"max_relative": worst, "graphs": len(graphed.graphed.graphs)})
        del plain, graphed
    for graphs in (False, True):
        step = EagerWindowStep.from_models(models, config(graphs), device)
        save(
            f"stream_{'graphs' if graphs else 'plain'}",
            bench.measure_stream(models, config(graphs), device, options, step),
        )
    if args.video_frames:
        step = EagerWindowStep.from_models(models, config(True), device)
        video = bench.BenchOptions(**{**vars(options), "video_frames": args.video_frames})
        save("video_graphs", bench.measure_video(models, config(True), device, video, step))
    save("peak_host_gib", bench.peak_host_gib())


if __name__ == "__main__":
    main()
