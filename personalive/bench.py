"""`personalive bench`: how fast this machine runs PersonaLive, measured the same way every time, as JSON.

Four measurements, each after warm-up:

1. ``load``: loading the weights (``--weights DIR``: with the loader's phases per network, see
   :mod:`personalive.weights.report`, and the peak host memory after loading), or building random ones in memory
   (``--random full|tiny``: every shape, kernel and byte moved is the release's, the picture is meaningless;
   nothing is written to disk);
2. ``step``: the window step alone on fixed inputs, per history-keyframe count (``--keyframes 0,3``): CUDA-event
   medians on a GPU (host clock on the CPU), and the step's frames per second (``window`` frames per call);
3. ``stream``: :meth:`Animator.animate` over ``--frames`` synthetic frames already on the device: time to the
   first output frame, end-to-end frames per second, per-stage seconds, keyframes added;
4. ``video``: the ``animate`` command's job body through real PyAV decoding and H.264 encoding of a generated clip
   (``--video-frames`` frames at ``--video-size``, 29.97 fps, with an AAC audio track), whole job timed.

Also peak GPU memory (per measurement) and peak host memory (the process's maximum resident set), the card and the
package versions. ``--no-savings`` switches the exact savings off (single-key cross-attention shortcut, reference
keys/values projected once per reference) to measure what they bring; ``--channels-last`` tries NHWC convolutions.
"""

from __future__ import annotations

import logging
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

RANDOM_SIZES = ("full", "tiny")


@dataclass
class BenchOptions:
    weights: Path | None = None
    random: str | None = None  # "full" | "tiny": random weights built in memory instead of --weights
    backend: str = "eager"
    dtype: str = "auto"
    device: str | None = None
    frames: int = 48
    warmup: int = 3
    iters: int = 10
    keyframes: tuple[int, ...] = (0, 3)
    video_frames: int = 0  # 0 = skip the PyAV measurement
    video_size: tuple[int, int] = (640, 480)
    savings: bool = True
    channels_last: bool = False
    overlap: bool | None = None  # Animator's: None = on for CUDA
    cuda_graphs: str = "auto"  # runtime.cuda_graphs: on | off | auto (on for every backend)
    seed: int = 0


