"""One GPU session: upstream's speed and ours, every variant, in one call; one JSON file out.

    python3 benchmarks/gpu_session.py --out $OUT [--upstream-cmd "..."] [--old-tree DIR] [--size full|tiny]

In order (each part guarded: a failure is recorded and the session goes on):

1. upstream: ``--upstream-cmd`` (``../shared/oracle/bench_gpu.py`` in its own environment), in a subprocess;
2. ours, one process, full-size random weights built on the device once: the window step with the exact savings on
   and off (0 and 3 keyframes), with channels_last, a profile of one step; the stream over ``--frames`` device frames
   with overlap on and off; the ``animate`` job body on a generated ``--video-frames`` clip (640x480, 29.97 fps,
   audio);
3. the weights written to disk, then the whole ``personalive animate`` command, timed from outside, with this tree
   and (``--old-tree``) with the tree before these changes.

Writes ``session.json`` (and ``session.log``) under ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

log = logging.getLogger("gpu_session")
ROOT = Path(__file__).resolve().parents[1]


def guarded(results: dict, key: str, fn, *args, **kwargs):
    start = time.perf_counter()
    try:
        value = fn(*args, **kwargs)
        results[key] = value
        log.info("%s (%.1f s): %s", key, time.perf_counter() - start, json.dumps(value, default=str)[:600])
        return value
    except Exception as exc:  # noqa: BLE001 - recorded; the session goes on
        results[key] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        log.error("%s failed: %s", key, exc)
        return None


def run_upstream(command: str, timeout: int) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout)
    out = {"rc": proc.returncode, "seconds": round(time.perf_counter() - start, 1), "tail": proc.stdout[-4000:]}
    if proc.returncode:
        out["stderr"] = proc.stderr[-3000:]
    return out


def profile_step(step, inputs, device) -> dict:
    """Top kernels of one window step by device time, and the share of coarse groups."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        step(inputs)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step(inputs)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]  # kernels, not the ops launching them
    total = sum(e.self_device_time_total for e in events) or 1.0
    groups: dict[str, float] = {}
    patterns = {
        "attention": ("flash", "fmha", "attention", "sdpa", "cudnn_attn"),
        "gemm": ("gemm", "cutlass", "sm90_xmma", "matmul", "addmm", "_mm"),
        "convolution": ("conv", "implicit", "cudnn", "winograd", "nchw", "nhwc"),
        "norm": ("norm", "welford"),
        "copy/cat/layout": ("copy", "cat", "transpose", "permute", "contiguous", "elementwise_kernel_with_index"),
    }
    for e in events:
        name = e.key.lower()
        group = next((g for g, keys in patterns.items() if any(k in name for k in keys)), "other elementwise")
        groups[group] = groups.get(group, 0.0) + e.self_device_time_total
    top = sorted(events, key=lambda e: -e.self_device_time_total)[:25]
    # host-bound or not: how long the host takes to queue one step, against the step's time on the device
    host, whole = [], []
    for _ in range(5):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step(inputs)
        host.append(time.perf_counter() - start)
        torch.cuda.synchronize()
        whole.append(time.perf_counter() - start)
    return {
        "host_queue_ms": round(1000 * sorted(host)[2], 1),
        "host_and_device_ms": round(1000 * sorted(whole)[2], 1),
        "device_ms": round(total / 1000, 2),
        "groups_pct": {k: round(100 * v / total, 1) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "top": [[e.key[:90], round(e.self_device_time_total / 1000, 3), e.count] for e in top],
        "kernel_launches": sum(e.count for e in events),
    }


def ours(results: dict, args) -> None:
    from personalive import bench
    from personalive.backends import backend_class
    from personalive.config import load_config
    from personalive.environment import cuda_devices, versions
    from personalive.pipeline.window import example_window_inputs
    from personalive.random_weights import random_models, save_layout

    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    from personalive.config import RuntimeConfig

    torch.backends.cudnn.benchmark = RuntimeConfig().cudnn_benchmark  # as the product runs
    results["card"] = cuda_devices()
    results["versions"] = versions()
    start = time.perf_counter()
    models = random_models(args.size, device, dtype)
    bench.Clock(device).sync()
    results["random_build_s"] = round(time.perf_counter() - start, 2)
    extra = {"model.dtype": "fp16" if dtype == torch.float16 else "fp32", "runtime.device": str(device)}
    if args.size == "tiny":
        extra |= {"generation.height": models.sizes.height, "generation.width": models.sizes.width}
    config = load_config(options=extra)
    options = bench.BenchOptions(random=args.size, frames=args.frames, iters=args.iters, warmup=args.warmup)

    def steps(**changes) -> list:
        opts = bench.BenchOptions(**{**vars(options), **changes})
        return [bench.measure_step(models, config, device, opts, k) for k in opts.keyframes]

    guarded(results, "step_savings_on", steps)
    bench.set_exact_savings(models, False)
    guarded(results, "step_savings_off", steps, savings=False)
    bench.set_exact_savings(models, True)
    if device.type == "cuda":
        step = backend_class("eager").from_models(models, config, device)
        inputs = example_window_inputs(models, config, device, dtype)
        guarded(results, "profile_step", profile_step, step, inputs, device)
    step = backend_class("eager").from_models(models, config, device)
    guarded(results, "stream_overlap_on", bench.measure_stream, models, config, device, options, step)
    no_overlap = bench.BenchOptions(**{**vars(options), "overlap": False})
    guarded(results, "stream_overlap_off", bench.measure_stream, models, config, device, no_overlap, step)
    if args.video_frames:
        video = bench.BenchOptions(**{**vars(options), "video_frames": args.video_frames})
        guarded(results, "video", bench.measure_video, models, config, device, video, step)
    if device.type == "cuda":
        bench.use_channels_last(models)
        guarded(results, "step_channels_last", steps, keyframes=(0,))
        for name in ("denoising_unet", "vae", "pose_guider"):
            getattr(models, name).to(memory_format=torch.contiguous_format)
    if args.weights_dir:
        guarded(results, "save_layout_s", lambda: _timed(save_layout, models, Path(args.weights_dir)))


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return round(time.perf_counter() - start, 2)


def animate_command(tree: Path, weights: Path, frames: int, tag: str, timeout: int) -> dict:
    """The whole ``personalive animate`` command in a fresh process, timed from outside (loading included)."""
    from personalive.bench import write_clip

    folder = Path(tempfile.mkdtemp(prefix=f"animate-{tag}-"))
    clip = write_clip(folder / "drive.mp4", frames, 640, 480)
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(1).integers(0, 256, (480, 480, 3), dtype=np.uint8)).save(folder / "r.png")
    env = {**os.environ, "PYTHONPATH": f"{os.environ.get('SITE', '/tmp/site')}:{tree}"}
    cmd = [
        sys.executable,
        "-c",
        "import sys; from personalive.cli import main; sys.argv[0] = 'personalive'; main()",
        *("animate", "--ref", str(folder / "r.png"), "--drive", str(clip), "-o", str(folder / "out.mp4")),
        *("--weights", str(weights), "--report", str(folder / "report.json")),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    out = {"tree": str(tree), "rc": proc.returncode, "seconds": round(seconds, 2), "stderr": proc.stderr[-2500:]}
    if (folder / "report.json").is_file():
        report = json.loads((folder / "report.json").read_text())
        keep = ("frames", "seconds", "fps", "timings", "peak_gpu_memory_mib", "peak_host_memory_mib", "load_s")
        out["report"] = {k: report.get(k) for k in keep}
    return out


LOAD_SNIPPET = """
import json, resource, sys, time, torch
from personalive.weights import load_models
device = torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')
torch.zeros(1, device=device)  # CUDA context first: it is not the loader's memory
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
models = load_models(sys.argv[1], torch.float16 if device.type == 'cuda' else torch.float32, device)
if device.type == 'cuda':
    torch.cuda.synchronize()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({'seconds': round(seconds, 2), 'host_before_gib': round(base / 2**20, 2),
                  'host_peak_above_gib': round((peak - base) / 2**20, 2)}))
"""


def load_timing(tree: Path, weights: Path, timeout: int) -> dict:
    """load_models of the whole set in a fresh process (warm page cache): seconds and host memory above baseline."""
    env = {**os.environ, "PYTHONPATH": f"{os.environ.get('SITE', '/tmp/site')}:{tree}"}
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_SNIPPET, str(weights)], env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode:
        return {"tree": str(tree), "rc": proc.returncode, "stderr": proc.stderr[-2000:]}
    return {"tree": str(tree), **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", default="full")
    p.add_argument("--frames", type=int, default=96)
    p.add_argument("--iters", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--video-frames", type=int, default=300)
    p.add_argument("--upstream-cmd", default="")
    p.add_argument("--upstream-timeout", type=int, default=240)
    p.add_argument("--skip-upstream", action="store_true", help="a second call: upstream measured in the first")
    p.add_argument("--weights-dir", default="")
    p.add_argument("--old-tree", default="")
    p.add_argument("--animate-frames", type=int, default=300)
    p.add_argument("--animate-timeout", type=int, default=150)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "session.log")],
    )
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    path = args.out / "session.json"

    def save() -> None:
        path.write_text(json.dumps(results, indent=1, default=str) + "\n")

    if args.upstream_cmd and not args.skip_upstream:
        guarded(results, "upstream", run_upstream, args.upstream_cmd, args.upstream_timeout)
        save()
    guarded(results, "ours", lambda: ours(results, args) or "done")
    gc.collect()  # the models die with ours(); give their memory back before the animate processes
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    save()
    if args.weights_dir:
        weights = Path(args.weights_dir)
        guarded(results, "load_new", load_timing, ROOT, weights, args.animate_timeout)
        if args.old_tree:
            guarded(results, "load_old", load_timing, Path(args.old_tree), weights, args.animate_timeout)
        save()
        guarded(
            results, "animate_new", animate_command, ROOT, weights, args.animate_frames, "new", args.animate_timeout
        )
        save()
        if args.old_tree:
            old = Path(args.old_tree)
            guarded(
                results, "animate_old", animate_command, old, weights, args.animate_frames, "old", args.animate_timeout
            )
            save()
    save()


if __name__ == "__main__":
    main()
