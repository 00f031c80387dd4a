"""Engines of issue 15 on one GPU, full size, random weights: AOTInductor, torch.compile + CUDA graphs, TAESD.

    python -m benchmarks.engine_gpu STAGE --weights DIR --out DIR [--size full|tiny] [--device cuda|cpu]

Stages (each appends its rows to ``OUT/engine-<stage>.json``; benchmarks/gpu_call.sh runs them):

* ``init``: random weights in the official layout (+ ``taesd/``) unless there.
* ``aoti-build``: export + AOTInductor package of the fp16 step (max 3 keyframes); export and compile seconds.
* ``aoti-run``: a fresh process: package load seconds (no compilation), ``verify`` against the fp32 eager step
  (3 draws, 0/3/1 keyframes), step time with 0 and 3 keyframes, peak GPU memory.
* ``compile``: eager step time; ``--backend compile`` with CUDA graphs: first call (compilation + capture), step
  time with 0 and 3 keyframes; VAE decode of 4 frames alone: eager, inductor default, max-autotune; the TAESD
  decoder: eager and compiled step time.
* ``compile-warm``: a fresh process on the same compile cache: seconds from start to the first window's output.
* ``cc-build`` / ``cc-run``: ``build-engine --format compile-cache``; then, in a fresh process with an empty inductor
  cache, the cache loaded and the first window (warm start), step times, ``verify-engine`` on the ``.ptcache``.
* ``vae``: the VAE decode of 4 frames alone: eager, inductor default, max-autotune-no-cudagraphs.
* ``aoti-load``: the package's first load in fresh processes (empty inductor caches), with and without the
  product's load options.
* ``onnx-verify``: ``build-engine --onnx-only`` at the run's size and precision, then ``verify-engine`` on it with
  onnxruntime's CPU provider (ONNX_MAX_KEYFRAMES, ONNX_DRAWS: 1 and 2 by default).

Times are CUDA-event medians after warm-up (host timers on the CPU, for smoke tests at tiny size).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import torch

T_START = time.perf_counter()
log = logging.getLogger("benchmarks.engine_gpu")


def timed(fn, warmup: int = 3, iters: int = 15) -> dict:
    """Median / min ms per call of ``fn`` after ``warmup`` calls (``ITERS``/``WARMUP`` override, for smoke tests)."""
    warmup, iters = int(os.environ.get("WARMUP", warmup)), int(os.environ.get("ITERS", iters))
    cuda = torch.cuda.is_available()
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
    return {"median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2), "iters": iters}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Stage:
    def __init__(self, args: argparse.Namespace) -> None:
        from personalive.config import load_config
        from personalive.environment import torch_dtype

        self.args = args
        self.device = torch.device(args.device)
        self.dtype = torch_dtype(args.dtype)
        size = 512 if args.size == "full" else 64
        extra = {
            "model.weights_dir": str(args.weights),
            "model.dtype": args.dtype,
            "generation.height": size,
            "generation.width": size,
            "runtime.device": args.device,
        }
        # ENGINE_SET="runtime.compile_vae_mode=default,...": config changes for one call
        for item in filter(None, os.environ.get("ENGINE_SET", "").split(",")):
            key, _, value = item.partition("=")
            extra[key.strip()] = value.strip()
        self.config = load_config(None, [], extra)
        self.extra = extra
        self.taesd_config = load_config(None, [], {**extra, "model.decoder": "taesd"})
        tag = os.environ.get("ENGINE_TAG", "")  # two processes of one stage in a call: one file each
        self.out = args.out / f"engine-{args.stage}{'-' + tag if tag else ''}.json"
        self.rows: list[dict] = []

    def record(self, **row) -> None:
        row["t_since_start_s"] = round(time.perf_counter() - T_START, 1)
        log.info("%s", row)
        self.rows.append(row)
        self.args.out.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps({"facts": facts(self.device), "rows": self.rows}, indent=1))

    def variant(self, graphs: bool = True, **changes):
        """The run's config with ``runtime.cuda_graphs`` = ``graphs`` and other dotted-key changes."""
        from personalive.config import load_config

        return load_config(None, [], {**self.extra, "runtime.cuda_graphs": "on" if graphs else "off", **changes})

    def models(self, dtype: torch.dtype | None = None):
        from personalive.weights import load_models

        t0 = time.perf_counter()
        models = load_models(self.args.weights, dtype or self.dtype, self.device)
        self.record(what="load models", dtype=str(dtype or self.dtype), seconds=round(time.perf_counter() - t0, 1))
        return models

    def inputs(self, models, keyframes: int):
        from personalive.pipeline.window import example_window_inputs

        g = torch.Generator(self.device).manual_seed(keyframes)
        return example_window_inputs(
            models, self.config, self.device, self.dtype, num_keyframes=keyframes, generator=g
        )