# ------------------------------------------------------------------------------------------ timing
class Clock:
    """Seconds of device work: CUDA events on a GPU (no host sync until read), the host clock on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def time(self, fn: Callable[[], Any]) -> float:
        if not self.cuda:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def median_ms(times: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    return {"median_ms": round(statistics.median(ms), 2), "min_ms": round(ms[0], 2), "max_ms": round(ms[-1], 2)}


def peak_gpu_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_host_gib() -> float | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # Linux: KiB


# ------------------------------------------------------------------------------------------ switches
def set_exact_savings(models: Any, enabled: bool) -> None:
    """The single-key cross-attention shortcut in both UNets on (default) or off (upstream's arithmetic)."""
    from personalive.models.reference_unet import set_single_key_shortcut
    from personalive.pipeline.reference import feature_extractor

    for module in models.denoising_unet.modules():
        if hasattr(module, "single_key_shortcut"):
            module.single_key_shortcut = enabled
    set_single_key_shortcut(feature_extractor(models).unet, enabled)


class ProjectPerWindow:
    """A window step fed raw reference features, projected to keys/values in every call (the cost before the
    savings: upstream projects the reference tokens in every UNet call)."""

    def __init__(self, step: Any, denoising_unet: torch.nn.Module, names: list[str]) -> None:
        self.step, self.unet, self.names = step, denoising_unet, names
        self.name = f"{step.name}+project-per-window"

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            projected = self.unet.project_reference([inputs[n] for n in self.names])
        return self.step({**inputs, **dict(zip(self.names, projected, strict=True))})


def use_channels_last(models: Any) -> None:
    """NHWC weights for the convolution-heavy networks; cuDNN then picks NHWC kernels (tensor cores, no transposes)."""
    for name in ("denoising_unet", "vae", "pose_guider"):
        getattr(models, name).to(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------------ measurements
def measure_step(
    models: Any, config: Any, device: torch.device, options: BenchOptions, keyframes: int, step: Any = None
) -> dict:
    """The step alone (``step``, or one of ``options.backend`` built from ``models``) on one window's inputs."""
    from personalive.backends import backend_class
    from personalive.pipeline.window import example_window_inputs

    dtype = models.dtype
    if step is None:
        step = backend_class(options.backend).from_models(models, config, device)
    # inference tensors, as the job passes (docs/architecture.md): plain ones recompiled a compiled step here
    with torch.inference_mode():
        inputs = example_window_inputs(models, config, device, dtype, num_keyframes=keyframes)
        if not options.savings:  # raw (B, R, C) features in, projected inside every call
            for name in step.feature_names:
                inputs[name] = inputs[name][..., : inputs[name].shape[-1] // 2].contiguous()
    if not options.savings:
        step = ProjectPerWindow(step, models.denoising_unet, list(step.feature_names))
    clock = Clock(device)
    reset_peak(device)
    first = clock.time(lambda: step(inputs))
    for _ in range(options.warmup):
        step(inputs)
    times = [clock.time(lambda: step(inputs)) for _ in range(options.iters)]
    stats = median_ms(times)
    window = config.generation.window
    return {
        "keyframes": keyframes,
        "first_call_s": round(first, 3),
        **stats,
        "iters": len(times),
        "step_fps": round(1000 * window / stats["median_ms"], 2),
        "peak_gpu_gib": peak_gpu_gib(device),
    }


def synthetic_frames(count: int, size: int, device: torch.device) -> list[torch.Tensor]:
    """(size, size, 3) uint8 frames on the device: a fixed noise image shifted a little every frame."""
    g = torch.Generator(device).manual_seed(0)
    base = torch.randint(0, 256, (size, size, 3), generator=g, device=device, dtype=torch.uint8)
    return [torch.roll(base, shifts=(i * 3, i * 2), dims=(0, 1)) for i in range(count)]


def measure_stream(models: Any, config: Any, device: torch.device, options: BenchOptions, step: Any) -> dict:
    """Animator.animate over device frames: time to first frame, frames per second end to end, stages."""
    from personalive.pipeline.animate import Animator

    size = config.generation.height
    reference_image, *driving = synthetic_frames(options.frames + 1, size, device)
    if options.warmup > 0:  # one short run first: cuDNN autotuning, compilation
        warm = Animator(models, config, step, overlap=options.overlap)
        for _ in warm.animate(warm.fuse_reference(reference_image), driving[: 4 * config.generation.window]):
            pass
    animator = Animator(models, config, step, overlap=options.overlap)
    clock = Clock(device)
    reset_peak(device)
    start = time.perf_counter()
    reference = animator.fuse_reference(reference_image)
    clock.sync()
    fused = time.perf_counter()
    first_frame, count = None, 0
    for _ in animator.animate(reference, driving, generator=torch.Generator(device).manual_seed(0)):
        count += 1
        if first_frame is None:
            first_frame = time.perf_counter() - fused
    clock.sync()
    seconds = time.perf_counter() - fused
    stats = animator.stats
    return {
        "frames": count,
        "reference_s": round(fused - start, 3),
        "first_frame_s": round(first_frame or 0.0, 3),
        "seconds": round(seconds, 3),
        "fps": round(count / seconds, 2) if seconds > 0 else None,
        "stages_s": {
            "conditioning": round(stats.conditioning, 3),
            "denoising": round(stats.denoising, 3),
            "keyframes": round(stats.keyframes, 3),
        },
        "windows": stats.windows,
        "keyframes_added": stats.keyframes_added,
        "peak_gpu_gib": peak_gpu_gib(device),
    }


# ------------------------------------------------------------------------------------------ video
def write_clip(path: Path, frames: int, width: int, height: int, rate: Any = None) -> Path:
    """An H.264 clip at 29.97 fps with a mono AAC sine track as long as the video (a bright blob moving on noise)."""
    from fractions import Fraction

    import av
    import numpy as np

    rate = rate or Fraction(30000, 1001)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for i in range(frames):
            rgb = np.roll(base, (i * 3, i * 2), axis=(0, 1))
            container.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(video.encode(None))
        total = round(frames / float(rate) * 48000)
        t = np.arange(total) / 48000
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, total, 1024):
            chunk = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[None, start : start + 1024]), "fltp", "mono"
            )
            chunk.sample_rate, chunk.pts = 48000, start
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return path


