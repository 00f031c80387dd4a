"""One job: reference image + driving video -> output video, with inputs checked first and the output atomic.

:func:`animate` is ``personalive animate``; :mod:`personalive.batch` runs a manifest's jobs through the same
:func:`run_job` with the models loaded once (:class:`ModelCache`, which also reuses the reference fusion between
consecutive jobs with the same reference).

SIGTERM or SIGHUP during a job is turned into :class:`Terminated` (a ``KeyboardInterrupt``) so the job is cleaned
up like Ctrl-C: no partial output and no temporary file.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from personalive import job_report
from personalive.config import ModelDtype, RunConfig, flat_items
from personalive.errors import PersonaLiveError, WeightsError
from personalive.manifest import Job, default_output_name
from personalive.signals import Terminated as Terminated  # re-exported: jobs.Terminated
from personalive.signals import stop_on_signals

if TYPE_CHECKING:
    from personalive.device_plans import PlanBook

log = logging.getLogger(__name__)

LOG_EVERY = 50  # frames between progress log lines when no progress bar is shown
# decoded frames held ahead of the window loop, and animated frames waiting for the encoder: two windows' worth
# and more, few enough that memory stays flat (a 640x480 RGB frame is 0.9 MB, a 512x512 one 0.8 MB)
DECODE_AHEAD = 16
ENCODE_QUEUE = 16


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
class ModelCache:
    """Models loaded once (on first use); an animator per distinct per-job generation config; the last reference
    fusion."""

    def __init__(self, config: RunConfig, device, dtype, build: Callable[[RunConfig], Any] | None = None):
        """``build``: ``config -> Animator`` over models already loaded (default: load them on first use)."""
        self._config, self._device, self._dtype = config, device, dtype
        self._build: Callable[[RunConfig], Any] | None = build
        self._animators: dict[str, Any] = {}
        self._last_ref: tuple[tuple, Any] | None = None
        self.fusions = 0  # reference fusions actually computed (reuse is visible in tests and reports)
        self.loads = 0  # times the models were loaded (once per process)

    def animator(self, config: RunConfig) -> Any:
        if self._build is None:
            # looked up at call time, so tests can swap the loader for a stand-in
            self._build = load_animators(self._config, self._device, self._dtype)
            self.loads += 1
        # the seed reaches the animator through the generator, so it needs no animator of its own
        settings = flat_items(config).items()
        key = json.dumps({k: v for k, v in settings if k.startswith("generation.") and k != "generation.seed"})
        if key not in self._animators:
            self._animators[key] = self._build(config)
        return self._animators[key]

    def reference(self, animator: Any, ref: Path, config: RunConfig, ref_input: Any) -> tuple[Any, bool]:
        """The fused reference state, reused when the last job had the same reference and settings."""
        stat = ref.stat()
        generation, media = config.generation, config.media
        key = (str(ref.resolve()), stat.st_mtime_ns, stat.st_size, media.crop, media.reference_crop, media.face_crop)
        key += (generation.height, generation.width, id(animator))
        if self._last_ref is not None and self._last_ref[0] == key:
            return self._last_ref[1], True
        if ref_input.face is None:
            state = animator.fuse_reference(ref_input.image)
        else:
            state = animator.fuse_reference(ref_input.image, ref_input.face)
        self.fusions += 1
        self._last_ref = (key, state)
        return state, False


def load_animators(config: RunConfig, device, dtype) -> Callable[[RunConfig], Any]:
    """Load the models and the window step once; return ``config -> Animator`` sharing them."""
    # these modules import torch but not diffusers or transformers (load_models imports those on a thread while the
    # device warms up); what they take is counted as loading's imports
    started = time.perf_counter()
    from personalive.backends import backend_class
    from personalive.environment import torch_dtype
    from personalive.pipeline.animate import PIPELINE_NETWORKS, Animator
    from personalive.weights import load_models
    from personalive.weights.report import LoadReport

    backend = backend_class(config.runtime.backend)
    imported = time.perf_counter() - started
    report = LoadReport()
    report.phases["imports"] = imported
    backend.check_available(device)  # before any network is loaded
    weights_dir = Path(config.model.weights_dir)
    if not weights_dir.is_dir():
        raise WeightsError(
            f"{weights_dir}: weights directory not found (run `personalive weights download {weights_dir}` "
            "or pass --weights DIR)"
        )
    networks = [*PIPELINE_NETWORKS, *(n for n in backend.networks if n not in PIPELINE_NETWORKS)]
    plans = plan_book(config, device, dtype)
    models = load_models(
        weights_dir, dtype, device, torch_dtype(config.model.clip_dtype), networks=networks, report=report, plans=plans
    )
    report.seconds += imported  # the loader's clock starts after the imports above
    log.info("loaded %d networks in %.1f s (%s)", len(networks), report.seconds, report.summary())
    t = time.perf_counter()
    step = backend.from_models(models, config, device, config.runtime.engine)
    report.step_seconds = time.perf_counter() - t
    return lambda job_config: Animator(models, job_config, step, plans=plans)


def plan_book(config: RunConfig, device, dtype) -> PlanBook | None:
    """This run's cuDNN plan book (``runtime.plan_cache``, CUDA only; :mod:`personalive.device_plans`), or None."""
    if not config.runtime.plan_cache or device.type != "cuda":
        return None
    from personalive.device_plans import PlanBook, book_path, plan_folder, plan_key
    from personalive.weights.configs import read_sizes
    from personalive.weights.layout import WeightsLayout

    try:
        sizes = read_sizes(WeightsLayout(Path(config.model.weights_dir)))
    except PersonaLiveError:  # loading names the problem
        return None
    key = plan_key(config, device, dtype, sizes)
    # a compiled step or an engine must not run under the recording's dispatch mode: the pipeline's networks only
    only = None if config.runtime.backend == "eager" else ("reference", "driving")
    return PlanBook.load(book_path(plan_folder(), key), key, only)