def facts(device: torch.device) -> dict:
    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d %H:%M UTC")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(gpu=props.name, cc=f"{props.major}.{props.minor}")
    return out


def package_path(args: argparse.Namespace) -> Path:
    return args.work / f"window_step-{args.size}-{args.dtype}.pt2"


# ------------------------------------------------------------------------------------------------------ stages
def stage_init(s: Stage) -> None:
    """Random weights built on the device (seconds) and written in the official layout (fp16, like the release)."""
    from personalive.models.taesd import write_random_taesd
    from personalive.random_weights import random_models, save_layout

    t0 = time.perf_counter()
    if not (s.args.weights / "personalive" / "denoising_unet.pth").is_file():
        save_layout(random_models(s.args.size, s.device, s.dtype), s.args.weights)
    if not (s.args.weights / "taesd" / "config.json").is_file():
        write_random_taesd(s.args.weights / "taesd", size=s.args.size, seed=0)
    s.record(what="init weights", seconds=round(time.perf_counter() - t0, 1))


def stage_aoti_build(s: Stage) -> None:
    """``build-engine --format aoti`` (the product's code path), max 3 keyframes."""
    from personalive.backends import artifacts
    from personalive.engines import build_engine

    t0 = time.perf_counter()
    path = build_engine(s.config, out=package_path(s.args), max_keyframes=3, engine_format="aoti")
    extra = artifacts.read_sidecar(path).extra
    s.record(what="aoti build-engine", seconds=round(time.perf_counter() - t0, 1), **extra)


def stage_aoti_run(s: Stage) -> None:
    """verify-engine on the package (the product's code path), then load time and step time of --backend aoti."""
    from personalive.backends.aoti import AOTIStep

    path = package_path(s.args)
    if os.environ.get("AOTI_SKIP_VERIFY") == "1":
        s.record(what="aoti verify-engine", passed=False, error="skipped (AOTI_SKIP_VERIFY=1)", seconds=0.0)
    else:
        _verify_row(s, "aoti verify-engine", path, draws=3)
    models = s.models()
    if os.environ.get("AOTI_EAGER_ROWS") == "1":  # the eager step in the same process, for the ratio
        from personalive.backends.eager import EagerWindowStep

        for graphs in (False, True):
            step = EagerWindowStep.from_models(models, s.variant(graphs=graphs), s.device)
            _step_rows(s, "eager+graphs" if graphs else "eager", step, models)
            del step
    for graphs in (False, True):
        config = s.variant(graphs=graphs)
        t0 = time.perf_counter()
        step = AOTIStep.from_models(models, config, s.device, engine=path)
        sync()
        s.record(
            what="aoti load (sidecar checks, package load, weights bound)", seconds=round(time.perf_counter() - t0, 2)
        )
        _step_rows(s, "aoti+graphs" if graphs else "aoti", step, models)
        del step


