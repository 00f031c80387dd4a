"""The `animate` and `batch` jobs: inputs checked first, models loaded once, outputs written atomically, reports.

One job = reference image + driving video -> output video (see :func:`run_job`). ``animate`` runs one job;
``batch`` runs the jobs of a manifest with the models loaded once and the reference fusion reused between
consecutive jobs with the same reference. In a batch:

* a job whose output exists is skipped (outputs are renamed into place only when complete, so an existing file
  is a finished job: a crash or ``kill -9`` loses only the job in flight); ``--overwrite`` redoes it;
* a failing job is recorded with its one-line error and the next job runs; the command exits 1 if any failed;
* ``--shard I/N`` takes jobs I, I+N, I+2N, ... (0-based) so N workers can split one manifest;
* per-job ``set:`` overrides may change ``media.*`` and ``generation.*`` keys, except the ones that fix the
  shapes of the denoising step (height, width, window, adaptive_steps, inference_steps); other keys
  (``model.*``, ``runtime.*``, ``scheduler.*``) would need other models or another engine and are rejected with
  a message telling to run those jobs in a separate batch.

SIGTERM during a job is turned into :class:`Terminated` (a ``KeyboardInterrupt``) so the job is cleaned up like
Ctrl-C: no partial output and no temporary file.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from personalive.config import RunConfig, flat_items, load_config
from personalive.errors import ConfigError, PersonaLiveError, WeightsError

log = logging.getLogger(__name__)

LOG_EVERY = 50  # frames between progress log lines when no progress bar is shown
# generation keys that fix the denoising step's shapes (and a TensorRT engine's profile): not per job
STEP_SHAPE_KEYS = (
    "generation.height",
    "generation.width",
    "generation.window",
    "generation.adaptive_steps",
    "generation.inference_steps",
)
PER_JOB_PREFIXES = ("media.", "generation.")


class Terminated(KeyboardInterrupt):
    """SIGTERM received: handled like Ctrl-C."""


class JobsFailedError(PersonaLiveError):
    """At least one job of a batch failed (each is listed in the log and the report)."""

    exit_code = 1


class Progress(Protocol):
    """Progress of one job in frames; the CLI passes a rich bar, else :class:`LogProgress` is used."""

    def start(self, description: str, total: int | None) -> None: ...

    def update(self, done: int) -> None: ...

    def finish(self) -> None: ...


class LogProgress:
    """One log line every ``every`` frames (frames, fps, ETA): for --quiet runs and non-terminal stderr."""

    def __init__(self, every: int = LOG_EVERY):
        self.every = every

    def start(self, description: str, total: int | None) -> None:
        self.description, self.total, self.t0, self.last = description, total, time.perf_counter(), 0

    def update(self, done: int) -> None:
        if done - self.last < self.every:
            return
        self.last = done
        elapsed = time.perf_counter() - self.t0
        fps = done / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {(self.total - done) / fps:.0f} s" if self.total and fps > 0 and self.total > done else ""
        of = f"/{self.total}" if self.total else ""
        log.info("%s: %d%s frames, %.2f fps%s", self.description, done, of, fps, eta)

    def finish(self) -> None:
        pass


# --------------------------------------------------------------------------------------------- models
class Animators:
    """Models loaded once; an animator per distinct per-job generation config; the last reference fusion."""

    def __init__(self, build: Callable[[RunConfig], Any]):
        self._build = build
        self._animators: dict[str, Any] = {}
        self._last_ref: tuple[tuple, Any] | None = None
        self.fusions = 0  # reference fusions actually computed (reuse is visible in tests and reports)

    def animator(self, config: RunConfig) -> Any:
        # the seed reaches the animator through the generator, so it needs no animator of its own
        settings = flat_items(config).items()
        key = json.dumps({k: v for k, v in settings if k.startswith("generation.") and k != "generation.seed"})
        if key not in self._animators:
            self._animators[key] = self._build(config)
        return self._animators[key]

    def reference(self, animator: Any, ref: Path, config: RunConfig, device) -> tuple[Any, bool]:
        """The fused reference state, reused when the last job had the same reference and settings."""
        from personalive.media.reference import load_reference
        from personalive.media.resize import fit_to_model

        stat = ref.stat()
        g = config.generation
        key = (str(ref.resolve()), stat.st_mtime_ns, stat.st_size, config.media.crop, g.height, g.width, id(animator))
        if self._last_ref is not None and self._last_ref[0] == key:
            return self._last_ref[1], True
        image = fit_to_model(load_reference(ref), g.height, g.width, config.media.crop, device)
        state = animator.fuse_reference(image)
        self.fusions += 1
        self._last_ref = (key, state)
        return state, False


AnimatorLoader = Callable[[RunConfig, Any, Any], Callable[[RunConfig], Any]]


def load_animators(config: RunConfig, device, dtype) -> Callable[[RunConfig], Any]:
    """Load the models and the window step once; return ``config -> Animator`` sharing them."""
    weights_dir = Path(config.model.weights_dir)
    if not weights_dir.is_dir():
        raise WeightsError(
            f"{weights_dir}: weights directory not found (run `personalive weights download {weights_dir}` "
            "or pass --weights DIR)"
        )
    from personalive.backends import make_step
    from personalive.environment import torch_dtype
    from personalive.pipeline.animate import Animator
    from personalive.weights import load_models

    models = load_models(weights_dir, dtype, device, torch_dtype(config.model.clip_dtype))
    step = make_step(models, config, device, dtype, config.runtime.backend, config.runtime.engine)
    return lambda job_config: Animator(models, job_config, device, dtype, step=step)


# ------------------------------------------------------------------------------------------ one job
@dataclass
class Job:
    ref: Path
    drive: Path
    out: Path
    overrides: dict[str, Any] = field(default_factory=dict)  # flat config keys from a manifest's `set:`
    index: int = 0


def run_job(
    job: Job,
    config: RunConfig,
    get_animators: Callable[[], Animators],
    device,
    *,
    overwrite: bool,
    progress: Progress,
) -> dict[str, Any]:
    """Check inputs, animate, write ``job.out`` atomically; return the job's report entry."""
    import torch

    from personalive.media.reference import load_reference
    from personalive.media.resize import fit_to_model
    from personalive.media.sink import VideoSink, check_output_path
    from personalive.media.source import VideoSource, check_input_file

    t_start = time.perf_counter()
    g, media = config.generation, config.media
    # 1. inputs and output, before any model loads
    check_output_path(job.out, overwrite)
    check_input_file(job.ref, "reference image")
    load_reference(job.ref)  # decodes it: a bad reference fails here, not after loading models
    source = VideoSource(job.drive, max_frames=media.max_frames)
    with source:
        info = source.info
        audio = media.audio and info.has_audio
        if media.audio and not info.has_audio:
            log.debug("%s: no audio stream; the output is silent", job.drive)
        # 2. models (loaded once per process) and the fused reference (reused for the same reference)
        pool = get_animators()
        animator = pool.animator(config)
        before = stage_times(animator)
        t_ref = time.perf_counter()
        ref_state, reused = pool.reference(animator, job.ref, config, device)
        t_ref = time.perf_counter() - t_ref
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # 3. stream: decode -> model input -> animate -> encode
        clock = {"decode": 0.0, "encode": 0.0}

        def frames() -> Iterator[torch.Tensor]:
            it = iter(source)
            while True:
                t = time.perf_counter()
                rgb = next(it, None)
                if rgb is None:
                    return
                frame = fit_to_model(rgb, g.height, g.width, media.crop, device)
                clock["decode"] += time.perf_counter() - t
                yield frame

        generator = torch.Generator(device).manual_seed(g.seed)
        sink = VideoSink(
            job.out,
            info.rate,
            g.width,
            g.height,
            codec=media.codec,
            pix_fmt=media.pix_fmt,
            crf=media.crf,
            preset=media.preset,
            audio_from=job.drive if audio else None,
            audio_start=info.start,
            overwrite=overwrite,
        )
        with sink:
            progress.start(job.out.name, source.expected_frames)
            try:
                t_loop = time.perf_counter()
                for frame in animator.animate(ref_state, frames(), generator=generator):
                    t = time.perf_counter()
                    sink.write(frame)
                    clock["encode"] += time.perf_counter() - t
                    progress.update(sink.frames_written)
                if sink.frames_written != source.frames_read:
                    raise PersonaLiveError(
                        f"{job.out}: the pipeline returned {sink.frames_written} frames for "
                        f"{source.frames_read} driving frames"
                    )
                t = time.perf_counter()
                sink.close()
                clock["encode"] += time.perf_counter() - t
                t_loop = time.perf_counter() - t_loop
            finally:
                progress.finish()
    seconds = time.perf_counter() - t_start
    after = stage_times(animator)
    stages = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 4) for k in after}
    timings = {"decode": round(clock["decode"], 4), **stages, "encode": round(clock["encode"], 4)}
    timings["reference"] = round(t_ref, 4)
    frames_out = sink.frames_written
    return {
        "ref": str(job.ref),
        "drive": str(job.drive),
        "out": str(job.out),
        "status": "done",
        "error": None,
        "frames": frames_out,
        "input_frame_rate": str(info.rate),
        "output_frame_rate": str(sink.rate),
        "input_frame_rate_fps": float(info.rate),
        "input_frames_expected": info.frames,
        "input_size": [info.width, info.height],
        "output_size": [g.width, g.height],
        "truncated_input": source.stopped_early,
        "audio": audio,
        "audio_seconds": round(sink.audio_seconds, 4),
        "seconds": round(seconds, 4),
        "fps": round(frames_out / t_loop, 4) if t_loop > 0 else None,
        "timings": timings,
        "reference_reused": reused,
        "keyframes_added": getattr(animator, "keyframes_added", None),
        "seed": g.seed,
        "peak_gpu_memory_mib": _peak_gpu_mib(device),
    }