# ------------------------------------------------------------------------------------------ one job
def run_job(
    job: Job, config: RunConfig, models: ModelCache, device, *, overwrite: bool, progress: Progress
) -> dict[str, Any]:
    """Check inputs, animate, write ``job.out`` (and ``job.compare``) atomically; return the job's report entry."""
    from personalive.media.outputs import check_job_outputs
    from personalive.media.source import check_input_file
    from personalive.realworld import load_reference_input

    t_start = time.perf_counter()
    # 1. inputs and outputs, before any model loads (the face passes run here too: they need no model)
    inputs = {"driving video": job.drive, "reference image": job.ref}
    check_job_outputs(job.out, job.compare, overwrite, inputs)
    check_input_file(job.ref, "reference image")
    ref_input = load_reference_input(job.ref, config, device)  # a bad reference fails here, not after loading
    with _open_driving(job, config) as driving:
        # 2. models (loaded once per process) and the fused reference (reused for the same reference)
        t_load, loads = time.perf_counter(), models.loads
        animator = models.animator(config)
        load_seconds = time.perf_counter() - t_load
        before = job_report.stage_times(animator)
        t_ref = time.perf_counter()
        ref_state, reused = models.reference(animator, job.ref, config, ref_input)
        ref_seconds = time.perf_counter() - t_ref
        job_report.reset_peak_gpu_memory(device)
        # 3. the keypoint-smoothing pass (when on), then stream: decode -> model input -> animate -> encode
        driving.prepare(animator, config, device, compare=job.compare is not None)
        run = _stream(job, config, animator, ref_state, ref_input, driving, device, overwrite, progress)
    if getattr(animator, "plans", None) is not None:
        animator.plans.save()  # what this job's first calls recorded, for the next process
    after = job_report.stage_times(animator)
    stages = {k: round(after[k] - before[k], 4) for k in after}
    timings = {"decode": round(run["decode"], 4), **stages, "encode": round(run["encode"], 4)}
    timings["reference"] = round(ref_seconds, 4)
    # the job's wall clock outside the frame loop: inputs read and probed, models loaded (0 when this process had
    # them), sinks opened; inside it, from its start to the first frame handed to the encoder, and the encoder's
    # close (the last frames, the audio, publishing the file)
    timings["inputs"] = round(t_load - t_start, 4)
    timings["load"] = round(load_seconds, 4)
    timings |= {k: round(run[k], 4) for k in ("setup", "first_frame", "close")}
    info, sink, frames_out = driving.info, run["sink"], run["sink"].frames_written
    return {
        "ref": str(job.ref),
        "drive": str(job.drive),
        "out": str(job.out),
        "compare": str(job.compare) if job.compare is not None else None,
        "status": "done",
        "error": None,
        "frames": frames_out,
        "input_frame_rate": str(info["rate"]),
        "output_frame_rate": str(sink.rate),
        "input_frame_rate_fps": float(info["rate"]),
        "input_frames_expected": info["frames"],
        "input_size": info["size"],
        "output_size": [sink.width, sink.height],
        "truncated_input": driving.truncated,
        "audio": run["audio"],
        "audio_seconds": round(sink.audio_seconds, 4),
        "seconds": round(time.perf_counter() - t_start, 4),
        "fps": round(frames_out / run["loop"], 4) if run["loop"] > 0 else None,
        "timings": timings,
        "reference_reused": reused,
        "keyframes_added": animator.stats.keyframes_added,
        "seed": config.generation.seed,
        "peak_gpu_memory_mib": job_report.peak_gpu_mib(device),
        "faces": {**driving.faces_report(), "warnings": ref_input.warnings + driving.warnings},
        # None: this process had the models already
        "loading": job_report.load_breakdown(animator) if models.loads > loads else None,
    }


