"""What the GPU waits for in the animate job body: its idle gaps attributed to what the host was doing then.

    python -m benchmarks.loop_profile --out FILE.json [--size full|tiny] [--device cuda] [--frames 48]
        [--timed-frames 300] [--variants media.encode_process=off,media.encode_process=on] [--video-size 640x480]
        [--weights DIR] [--no-profile]

``--weights DIR`` loads the networks from files as the product does (needed for ``runtime.backend=aoti``, whose
package is tied to the weights' hash; a variant ``runtime.backend=aoti+runtime.engine=PATH`` runs it); without it
they are random, in memory. The timed run also records a CUDA event pair around every labelled stage: in a loop
where the GPU never waits, an event pair's elapsed time is the GPU time of the work the stage queued, so
``gpu_ms_by_stage`` says what the GPU spends each window on (the step, conditioning's networks, the copies).

For each variant (one configuration override, ``key=value``): the job body (PyAV decode, animate, encode, atomic
write; as in ``personalive bench``) runs once to warm up (cuDNN autotuning, captures, the pinned-memory pool) on
``--frames`` frames, once timed without the profiler on ``--timed-frames``, then once under ``torch.profiler`` on
``--frames`` with the host's stages labelled on the main thread (the labels are put on here, by wrapping the
pipeline's functions: the product carries no profiling code; the profiler does not see the decode and encode
threads' labels, whose times are the job's own ``decode`` / ``encode`` clocks). From the trace, over the window
loop only:

* the GPU's busy time (the union of its kernels' and copies' intervals) against the loop's wall time;
* every gap of over 0.2 ms between GPU work, attributed to the innermost labelled stage the main thread was in at
  the gap's middle ("no label": the generator glue, frame conversion);
* CUDA runtime calls by total time (launches, event and stream waits, copies, pinned allocations);
* host time per labelled stage on the main thread.

The profiler slows the host (every op is recorded), so the absolute times are inflated; the unprofiled run's
seconds are the timing, the profile says where the time goes. On a CPU there are no GPU events and the GPU rows
are empty: the smoke test only checks that the script runs.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("benchmarks.loop_profile")
GAP_MS = 0.2


EVENTS: list | None = None  # (label, start event, end event) while a timed run records GPU time by stage


def _labelled(fn: Callable, label: str) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if EVENTS is None:
            with torch.profiler.record_function(label):
                return fn(*args, **kwargs)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        try:
            return fn(*args, **kwargs)
        finally:
            end.record()
            EVENTS.append((label, start, end))

    return wrapper


def gpu_ms_by_stage(events: list) -> dict[str, dict]:
    torch.cuda.synchronize()
    table: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for label, start, end in events:
        table[label][0] += start.elapsed_time(end)
        table[label][1] += 1
    return {k: {"ms": round(v[0], 1), "count": v[1], "mean_ms": round(v[0] / v[1], 2)} for k, v in table.items()}


@contextmanager
def labels() -> Iterator[None]:
    """Wrap the pipeline's host stages in profiler labels (``#`` marks ours), undone on exit."""
    from personalive import realworld
    from personalive.backends.aoti import AOTIStep
    from personalive.backends.eager import EagerWindowStep
    from personalive.backends.graphs import GraphedStep
    from personalive.media import resize
    from personalive.pipeline import animate, driving, keypoints

    targets = [
        (realworld, "fit_to_model", "#fit frame to model"),
        (animate.Animator, "_prepare", "#prepare driving (motion extractor, boxes, crops)"),
        (driving.DrivingPreparer, "prepare", "#prepare driving, job (frames to device, motion extractor, crops)"),
        (resize, "_to_device", "#frame to device (pinned)"),
        (animate._StreamState, "window", "#window (build inputs + step + to host)"),
        (animate._StreamState, "_canvases", "#pose canvases"),
        (animate._StreamState, "_noised_reference", "#noise"),
        (animate._StreamState, "decide_keyframe", "#keyframe decision"),
        (animate._StreamState, "_add_keyframe", "#keyframe add"),
        (keypoints, "animated_keypoints", "#animated keypoints"),
        (animate, "_to_host", "#to host"),
        (EagerWindowStep, "__call__", "#step"),
        (AOTIStep, "__call__", "#step (aoti)"),
        (GraphedStep, "__call__", "#graphed step"),
        (realworld.Outputs, "frame", "#output frame"),
        (torch.cuda.Event, "synchronize", "#wait: frames copied"),
    ]
    saved = []
    for owner, name, label in targets:
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        saved.append((owner, name, original))
        setattr(owner, name, _labelled(original, label))
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def _gpu(e: Any) -> bool:
    return e.device_type.name in ("CUDA", "PrivateUse1")


