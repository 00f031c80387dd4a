"""Networks built without initialising their parameters, then handed the checkpoint's tensors.

Default initialisation of PersonaLive's 3 B parameters takes tens of seconds on a CPU and is overwritten by the
weights anyway. :func:`build_empty` constructs a network with every parameter on the meta device (shape and
dtype only: no memory, no initialisation work) while its buffers are made for real on the target device, because
some buffers are in no checkpoint: they are computed at construction (CLIP's ``position_ids``, the motion encoder's
positional tables; see :func:`nonpersistent_buffers`). :func:`assign_state` then copies each checkpoint tensor once,
from the memory-mapped file straight to a new tensor of the network's dtype on the device, and assigns them
(``load_state_dict(assign=True)``): no parameter is ever allocated or written twice.

Host memory: the pages of a memory-mapped file count in the resident set as they are read. Once a tensor has been
copied, :class:`MappedPages` gives its pages back (``madvise(MADV_DONTNEED)`` on the file's private mapping: clean
pages of a file, read again from the page cache if touched), so the resident set does not grow by the size of the
files being loaded.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

_PATCH_LOCK = threading.Lock()
_MADV_DONTNEED = 4  # <sys/mman.h> on Linux


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Every parameter registered inside the block goes to the meta device; buffers stay where they are made.

    ``nn.Module.register_parameter`` is swapped for the block's duration (any thread building modules meanwhile
    would get meta parameters too, so loading holds a lock; nothing else builds modules while models load). The
    layer's own ``reset_parameters`` then runs on meta tensors and costs nothing.
    """
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = type(param)(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    with _PATCH_LOCK:
        nn.Module.register_parameter = register_on_meta
        try:
            yield
        finally:
            nn.Module.register_parameter = register


def build_empty(builder: Callable[[], nn.Module], device: torch.device, dtype: torch.dtype) -> nn.Module:
    """``builder()`` with its parameters on the meta device and its buffers on ``device``; floating-point
    parameters and buffers in ``dtype`` (as ``.to(dtype)`` would cast them; integer buffers keep their type)."""
    with torch.device(device), parameters_on_meta():
        module = builder()
    # a buffer made from host data (torch.from_numpy: the motion encoder's sin-cos table) ignores the device
    # context; module.to(device) cannot move the meta parameters, so such buffers move one by one
    for sub in module.modules():
        for name, buffer in sub._buffers.items():
            if buffer is not None and buffer.device != torch.device(device):
                sub._buffers[name] = buffer.to(device)
    # nn.Module.to: diffusers' ModelMixin.to warns about fp32-kept modules that these networks do not have
    return nn.Module.to(module, dtype=dtype)


def nonpersistent_buffers(module: nn.Module) -> list[str]:
    """Buffers that no state dict holds: they keep the value computed at construction."""
    persistent = set(module.state_dict())
    return [name for name, _ in module.named_buffers() if name not in persistent]


# --------------------------------------------------------------------------------------------- copying
def _library() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


class MappedPages:
    """The file mappings of ``paths`` in this process; :meth:`release` gives back a tensor's whole pages.

    Only addresses inside a mapping of one of the files are ever released (read from ``/proc/self/maps``, so
    tensors in ordinary memory, e.g. from a reader that copied the file, are left alone). Linux only; elsewhere
    (and when ``madvise`` is missing) it does nothing.
    """

    def __init__(self, paths: Iterable[Path]) -> None:
        names = {os.path.realpath(p) for p in paths}
        self.ranges: list[tuple[int, int]] = []
        self.libc = _library()
        self.page = mmap.PAGESIZE
        self.released = 0
        try:
            with open("/proc/self/maps") as f:
                for line in f:
                    fields = line.split(maxsplit=5)
                    if len(fields) == 6 and fields[5].rstrip("\n") in names:
                        start, end = (int(x, 16) for x in fields[0].split("-"))
                        self.ranges.append((start, end))
        except OSError:
            self.ranges = []

    def release(self, tensor: torch.Tensor) -> None:
        if not self.ranges or self.libc is None or tensor.device.type != "cpu":
            return
        begin = tensor.data_ptr()
        if tensor.is_contiguous():
            end = begin + tensor.numel() * tensor.element_size()
        else:  # the rest of its storage: pages released too early are read again, never lost
            storage = tensor.untyped_storage()
            end = storage.data_ptr() + storage.nbytes()
        if not any(lo <= begin and end <= hi for lo, hi in self.ranges):
            return
        # whole pages only: a page shared with a neighbouring tensor stays until that tensor is released
        first = -(-begin // self.page) * self.page
        last = end // self.page * self.page
        if last > first and self.libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED):
            logger.debug("madvise failed (errno %d); pages kept", ctypes.get_errno())
            return
        self.released += max(last - first, 0)


def copy_to(source: torch.Tensor, like: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A new tensor on ``device`` with ``like``'s shape and dtype, holding ``source``'s values.

    ``copy_`` rounds as loading into a ``like``-typed parameter always did. Off the CPU, a cast happens after the
    transfer (on the device, same rounding) so that the host does not convert gigabytes on one core.
    """
    target = torch.empty(like.shape, dtype=like.dtype, device=device)
    if device.type != "cpu" and source.dtype != like.dtype:
        source = source.to(device)
    return target.copy_(source)


def assign_state(
    module: nn.Module, state: dict[str, torch.Tensor], device: torch.device, pages: MappedPages, threads: int
) -> int:
    """Load ``state`` (keys and shapes already compared, strictly) into ``module`` built by :func:`build_empty`:
    every tensor copied to ``device`` in the dtype the module holds for that key, by ``threads`` threads (copies
    release the GIL), its file pages given back, then assigned. Returns the bytes copied."""
    targets = module.state_dict()

    def one(key: str) -> torch.Tensor:
        loaded = copy_to(state[key], targets[key], device)
        pages.release(state[key])
        return loaded

    keys = list(targets)
    if threads > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="load") as pool:
            loaded = dict(zip(keys, pool.map(one, keys), strict=True))
    else:
        loaded = {key: one(key) for key in keys}
    module.load_state_dict(loaded, strict=True, assign=True)
    check_materialized(module, {k: (v.dtype, device) for k, v in targets.items()}, device)
    return sum(t.numel() * t.element_size() for t in loaded.values())


def check_materialized(
    module: nn.Module, expected: dict[str, tuple[torch.dtype, torch.device]], device: torch.device
) -> None:
    """Every parameter and buffer is on ``device`` (none left on meta) with the dtype ``expected`` names for it
    (non-persistent buffers: any dtype, on the device). A failure is a loader bug, not a weights problem."""
    wrong = []
    tensors = list(module.named_parameters(remove_duplicate=False)) + list(
        module.named_buffers(remove_duplicate=False)
    )
    for name, tensor in tensors:
        dtype = expected.get(name, (tensor.dtype, device))[0]
        on_device = tensor.device.type == device.type and device.index in (None, tensor.device.index)
        if not on_device or tensor.dtype != dtype:
            wrong.append(f"{name} is {tensor.dtype} on {tensor.device} (expected {dtype} on {device})")
    if wrong:
        raise RuntimeError(f"loading left {len(wrong)} tensor(s) unloaded or mistyped: {'; '.join(wrong[:5])}")
