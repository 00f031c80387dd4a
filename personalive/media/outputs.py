"""Where an output video may go, and how it gets there without destroying anything.

* :func:`check_output_path` runs before any model loads: the output must not be an input (also through a
  symbolic or hard link), must not be a directory, must name a container we write (``.mp4``, ``.mov``, ``.mkv``),
  must not exist unless ``--overwrite`` was given, and its directory must exist and be writable.
* The sink writes to a hidden temporary file beside the output, named after the output, the host and the writer's
  PID (:func:`temp_output`), so a later run can recognise temporary files whose writer is gone (``kill -9``, power
  loss) and remove them (:func:`remove_stale_temps`).
* :func:`publish` moves the finished file into place with a hard link, which fails if the output appeared while
  this run was writing (another run with the same ``-o``); only ``--overwrite`` replaces it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path

from personalive.errors import OutputError

log = logging.getLogger(__name__)

# output extension -> FFmpeg muxer; each takes H.264/H.265 video and AAC audio
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
_EXTENSIONS = ", ".join(CONTAINERS)
# hard links unsupported by the file system (FAT, some network or FUSE mounts): publish another way
_NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV, errno.ENOSYS}


def shown(path: str | os.PathLike) -> str:
    """A path as it appears in messages: as is when printable, else quoted with escapes, so that a name holding
    a newline or a control character cannot split a message over several lines."""
    text = os.fspath(path)
    return text if text.isprintable() else repr(text)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when both paths exist and are one file: same path, a symbolic link to it, or a hard link."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (or is unreadable): they cannot be one existing file
        return False


def file_identity(path: str | os.PathLike) -> tuple:
    """One key per file: (device, inode) for an existing file (symbolic and hard links included), else the
    absolute path with ``..`` and linked directories resolved (a file yet to be written)."""
    try:
        st = os.stat(path)
    except OSError:
        return ("path", str(Path(path).resolve()))
    return ("inode", st.st_dev, st.st_ino)


def container_format(path: str | os.PathLike) -> str:
    """The FFmpeg muxer for an output name (by its extension, any case); other extensions are refused."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONTAINERS:
        found = f"extension {path.suffix!r}" if path.suffix else "no extension"
        raise OutputError(f"{shown(path)}: output has {found}; name it .mp4, .mov or .mkv (the container written)")
    return CONTAINERS[suffix]


def check_output_path(
    path: str | os.PathLike, overwrite: bool, inputs: Mapping[str, str | os.PathLike] | None = None
) -> Path:
    """Refuse an output that is one of ``inputs`` (role -> path, e.g. ``{"driving video": drive}``), a directory,
    an unknown container or, without ``overwrite``, an existing file; its directory must exist and be writable."""
    path = Path(path)
    for role, source in (inputs or {}).items():
        if same_file(path, source):
            link = "" if Path(os.path.abspath(path)) == Path(os.path.abspath(source)) else f" ({shown(source)})"
            raise OutputError(f"{shown(path)}: output is the {role}{link}; choose another -o/--out")
    if path.is_dir():
        raise OutputError(f"{shown(path)}: output is a directory; give a file name ending in {_EXTENSIONS}")
    container_format(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{shown(path)}: output exists (pass --overwrite to replace it)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{shown(path)}: output directory {shown(parent)} does not exist (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{shown(path)}: output directory {shown(parent)} is not writable (choose another -o/--out)")
    return path


def check_job_outputs(
    out: Path, compare: Path | None, overwrite: bool, inputs: Mapping[str, str | os.PathLike]
) -> None:
    """A job's output and comparison video (:func:`check_output_path` each), which must be two files: one path
    given twice would be published twice, and the second publish fails after the first left a file."""
    check_output_path(out, overwrite, inputs)
    if compare is not None:
        if file_identity(compare) == file_identity(out):
            raise OutputError(f"{shown(compare)}: --compare is the output; give the comparison its own path")
        check_output_path(compare, overwrite, inputs)


def check_report_path(path: str | os.PathLike, files: Mapping[str, str | os.PathLike | None] | None = None) -> Path:
    """A JSON report's path, checked before any work: not a directory, in an existing writable directory (an
    existing report is replaced: it describes the latest run), and none of ``files`` (role -> path: the run's
    inputs, which the report would destroy, and its outputs, which would overwrite the report)."""
    path = Path(path)
    key = file_identity(path)
    for role, other in (files or {}).items():
        if other is not None and file_identity(other) == key:
            raise OutputError(f"{shown(path)}: --report is the {role}; choose another --report")
    if path.is_dir():
        raise OutputError(f"{shown(path)}: --report is a directory; give a file name such as report.json")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{shown(path)}: report directory {shown(parent)} does not exist (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{shown(path)}: report directory {shown(parent)} is not writable (choose another --report)")
    return path


# ------------------------------------------------------------------------------------------ temporary files
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _temp_pattern(path: Path) -> re.Pattern[str]:
    """``.<name>.<host>.<pid>-<random>.tmp<ext>``: the temporary files of ``path`` written on this host."""
    return re.compile(rf"\.{re.escape(path.name)}\.{re.escape(_host())}\.(\d+)-\w+\.tmp{re.escape(path.suffix)}")


def temp_output(path: Path) -> Path:
    """Create (empty, exclusively) the hidden temporary file the sink writes before :func:`publish`."""
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{_host()}.{os.getpid()}-", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.close(fd)
    # mkstemp creates the file 0600; give the output the permissions of a normally created file
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporary files of ``path`` left by writers on this host that no longer run; return them."""
    pattern = _temp_pattern(path)
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if not match or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        stale = path.parent / name
        try:
            stale.unlink()
        except OSError as exc:
            log.debug("cannot remove stale temporary file %s (%s)", shown(stale), exc)
            continue
        log.info("removed %s, a temporary file left by an interrupted run (pid %s)", shown(stale), match.group(1))
        removed.append(stale)
    return removed


def publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished temporary file to ``path``. Without ``overwrite`` a file that appeared at ``path``
    meanwhile is kept and this run fails (the temporary file is left for the caller to delete)."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if path exists: no window in which another run's file is replaced
    except FileExistsError:
        raise OutputError(
            f"{shown(path)}: output appeared while this run was writing it (another run with the same -o?); "
            "kept it (pass --overwrite to replace it)"
        ) from None
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        # no hard links here: claim the name exclusively, then rename over the (empty) claim
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise OutputError(
                f"{shown(path)}: output appeared while this run was writing it (another run with the same -o?); "
                "kept it (pass --overwrite to replace it)"
            ) from None
        os.replace(tmp, path)
        return
    tmp.unlink()
