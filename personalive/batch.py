"""``personalive batch``: the jobs of a manifest with the models loaded once (:mod:`personalive.jobs` runs each).

* a job whose output exists is skipped (outputs are renamed into place only when complete, so an existing file
  is a finished job: a crash or ``kill -9`` loses only the job in flight); ``--overwrite`` redoes it;
* a failing job is recorded with its one-line error and the next job runs; the command exits 1 if any failed;
* ``--shard I/N`` takes jobs I, I+N, I+2N, ... (0-based) so N workers can split one manifest;
* ``--devices all|0,1,3|cpu:N`` runs the jobs on one worker process per device, handed out as workers become free
  (:mod:`personalive.workers`); the report is one, listing every job once;
* per-job ``set:`` overrides may change ``media.*`` and ``generation.*`` keys, except the ones that fix the
  shapes of the denoising step (height, width, window, adaptive_steps, inference_steps); other keys
  (``model.*``, ``runtime.*``, ``scheduler.*``) would need other models or another engine and are rejected with
  a message telling to run those jobs in a separate batch. Every job's ``set:`` is checked before any model
  loads: a manifest with a bad one is refused whole (exit 2), as a bad ``--set`` is, instead of hours of other
  jobs ending in one failure that a glance at the manifest would have caught.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from personalive import job_report, jobs
from personalive.config import RunConfig, with_overrides
from personalive.errors import ConfigError, JobsFailedError, PersonaLiveError, WeightsError
from personalive.manifest import Job, read_manifest, written

log = logging.getLogger(__name__)

# generation keys that fix the denoising step's shapes (and a TensorRT engine's profile): not per job
STEP_SHAPE_KEYS = (
    "generation.height",
    "generation.width",
    "generation.window",
    "generation.adaptive_steps",
    "generation.inference_steps",
)
PER_JOB_PREFIXES = ("media.", "generation.")


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


def job_config(job: Job, config: RunConfig) -> RunConfig:
    """``config`` with ``job``'s ``set:`` applied and validated; ConfigError naming the job when it is refused."""
    if not job.overrides:
        return config
    where = f"job {job.index} ({job.out.name})"
    check_job_overrides(job.overrides, where)
    return with_overrides(config, job.overrides, where)


def job_files(every: list[Job]) -> dict[str, Path]:
    """Every file the jobs read or write, by role (``reference of job 3``), for the report's path check."""
    files: dict[str, Path] = {}
    for job in every:
        files[f"reference of job {job.index}"] = job.ref
        files[f"driving video of job {job.index}"] = job.drive
        for role, path in written(job):
            files[f"{role} of job {job.index}"] = path
    return files


def check_manifest_overrides(manifest: Path, every: list[Job], config: RunConfig) -> None:
    """Every job's ``set:`` (all shards': each shard refuses the same manifest) before any model loads; each
    distinct ``set:`` once (a manifest repeats a few over many jobs), named by its first job."""
    seen: set[str] = set()
    for job in every:
        key = repr(sorted(job.overrides.items()))
        if key in seen:
            continue
        seen.add(key)
        try:
            job_config(job, config)
        except ConfigError as exc:
            raise ConfigError(f"{manifest}: {exc}") from None


def run(
    config: RunConfig,
    manifest: Path,
    *,
    shard: str | None = None,
    devices: str | None = None,
    overwrite: bool = False,
    report: Path | None = None,
    progress: jobs.Progress | None = None,
) -> dict[str, Any]:
    """Every job of the manifest (or of its shard), here or on ``devices``. Raises JobsFailedError if any failed."""
    from personalive.media.outputs import check_report_path

    shard_i, shard_n = parse_shard(shard)
    slots = None
    if devices is not None:
        from personalive.workers import parse_devices

        if str(config.runtime.device) not in ("auto", "", "None"):
            raise ConfigError(f"--devices {devices} and --device {config.runtime.device}: give one of them")
        slots = parse_devices(devices)
        config.runtime.device = slots[0].device  # the workers' device kind decides model.dtype auto
    device, dtype = jobs.resolve_environment(config)
    every = read_manifest(Path(manifest))
    check_manifest_overrides(manifest, every, config)
    # before any work: a report that cannot be written must not be lost at the end, and it must not destroy the
    # manifest or a job's input, nor be replaced by a job's output
    if report is not None:
        check_report_path(report, {"manifest": manifest, **job_files(every)})
    mine = [job for job in every if job.index % shard_n == shard_i]
    log.info("%s: %d jobs, shard %d/%d runs %d", manifest, len(every), shard_i, shard_n, len(mine))
    entries: list[dict[str, Any]] = []
    result: dict[str, Any] = {"manifest": str(manifest), "shard": f"{shard_i}/{shard_n}", "jobs": entries}
    pool = models = None
    try:
        with jobs.terminate_as_interrupt():
            if slots is None:
                models = jobs.ModelCache(config, device, dtype)
                for job in mine:
                    entries.append(run_one(job, config, models, device, overwrite, progress or jobs.LogProgress()))
            else:
                from personalive.workers import WorkerPool

                pool = WorkerPool(config, slots, run_one, overwrite=overwrite)
                todo = []
                for job in mine:
                    if (done := skipped(job, overwrite)) is not None:
                        entries.append(done)
                    else:
                        todo.append(job)
                pool.run(todo, entries)
    finally:
        entries.sort(key=lambda e: e["index"])
        counts = {s: sum(e["status"] == s for e in entries) for s in ("done", "skipped", "failed")}
        fusions = pool.fusions if pool else models.fusions if models else 0
        result["summary"] = {"jobs": len(mine), **counts, "fusions": fusions}
        result.update(job_report.run_info(config, devices or device))
        if pool:
            result["workers"] = pool.describe()
        job_report.write_report(report, result)
    log.info("batch: %(done)d done, %(skipped)d skipped, %(failed)d failed", counts)
    if counts["failed"]:
        raise JobsFailedError(f"{manifest}: {counts['failed']} of {len(mine)} jobs failed (see the log above)")
    return result


def skipped(job: Job, overwrite: bool) -> dict[str, Any] | None:
    """The report entry of a job whose output exists (a finished job), or None when it has to run."""
    if job.out.exists() and not overwrite:
        log.info("job %d: %s exists; skipped", job.index, job.out)
        entry = {"index": job.index, "ref": str(job.ref), "drive": str(job.drive), "out": str(job.out)}
        return {**entry, "status": "skipped", "error": None, "frames": None, "seconds": 0.0}
    return None


def run_one(job: Job, config: RunConfig, models, device, overwrite: bool, progress) -> dict[str, Any]:
    """One job's report entry: skipped, done or failed (with its one-line error); WeightsError stops the batch."""
    entry: dict[str, Any] = {"index": job.index, "ref": str(job.ref), "drive": str(job.drive), "out": str(job.out)}
    if (done := skipped(job, overwrite)) is not None:
        return done
    t0 = time.perf_counter()
    try:
        done = jobs.run_job(job, job_config(job, config), models, device, overwrite=overwrite, progress=progress)
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