AOTI_LOAD_CHILD = """
import sys, time
t0 = time.perf_counter()
import torch
from personalive.backends import aoti, aoti_wrapper
from personalive.config import load_config
from personalive.pipeline.window import build_window_module
from personalive.weights import load_models
if sys.argv[3] == "without":
    aoti_wrapper.SKIP_ISA_TEST_BUILDS = False
device = torch.device(sys.argv[4])
dtype = torch.float16 if device.type == "cuda" else torch.float32
config = load_config(None, [], {"model.weights_dir": sys.argv[2], **dict(kv.split("=") for kv in sys.argv[5:])})
models = load_models(sys.argv[2], dtype, device, networks=list(aoti.WINDOW_STEP_NETWORKS))
module = build_window_module(models, config).eval()
t1 = time.perf_counter()
aoti.AOTIRunner(sys.argv[1], module, module.input_names, device)
print(f"RESULT {t1 - t0:.2f} {time.perf_counter() - t1:.2f}")
"""


def stage_aoti_load(s: Stage) -> None:
    """The package's first load in fresh processes, each with an empty inductor cache: with the product's load
    options (no CPU-ISA test builds) and without them (the control)."""
    import subprocess
    import sys
    import tempfile

    path = package_path(s.args)
    for mode in os.environ.get("AOTI_LOAD_MODES", "with,without,with").split(","):  # the control costs ~70 s
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="ind-")}
        command = [sys.executable, "-c", AOTI_LOAD_CHILD, str(path), str(s.args.weights), mode, s.args.device]
        t0 = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), "")
        before, load = (float(v) for v in line.split()[1:]) if line else (None, None)
        s.record(
            what=f"aoti first load in a fresh process, {mode} the load options",
            rc=proc.returncode,
            load_s=load,
            before_s=before,
            process_s=round(time.perf_counter() - t0, 1),
            stderr=proc.stderr[-600:] if proc.returncode else "",
        )


def stage_onnx_verify(s: Stage) -> None:
    """Issue 15 item 5: ``build-engine --onnx-only`` (the product's path) at the run's size and precision, then
    ``verify-engine`` on that ONNX with onnxruntime's CPU provider (the GPU machine's 128 GB of host memory hold
    the attention matrices a 24 GB machine cannot). ONNX_MAX_KEYFRAMES (1) and ONNX_DRAWS (2) bound the time."""
    from personalive.backends import onnx_memory
    from personalive.engines import build_engine

    k = int(os.environ.get("ONNX_MAX_KEYFRAMES", "1"))
    draws = int(os.environ.get("ONNX_DRAWS", "2"))
    out = s.args.work / f"window_step-{s.args.size}-{s.args.dtype}-k{k}.onnx"
    t0 = time.perf_counter()
    path = build_engine(s.config, out=out, max_keyframes=k, onnx_only=True, engine_format="tensorrt")
    files = [path, path.with_name(path.name + ".data")]
    s.record(
        what="onnx export (build-engine --onnx-only)",
        seconds=round(time.perf_counter() - t0, 1),
        bytes=sum(f.stat().st_size for f in files if f.is_file()),
        max_keyframes=k,
        host_available_gib=round((onnx_memory.available_memory_bytes() or 0) / 2**30, 1),
    )
    _verify_row(s, "onnx verify-engine (onnxruntime CPU)", path, draws=draws)


def _verify_row(s: Stage, what: str, path: Path, draws: int) -> None:
    """``verify-engine`` on an artifact (the product's code path), recorded as passed or with its error."""
    from personalive.backends import artifacts
    from personalive.engines import verify_engine

    t0 = time.perf_counter()
    try:
        result = verify_engine(s.config, path, artifacts.read_sidecar(path), draws=draws)
        row = {"passed": True, "keyframes": result.keyframes, "lines": result.lines()}
    except Exception as exc:  # noqa: BLE001 - recorded; the stage goes on
        row = {"passed": False, "error": str(exc)[:2000]}
    s.record(what=what, seconds=round(time.perf_counter() - t0, 1), **row)


