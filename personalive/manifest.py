"""Batch manifests: YAML (``jobs: [{ref, drive, out, compare, set}]``) or CSV (``ref,drive,out,compare``).

Relative paths are relative to the manifest's directory. ``out`` may be omitted: the output is then
``<ref-stem>_<drive-stem>.mp4`` beside the manifest. ``set`` (YAML only) is a mapping of config keys
(``{generation.seed: 7}`` or nested ``{generation: {seed: 7}}``) or a list of ``key=value`` strings.
A CSV may start with a header row naming its columns (``ref,drive,out``, any order; recognised when any of its
cells is a column name, and then ``ref`` and ``drive`` must be among them); without one the columns are ref, drive,
out in that order.

Before any job runs, the manifest is refused (:class:`InputError`, exit 2) when two files the jobs write (outputs
and comparison videos) are one path (also through ``..``, symbolic or hard links, or the default output name), or
a written file is an input of a job or the manifest.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personalive.config_text import flatten_keys, parse_override
from personalive.errors import InputError
from personalive.media.outputs import file_identity, shown

COLUMNS = ("ref", "drive", "out", "compare")
REQUIRED = ("ref", "drive")


@dataclass
class Job:
    """One reference image + driving video -> output video (a manifest row, or ``personalive animate``)."""

    ref: Path
    drive: Path
    out: Path
    overrides: dict[str, Any] = field(default_factory=dict)  # flat config keys from a manifest's `set:`
    index: int = 0  # position in the manifest, 0-based
    compare: Path | None = None  # also write the comparison video (reference | driving | output) here


def default_output_name(ref: Path, drive: Path) -> str:
    return f"{ref.stem}_{drive.stem}.mp4"


def read_manifest(path: Path) -> list[Job]:
    """Parse a manifest into jobs (index = position in the manifest, 0-based)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: manifest is not readable text ({exc})") from exc
    rows = _read_csv(path, text) if path.suffix.lower() == ".csv" else _read_yaml(path, text)
    if not rows:
        raise InputError(f"{path}: manifest has no jobs")
    jobs = [_job(path, i, row) for i, row in enumerate(rows)]
    check_outputs(path, jobs)
    return jobs


def written(job: Job) -> list[tuple[str, Path]]:
    """The files a job writes, with their roles: its output and its comparison video (if any)."""
    return [("output", job.out)] + ([("comparison video", job.compare)] if job.compare is not None else [])


def check_outputs(manifest: Path, jobs: list[Job]) -> None:
    """Refuse two files of the jobs written to one path (the second would be skipped or replace the first), and
    a written file that is an input of a job (it would be destroyed) or the manifest itself."""
    inputs: dict[tuple, tuple[int | None, str]] = {file_identity(manifest): (None, "manifest")}
    for job in jobs:
        for role, path in (("reference", job.ref), ("driving video", job.drive)):
            key = file_identity(path)
            if key[0] == "inode":
                inputs.setdefault(key, (job.index, role))
    outputs: dict[tuple, tuple[int, str]] = {}
    for job in jobs:
        for kind, path in written(job):
            key = file_identity(path)
            if key in outputs:
                index, other = outputs[key]
                if other == kind == "output":
                    clash = f"jobs {index} and {job.index} both write {shown(path)} (give each job its own out)"
                else:
                    clash = f"job {index}'s {other} and job {job.index}'s {kind} are both {shown(path)}"
                    clash += " (give each its own path)"
                raise InputError(f"{shown(manifest)}: {clash}")
            outputs[key] = (job.index, kind)
            if key in inputs:
                index, role = inputs[key]
                what = "the manifest" if index is None else f"the {role} of job {index}"
                raise InputError(
                    f"{shown(manifest)}: job {job.index} writes {shown(path)}, which is {what} "
                    f"(give the job another {'out' if kind == 'output' else 'compare'})"
                )


def _read_yaml(path: Path, text: str) -> list[dict]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: manifest is not valid YAML ({str(exc).splitlines()[0]})") from exc
    jobs = data.get("jobs") if isinstance(data, dict) else data
    if not isinstance(jobs, list):
        raise InputError(f"{path}: expected `jobs:` followed by a list of {{ref, drive, out, set}} entries")
    for i, job in enumerate(jobs):
        if not isinstance(job, dict):
            raise InputError(f"{path}: job {i} is not a mapping with ref, drive, out")
        unknown = set(job) - {*COLUMNS, "set"}
        if unknown:
            raise InputError(
                f"{path}: job {i} has unknown keys {sorted(unknown)} (expected ref, drive, out, compare, set)"
            )
    return jobs


def _read_csv(path: Path, text: str) -> list[dict]:
    rows = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    if set(header) & set(COLUMNS):  # a header: recognised by its names, whatever columns it has
        unknown = sorted(set(header) - set(COLUMNS))
        if unknown:
            raise InputError(
                f"{path}: unknown CSV columns {unknown} in the header (expected ref, drive, out, compare)"
            )
        missing = [name for name in REQUIRED if name not in header]
        if missing:
            raise InputError(
                f"{path}: the CSV header {','.join(header)} has no {' or '.join(missing)} column "
                "(columns: ref, drive and optionally out, compare, in any order)"
            )
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:
            raise InputError(f"{path}: the CSV header names {', '.join(repeated)} twice")
        names, rows = header, rows[1:]
    else:
        names = list(COLUMNS)
    out = []
    for line, row in enumerate(rows, start=2 if names is header else 1):
        if len(row) > len(names) or len(row) < 2:
            raise InputError(f"{path}: CSV row {line} has {len(row)} columns (expected ref,drive[,out[,compare]])")
        out.append({name: cell.strip() for name, cell in zip(names, row, strict=False) if cell.strip()})
    return out


def _job(manifest: Path, index: int, row: dict) -> Job:
    base = manifest.parent
    for key in ("ref", "drive"):
        if not row.get(key):
            raise InputError(f"{manifest}: job {index} has no {key!r}")

    def resolve(value: Any) -> Path:
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else base / p

    ref, drive = resolve(row["ref"]), resolve(row["drive"])
    out = resolve(row["out"]) if row.get("out") else base / default_output_name(ref, drive)
    job = Job(ref=ref, drive=drive, out=out, overrides=_overrides(manifest, index, row.get("set")), index=index)
    job.compare = resolve(row["compare"]) if row.get("compare") else None
    return job


def _overrides(manifest: Path, index: int, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, list):
        return dict(parse_override(str(item)) for item in value)
    if isinstance(value, dict):
        return flatten_keys(value)
    raise InputError(f"{manifest}: job {index}: `set` must be a mapping of config keys or a list of key=value")
