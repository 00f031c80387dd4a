"""cuDNN's per-shape plans for a run's first calls: recorded once per machine and run shape, replayed while the
next process loads.

Why: a process's first pass through the networks is slow on the GPU machine's host, not on the GPU. On an H200
(eighth session, call V) the first reference fusion took 1.70 s and the second 0.07 s; the first window step
1.70 s and the second 0.22 s. Nearly all of it is cuDNN choosing and building a plan for every new convolution
shape (0.87 s in the reference, 0.30 s in the step) and a graph for every new attention shape (0.21 s and 0.82 s).
PyTorch keeps those plans in per-thread caches (cuDNN's execution plans are not thread-safe), so they can be made
ahead of time only on the thread that will run the networks. Loading therefore imports diffusers and transformers
on a helper thread (~5 s with the GPU idle) while the main thread replays this file (see
:mod:`personalive.device_warmup`).

Recording: :meth:`PlanBook.recording` pushes a ``TorchDispatchMode`` on the calling thread for one labelled block
(the reference fusion, the first driving preparation, the first window at each keyframe count; see
:mod:`personalive.pipeline.animate`), and keeps the signature of every call that builds a plan: convolutions, the
attention kernels and the matrix products (shapes, strides, storage offsets, dtypes, the other arguments), each
signature once. A label already in the book is not recorded again, so only a machine's first run pays the
recording (a Python call per operator of those blocks). The book is one JSON file per run key (:func:`plan_key`:
GPU, torch, cuDNN, dtypes, network sizes, resolution, backend) in the user cache folder.

Replaying calls the same operators on uninitialised tensors of the recorded layouts (views of one scratch buffer
per dtype), as one TorchScript call where it can (:mod:`.device_plans_script`): a plan depends on shapes, strides,
alignment and dtypes, never on values, and nothing is read back. A missing, unreadable or stale file costs only the
warm-up it would have given; a failing replay stops quietly; the random generators are not used. Measured on an
H200 (ninth session, call Z): 359 calls, 3.3 s alone, ended within the imports; the whole `animate` of a 10 s clip
27.2 s against 30.2-33.5 s without, the first frame 0.83 s after loading against 2.1-2.6 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

logger = logging.getLogger(__name__)

FORMAT = 1
# the operators whose first call per shape builds a cuDNN / cuBLAS plan (the rest launch fixed kernels). A
# dispatch mode sees composite operators before their decomposition (conv2d, not the cuDNN call it becomes), so
# both levels are named; replaying the composite one makes the same choice of kernel for the same layouts
PLANNED_OPS = frozenset(
    {
        *(f"aten.{op}.{overload}" for op in ("conv1d", "conv2d", "conv3d") for overload in ("default", "padding")),
        "aten.convolution.default",
        "aten.scaled_dot_product_attention.default",
        "aten._scaled_dot_product_cudnn_attention.default",
        "aten._scaled_dot_product_flash_attention.default",
        "aten._scaled_dot_product_efficient_attention.default",
        "aten._scaled_dot_product_flash_attention_for_cpu.default",
        "aten.linear.default",
        "aten.matmul.default",
        "aten.mm.default",
        "aten.addmm.default",
        "aten.bmm.default",
        "aten.baddbmm.default",
    }
)


# ------------------------------------------------------------------------------------------ signatures
def _encode(value: Any) -> Any:
    """A JSON value standing for one argument; raises TypeError for a kind replay cannot rebuild."""
    if isinstance(value, torch.Tensor):
        return {"t": list(value.shape), "s": list(value.stride()), "o": value.storage_offset(), "d": str(value.dtype)}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return {"dtype": str(value)}
    raise TypeError(type(value).__name__)


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a dtype: {name}")
    return dtype


def _extent(value: dict[str, Any]) -> int:
    """Elements of storage a recorded tensor spans (its offset included)."""
    shape, stride = value["t"], value["s"]
    return value["o"] + sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) + 1 if all(shape) else 0


def _tensors(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict) and "t" in value:
        yield value


def _decode(value: Any, scratch: dict[str, torch.Tensor]) -> Any:
    """The argument a recorded value stands for; a tensor is a view of ``scratch`` (one uninitialised buffer per
    dtype, so each costs one call, not an allocation: the inputs of one call may overlap, which a plan ignores)."""
    if isinstance(value, list):
        return [_decode(v, scratch) for v in value]
    if isinstance(value, dict) and "t" in value:
        return scratch[value["d"]].as_strided(value["t"], value["s"], value["o"])
    if isinstance(value, dict) and "dtype" in value:
        return _dtype(value["dtype"])
    return value


def scratch_for(calls: list[dict[str, Any]], device: torch.device) -> dict[str, torch.Tensor]:
    """One uninitialised buffer per dtype, large enough for every recorded tensor of ``calls`` as a view of it
    (256-byte aligned, as the caching allocator's blocks are: a recorded offset keeps its alignment)."""
    sizes: dict[str, int] = {}
    for call in calls:
        for tensor in _tensors([call["args"], list(call["kwargs"].values())]):
            sizes[tensor["d"]] = max(sizes.get(tensor["d"], 0), _extent(tensor))
    return {name: torch.empty(n, dtype=_dtype(name), device=device) for name, n in sizes.items()}


def _operator(name: str) -> Any:
    namespace, op, overload = name.split(".")
    return getattr(getattr(getattr(torch.ops, namespace), op), overload)


def _signature(call: dict[str, Any]) -> str:
    return json.dumps(call, sort_keys=True)


class _Recorder(TorchDispatchMode):
    """Keeps the signature of each planned call (:data:`PLANNED_OPS`) made on this thread, once each, except those
    in ``known``."""

    def __init__(self, known: set[str] | None = None) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []
        self.seen: set[str] = set(known or ())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - PyTorch's protocol
        kwargs = kwargs or {}
        name = str(func)
        if name in PLANNED_OPS:
            try:
                call = {"op": name, "args": _encode(list(args)), "kwargs": {k: _encode(v) for k, v in kwargs.items()}}
            except TypeError:
                call = None
            if call is not None:
                key = _signature(call)
                if key not in self.seen:
                    self.seen.add(key)
                    self.calls.append(call)
        return func(*args, **kwargs)


# ------------------------------------------------------------------------------------------ the book
class PlanBook:
    """The recorded calls of one run key, by label, in recording order; loaded from and saved to ``path``.

    ``path`` None: an in-memory book (tests). ``only``: the label prefixes recorded (None: all; a compiled step
    or an engine must not run under a dispatch mode, so their jobs record the pipeline's own networks only).
    """

    def __init__(
        self, path: Path | None = None, key: dict[str, Any] | None = None, only: tuple[str, ...] | None = None
    ) -> None:
        self.path, self.key, self.only = path, key or {}, only
        self.groups: dict[str, list[dict[str, Any]]] = {}
        self.dirty = False
        self.recording_seconds = 0.0

    @classmethod
    def load(cls, path: Path, key: dict[str, Any], only: tuple[str, ...] | None = None) -> PlanBook:
        """The book at ``path`` if it is readable and has this key; else an empty one that will be saved there."""
        book = cls(path, key, only)
        try:
            data = json.loads(path.read_text())
            if data.get("format") == FORMAT and data.get("key") == key and isinstance(data.get("groups"), dict):
                book.groups = {str(k): list(v) for k, v in data["groups"].items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            if not isinstance(exc, FileNotFoundError):
                logger.debug("plan book %s not used: %s", path, exc)
        return book

    def __len__(self) -> int:
        return sum(len(calls) for calls in self.groups.values())

    @contextlib.contextmanager
    def recording(self, label: str) -> Iterator[None]:
        """Record the block's planned calls under ``label`` (those not already in the book under another label),
        unless the label is in the book."""
        if label in self.groups or (self.only is not None and not label.startswith(self.only)):
            yield
            return
        recorder = _Recorder({_signature(call) for calls in self.groups.values() for call in calls})
        started = time.perf_counter()
        with recorder:
            yield
        self.recording_seconds += time.perf_counter() - started
        self.groups[label] = recorder.calls
        self.dirty = True

    def save(self) -> None:
        """Write the book (atomically) if something was recorded; a cache that cannot be written is only logged."""
        if not self.dirty or self.path is None:
            return
        data = {"format": FORMAT, "key": self.key, "groups": self.groups}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".plans-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)
            self.dirty = False
            logger.debug(
                "plan book %s: %d calls in %d groups (recording took %.2f s)",
                self.path,
                len(self),
                len(self.groups),
                self.recording_seconds,
            )
        except OSError as exc:
            logger.debug("plan book %s not written: %s", self.path, exc)


def replay(book: PlanBook, device: torch.device, script: bool = True) -> tuple[int, str | None]:
    """Call every recorded operator once on uninitialised tensors on ``device`` (on this thread, whose plan
    caches the networks will use); returns (calls made, the error that stopped it or None). ``script``: the calls
    it can make run as one TorchScript call, without the interpreter lock (:mod:`.device_plans_script`); the rest
    from Python."""
    done = 0
    calls = [call for group in book.groups.values() for call in group]
    with torch.inference_mode():
        try:
            scratch = scratch_for(calls, device)
            if script:
                try:
                    from personalive.device_plans_script import replay_script, script_calls
                except Exception as exc:  # noqa: BLE001 - TorchScript gone from this torch: the Python path
                    logger.debug("plan replay from Python: %s", exc)
                    script = False
            if script:
                names = sorted(scratch)
                arguments, calls = script_calls(calls, names, _operator)
                # no optimisation pass: the calls' outputs are only measured, and each runs once anyway
                with torch.jit.optimized_execution(False):
                    replay_script([scratch[name] for name in names], *arguments)
                done += len(arguments[0])
            for call in calls:
                args = _decode(call["args"], scratch)
                kwargs = {k: _decode(v, scratch) for k, v in call["kwargs"].items()}
                _operator(call["op"])(*args, **kwargs)
                done += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except Exception as exc:  # noqa: BLE001 - a stale or foreign book only loses its warm-up
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            logger.debug("plan replay stopped after %d calls: %s", done, reason)
            return done, reason
    return done, None


def plan_key(config: Any, device: torch.device, dtype: torch.dtype, sizes: Any) -> dict[str, Any]:
    """What the recorded shapes depend on: the GPU and libraries, the dtypes, the networks' sizes (``sizes``: any
    value whose ``repr`` describes them) and the run's shape settings."""
    gen = config.generation
    key: dict[str, Any] = {
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "dtype": str(dtype),
        "clip_dtype": str(config.model.clip_dtype),
        "decoder": str(config.model.decoder),
        "backend": str(config.runtime.backend),
        "cudnn_benchmark": bool(config.runtime.cudnn_benchmark),
        "generation": [gen.height, gen.width, gen.window, gen.adaptive_steps, gen.max_keyframes],
        "sizes": hashlib.sha256(repr(sizes).encode()).hexdigest()[:16],
    }
    return key


def plan_folder() -> Path:
    """Where plan books are kept: ``plans`` in the user cache folder (see :mod:`personalive.compile_cache`)."""
    from personalive.compile_cache import user_cache_dir

    return user_cache_dir() / "plans"


def describe_plan_cache() -> str:
    folder = plan_folder()
    books = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return f"{folder} ({len(books)} plan books, {sum(p.stat().st_size for p in books) / 1e3:.0f} kB)"


def book_path(folder: Path, key: dict[str, Any]) -> Path:
    return folder / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]}.json"