def _step_rows(s: Stage, name: str, step, models, keyframes=(0, 3)) -> None:
    for k in keyframes:
        inputs = s.inputs(models, k)
        t0 = time.perf_counter()
        step(inputs)
        sync()
        first = time.perf_counter() - t0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats(s.device)
        row = timed(lambda inputs=inputs: step(inputs))
        peak = torch.cuda.max_memory_allocated(s.device) / 2**30 if torch.cuda.is_available() else None
        s.record(
            what=f"{name} step",
            keyframes=k,
            first_call_s=round(first, 1),
            **row,
            fps=round(4000 / row["median_ms"], 1),
            peak_gib=peak,
        )


def stage_compile(s: Stage) -> None:
    """--backend compile as configured by default (UNet default mode, VAE max-autotune, CUDA graphs), then the
    same compiled step with graphs off, the TAESD step compiled with graphs, and the VAE decode alone."""
    from personalive.backends.compiled import CompiledWindowStep

    models = s.models()
    step = CompiledWindowStep.from_models(models, s.config, s.device)
    r = s.config.runtime
    _step_rows(s, f"compile+graphs(unet={r.compile_unet_mode},vae={r.compile_vae_mode})", step, models)
    if step.graphed is not None:
        step.graphed.enabled = False  # the same compiled networks, launched from the host
        _step_rows(s, "compile, no graphs", step, models, keyframes=(0,))
    del step
    step = CompiledWindowStep.from_models(models, s.taesd_config, s.device)
    _step_rows(s, "compile+graphs+taesd", step, models)
    del step
    _vae_rows(s, models)


def stage_compile_vs_eager(s: Stage) -> None:
    """Does --backend compile beat the eager fast path? Both with CUDA graphs, 0 and 3 keyframes, one process: the
    eager step (unless EAGER_ROWS=0); the compiled step as the product builds it from ENGINE_SET (inductor modes,
    ``runtime.compile_unet_scope``), its compilation's seconds, dynamo's time by phase and its counters. (Until call
    AQ the stage also compiled over the channels-last decoder: inductor's stride assertion, recorded there.)"""
    import torch._dynamo.utils as dynamo_utils

    from personalive.backends.compiled import CompiledWindowStep
    from personalive.backends.eager import EagerWindowStep

    models = s.models()
    config = s.variant(graphs=True)
    if os.environ.get("EAGER_ROWS", "1") == "1":
        _step_rows(s, "eager+graphs", EagerWindowStep.from_models(models, config, s.device), models)
    r = config.runtime
    name = f"compile+graphs(scope={r.compile_unet_scope}, unet={r.compile_unet_mode}, vae={r.compile_vae_mode})"
    t0 = time.perf_counter()
    step = CompiledWindowStep.from_models(models, config, s.device)
    _step_rows(s, name, step, models)
    s.record(
        what=f"{name}: first rows incl. compilation",
        seconds=round(time.perf_counter() - t0, 1),
        time_spent_s={k: round(v, 2) for k, v in dynamo_utils.calculate_time_spent().items()},
        counters={k: dict(c) for k, c in dynamo_utils.counters.items() if k in ("frames", "stats", "inductor")},
    )


def _vae_rows(s: Stage, models) -> None:
    """The VAE decode of one window alone: eager, inductor default, max-autotune-no-cudagraphs."""
    from personalive.pipeline.window import build_window_module

    module = build_window_module(models, s.config).eval()
    latents = torch.randn(
        1, 4, 4, s.config.generation.height // 8, s.config.generation.width // 8, device=s.device, dtype=s.dtype
    )
    for mode in ("eager", "default", "max-autotune-no-cudagraphs"):
        fn = (
            module.decode
            if mode == "eager"
            else torch.compile(module.decode, mode=None if mode == "default" else mode)
        )
        t0 = time.perf_counter()
        with torch.inference_mode():
            fn(latents)
            sync()
            first = time.perf_counter() - t0
            row = timed(lambda fn=fn: fn(latents))
        s.record(what="vae decode 4 frames", mode=mode, first_call_s=round(first, 1), **row)