def _open_driving(job: Job, config: RunConfig):
    """The driving side of a job: a video (probed, face-planned) or a motion template."""
    from personalive.errors import ConfigError
    from personalive.motion import is_motion_file
    from personalive.realworld import TemplateDriving, VideoDriving

    if is_motion_file(job.drive):
        if job.compare is not None:
            raise ConfigError(f"{job.drive}: --compare needs the driving video, not a motion template")
        return TemplateDriving(job.drive, config)
    return VideoDriving(job.drive, config)


def _stream(job: Job, config: RunConfig, animator, ref_state, ref_input, driving, device, overwrite, progress) -> dict:
    """Animate every driving frame into ``job.out`` (and ``job.compare``); returns the sink, audio, seconds."""
    import contextlib

    import torch

    from personalive.media.background import BackgroundWriter
    from personalive.media.sink import VideoSink
    from personalive.media.sink_process import SinkProcess
    from personalive.realworld import Outputs

    t_setup = time.perf_counter()
    generation, media = config.generation, config.media
    outputs = Outputs(config, ref_input, media.paste_back, driving.compare_size(job), driving.preparer)
    audio_from, audio_start = driving.audio(media.audio)
    rate, clock = driving.info["rate"], {"decode": 0.0, "encode": 0.0}  # encode: the writer thread's time
    options = {"codec": media.codec, "pix_fmt": media.pix_fmt, "crf": media.crf, "preset": media.preset}
    options |= {"audio_from": audio_from, "audio_start": audio_start, "overwrite": overwrite}
    options["inputs"] = {"driving video": job.drive, "reference image": job.ref}
    generator = torch.Generator(device).manual_seed(generation.seed)
    Sink = SinkProcess if media.encode_process else VideoSink
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(Sink(job.out, rate, outputs.size[1], outputs.size[0], **options))
        compare = None
        if outputs.layout is not None:
            compare_size = (outputs.layout.total_width, generation.height)
            compare = stack.enter_context(Sink(job.compare, rate, *compare_size, **options))

        def write(frames: tuple) -> None:
            t = time.perf_counter()
            sink.write(frames[0])
            if compare is not None:
                compare.write(frames[1])
            clock["encode"] += time.perf_counter() - t

        progress.start(job.out.name, driving.expected_frames)
        generated = driving.generate(animator, ref_state, generator, outputs, clock, DECODE_AHEAD)
        try:
            t_loop = time.perf_counter()
            first_frame = None
            # encoded on a background thread, so the window loop queues the next window while frames are encoded;
            # leaving this block on an error drops what is queued, and the sinks then remove their partial files
            with BackgroundWriter(write, maxsize=ENCODE_QUEUE) as writer:
                for square in generated:
                    writer.put((outputs.frame(square), outputs.compare_frame(square) if compare else None))
                    if first_frame is None:
                        first_frame = time.perf_counter() - t_loop
                    progress.update(sink.frames_written)
                writer.close()
            if sink.frames_written != driving.frames_read:
                raise PersonaLiveError(
                    f"{job.out}: the pipeline returned {sink.frames_written} frames for "
                    f"{driving.frames_read} driving frames"
                )
            t = time.perf_counter()
            for opened in (compare, sink):
                if opened is not None:
                    opened.close()
            clock["close"] = time.perf_counter() - t
            clock["encode"] += clock["close"]
            loop_seconds = time.perf_counter() - t_loop
        finally:
            generated.close()  # the decode thread stops before the source closes, also on an error or Ctrl-C
            progress.finish()
    clock |= {"setup": t_loop - t_setup, "first_frame": first_frame or 0.0}
    return {**clock, "sink": sink, "audio": audio_from is not None, "loop": loop_seconds}


