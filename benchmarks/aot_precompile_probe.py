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

Found on the 2-core CPU (torch 2.13): the guards record the grad mode and each input's dispatch keys as traced, so
the function is compiled and called under ``no_grad`` with inference tensors (under ``inference_mode`` the same
tensors fail the dispatch-key guard). dynamo cannot serialize guards on object identity (the attention
processors' ``__call__`` code, global functions such as ``ddim_step``, the networks' classes): a guard filter drops
those kinds, as dynamo's own ``caching_precompile`` does -- an artifact is then valid for this code only, which a
product would pin in its sidecar. Guards on the tensors (shapes, strides, dtypes, devices) stay.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import torch

from benchmarks.engine_gpu import Stage, sync, timed
from benchmarks.graphs_gpu import max_relative
from personalive.backends.graphs import GraphedStep

log = logging.getLogger("benchmarks.aot_precompile_probe")
ARTIFACT = "window_step.aot"
# at 64x64 (tiny) the smallest reference features have one token, which dynamo specialises despite the marking;
# KEYFRAMES=0 there
KEYFRAMES = [int(k) for k in os.environ.get("KEYFRAMES", "0,3").split(",")]


# the guard kinds dynamo cannot serialize (torch 2.13's CheckFunctionManager.UNSUPPORTED_SERIALIZATION_GUARD_TYPES)
IDENTITY_GUARDS = frozenset(
    {
        "DICT_VERSION",
        "NN_MODULE",
        "ID_MATCH",
        "FUNCTION_MATCH",
        "CLASS_MATCH",
        "MODULE_MATCH",
        "CLOSURE_MATCH",
        "WEAKREF_ALIVE",
    }
)


# GUARDS=inputs also drops the guards on the module passed as ``self`` (one per parameter and module attribute,
# ~32,600 at tiny size: rebuilding them took ~30 % of a load on the CPU), since the weights and the config are what
# a product's sidecar pins. Not the default: on the CPU its artifact failed to load (a kept guard still reads
# ``self``, saved as missing); GUARDS=all (the default) keeps them and loads
ON_SELF = os.environ.get("GUARDS", "all") == "inputs"
GUARD_COUNTS: dict[str, int] = {}


def keep_serializable(entries) -> list[bool]:
    keep = [
        not ({e.guard_type, *(e.derived_guard_types or ())} & IDENTITY_GUARDS)
        and not (ON_SELF and re.search(r"\bself\b", e.name))  # also type(self...), dict.keys(self...)
        for e in entries
    ]
    GUARD_COUNTS.update(offered=len(keep), kept=sum(keep))
    return keep


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
            inputs = s.inputs(models, keyframes)
        if args.phase == "save":  # a loaded function refuses marked tensors (a guard: "absent at compile time")
            for name in features:
                torch._dynamo.mark_dynamic(inputs[name], 1)
        return inputs

    def as_step(forward):  # forward(module, *inputs) as the window-step contract: inputs -> outputs by name
        def run(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                return dict(zip(OUTPUT_NAMES, forward(module, *(inputs[n] for n in names)), strict=True))

        return run

    path = (args.artifact_dir or args.out) / ARTIFACT
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.phase == "save":
        options = {"guard_filter_fn": keep_serializable}
        fn = torch.compile(WindowStepModule.forward, fullgraph=True, dynamic=False, options=options)
        with torch.no_grad():
            example = inputs_for(0)
            compiled = fn.aot_compile(((module, *(example[n] for n in names)), {}))
        sync()
        seconds = round(time.perf_counter() - t0, 1)
        s.record(what="aot_compile", seconds=seconds, guards=dict(GUARD_COUNTS), on_self=ON_SELF)
        t0 = time.perf_counter()
        compiled.save_compiled_function(str(path))
        s.record(what="saved", seconds=round(time.perf_counter() - t0, 2), mib=round(path.stat().st_size / 2**20, 1))
    else:
        step_globals = vars(sys.modules[WindowStepModule.__module__])  # what the guards and the code read
        with path.open("rb") as f:
            compiled = torch.compiler.load_compiled_function(f, f_globals=step_globals)
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