def stage_compile_warm(s: Stage) -> None:
    from personalive.backends.compiled import CompiledWindowStep

    models = s.models()
    inputs = s.inputs(models, 0)
    t0 = time.perf_counter()
    step = CompiledWindowStep.from_models(models, s.config, s.device)
    step(inputs)
    sync()
    s.record(
        what="compile warm start (first window, cache from the compile stage)",
        seconds=round(time.perf_counter() - t0, 1),
        process_s=round(time.perf_counter() - T_START, 1),
    )


def cache_path(args: argparse.Namespace) -> Path:
    return args.work / f"window_step-{args.size}-{args.dtype}.ptcache"


def stage_cc_build(s: Stage) -> None:
    """``build-engine --format compile-cache`` (the product's code path) with the product's compile modes."""
    from personalive.backends import artifacts
    from personalive.engines import build_engine

    t0 = time.perf_counter()
    path = build_engine(s.config, out=cache_path(s.args), max_keyframes=3, engine_format="compile-cache")
    s.record(
        what="compile-cache build-engine",
        seconds=round(time.perf_counter() - t0, 1),
        file_bytes=path.stat().st_size,
        **artifacts.read_sidecar(path).extra,
    )


def stage_cc_run(s: Stage) -> None:
    """A fresh process (the caller gives it an empty inductor cache folder): load the networks, load the compile
    cache, first window; then step times and ``verify-engine`` on the .ptcache against the fp32 eager step."""
    from personalive.backends.compiled import CompiledWindowStep

    path = cache_path(s.args)
    models = s.models()
    inputs = s.inputs(models, 0)
    t0 = time.perf_counter()
    step = CompiledWindowStep.from_models(models, s.config, s.device, engine=path)
    loaded = time.perf_counter() - t0
    step(inputs)
    sync()
    s.record(
        what="compile-cache warm start (cache loaded, first window)",
        cache_load_s=round(loaded, 1),
        seconds=round(time.perf_counter() - t0, 1),
        process_s=round(time.perf_counter() - T_START, 1),
        inductor_cache=os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
    )
    _step_rows(s, "compile-cache+graphs", step, models)
    del step, models
    _verify_row(s, "compile-cache verify-engine", path, draws=3)


def stage_vae(s: Stage) -> None:
    """The VAE decode of one window alone in each compile mode (the max-autotune row call B could not reach)."""
    _vae_rows(s, s.models())


def stage_lean(s: Stage) -> None:
    """The rows a short call can afford: TAESD eager, compile + CUDA graphs (default modes) and with TAESD, k=0."""
    from personalive.backends.compiled import CompiledWindowStep
    from personalive.backends.eager import EagerWindowStep
    from personalive.config import load_config

    models = s.models()
    _step_rows(s, "eager+taesd", EagerWindowStep.from_models(models, s.taesd_config, s.device), models, (0,))
    fast = load_config(None, ["runtime.compile_vae_mode=default"], {"model.weights_dir": str(s.args.weights)})
    fast.model, fast.generation = s.config.model, s.config.generation
    _step_rows(
        s, "compile+graphs(default modes)", CompiledWindowStep.from_models(models, fast, s.device), models, (0,)
    )
    fast.model = s.taesd_config.model
    _step_rows(s, "compile+graphs+taesd", CompiledWindowStep.from_models(models, fast, s.device), models, (0,))


STAGES = {
    "lean": stage_lean,
    "init": stage_init,
    "aoti-build": stage_aoti_build,
    "aoti-run": stage_aoti_run,
    "compile": stage_compile,
    "compile-warm": stage_compile_warm,
    "compile-vs-eager": stage_compile_vs_eager,
    "cc-build": stage_cc_build,
    "cc-run": stage_cc_run,
    "vae": stage_vae,
    "onnx-verify": stage_onnx_verify,
    "aoti-load": stage_aoti_load,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/engine-work"))
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--dtype", default="fp16")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    if torch.cuda.is_available():
        from personalive.config import RuntimeConfig

        torch.backends.cudnn.benchmark = RuntimeConfig().cudnn_benchmark  # as the product runs
    STAGES[args.stage](Stage(args))


if __name__ == "__main__":
    main()
