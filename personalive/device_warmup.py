"""CUDA's libraries set up on a background thread while loading imports the network code.

Why: a process's first convolution, matrix product and attention load cuDNN's, cuBLAS's and the attention
kernels' libraries and create their handles (on an H200: 112-290 ms, 83 ms and up to 459 ms), while loading spends
~5 s importing diffusers and transformers with the GPU idle. PyTorch's operators release the GIL while they run, so
a thread doing those set-ups takes little from the imports. Its handles go back to PyTorch's per-device pools when
the thread ends, and the main thread's first networks take them from there (then 3 ms, 2 ms). Measured in the
whole command (eighth session, call W): the reference's first pass went from ~1.9 to ~1.4 s.

What it runs, per floating-point dtype the networks use: a 3x3 convolution, a linear layer with bias, a batched
product and a scaled-dot-product attention, at small sizes, then a synchronisation. It uses constant tensors, never
a random generator (the run's noise must not depend on it), and functional operators, never modules (loading
builds modules meanwhile). cuDNN still chooses an algorithm per new shape at the networks' first calls: only
library-wide set-up is done here. A failure is logged and ignored; the networks report any real problem.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


class LibraryWarmup:
    """``with LibraryWarmup(device, dtypes):`` runs :func:`warm_libraries` on a thread for the block's duration
    (a CUDA device only) and waits for it at the block's end; ``waited`` is that wait, ``seconds`` the thread's
    own time."""

    def __init__(self, device: torch.device, dtypes: Iterable[torch.dtype]) -> None:
        self.device = torch.device(device)
        self.dtypes = sorted({d for d in dtypes if d.is_floating_point}, key=str)
        self.thread: threading.Thread | None = None
        self.seconds = 0.0
        self.waited = 0.0
        self.error: str | None = None

    def __enter__(self) -> LibraryWarmup:
        if self.device.type == "cuda" and self.dtypes:
            self.thread = threading.Thread(target=self._run, name="cuda-warmup", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread is not None:
            started = time.perf_counter()
            self.thread.join()  # its handles return to the pools when it ends
            self.waited = time.perf_counter() - started
            self.thread = None

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            warm_libraries(self.device, self.dtypes)
        except Exception as exc:  # noqa: BLE001 - a warm-up never fails a run
            self.error = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            logger.debug("CUDA library warm-up failed: %s", self.error)
        self.seconds = time.perf_counter() - started
        logger.debug("CUDA library warm-up took %.2f s", self.seconds)


def warm_libraries(device: torch.device, dtypes: Iterable[torch.dtype]) -> None:
    """One small call of each library-backed operator kind the networks use, per dtype (see the module doc)."""
    with torch.inference_mode():
        for dtype in dtypes:
            full = dict(device=device, dtype=dtype)
            image = torch.full((1, 32, 32, 32), 0.01, **full)
            F.conv2d(image, torch.full((32, 32, 3, 3), 0.01, **full), torch.zeros(32, **full), padding=1)
            rows = torch.full((64, 256), 0.01, **full)
            F.linear(rows, torch.full((256, 256), 0.01, **full), torch.zeros(256, **full))
            torch.bmm(rows.view(4, 16, 256), rows.view(4, 256, 16))
            heads = torch.full((1, 8, 64, 64), 0.01, **full)
            F.scaled_dot_product_attention(heads, heads, heads)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
