"""Where a process's first reference fusion and first window step spend their time, against the second ones.

    python -m benchmarks.first_reference --weights DIR --out FILE.json [--device cuda] [--backend eager]

Loads the networks and the backend as ``personalive animate`` does (``jobs.load_animators``), then fuses a random
512x512 reference twice and runs the window step (3 keyframes' worth of reference features, the pipeline's own
inputs) twice, the first of each under ``torch.profiler``. Rows: seconds of each call, and for the first calls the
operators with the most host time (self) and the CUDA runtime calls with the most time: what the ~1.8 s
reference and ~1.5 s first window of the H200 measurements are made of (cuDNN's plan choice per convolution
shape, kernel loading, allocator growth).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def _top(prof, key: str, top: int = 25, runtime: bool = False) -> list[dict]:
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: -getattr(e, key))[: top * 4]:
        is_runtime = e.key.startswith("cu")
        if is_runtime != runtime:
            continue
        rows.append({"name": e.key[:90], "ms": round(getattr(e, key) / 1e3, 1), "count": e.count})
        if len(rows) == top:
            break
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--backend", default="eager")
    p.add_argument("--engine", default=None)
    p.add_argument(
        "--size", type=int, default=512, help="the generation's height and width (smaller: a CPU smoke test)"
    )
    args = p.parse_args()
    from personalive.config import load_config
    from personalive.environment import apply_cudnn_setting, torch_dtype
    from personalive.jobs import load_animators
    from personalive.pipeline.window import example_window_inputs

    device = torch.device(args.device)
    dtype = torch_dtype("fp16" if device.type == "cuda" else "fp32")
    options = {"model.weights_dir": str(args.weights), "runtime.backend": args.backend, "runtime.device": str(device)}
    options["model.dtype"] = "fp16" if dtype == torch.float16 else "fp32"
    options["generation.height"] = options["generation.width"] = args.size
    if args.engine:
        options["runtime.engine"] = args.engine
    config = load_config(options=options)
    apply_cudnn_setting(device, config.runtime.cudnn_benchmark)
    t0 = time.perf_counter()
    animator = load_animators(config, device, dtype)(config)
    result: dict = {"load_s": round(time.perf_counter() - t0, 2), "backend": args.backend}
    if device.type == "cuda":
        result["card"] = torch.cuda.get_device_name(device)
    image = torch.full((args.size, args.size, 3), 128, dtype=torch.uint8)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)

    def timed(fn, profile: bool):
        sync()
        start = time.perf_counter()
        if profile:
            with torch.profiler.profile(activities=activities) as prof:
                fn()
                sync()
        else:
            fn()
            sync()
            prof = None
        return round(time.perf_counter() - start, 3), prof

    for what, fn in (
        ("reference", lambda: animator.fuse_reference(image)),
        (
            "step",
            lambda: animator.step(
                example_window_inputs(animator.models, config, device, animator.models.dtype, num_keyframes=3)
            ),
        ),
    ):
        first, prof = timed(fn, profile=True)
        second, _ = timed(fn, profile=False)
        third, _ = timed(fn, profile=False)
        result[what] = {
            "first_s_profiled": first,
            "second_s": second,
            "third_s": third,
            "top_ops_self_host": _top(prof, "self_cpu_time_total"),
            "top_runtime_calls": _top(prof, "self_cpu_time_total", runtime=True),
        }
        print(json.dumps({k: v for k, v in result[what].items() if not k.startswith("top")} | {"what": what}))
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
