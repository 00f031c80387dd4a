"""Fetch the official weights from the Hugging Face Hub into the official ``pretrained_weights`` layout.

Every file goes through the Hub's own cache (``hf_hub_download``): an interrupted download resumes from its
``.incomplete`` blob, a second run finds the file cached, and with ``HF_HUB_OFFLINE=1`` the same code path
reads from a filled cache (``HF_HOME`` / ``HF_HUB_CACHE``) without touching the network. Each cached file is then
hard-linked (or copied, across file systems) into the layout. A file already in the layout with the right size
is left alone. The sources are the ones upstream's ``tools/download_weights.py`` uses.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from personalive.errors import DownloadError, OutputError
from personalive.weights.layout import FILES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubFile:
    """One file of the layout: where it lives on the Hub and where it goes under the weights root."""

    repo_id: str
    filename: str  # path inside the Hub repository
    target: str  # path under the weights root
    revision: str = "main"


# every file of the layout table (the sources are the ones upstream's tools/download_weights.py uses)
OFFICIAL_FILES: tuple[HubFile, ...] = tuple(HubFile(f.repo_id, f.filename, f.path) for f in FILES.values())

_TRUE = {"1", "on", "yes", "true"}


def download_weights(
    directory: str | Path,
    *,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    check: bool = True,
    files: Sequence[HubFile] = OFFICIAL_FILES,
) -> list[Path]:
    """Fetch ``files`` into ``directory`` (the layout root) and return their paths there.

    ``cache_dir`` is the Hub cache (default: the Hub's, from ``HF_HUB_CACHE`` / ``HF_HOME``). ``offline``
    (default: ``HF_HUB_OFFLINE``) reads only from that cache. ``check`` runs the weights check on the result.
    Raises DownloadError naming the repository, the file and the fix when a file can be neither found nor fetched.
    """
    root = Path(directory)
    offline = hub_offline() if offline is None else offline
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the weights folder {root}: {exc.strerror}; choose a writable DIR") from exc
    log.info("weights root %s (%s)", root, "offline: Hub cache only" if offline else "online")

    fetched = 0
    for file in files:
        fetched += _fetch_one(file, root, cache_dir, offline)
    paths = [root / file.target for file in files]
    total = sum(path.stat().st_size for path in paths)
    log.info(
        "%d files in place (%d fetched, %d already present), %.2f GB",
        len(paths),
        fetched,
        len(paths) - fetched,
        total / 1e9,
    )
    if check:
        _check_layout(root)
    return paths


def download_command(directory: str | Path | None = None) -> None:
    """``personalive weights download [DIR]``: DIR defaults to $PERSONALIVE_WEIGHTS or ./pretrained_weights."""
    from personalive.config import default_weights_dir

    root = Path(directory) if directory is not None else Path(default_weights_dir())
    download_weights(root)
    log.info("weights ready in %s: use --weights %s or PERSONALIVE_WEIGHTS=%s", root, root, root)


def hub_offline() -> bool:
    """Whether the Hub is switched off: HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now, not at import."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


# ------------------------------------------------------------------------------------------------ one file


def _fetch_one(file: HubFile, root: Path, cache_dir: str | Path | None, offline: bool) -> int:
    """Put one file in place; return 1 if it was (re)placed, 0 if the one there was kept."""
    target = root / file.target
    if target.is_file():
        expected = _expected_size(file, cache_dir, offline)
        size = target.stat().st_size
        if expected is None or size == expected:
            log.info(
                "%s: present (%d bytes)%s", file.target, size, "" if expected is not None else ", size not verifiable"
            )
            return 0
        log.info("%s: %d bytes, expected %d: fetching again", file.target, size, expected)
    cached = _hub_download(file, target, cache_dir, offline)
    _place(Path(cached), target)
    log.info("%s <- %s/%s", file.target, file.repo_id, file.filename)
    return 1


def _expected_size(file: HubFile, cache_dir: str | Path | None, offline: bool) -> int | None:
    """The file's size from the Hub cache, else from the Hub (online), else None (unknown)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    cached = try_to_load_from_cache(file.repo_id, file.filename, cache_dir=cache_dir, revision=file.revision)
    if isinstance(cached, str):
        return os.path.getsize(cached)
    if offline:
        return None
    try:
        return get_hf_file_metadata(hf_hub_url(file.repo_id, file.filename, revision=file.revision)).size
    except Exception as exc:  # noqa: BLE001 - unknown size only means the present file is kept
        log.debug("no size for %s/%s: %s", file.repo_id, file.filename, exc)
        return None


def _hub_download(file: HubFile, target: Path, cache_dir: str | Path | None, offline: bool) -> str:
    """Path of the file in the Hub cache, downloading (or resuming) it unless offline."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    where = f"{file.repo_id}/{file.filename}@{file.revision}"
    cache = cache_dir or constants.HF_HUB_CACHE
    manual = f"or download it by hand from https://huggingface.co/{file.repo_id} to {target}"
    try:
        return hf_hub_download(
            repo_id=file.repo_id,
            filename=file.filename,
            revision=file.revision,
            cache_dir=cache_dir,
            local_files_only=offline,
        )
    except LocalEntryNotFoundError as exc:  # before EntryNotFoundError: newer hubs derive it from that
        if offline:
            fix = (
                "unset HF_HUB_OFFLINE and connect to the network, point HF_HOME or HF_HUB_CACHE at a cache that has it"
            )
            raise DownloadError(
                f"{where}: not in the Hugging Face cache {cache} and offline mode is on; {fix}, {manual}"
            ) from exc
        raise DownloadError(
            f"{where}: the Hub cannot be reached and the file is not in the cache {cache}; check "
            f"the network or proxy (HF_ENDPOINT), use a filled cache (HF_HOME, HF_HUB_OFFLINE=1), {manual}"
        ) from exc
    except GatedRepoError as exc:
        raise DownloadError(
            f"{where}: the repository is gated; accept its terms on https://huggingface.co/"
            f"{file.repo_id} and log in (`hf auth login` or HF_TOKEN)"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise DownloadError(
            f"{where}: repository not found or private; check the name and your token (HF_TOKEN), {manual}"
        ) from exc
    except EntryNotFoundError as exc:
        raise DownloadError(f"{where}: no such file in the repository; {manual}") from exc
    except HfHubHTTPError as exc:
        raise DownloadError(
            f"{where}: Hub error {_first_line(exc)}; run the command again to resume, {manual}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - network and disk errors of the transfer become one clear line
        raise DownloadError(
            f"{where}: download failed ({type(exc).__name__}: {_first_line(exc)}); "
            f"run the command again to resume, {manual}"
        ) from exc


def _place(cached: Path, target: Path) -> None:
    """Hard-link the cached blob to target (copy across file systems), atomically via a .part file."""
    source = Path(os.path.realpath(cached))
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    part.unlink(missing_ok=True)
    try:
        os.link(source, part)
    except OSError:
        shutil.copyfile(source, part)
    os.replace(part, target)


def _check_layout(root: Path) -> None:
    """Run ``personalive weights check`` on the result; it raises WeightsError naming every problem."""
    from personalive.weights.check import check_command

    check_command(root)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"
