"""The whole window step in CUDA graphs, for any backend whose step runs on a CUDA device.

Why: the eager step is host-bound on an H200 (146 ms of Python and launch time to queue 3,807 kernels that run
for 179 ms), and inductor's compiled step still launches ~1,500 kernels from Python or from the AOTInductor
wrapper. Captured once, a window is one graph launch: the host is free to decode, encode and prepare the next
window while the GPU works, and the GPU never waits for the host between kernels.

How: a set of input shapes (the reference features grow by one image per history keyframe, so one set per
keyframe count) runs uncaptured for its first ``capture_after - 1`` calls, real windows that do the compilation,
autotuning and cuDNN/cuBLAS set-up; the next call is captured over static input buffers and replayed. A keyframe
count that a run passes through in a window or two (the bank fills within the first seconds) is never captured: a
capture costs the host one uncaptured step's launch time while the GPU runs ahead only as far as the queue
reaches. The capture itself is cheap (0.1-0.17 s on an H200, eleventh session): no discarded warm-up run when real
windows already ran the shapes (PyTorch's ``torch.cuda.graph`` pattern runs one; here it was a whole window of GPU
time thrown away per capture), and no ``torch.cuda.graph`` context, whose entry synchronises the device and empties
the caching allocators (device and pinned host) that the next windows then refill; the capture runs on a stream of
its own behind the work already queued, in CUDA's thread-local capture mode (the decoding and encoding threads may
call CUDA meanwhile). Later calls copy their inputs into the static buffers, replay, and return clones of the
static outputs: callers keep outputs across calls (the keyframe bank, the next window's latents), and a replay
overwrites the static ones. All graphs of one step share one memory pool: they never run concurrently. A step that
cannot be captured (an op that synchronises with the host, say) runs uncaptured from then on, with one warning:
slower, never wrong.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

StepFn = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
# the call of a set of shapes that captures it: the first two run uncaptured (a keyframe count passed through in a
# window or two is never captured) and serve as the warm-up
CAPTURE_AFTER = 3


class GraphedStep:
    """``run(inputs) -> outputs`` replayed from CUDA graphs, one per distinct set of input shapes."""

    def __init__(self, run: StepFn, name: str = "window step", capture_after: int = CAPTURE_AFTER) -> None:
        self.run, self.name = run, name
        self.capture_after = max(1, capture_after)
        self.graphs: dict[tuple, _Captured] = {}
        self.uncaptured: dict[tuple, int] = {}  # calls so far per set of shapes not captured yet
        self.enabled = True
        self.pool: Any = None
        self.stream: torch.cuda.Stream | None = None  # the captures' stream

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.enabled or next(iter(inputs.values())).device.type != "cuda":
            return self.run(inputs)
        key = tuple((name, tuple(t.shape), t.dtype) for name, t in inputs.items())
        captured = self.graphs.get(key)
        if captured is None:
            if not self.due(key):
                return self.run(inputs)
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            # real windows already ran these shapes when capture is deferred: no warm-up then
            warmups = 2 if self.capture_after == 1 else 0
            if self.stream is None:
                self.stream = torch.cuda.Stream(device=next(iter(inputs.values())).device)
            start = time.perf_counter()
            try:
                captured = _Captured.capture(self.run, inputs, self.pool, self.stream, warmups)
            except RuntimeError as exc:  # e.g. "operation not permitted when stream is capturing"
                log.warning("%s: CUDA graph capture failed (%s); running without graphs", self.name, first_line(exc))
                _end_failed_capture(self.stream)
                self.enabled = False
                self.graphs.clear()
                torch.cuda.synchronize()
                return self.run(inputs)
            self.graphs[key] = captured
            seconds = time.perf_counter() - start
            log.info("captured the %s in a CUDA graph in %.2f s (%d so far)", self.name, seconds, len(self.graphs))
        return captured.replay(inputs)

    def due(self, key: tuple) -> bool:
        """Count a call of uncaptured shapes ``key``; True when this call should capture them."""
        calls = self.uncaptured[key] = self.uncaptured.get(key, 0) + 1
        return calls >= self.capture_after


def use_graphs(setting: object, pays: bool) -> bool:
    """``runtime.cuda_graphs`` for a backend: ``on``/``off``, or ``auto`` = ``pays``: on where a measurement found
    that replaying saves more than the captures cost (each backend says, citing it)."""
    value = str(setting)
    return value == "on" or (value == "auto" and pays)


def _end_failed_capture(stream: torch.cuda.Stream) -> None:
    """After a capture that failed, one that succeeds. ``CUDAGraph.capture_end`` raises on an invalidated capture
    before it ends its bookkeeping, which leaves PyTorch's default CUDA generator marked as capturing: every later
    random draw on the device would fail ("Offset increment outside graph capture"), in this job and the next.
    Ending a small capture on the same stream ends that state."""
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.stream(stream):
            graph.capture_begin(capture_error_mode="thread_local")
            torch.zeros(1, device=stream.device)
            graph.capture_end()
    except RuntimeError as exc:  # the uncaptured step does not draw from that generator: carry on
        log.warning("could not end the failed CUDA graph capture (%s)", first_line(exc))


def first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


class _Captured:
    """One CUDA graph of the step for one set of input shapes: static inputs in, static outputs out."""

    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: dict, outputs: dict) -> None:
        self.graph, self.inputs, self.outputs = graph, inputs, outputs

    @classmethod
    def capture(
        cls, run: StepFn, inputs: dict[str, torch.Tensor], pool: Any, stream: torch.cuda.Stream, warmups: int = 0
    ) -> _Captured:
        static = {name: static_copy(tensor) for name, tensor in inputs.items()}
        # behind everything queued so far (the static copies included); no device synchronisation
        stream.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream):
            for _ in range(warmups):  # shapes never run before: compilation, autotuning, library workspaces
                run(static)
            graph.capture_begin(pool=pool, capture_error_mode="thread_local")
            try:
                outputs = run(static)
            finally:
                graph.capture_end()
        torch.cuda.current_stream().wait_stream(stream)
        return cls(graph, static, outputs)

    def replay(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():  # the buffers may be inference tensors; the clones are, as a plain call's
            for name, buffer in self.inputs.items():
                buffer.copy_(inputs[name], non_blocking=True)
            self.graph.replay()
            return {name: tensor.clone() for name, tensor in self.outputs.items()}


def static_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A static input buffer for ``tensor``: a copy, and an inference tensor exactly where ``tensor`` is one.

    Why: torch.compile guards on that property. The job feeds each window's outputs (inference tensors, made under
    the steps' ``inference_mode``) back as the next window's inputs; buffers copied outside it were plain tensors,
    so the compiled step recompiled inside the capture and the capture failed ("operation failed due to a previous
    error during capture"; thirteenth session, call AO: the compile backend ran without graphs since the captures
    lost their warm-up run in the eleventh session). Replays return inference tensors for the same reason."""
    if tensor.is_inference():
        with torch.inference_mode():
            return tensor.clone()
    return tensor.detach().clone()
