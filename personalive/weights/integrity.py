"""The content of weight files: archive CRCs, finite values, and a hash of every byte (cached).

Shapes and key names (checked by the loader) say nothing about the numbers: a flipped byte inside a tensor or a
file of NaN loads fine and animates an all-black video. This module checks the content:

* ``.pth``/``.bin`` files written by ``torch.save`` are zip archives with a CRC-32 per member.
  :func:`verify_archive` reads every byte and checks every CRC (``personalive weights check``);
  :func:`check_archive_structure` is the cheap path run at every load: the central directory is readable, every
  member lies inside the file, and the small members (the pickled structure) match their CRC.
* :func:`nonfinite_tensors` finds tensors holding NaN or infinity; :func:`check_finite` makes that an error naming
  the file and the key.
* :func:`content_hash` is a sha256 of every byte of the given files. Each file's digest is cached by its
  resolved path, size, inode, mtime and ctime (``$PERSONALIVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/personalive``,
  else ``~/.cache/personalive``), so only the first load after a change reads the whole file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from personalive.errors import WeightsError

log = logging.getLogger(__name__)

CHUNK = 1 << 22  # bytes read at a time when hashing or checking CRCs
SMALL_MEMBER = 1 << 16  # archive members up to this size (version, byte order, biases, norms) and the pickle
# are CRC-checked at every load: a few percent of the bytes of the release weights
CACHE_FILE = "weights-sha256.json"
FIX = "re-download it with `personalive weights download`"
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # zip local file header: signature ... name length, extra length


# ------------------------------------------------------------------------------------------------ archives
def _members(path: Path) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]] | None:
    """The open archive and its members, None for a file that is not a zip (legacy pickle, safetensors)."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise WeightsError(f"{path}: its zip directory is damaged ({exc}); {FIX}") from exc
    return archive, archive.infolist()


def _check_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> str | None:
    """Read one member to its end (zipfile checks the CRC there); a problem or None."""
    if info.CRC == 0 and info.file_size > 0:
        return None  # written without CRCs (torch.serialization.set_crc32_options(False)): nothing to check
    try:
        with archive.open(info) as member:
            while member.read(CHUNK):
                pass
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        return f"{path}: member {info.filename} is corrupt ({exc})"
    return None


def verify_archive(path: str | os.PathLike) -> list[str]:
    """Every CRC of a zip-format weight file, reading every byte; the problems found (empty: intact or no zip),
    each naming the file and the member."""
    path = Path(path)
    found = _members(path)
    if found is None:
        return []
    archive, members = found
    with archive:
        return [p for info in members if (p := _check_member(archive, info, path))]


def check_archive_structure(path: str | os.PathLike, small: int = SMALL_MEMBER) -> None:
    """The cheap check at load: readable directory, members inside the file, the CRCs of the pickled structure
    and of members of at most ``small`` bytes. Raises :class:`WeightsError` naming the file."""
    path = Path(path)
    found = _members(path)
    if found is None:
        return
    archive, members = found
    size = path.stat().st_size
    with archive, path.open("rb") as raw:
        for info in members:
            raw.seek(info.header_offset)
            header = raw.read(_LOCAL_HEADER.size)
            if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
                raise WeightsError(f"{path}: member {info.filename} has no valid header (file damaged); {FIX}")
            name_len, extra_len = _LOCAL_HEADER.unpack(header)[1:]
            end = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size
            if end > size:
                raise WeightsError(f"{path}: member {info.filename} runs past the end of the file (truncated); {FIX}")
            if info.file_size <= small or info.filename.endswith(".pkl"):
                problem = _check_member(archive, info, path)
                if problem:
                    raise WeightsError(f"{problem}; {FIX}")


# ------------------------------------------------------------------------------------------------ values
def nonfinite_tensors(state: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(key, non-finite count, element count) for every floating-point tensor holding NaN or infinity."""
    import torch

    floats = [
        (key, t) for key, t in state.items() if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()
    ]
    # a tensor is finite when its minimum and maximum are: NaN propagates into both and +-inf is an extreme. One
    # pass without a mask (isfinite allocates one), and one host synchronisation per device, not one per tensor.
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for key, tensor in floats:
        by_device.setdefault(tensor.device, []).append((key, tensor))
    suspects = set()
    for group in by_device.values():
        extremes = torch.stack([torch.stack(torch.aminmax(t.detach())).float() for _, t in group])
        flags = torch.isfinite(extremes).all(dim=1).tolist()
        suspects |= {key for (key, _), ok in zip(group, flags, strict=True) if not ok}
    return [(key, int((~torch.isfinite(t)).sum()), t.numel()) for key, t in floats if key in suspects]


def check_finite(state: Mapping[str, Any], origin: Mapping[str, os.PathLike] | os.PathLike) -> None:
    """Raise :class:`WeightsError` naming file and key when a tensor holds NaN or infinity. ``origin`` is the
    file, or a mapping key -> file when the state came from several."""
    bad = nonfinite_tensors(state)
    if not bad:
        return
    key, count, total = bad[0]
    path = origin[key] if isinstance(origin, Mapping) else origin
    more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
    raise WeightsError(f"{path}: {key} holds {count} non-finite values (NaN or inf) of {total}{more}; {FIX}")


# ------------------------------------------------------------------------------------------------ hashing
def cache_dir() -> Path:
    explicit = os.environ.get("PERSONALIVE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "personalive"


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _read_cache(file: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(file: Path, cache: dict[str, dict[str, str]]) -> None:
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", dir=file.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f)
        os.replace(tmp, file)
    except OSError as exc:  # a read-only home: hash again next time
        log.debug("cannot write the weights hash cache %s (%s)", file, exc)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(root: str | os.PathLike, files: Iterable[str | os.PathLike], *, use_cache: bool = True) -> str:
    """sha256 over, per file (sorted by path relative to ``root``), its relative path, size and content digest.
    Missing files are skipped. Per-file digests come from the cache when the file's stat is unchanged."""
    root = Path(root)
    cache_file = cache_dir() / CACHE_FILE
    cache = _read_cache(cache_file) if use_cache else {}
    changed = not use_cache
    total = hashlib.sha256()
    for path in sorted((Path(p) for p in files), key=lambda p: p.relative_to(root).as_posix()):
        if not path.is_file():
            continue
        resolved, stat_key = str(path.resolve()), _stat_key(path)
        entry = cache.get(resolved)
        if not isinstance(entry, dict) or entry.get("stat") != stat_key:
            entry = {"stat": stat_key, "sha256": file_sha256(path)}
            cache[resolved] = entry
            changed = True
        size = path.stat().st_size
        total.update(f"{path.relative_to(root).as_posix()}\0{size}\0{entry['sha256']}\0".encode())
    if changed:
        _write_cache(cache_file, {**_read_cache(cache_file), **cache})
    return total.hexdigest()