STAGES = ("conditioning", "denoising", "vae_decode", "keyframes")


def stage_times(animator: Any) -> dict[str, float]:
    """The animator's accumulated per-stage seconds (``timings`` dict, or ``stats`` with one field per stage)."""
    timings = getattr(animator, "timings", None)
    if isinstance(timings, dict):
        return {k: float(v) for k, v in timings.items()}
    stats = getattr(animator, "stats", None)
    return {k: float(getattr(stats, k)) for k in STAGES if hasattr(stats, k)}


def _peak_gpu_mib(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _peak_host_mib() -> float | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While active, SIGTERM raises :class:`Terminated` (so cleanup runs as for Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------------------------------ commands
def _cli_extra(weights, device, dtype, backend, engine, max_frames, seed, audio) -> dict[str, Any]:
    extra = {
        "model.weights_dir": str(weights) if weights is not None else None,
        "runtime.device": device,
        "model.dtype": dtype,
        "runtime.backend": backend,
        "runtime.engine": str(engine) if engine is not None else None,
        "media.max_frames": max_frames,
        "generation.seed": seed,
        "media.audio": audio,
    }
    return {k: v for k, v in extra.items() if v is not None}


def _environment(config: RunConfig) -> tuple[Any, Any]:
    from personalive.environment import resolve_device, torch_dtype

    device = resolve_device(config.runtime.device)
    if config.model.dtype == "auto":
        # fp16 is the release's precision on GPUs; CPUs lack fast fp16 kernels, so auto means fp32 there
        config.model.dtype = "fp16" if device.type == "cuda" else "fp32"
        log.info("model.dtype auto -> %s on %s", config.model.dtype, device)
    dtype = torch_dtype(config.model.dtype)
    if device.type == "cpu" and config.model.dtype != "fp32":
        log.warning("running %s on the CPU is slow and poorly supported; --dtype fp32 is advised", config.model.dtype)
    return device, dtype


def _run_info(config: RunConfig, device) -> dict[str, Any]:
    from personalive.environment import versions

    return {
        "device": str(device),
        "dtype": config.model.dtype,
        "backend": config.runtime.backend,
        "engine": config.runtime.engine,
        "peak_host_memory_mib": _peak_host_mib(),
        "versions": versions(),
        "config": flat_items(config),
    }


def _write_report(path: Path | None, report: dict[str, Any]) -> None:
    if path is None:
        return
    path = Path(path)
    try:
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    except OSError as exc:
        log.error("%s: cannot write the report (%s)", path, exc)
        return
    log.info("report written to %s", path)


def animate_command(
    *,
    ref: Path,
    drive: Path,
    out: Path | None = None,
    weights=None,
    config=None,
    overrides=(),
    device=None,
    dtype=None,
    backend=None,
    engine=None,
    max_frames=None,
    seed=None,
    audio=None,
    overwrite: bool = False,
    report: Path | None = None,
    quiet: bool = False,
    progress: Progress | None = None,
    loader: AnimatorLoader | None = None,
) -> dict[str, Any]:
    """`personalive animate`: one job. Returns the report (also written to ``report`` if given)."""
    loader = loader or load_animators
    extra = _cli_extra(weights, device, dtype, backend, engine, max_frames, seed, audio)
    cfg = load_config(config, list(overrides), extra=extra)
    dev, torch_dt = _environment(cfg)
    ref, drive = Path(ref), Path(drive)
    job = Job(ref=ref, drive=drive, out=Path(out) if out is not None else Path.cwd() / default_output_name(ref, drive))
    with terminate_as_interrupt():
        pool: Animators | None = None

        def get_pool() -> Animators:
            nonlocal pool
            if pool is None:
                pool = Animators(loader(cfg, dev, torch_dt))
            return pool

        entry = run_job(
            job,
            cfg,
            get_pool,
            dev,
            overwrite=overwrite,
            progress=progress or LogProgress(),
        )
    result = {**entry, **_run_info(cfg, dev)}
    log.info(
        "wrote %s: %d frames at %s fps in %.1f s (%.2f fps)",
        job.out,
        entry["frames"],
        entry["output_frame_rate"],
        entry["seconds"],
        entry["fps"] or 0.0,
    )
    _write_report(report, result)
    return result


def default_output_name(ref: Path, drive: Path) -> str:
    return f"{ref.stem}_{drive.stem}.mp4"


# ------------------------------------------------------------------------------------------ batch
def parse_shard(shard: str | None) -> tuple[int, int]:
    if shard is None:
        return 0, 1
    try:
        i, n = (int(part) for part in shard.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {shard!r}: expected I/N with integers, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {shard!r}: need N >= 1 and 0 <= I < N (I is 0-based)")
    return i, n


def check_job_overrides(overrides: dict[str, Any], where: str) -> None:
    for key in overrides:
        if key in STEP_SHAPE_KEYS or not key.startswith(PER_JOB_PREFIXES):
            raise ConfigError(
                f"{where}: {key!r} cannot change per job (it needs other models or another step shape); "
                "put these jobs in a separate manifest run with --set"
            )


def batch_command(
    *,
    manifest: Path,
    report: Path | None = None,
    shard: str | None = None,
    weights=None,
    config=None,
    overrides=(),
    device=None,
    dtype=None,
    backend=None,
    engine=None,
    max_frames=None,
    seed=None,
    audio=None,
    overwrite: bool = False,
    quiet: bool = False,
    progress: Progress | None = None,
    loader: AnimatorLoader | None = None,
) -> dict[str, Any]:
    """`personalive batch`: every job of the manifest (or of its shard). Raises JobsFailedError if any failed."""
    from personalive.manifest import read_manifest

    loader = loader or load_animators
    shard_i, shard_n = parse_shard(shard)
    extra = _cli_extra(weights, device, dtype, backend, engine, max_frames, seed, audio)
    base = load_config(config, list(overrides), extra=extra)
    dev, torch_dt = _environment(base)
    jobs = read_manifest(Path(manifest))
    mine = [job for job in jobs if job.index % shard_n == shard_i]
    log.info("%s: %d jobs, shard %d/%d runs %d", manifest, len(jobs), shard_i, shard_n, len(mine))
    pool: Animators | None = None

    def get_pool() -> Animators:
        nonlocal pool
        if pool is None:
            pool = Animators(loader(base, dev, torch_dt))
        return pool

    entries: list[dict[str, Any]] = []
    result: dict[str, Any] = {"manifest": str(manifest), "shard": f"{shard_i}/{shard_n}", "jobs": entries}
    try:
        with terminate_as_interrupt():
            for job in mine:
                entries.append(_batch_job(job, base, config, overrides, extra, get_pool, dev, overwrite, progress))
    finally:
        counts = {s: sum(e["status"] == s for e in entries) for s in ("done", "skipped", "failed")}
        result["summary"] = {"jobs": len(mine), **counts, "fusions": pool.fusions if pool else 0}
        result.update(_run_info(base, dev))
        _write_report(report, result)
    log.info("batch: %(done)d done, %(skipped)d skipped, %(failed)d failed", counts)
    if counts["failed"]:
        raise JobsFailedError(f"{manifest}: {counts['failed']} of {len(mine)} jobs failed (see the log above)")
    return result


def _batch_job(job, base, config, overrides, extra, get_pool, dev, overwrite, progress) -> dict[str, Any]:
    entry: dict[str, Any] = {"index": job.index, "ref": str(job.ref), "drive": str(job.drive), "out": str(job.out)}
    if job.out.exists() and not overwrite:
        log.info("job %d: %s exists; skipped", job.index, job.out)
        return {**entry, "status": "skipped", "error": None, "frames": None, "seconds": 0.0}
    t0 = time.perf_counter()
    try:
        cfg = base
        if job.overrides:
            where = f"job {job.index} ({job.out.name})"
            check_job_overrides(job.overrides, where)
            sets = list(overrides) + [f"{k}={json.dumps(v)}" for k, v in job.overrides.items()]
            cfg = load_config(config, sets, extra=extra)
        done = run_job(job, cfg, get_pool, dev, overwrite=overwrite, progress=progress or LogProgress())
        log.info("job %d: wrote %s (%d frames, %.1f s)", job.index, job.out, done["frames"], done["seconds"])
        return {**entry, **done}
    except WeightsError:
        raise  # no job can run without models: stop the batch
    except PersonaLiveError as exc:
        message = str(exc)
    except Exception as exc:  # noqa: BLE001 - one job's bug must not stop the batch
        log.debug("job %d failed", job.index, exc_info=True)
        message = f"internal error: {type(exc).__name__}: {exc}"
    log.error("job %d failed: %s", job.index, message)
    return {
        **entry,
        "status": "failed",
        "error": message,
        "frames": None,
        "seconds": round(time.perf_counter() - t0, 4),
    }


__all__ = [
    "Animators",
    "Job",
    "JobsFailedError",
    "LogProgress",
    "Progress",
    "Terminated",
    "animate_command",
    "batch_command",
    "default_output_name",
    "run_job",
]