def measure_video(models: Any, config: Any, device: torch.device, options: BenchOptions, step: Any) -> dict:
    """The animate job body (decode, animate, encode with audio, atomic write) on a generated clip, timed whole."""
    import numpy as np
    from PIL import Image

    from personalive.jobs import LogProgress, ModelCache, run_job
    from personalive.manifest import Job
    from personalive.pipeline.animate import Animator

    width, height = options.video_size
    with tempfile.TemporaryDirectory(prefix="personalive-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        clip = write_clip(folder / "drive.mp4", options.video_frames, width, height)
        made = time.perf_counter() - start
        side = max(height, 256)  # a square portrait; the reference check refuses images too small for a face
        rgb = np.random.default_rng(1).integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(folder / "ref.png")
        cache = ModelCache(config, device, models.dtype, build=lambda cfg: Animator(models, cfg, step))
        job = Job(ref=folder / "ref.png", drive=clip, out=folder / "out.mp4")
        reset_peak(device)
        start = time.perf_counter()
        entry = run_job(job, config, cache, device, overwrite=True, progress=LogProgress())
        seconds = time.perf_counter() - start
    return {
        "frames": entry["frames"],
        "input": f"{width}x{height} {entry['input_frame_rate']} fps, audio {entry['audio']}",
        "clip_written_s": round(made, 2),
        "seconds": round(seconds, 3),
        "fps": round(entry["frames"] / seconds, 2),
        "loop_fps": entry["fps"],
        "stages_s": entry["timings"],
        "peak_gpu_gib": peak_gpu_gib(device),
    }


# ------------------------------------------------------------------------------------------ the command
def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Every measurement of ``options``; returns the report (see the module doc)."""
    from personalive.backends import backend_class
    from personalive.config import load_config
    from personalive.environment import apply_cudnn_setting, cuda_devices, resolve_device, torch_dtype, versions
    from personalive.errors import ConfigError

    if (options.weights is None) == (options.random is None):
        raise ConfigError("bench: pass --weights DIR or --random full|tiny (one of them)")
    if options.random is not None and options.random not in RANDOM_SIZES:
        raise ConfigError(f"bench: --random {options.random!r}: expected one of {', '.join(RANDOM_SIZES)}")
    device = resolve_device(options.device)
    dtype_name = options.dtype if options.dtype != "auto" else ("fp16" if device.type == "cuda" else "fp32")
    dtype = torch_dtype(dtype_name)
    extra: dict[str, Any] = {
        "model.dtype": dtype_name,
        "runtime.backend": options.backend,
        "runtime.device": str(device),
        "runtime.cuda_graphs": options.cuda_graphs,
    }
    start = time.perf_counter()
    if options.random is not None:
        from personalive.random_weights import random_models

        models = random_models(options.random, device, dtype, options.seed)
    else:
        from personalive.weights import load_models

        extra["model.weights_dir"] = str(options.weights)
        models = load_models(options.weights, dtype, device)
    Clock(device).sync()
    load_s = time.perf_counter() - start
    # where loading spent its time (phases, per network; None for random weights) and the peak host memory so far
    breakdown = models.load_report.as_dict() if models.load_report is not None else None
    load_peak_host_gib = peak_host_gib()
    if options.random == "tiny":  # the tiny networks' native resolution (128x128)
        extra |= {"generation.height": models.sizes.height, "generation.width": models.sizes.width}
    config = load_config(options=extra)
    apply_cudnn_setting(device, config.runtime.cudnn_benchmark)  # as the product runs
    set_exact_savings(models, options.savings)
    if options.channels_last:
        use_channels_last(models)
    devices = cuda_devices()
    source = f"random {options.random}" if options.random else str(options.weights)
    report: dict[str, Any] = {
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()},
        "device": str(device),
        "card": devices[device.index or 0]["name"] if device.type == "cuda" else platform.processor() or "cpu",
        "versions": versions(),
        "dtype": dtype_name,
        "backend": options.backend,
        "resolution": [config.generation.width, config.generation.height],
        "window": config.generation.window,
        "load": {
            "source": source,
            "seconds": round(load_s, 2),
            "peak_gpu_gib": peak_gpu_gib(device),
            "peak_host_gib": load_peak_host_gib,
            "breakdown": breakdown,
        },
    }
    report["step"] = [measure_step(models, config, device, options, k) for k in options.keyframes]
    for row in report["step"]:
        log.info("step, %d keyframes: %.1f ms median, %.1f fps", row["keyframes"], row["median_ms"], row["step_fps"])
    step = backend_class(options.backend).from_models(models, config, device)
    if options.frames > 0:
        report["stream"] = measure_stream(models, config, device, options, step)
        log.info("stream: %s", report["stream"])
    if options.video_frames > 0:
        report["video"] = measure_video(models, config, device, options, step)
        log.info("video: %s", report["video"])
    report["peak_host_gib"] = peak_host_gib()
    return report