def terminate_as_interrupt():
    """While active, SIGTERM and SIGHUP raise :class:`Terminated` (so cleanup runs as for Ctrl-C); see
    :mod:`personalive.signals`."""
    return stop_on_signals()


def resolve_environment(config: RunConfig) -> tuple[Any, Any]:
    """(torch device, torch dtype) of a run; ``model.dtype: auto`` is resolved here, once, for the device."""
    from personalive.environment import apply_cudnn_setting, resolve_device, torch_dtype

    device = resolve_device(config.runtime.device)
    if config.model.dtype == "auto":
        # fp16 is the release's precision on GPUs; CPUs lack fast fp16 kernels, so auto means fp32 there
        config.model.dtype = ModelDtype.fp16 if device.type == "cuda" else ModelDtype.fp32
        log.info("model.dtype auto -> %s on %s", config.model.dtype, device)
    dtype = torch_dtype(config.model.dtype)
    apply_cudnn_setting(device, config.runtime.cudnn_benchmark)
    if device.type == "cpu" and config.model.dtype != "fp32":
        log.warning("running %s on the CPU is slow and poorly supported; --dtype fp32 is advised", config.model.dtype)
    return device, dtype


def animate(
    config: RunConfig,
    ref: Path,
    drive: Path,
    out: Path | None = None,
    *,
    overwrite: bool = False,
    report: Path | None = None,
    progress: Progress | None = None,
    compare: Path | None = None,
) -> dict[str, Any]:
    """`personalive animate`: one job. Returns the report (also written to ``report`` if given)."""
    from personalive.media.outputs import check_report_path

    ref, drive = Path(ref), Path(drive)
    job = Job(ref=ref, drive=drive, out=Path(out) if out is not None else Path.cwd() / default_output_name(ref, drive))
    job.compare = Path(compare) if compare is not None else None
    if report is not None:  # before any work: a report that cannot be written must not be lost at the end
        files = {"reference image": ref, "driving video": drive, "output": job.out, "comparison video": job.compare}
        check_report_path(report, files)
    device, dtype = resolve_environment(config)
    with terminate_as_interrupt():
        models = ModelCache(config, device, dtype)
        entry = run_job(job, config, models, device, overwrite=overwrite, progress=progress or LogProgress())
    result = {**entry, **job_report.run_info(config, device)}
    log.info(
        "wrote %s: %d frames at %s fps in %.1f s (%.2f fps)",
        job.out,
        entry["frames"],
        entry["output_frame_rate"],
        entry["seconds"],
        entry["fps"] or 0.0,
    )
    job_report.write_report(report, result)
    return result


def motion_extract(config: RunConfig, drive: Path, out: Path, *, overwrite: bool = False) -> dict[str, Any]:
    """`personalive motion extract`: write DRIVE's prepared motion as a template (inputs checked first)."""
    from personalive.errors import ConfigError, OutputError
    from personalive.media.source import check_input_file
    from personalive.realworld import extract_motion
    from personalive.weights import weights_hash

    device, dtype = resolve_environment(config)
    out, drive = Path(out), Path(drive)
    if out.suffix != ".motion":
        raise ConfigError(f"{out}: a motion template's name must end in .motion")
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: output exists (pass --overwrite to replace it)")
    if not out.parent.is_dir():
        raise OutputError(f"{out}: the folder {out.parent} does not exist")
    check_input_file(drive, "driving video")
    with terminate_as_interrupt():
        animator = ModelCache(config, device, dtype).animator(config)
        meta = extract_motion(drive, out, config, animator, weights_hash(config.model.weights_dir))
    log.info("wrote %s: %d frames at %s fps", out, meta["frames"], meta["rate"])
    return meta
