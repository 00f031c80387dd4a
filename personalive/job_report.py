"""What a job's report holds besides the job's own facts: stage times, peak memory, the run's environment, the
loading breakdown; the entries of jobs whose job body could not report them (failed in a worker that died, or
published as a batch stopped); and writing the report (:mod:`personalive.jobs` and :mod:`personalive.batch`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from personalive.config import RunConfig, flat_items

log = logging.getLogger(__name__)

STAGES = ("conditioning", "denoising", "keyframes")  # the animator's timed stages (its ``stats`` fields)


def _entry(job: Any, status: str, error: str | None, seconds: float) -> dict[str, Any]:
    paths = {"ref": str(job.ref), "drive": str(job.drive), "out": str(job.out)}
    return {"index": job.index, **paths, "status": status, "error": error, "frames": None, "seconds": seconds}


def failed_entry(job: Any, message: str, seconds: float = 0.0) -> dict[str, Any]:
    """The report entry of a job that failed (or never ran) without the job body's own entry."""
    return _entry(job, "failed", message, seconds)


def published_entry(job: Any, started_at: float, seconds: float) -> dict[str, Any] | None:
    """The entry of a job whose output was published but never reported (a batch's stop reached its worker
    between the two): outputs are published whole (an atomic rename), so a file written since the job started
    (``started_at``, wall clock) is its result; None when there is none, or only an older one (``--overwrite``)."""
    try:
        if Path(job.out).stat().st_mtime < started_at:
            return None
    except OSError:
        return None
    note = "published before the batch stopped; its worker was stopped before it reported"
    return _entry(job, "done", None, seconds) | {"note": note}


def stage_times(animator: Any) -> dict[str, float]:
    """The animator's accumulated seconds per stage (:data:`STAGES`, fields of its ``stats``)."""
    return {stage: float(getattr(animator.stats, stage)) for stage in STAGES}


def reset_peak_gpu_memory(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gpu_mib(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def peak_host_mib() -> float | None:
    from personalive.weights.report import peak_rss_gib

    peak = peak_rss_gib()
    return None if peak is None else round(peak * 1024, 1)


def run_info(config: RunConfig, device) -> dict[str, Any]:
    from personalive.environment import versions

    return {
        "device": str(device),
        "dtype": str(config.model.dtype),
        "backend": str(config.runtime.backend),
        "engine": config.runtime.engine,
        "peak_host_memory_mib": peak_host_mib(),
        "versions": versions(),
        "config": flat_items(config),
    }


def write_report(path: Path | None, report: dict[str, Any]) -> None:
    if path is None:
        return
    path = Path(path)
    try:
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    except OSError as exc:
        log.error("%s: cannot write the report (%s)", path, exc)
        return
    log.info("report written to %s", path)


def load_breakdown(animator: Any) -> dict[str, Any] | None:
    """Where the models' loading went (``weights.report.LoadReport``) and the window step's construction."""
    report = getattr(getattr(animator, "models", None), "load_report", None)
    if report is None:
        return None
    return {**report.as_dict(), "window_step_s": round(report.step_seconds, 3)}
