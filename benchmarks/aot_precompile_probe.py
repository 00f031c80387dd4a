"""Probe: the window step precompiled ahead of time with ``torch.compile(...).aot_compile`` (PyTorch, experimental).

    python -m benchmarks.aot_precompile_probe --weights DIR --out DIR --size full|tiny --device cuda --phase save|load

Why: a warm second process of ``--backend compile`` still spends 18-27 s in dynamo's tracing (calls AT, AV), which
inductor's caches cannot spare, and issue 15 asks for a warm start <= 30 s. ``aot_compile`` traces and compiles a
fullgraph function once and saves the compiled artifact with its guards; ``torch.compiler.load_compiled_function``
loads it in another process without tracing. This probe checks whether that works for the whole window step (one
graph; the reference features' token axis dynamic) on this PyTorch, and what it costs:

* ``save``: aot_compile of ``WindowStepModule.forward`` (the module passed as its first argument, so the weights
  stay outside the artifact), saved to ``OUT/window_step.aot``; its output against the eager step at 0 and 3
  keyframes; the step's time uncaptured and in a CUDA graph.
* ``load`` (a fresh process, same weights): the artifact's load time, its first call, the same comparisons and
  timings.

The compilation, saving, loading and calling are the product's (:mod:`personalive.backends.precompiled`, which
``build-engine --format precompiled`` uses); what this probe adds is the step's time, uncaptured and in a CUDA
graph, and its output against eager, in the process that compiles and in a fresh one. Found on the 2-core CPU
(torch 2.13, before the product had it): compile 450 s and load 12.5 s at tiny size, 128x128; equal to eager to 5e-6
at 0 and 3 keyframes from one file (RESULTS, sixteenth session). torch 2.11 (the GPU host's) gives
``torch.compile``'s result its ``aot_compile`` only under ``torch._dynamo.config.enable_aot_compile``, which the
product's ``precompile`` sets.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

from benchmarks.engine_gpu import Stage, sync, timed
from benchmarks.graphs_gpu import max_relative
from personalive.backends import precompiled as pc
from personalive.backends.graphs import GraphedStep

log = logging.getLogger("benchmarks.aot_precompile_probe")
ARTIFACT = "window_step.aot"
# at 64x64 (tiny) the smallest reference features have one token, which dynamo specialises despite the marking;
# KEYFRAMES=0 there
KEYFRAMES = [int(k) for k in os.environ.get("KEYFRAMES", "0,3").split(",")]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", default="full")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="fp16")
    p.add_argument("--phase", choices=("save", "load"), required=True)
    p.add_argument("--artifact-dir", type=Path, default=None, help="where the artifact goes (default: --out)")
    args = p.parse_args()
    args.stage = f"aot-precompile-{args.phase}"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    s = Stage(args)
    from personalive.pipeline.window import OUTPUT_NAMES, WindowStepModule, build_window_module

    models = s.models()
    module = build_window_module(models, s.config).eval()
    names = module.input_names
    features = module.feature_names

    def inputs_for(keyframes: int) -> dict[str, torch.Tensor]:
        with torch.inference_mode():  # the job's step inputs are inference tensors
            return s.inputs(models, keyframes)

    def as_step(forward):  # forward(module, *inputs) as the window-step contract: inputs -> outputs by name
        def run(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            outputs = pc.call(forward, (module, *(inputs[n] for n in names)), path, "the probe's save phase")
            return dict(zip(OUTPUT_NAMES, outputs, strict=True))

        return run

    path = (args.artifact_dir or args.out) / ARTIFACT
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.phase == "save":  # the product's build-engine --format precompiled does the same (one graph, no_grad)
        example = inputs_for(0)
        first = 1 + len(names) - len(features)
        dynamic = [(first + i, 1) for i in range(len(features))]
        compiled = pc.precompile(WindowStepModule.forward, (module, *(example[n] for n in names)), dynamic)
        sync()
        s.record(what="aot_compile", seconds=round(time.perf_counter() - t0, 1))
        t0 = time.perf_counter()
        pc.save(compiled, path)
        s.record(what="saved", seconds=round(time.perf_counter() - t0, 2), mib=round(path.stat().st_size / 2**20, 1))
    else:
        compiled = pc.load(path, vars(sys.modules[WindowStepModule.__module__]))  # what the guards and code read
        s.record(what="loaded", seconds=round(time.perf_counter() - t0, 2))
    step, eager = as_step(compiled), as_step(WindowStepModule.forward)
    for keyframes in KEYFRAMES:
        inputs = inputs_for(keyframes)
        t0 = time.perf_counter()
        out = step(inputs)
        sync()
        first = time.perf_counter() - t0
        rel = max_relative(out, eager(inputs))
        s.record(what="compiled vs eager", keyframes=keyframes, first_call_s=round(first, 2), max_rel=rel)
        s.record(what="uncaptured step", keyframes=keyframes, **timed(lambda i=inputs: step(i)))
        if s.device.type == "cuda":  # the product's capture, as the compile backend replays its step
            graphed = GraphedStep(step, "precompiled step", capture_after=1)
            replayed = graphed(inputs)
            sync()
            s.record(
                what="step in a CUDA graph",
                keyframes=keyframes,
                captured=bool(graphed.graphs),
                replay_equals_uncaptured=max(max_relative(replayed, out).values()),
                **timed(lambda g=graphed, i=inputs: g(i)),
            )
    log.info("%s", json.dumps(s.rows))


if __name__ == "__main__":
    main()
