"""Loading the weights in a fresh process, phase by phase, with the peak host memory; one JSON out.

    python -m benchmarks.load_breakdown --weights DIR [--init full|tiny] [--device cuda] [--dtype fp16]
        [--repeat 3] [--modes new,plain] [--threads 4] [--out FILE]

Every run is a new Python process (imports, device context and all), started after the files were read once
(a warm page cache: what a second run on the same machine sees) and after the weights hash was cached. Modes:

* ``new``: :func:`personalive.weights.load_models` (parameters built on meta, tensors assigned), with its
  :class:`~personalive.weights.report.LoadReport`;
* ``plain``: the path before it, rebuilt here from the same pieces: each network built on the device with
  default initialisation, cast, ``load_state_dict`` (copies), the finiteness check; timed per phase alike.

Per run: seconds from the interpreter's start to the networks on the device (``process_s``, measured outside),
``import_torch_s``, ``load_s`` (inside ``load_models``), the phases, and host memory: the interpreter's resident set
before anything is imported, after ``import torch``, and the peak (``peak_above_interpreter_gib``). ``--init``
writes random weights of that size into ``--weights`` first when it holds none. ``--threads`` takes a list to
compare copy-thread counts (``new`` only).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("load_breakdown")
ROOT = Path(__file__).resolve().parents[1]


def rss_now_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ------------------------------------------------------------------------------------------------ child
def plain_load(weights: Path, dtype, device, clip_dtype) -> dict:
    """The loader as it was before meta building: build on the device (default init), cast, load, check."""
    import torch
    from torch import nn

    from personalive.weights import NETWORKS, WeightsLayout, build_network, read_sizes, weights_hash
    from personalive.weights.integrity import check_finite
    from personalive.weights.load import _expected_shapes, _read_network_state, compare_state, config_file

    phases = dict.fromkeys(("device_init", "build", "read", "compare", "copy", "finite", "hash"), 0.0)

    @contextmanager
    def timed(name):
        start = time.perf_counter()
        yield
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        phases[name] += time.perf_counter() - start

    layout = WeightsLayout(weights)
    sizes = read_sizes(layout)
    if device.type == "cuda":
        with timed("device_init"):
            torch.empty(0, device=device)
    for name in NETWORKS:
        with timed("build"), torch.device(device):
            module = build_network(name, sizes, config_file(name, layout, sizes))
            module = nn.Module.to(module, dtype=clip_dtype if name == "image_encoder" else dtype)
        with timed("read"):
            state, origin = _read_network_state(name, layout)
        with timed("compare"):
            problems = compare_state(_expected_shapes(module), state, origin, layout.network_files(name))
        assert not problems, problems[:3]
        with timed("copy"):
            module.load_state_dict(state, strict=True)
            del state
        with timed("finite"):
            check_finite(module.state_dict(), origin)
        module.eval().requires_grad_(False)
    with timed("hash"):
        weights_hash(weights)
    return {"phases_s": {k: round(v, 3) for k, v in phases.items()}}


def child(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    rss_interpreter = rss_now_gib()
    import torch

    import_torch = time.perf_counter() - start
    rss_torch = rss_now_gib()
    from personalive.environment import torch_dtype
    from personalive.weights import load_models
    from personalive.weights.report import LoadReport

    device = torch.device(args.device)
    dtype = torch_dtype(args.dtype)
    began = time.perf_counter()
    if args.mode == "plain":
        detail = plain_load(Path(args.weights), dtype, device, torch.float32)
    else:
        report = LoadReport()
        load_models(args.weights, dtype, device, report=report, threads=args.threads)
        detail = report.as_dict()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    load_s = time.perf_counter() - began
    out = {
        "mode": args.mode,
        "threads": args.threads if args.mode == "new" else None,
        "import_torch_s": round(import_torch, 3),
        "load_s": round(load_s, 3),
        "rss_interpreter_gib": round(rss_interpreter, 3),
        "rss_after_torch_gib": round(rss_torch, 3),
        "peak_rss_gib": round(peak_gib(), 3),
        "peak_above_interpreter_gib": round(peak_gib() - rss_interpreter, 3),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None,
        **detail,
    }
    return out


# ------------------------------------------------------------------------------------------------ parent
def ensure_weights(weights: Path, size: str | None, device: str) -> dict:
    """Random weights of ``size`` written to ``weights`` unless a layout is already there."""
    from personalive.weights import WeightsLayout

    layout = WeightsLayout(weights)
    if all(p.is_file() for p in layout.required_files()):
        return {"written": False}
    if size is None:
        raise SystemExit(f"error: {weights}: no weights there (pass --init full|tiny to write random ones)")
    import torch

    from personalive.random_weights import random_models, save_layout

    start = time.perf_counter()
    dtype = torch.float16 if size == "full" else torch.float32
    save_layout(random_models(size, torch.device(device), dtype), weights)
    return {"written": True, "seconds": round(time.perf_counter() - start, 1)}


def warm(weights: Path) -> dict:
    """Read every file once (page cache), then the weights hash: cold (every byte) and cached."""
    from personalive.weights import WeightsLayout, weights_hash

    start = time.perf_counter()
    total = 0
    for path in WeightsLayout(weights).hashed_files():
        with path.open("rb") as f:
            while chunk := f.read(1 << 24):
                total += len(chunk)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    weights_hash(weights, use_cache=False)
    cold = time.perf_counter() - start
    weights_hash(weights)  # fills the cache the loads use
    return {"gib": round(total / 2**30, 3), "read_s": round(read_s, 2), "hash_every_byte_s": round(cold, 2)}


def run_child(args: argparse.Namespace, mode: str, threads: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.load_breakdown", "--child", "--mode", mode, "--threads", str(threads)]
    command += ["--weights", str(args.weights), "--device", args.device, "--dtype", args.dtype]
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode:
        return {"mode": mode, "threads": threads, "error": proc.stderr[-3000:]}
    return {"process_s": round(seconds, 3), **json.loads(proc.stdout.strip().splitlines()[-1])}


def summarize(runs: list[dict]) -> dict:
    groups: dict[str, list[dict]] = {}
    for run in runs:
        if "error" not in run:
            groups.setdefault(f"{run['mode']}" + (f"-t{run['threads']}" if run["threads"] else ""), []).append(run)
    return {
        name: {
            "process_s_median": round(statistics.median(r["process_s"] for r in rows), 3),
            "load_s_median": round(statistics.median(r["load_s"] for r in rows), 3),
            "load_s_min": round(min(r["load_s"] for r in rows), 3),
            "peak_above_interpreter_gib_max": max(r["peak_above_interpreter_gib"] for r in rows),
            "runs": len(rows),
        }
        for name, rows in groups.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--init", choices=("full", "tiny"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default="new,plain")
    parser.add_argument("--threads", default="4", help="copy threads of the new loader, comma-separated to compare")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="new", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.threads = int(args.threads)
        print(json.dumps(child(args)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = {"argv": sys.argv[1:], "weights": str(args.weights), "device": args.device, "dtype": args.dtype}
    result["init"] = ensure_weights(args.weights, args.init, args.device)
    result["warm"] = warm(args.weights)
    log.info("warm: %s", result["warm"])
    runs = []
    for _ in range(args.repeat):
        for mode in args.modes.split(","):
            for threads in [int(t) for t in args.threads.split(",")] if mode == "new" else [0]:
                runs.append(run_child(args, mode, threads))
                log.info("%s", json.dumps(runs[-1])[:400])
    result["runs"] = runs
    result["summary"] = summarize(runs)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    log.info("summary: %s", json.dumps(result["summary"]))
    return 0 if all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
