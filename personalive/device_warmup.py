"""The device warmed up on the main thread while loading imports the network code on a helper thread.

Why: loading spends ~5 s importing diffusers and transformers (H200, eighth session) with the GPU idle, and a
process's first calls then pay set-up that has nothing to do with the weights:

* library set-up: the first convolution, matrix product and attention load cuDNN's, cuBLAS's and the attention
  kernels' libraries and create their handles (112-290 ms, 83 ms and up to 459 ms);
* per-shape plans: cuDNN builds a plan for each new convolution shape and a graph for each new attention shape
  (the first reference fusion 1.70 s against 0.07 s for the second; see :mod:`personalive.device_plans`).

PyTorch keeps cuDNN's plans in per-thread caches, so they must be made on the thread that will run the networks:
the imports go to a helper thread and the main thread does the warm-up. The two share the interpreter lock: a
PyTorch call from Python releases it in C++ and then waits for the importing thread to hand it back, so the plan
book is replayed as one TorchScript call, which holds no lock while it runs (:mod:`personalive.device_plans_script`;
on the H200 the replay, ~3.3 s of host work alone, then ended before the imports, ninth session, call Z).

What the main thread runs: per floating-point dtype the networks use, a 3x3 convolution, a linear layer with bias,
a batched product and an attention at small sizes (:func:`warm_libraries`); then the plan book of this run's key,
if one was recorded (:func:`personalive.device_plans.replay`). It never uses a random generator (the run's noise
must not depend on it) and calls functional operators only, never modules. A failure of the warm-up is logged and
ignored (the networks report any real problem); an import error is raised on the main thread as it happened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from personalive.device_plans import PlanBook, replay

logger = logging.getLogger(__name__)


class DeviceWarmup:
    """``DeviceWarmup(device, dtypes, plans).beside(imports)``: ``imports()`` on a helper thread while this thread
    warms ``device`` up; returns once both are done (re-raising an import error).

    After it: ``imports_seconds`` (the helper's time), ``seconds`` (the warm-up's time here), ``replayed`` (plan
    calls replayed), ``error`` (what stopped the warm-up, or None). Off CUDA there is nothing to warm up: the
    imports run on this thread (``thread=True`` forces the helper thread and the warm-up anywhere, for tests).
    """

    def __init__(
        self,
        device: torch.device,
        dtypes: Iterable[torch.dtype],
        plans: PlanBook | None = None,
        thread: bool | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.thread = self.device.type == "cuda" if thread is None else thread
        self.dtypes = sorted({d for d in dtypes if d.is_floating_point}, key=str)
        self.plans = plans
        self.imports_seconds = 0.0
        self.seconds = 0.0
        self.replayed = 0
        self.error: str | None = None

    def beside(self, imports: Callable[[], None]) -> None:
        if not self.thread:
            started = time.perf_counter()
            imports()
            self.imports_seconds = time.perf_counter() - started
            return
        failure: list[BaseException] = []

        def run_imports() -> None:
            started = time.perf_counter()
            try:
                imports()
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, raised there
                failure.append(exc)
            self.imports_seconds = time.perf_counter() - started

        thread = threading.Thread(target=run_imports, name="imports", daemon=True)
        thread.start()
        self._warm()
        thread.join()
        if failure:
            raise failure[0]

    def _warm(self) -> None:
        started = time.perf_counter()
        try:
            warm_libraries(self.device, self.dtypes)
            if self.plans is not None and self.plans.groups:
                self.replayed, self.error = replay(self.plans, self.device)
        except Exception as exc:  # noqa: BLE001 - a warm-up never fails a run
            self.error = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            logger.debug("device warm-up failed: %s", self.error)
        self.seconds = time.perf_counter() - started
        logger.debug("device warm-up took %.2f s (%d plan calls replayed)", self.seconds, self.replayed)


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
