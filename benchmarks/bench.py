"""Time the window step and the whole streaming run at full size on a CUDA GPU, with random weights.

    python -m benchmarks.bench --weights /tmp/pw-full --init --backends eager,compile --frames 64 --json out.json

``--init`` writes full-size random weights in the official layout first (fp16, ~7 GB). Timings use CUDA events
after warm-up; medians are reported. Random weights make the picture meaningless but cost the same arithmetic
as the release: every shape, kernel and byte moved is the real one.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import torch

from personalive.backends import backend_class
from personalive.config import load_config
from personalive.environment import cuda_devices, torch_dtype, versions
from personalive.pipeline.animate import Animator
from personalive.pipeline.window import example_window_inputs
from personalive.random_weights import init_random_weights
from personalive.weights import load_models

log = logging.getLogger("benchmarks.bench")


def time_cuda(fn, warmup: int, iters: int) -> list[float]:
    """Milliseconds per call, CUDA events around each call, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def bench_step(models, config, device, dtype, backend: str, keyframes: int, warmup: int, iters: int) -> dict:
    step = backend_class(backend).from_models(models, config, device)
    inputs = example_window_inputs(models, config, device, dtype, num_keyframes=keyframes)
    t0 = time.perf_counter()
    step(inputs)
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    times = time_cuda(lambda: step(inputs), warmup, iters)
    median = statistics.median(times)
    window = config.generation.window
    return {
        "backend": backend,
        "keyframes": keyframes,
        "first_call_s": round(first, 2),
        "median_ms": round(median, 2),
        "min_ms": round(min(times), 2),
        "max_ms": round(max(times), 2),
        "step_fps": round(1000 * window / median, 1),
    }


def synthetic_frames(n: int, size: int, device) -> list[torch.Tensor]:
    """A moving bright blob on a gradient: enough structure for keypoints and crops to vary."""
    g = torch.Generator("cpu").manual_seed(0)
    base = (torch.rand((size, size, 3), generator=g) * 255).to(torch.uint8)
    frames = []
    for i in range(n):
        frames.append(torch.roll(base, shifts=(i * 3, i * 2), dims=(0, 1)))
    return frames


def bench_animate(models, config, device, dtype, backend: str, frames: int) -> dict:
    step = backend_class(backend).from_models(models, config, device)
    animator = Animator(models, config, step)
    size = config.generation.height
    ref = synthetic_frames(1, size, device)[0]
    driving = synthetic_frames(frames, size, device)
    reference = animator.fuse_reference(ref)
    # warm-up run (compilation, cuDNN autotuning), then the timed one
    for _ in animator.animate(reference, driving[: 4 * config.generation.window]):
        pass
    animator = Animator(models, config, step)
    reference = animator.fuse_reference(ref)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    count = sum(1 for _ in animator.animate(reference, driving, generator=torch.Generator(device).manual_seed(0)))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    stats = animator.stats
    return {
        "backend": backend,
        "frames": count,
        "seconds": round(seconds, 2),
        "fps": round(count / seconds, 2),
        "conditioning_s": round(stats.conditioning, 2),
        "denoising_s": round(stats.denoising, 2),
        "keyframes_added": animator.keyframes_added,
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--init", action="store_true", help="write full-size random weights there first")
    parser.add_argument("--dtype", default="fp16")
    parser.add_argument("--backends", default="eager,compile")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--keyframes", default="0,3")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    if not torch.cuda.is_available():
        raise SystemExit("benchmarks.bench needs a CUDA GPU")
    device = torch.device("cuda:0")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    if args.init and not (args.weights / "personalive" / "denoising_unet.pth").is_file():
        t0 = time.perf_counter()
        init_random_weights(args.weights, size="full", seed=0)
        log.info("wrote full-size random weights in %.0f s", time.perf_counter() - t0)
    dtype = torch_dtype(args.dtype)
    config = load_config(options={"model.dtype": args.dtype, "model.weights_dir": str(args.weights)})
    t0 = time.perf_counter()
    models = load_models(args.weights, dtype, device)
    load_s = time.perf_counter() - t0

    result = {"device": cuda_devices()[0], "versions": versions(), "dtype": args.dtype, "load_s": round(load_s, 1)}
    result["step"], result["animate"] = [], []
    for backend in args.backends.split(","):
        for k in (int(x) for x in args.keyframes.split(",")):
            row = bench_step(models, config, device, dtype, backend, k, args.warmup, args.iters)
            log.info("step %s", row)
            result["step"].append(row)
        row = bench_animate(models, config, device, dtype, backend, args.frames)
        log.info("animate %s", row)
        result["animate"].append(row)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(f"device: {result['device']['name']}  dtype: {args.dtype}  torch {result['versions']['torch']}")
    print(f"{'backend':<10}{'keyframes':>10}{'median ms/window':>18}{'frames/s (step)':>17}")
    for row in result["step"]:
        print(f"{row['backend']:<10}{row['keyframes']:>10}{row['median_ms']:>18}{row['step_fps']:>17}")
    print(f"{'backend':<10}{'frames':>8}{'seconds':>9}{'fps':>7}{'peak GiB':>10}  (end to end, {args.frames} frames)")
    for row in result["animate"]:
        print(f"{row['backend']:<10}{row['frames']:>8}{row['seconds']:>9}{row['fps']:>7}{row['peak_gpu_gib']:>10}")


if __name__ == "__main__":
    main()
