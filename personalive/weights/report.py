"""Where :func:`personalive.weights.load_models` spends its time and host memory, phase by phase and per network.

Phases (seconds; a network's phases add up to its share of the total):

* ``device_init``: the device's context (CUDA's first call), so that it does not hide in the first network;
* ``imports``: diffusers, transformers and the network modules (on a helper thread on CUDA, while the main thread
  warms the device up: :mod:`personalive.device_warmup`);
* ``warmup``: the part of that warm-up (CUDA's libraries, the replayed cuDNN plans) that outlasted the imports
  (normally nothing); its whole duration is ``warmup_seconds``, the plan calls replayed ``plans_replayed``;
* ``build``: constructing the network with its parameters on the meta device (buffers real, on the device);
* ``read``: the cheap archive check and ``torch.load(mmap=True)`` (no tensor bytes are read yet);
* ``compare``: the strict key and shape comparison;
* ``copy``: the tensors' bytes from the file mapping to the device, cast to the network's dtype (page faults
  included: the pages are read here), and the ``assign`` of the loaded tensors;
* ``finite``: the check that no value is NaN or infinite (on the device).

The weights' identity (``ModelSet.weights_hash``) is not part of loading: it is computed when an engine first
asks for it.

Host memory: ``rss_start_gib`` is the resident set when loading began, ``rss_end_gib`` when it ended and
``peak_rss_gib`` the process's peak resident set so far (``ru_maxrss``: a peak reached before loading shows too,
so measure in a fresh process, as ``benchmarks/load_breakdown.py`` does).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from personalive.device_warmup import DeviceWarmup

logger = logging.getLogger(__name__)

PHASES = ("device_init", "imports", "warmup", "build", "read", "compare", "copy", "finite")


def current_rss_gib() -> float | None:
    """This process's resident set now (Linux ``/proc/self/statm``), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_rss_gib() -> float | None:
    """The process's peak resident set (``ru_maxrss``; KiB on Linux), None where ``resource`` is missing."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@dataclass
class LoadReport:
    """Seconds per phase (summed over networks) and per network, bytes copied, and host memory (see module doc)."""

    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    networks: dict[str, dict[str, float]] = field(default_factory=dict)
    bytes_copied: int = 0
    seconds: float = 0.0
    rss_start_gib: float | None = None
    rss_end_gib: float | None = None
    peak_rss_gib: float | None = None
    step_seconds: float = 0.0  # the backend's window step built from the loaded networks (set by the job's loader)
    warmup_seconds: float = 0.0  # the device warm-up's own time (beside the imports)
    plans_replayed: int = 0  # cuDNN plan calls replayed by the warm-up (personalive.device_plans)

    @contextmanager
    def phase(self, name: str, network: str | None = None) -> Iterator[None]:
        """Add the time spent inside the block to ``name`` (and to the network's own ``name``)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self.phases[name] = self.phases.get(name, 0.0) + seconds
            if network is not None:
                own = self.networks.setdefault(network, {})
                own[name] = own.get(name, 0.0) + seconds

    def record_warmup(self, wall: float, warmup: DeviceWarmup) -> None:
        """The imports and the device warm-up beside them took ``wall`` seconds (a ``DeviceWarmup`` after
        ``beside``): the imports' share goes to ``imports``, what the warm-up took longer to ``warmup``."""
        imports = min(wall, warmup.imports_seconds)
        self.phases["imports"] += imports
        self.phases["warmup"] += wall - imports
        self.warmup_seconds = warmup.seconds
        self.plans_replayed = warmup.replayed

    def start(self) -> float:
        self.rss_start_gib = current_rss_gib()
        return time.perf_counter()

    def finish(self, started: float) -> None:
        self.seconds = time.perf_counter() - started
        self.rss_end_gib = current_rss_gib()
        self.peak_rss_gib = peak_rss_gib()
        logger.debug("loading took %.2f s: %s", self.seconds, self.summary())

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.2f} s" for k, v in self.phases.items() if v >= 0.005)

    def as_dict(self) -> dict:
        """Rounded, JSON-ready."""

        def gib(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "seconds": round(self.seconds, 3),
            "phases_s": {k: round(v, 3) for k, v in self.phases.items()},
            "networks_s": {n: {k: round(v, 3) for k, v in p.items()} for n, p in self.networks.items()},
            "gib_copied": round(self.bytes_copied / 2**30, 3),
            "warmup_s": round(self.warmup_seconds, 3),
            "plans_replayed": self.plans_replayed,
            "rss_start_gib": gib(self.rss_start_gib),
            "rss_end_gib": gib(self.rss_end_gib),
            "peak_rss_gib": gib(self.peak_rss_gib),
        }