def analyse(events: list[Any]) -> dict[str, Any]:
    """The loop's GPU busy share, its idle gaps by host stage, runtime calls and host stage times."""
    windows = [e for e in events if e.name.startswith("#window")]
    if not windows:
        return {"error": "no window labels recorded"}
    lo = min(e.time_range.start for e in windows)
    hi = max(e.time_range.end for e in windows)
    main_thread = windows[0].thread
    gpu = sorted((e.time_range.start, e.time_range.end) for e in events if _gpu(e) and lo <= e.time_range.start <= hi)
    busy, gaps, end = 0.0, [], lo
    for start, stop in gpu:
        if start > end:
            gaps.append((end, start))
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    if hi > end:
        gaps.append((end, hi))
    # the main thread's labelled ranges, innermost found by the latest start among those covering a moment
    ranges = sorted(
        (e.time_range.start, e.time_range.end, e.name)
        for e in events
        if e.name.startswith("#") and e.thread == main_thread and not _gpu(e)
    )
    starts = [r[0] for r in ranges]

    def stage_at(t: float) -> str:
        i = bisect.bisect_right(starts, t)
        for start, stop, name in reversed(ranges[max(0, i - 200) : i]):
            if start <= t <= stop:
                return name
        return "no label"

    idle: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for start, stop in gaps:
        ms = (stop - start) / 1000
        if ms >= GAP_MS:
            row = idle[stage_at((start + stop) / 2)]
            row[0] += ms
            row[1] += 1
    runtime: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    host: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in events:
        if _gpu(e) or not (lo <= e.time_range.start <= hi):
            continue
        ms = (e.time_range.end - e.time_range.start) / 1000
        if e.name.startswith("cuda") or e.name.startswith("cu"):
            runtime[e.name][0] += ms
            runtime[e.name][1] += 1
        elif e.name.startswith("#"):
            host[e.name][0] += ms
            host[e.name][1] += 1
    wall_ms = (hi - lo) / 1000

    def rows(table: dict[str, list[float]], top: int = 15) -> list[dict]:
        items = sorted(table.items(), key=lambda kv: -kv[1][0])[:top]
        return [{"name": k, "ms": round(v[0], 2), "count": int(v[1])} for k, v in items]

    return {
        "loop_wall_ms": round(wall_ms, 1),
        "windows": len(windows),
        "gpu_busy_ms": round(busy / 1000, 1),
        "gpu_busy_share": round(busy / 1000 / wall_ms, 3) if wall_ms else None,
        "gpu_ops": len(gpu),
        "gpu_idle_by_host_stage": rows(idle),
        "runtime_calls": rows(runtime),
        "host_stages": rows(host, top=30),
    }


def main() -> None:
    global EVENTS
    from benchmarks.random_run import random_run
    from personalive import bench
    from personalive.backends import backend_class
    from personalive.config import load_config

    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", default="full")
    p.add_argument("--device", default="cuda")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--timed-frames", type=int, default=300)
    p.add_argument("--variants", default="media.encode_process=off,media.encode_process=on")
    p.add_argument("--video-size", default="640x480")
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--no-profile", action="store_true", help="skip the profiled run (its trace takes a minute)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    models, device, base = random_run(args.size, args.device, args.weights)
    width, height = (int(v) for v in args.video_size.split("x"))
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC"), "frames": args.frames, "rows": {}}
    if device.type == "cuda":
        result["card"] = torch.cuda.get_device_name(device)
    result["torch"] = torch.__version__
    for variant in args.variants.split(","):
        options = base | dict(item.split("=", 1) for item in variant.split("+"))  # "a=1+b=2": two overrides
        config = load_config(options=options)
        try:
            step = backend_class(config.runtime.backend).from_models(models, config, device, config.runtime.engine)
        except Exception as exc:  # noqa: BLE001 - a variant that cannot run is a row, not the end of the others
            result["rows"][variant] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            log.warning("%s: %s", variant, result["rows"][variant]["error"])
            continue
        video = bench.BenchOptions(random=args.size, frames=args.frames, warmup=0, video_frames=args.frames)
        video.video_size = (width, height)
        timed = bench.BenchOptions(**{**vars(video), "video_frames": args.timed_frames})
        bench.measure_video(models, config, device, video, step)  # warm-up
        with labels():
            EVENTS = [] if device.type == "cuda" else None
            timing = bench.measure_video(models, config, device, timed, step)
            by_stage = gpu_ms_by_stage(EVENTS) if EVENTS is not None else {}
            EVENTS = None
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        row = {"timing": timing, "gpu_ms_by_stage": by_stage}
        if not args.no_profile:
            with ExitStack() as stack:
                stack.enter_context(labels())
                prof = stack.enter_context(torch.profiler.profile(activities=activities))
                bench.measure_video(models, config, device, video, step)
            row["profile"] = analyse(list(prof.events()))
        # the step alone with the run's final keyframe count (3): the job body's ceiling (issue 12: >= 95 %)
        alone = bench.BenchOptions(random=args.size, warmup=3, iters=15)
        row["step_alone_3kf"] = bench.measure_step(models, config, device, alone, keyframes=3, step=step)
        result["rows"][variant] = row
        log.info("%s: %s fps; %s", variant, timing["loop_fps"], json.dumps(row.get("profile", by_stage))[:1500])
        args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
