"""Motion templates: what a driving video contributes to a run, extracted once and reused for any reference.

A ``.motion`` file is one safetensors file (no pickle): tensors ``info.<key>`` (the motion extractor's per-frame
output, or its smoothed pose parameters) and ``faces`` (the motion encoder's face crops, (N, 3, 224, 224) in
[-1, 1]), both in the run's dtype exactly as the animator consumes them, so ``animate --drive x.motion`` gives the
same frames as the video for the same seed. The header's metadata holds one JSON document (``personalive``):
format, frame count and exact rate, the source video (path, size, hash of its first and last MiB, audio), the
weights hash and every setting the tensors depend on. Loading checks all of them and refuses a mismatch naming
the field. Size: ~600 KB per frame in fp32, half in fp16/bf16.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from personalive.errors import InputError

FORMAT = "personalive-motion/1"
SUFFIX = ".motion"
HASH_BYTES = 1 << 20


def is_motion_file(path: Path) -> bool:
    return Path(path).suffix == SUFFIX


def source_hash(path: Path) -> str:
    """sha256 of the file's size, first MiB and last MiB (cheap for multi-GB videos, changes with any re-encode)."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(HASH_BYTES))
        if size > HASH_BYTES:
            f.seek(max(HASH_BYTES, size - HASH_BYTES))
            digest.update(f.read())
    return digest.hexdigest()


def template_settings(config: Any, dtype: torch.dtype) -> dict[str, Any]:
    """The settings a template's tensors depend on, as requested (compared key by key when it is used)."""
    g, m = config.generation, config.media
    return {
        "height": g.height,
        "width": g.width,
        "dtype": str(dtype).removeprefix("torch."),
        "face_crop": str(m.face_crop),
        "driving_crop": str(m.driving_crop),
        "crop": str(m.crop),
        "smoothing": float(g.smoothing),
        "min_face_box": g.min_face_box,
    }


@dataclass
class MotionTemplate:
    info: dict[str, torch.Tensor]  # each (N, ...)
    faces: torch.Tensor  # (N, 3, 224, 224)
    meta: dict[str, Any]

    @property
    def frames(self) -> int:
        return int(self.faces.shape[0])

    @property
    def rate(self) -> Fraction:
        return Fraction(self.meta["rate"])


def save_motion(path: Path, template: MotionTemplate) -> None:
    """Write atomically: a hidden temporary file beside ``path``, renamed at the end."""
    from safetensors.torch import save_file

    tensors = {f"info.{k}": v.contiguous().cpu() for k, v in template.info.items()}
    tensors["faces"] = template.faces.contiguous().cpu()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata={"personalive": json.dumps(template.meta, sort_keys=True)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_motion(path: Path) -> MotionTemplate:
    """Read a template; an unreadable or foreign file is an InputError naming it."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("personalive", "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (OSError, ValueError, json.JSONDecodeError, RuntimeError) as exc:
        raise InputError(f"{path}: not a readable motion template ({str(exc).splitlines()[0][:120]})") from exc
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own SafetensorError for damaged headers
        raise InputError(f"{path}: not a readable motion template ({type(exc).__name__})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{path}: not a motion template of this version (expected format {FORMAT})")
    faces = tensors.pop("faces", None)
    info = {k.removeprefix("info."): v for k, v in tensors.items() if k.startswith("info.")}
    if faces is None or not info or any(v.shape[0] != faces.shape[0] for v in info.values()):
        raise InputError(f"{path}: motion template is incomplete (tensors missing or of unequal length)")
    if faces.shape[0] != meta.get("frames"):
        raise InputError(
            f"{path}: motion template holds {faces.shape[0]} frames, its header says {meta.get('frames')}"
        )
    return MotionTemplate(info, faces, meta)


def check_motion(path: Path, template: MotionTemplate, weights_hash: str, settings: dict[str, Any]) -> None:
    """Refuse a template made with other weights or settings, naming the first field that differs."""
    if template.meta.get("weights_hash") != weights_hash:
        raise InputError(
            f"{path}: motion template was extracted with other weights (hash {template.meta.get('weights_hash')}, "
            f"these are {weights_hash}); extract it again with `personalive motion extract`"
        )
    made = template.meta.get("settings", {})
    for key, value in settings.items():
        if made.get(key) != value:
            raise InputError(
                f"{path}: motion template was extracted with {key}={made.get(key)!r}, this run has {value!r} "
                "(extract it again with these settings, or run with the template's)"
            )
