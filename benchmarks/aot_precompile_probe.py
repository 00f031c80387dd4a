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

log = logging.getLogger("benchmarks.aot_precompile_probe")
ARTIFACT = "window_step.aot"
# at 64x64 (tiny) the smallest reference features have one token, which dynamo specialises despite the marking;
# KEYFRAMES=0 there
KEYFRAMES = [int(k) for k in os.environ.get("KEYFRAMES", "0,3").split(",")]


# the guard kinds dynamo cannot serialize (torch 2.13's CheckFunctionManager.UNSUPPORTED_SERIALIZATION_GUARD_TYPES)
IDENTITY_GUARDS = frozenset(
    ("DICT_VERSION", "NN_MODULE", "ID_MATCH", "FUNCTION_MATCH", "CLASS_MATCH", "MODULE_MATCH", "CLOSURE_MATCH")
    + ("WEAKREF_ALIVE",)
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


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


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
    from personalive.pipeline.window import WindowStepModule, build_window_module

    models = s.models()
    module = build_window_module(models, s.config).eval()
    names = module.input_names
    features = module.feature_names

    def args_for(keyframes: int) -> tuple:
        with torch.inference_mode():  # the job's step inputs are inference tensors
            inputs = s.inputs(models, keyframes)
        if args.phase == "save":  # a loaded function refuses marked tensors (a guard: "absent at compile time")
            for name in features:
                torch._dynamo.mark_dynamic(inputs[name], 1)
        return tuple(inputs[n] for n in names)

    path = (args.artifact_dir or args.out) / ARTIFACT
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.phase == "save":
        options = {"guard_filter_fn": keep_serializable}
        fn = torch.compile(WindowStepModule.forward, fullgraph=True, dynamic=False, options=options)
        with torch.no_grad():
            compiled = fn.aot_compile(((module, *args_for(0)), {}))
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
    for keyframes in KEYFRAMES:
        step_args = args_for(keyframes)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = compiled(module, *step_args)
            sync()
            first = time.perf_counter() - t0
            ref = module(*step_args)
        s.record(
            what="compiled vs eager",
            keyframes=keyframes,
            first_call_s=round(first, 2),
            max_rel=[round(relative(a, b), 5) for a, b in zip(out, ref, strict=True)],
        )
        with torch.no_grad():
            s.record(what="uncaptured step", keyframes=keyframes, **timed(lambda a=step_args: compiled(module, *a)))
            if s.device.type == "cuda":
                graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        compiled(module, *step_args)
                torch.cuda.current_stream().wait_stream(stream)
                with torch.cuda.graph(graph):
                    captured = compiled(module, *step_args)
                graph.replay()
                sync()
                s.record(
                    what="step in a CUDA graph",
                    keyframes=keyframes,
                    replay_equals_uncaptured=max(relative(a, b) for a, b in zip(captured, out, strict=True)),
                    **timed(graph.replay),
                )
    log.info("%s", json.dumps(s.rows))


if __name__ == "__main__":
    main()
