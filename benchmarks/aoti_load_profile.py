"""Where the first load of an AOTInductor package spends its time, in a fresh process with an empty inductor cache.

    python -m benchmarks.aoti_load_profile --out FILE.json [--device cuda] [--package FULL.pt2]

Builds a toy package with the product's options (``personalive.backends.aoti.compile_package``) unless
``--package`` names one, then loads it in child processes, each with an empty inductor cache, the product's way
(``AOTIRunner``'s loader call inside ``aoti_wrapper.loading``): once under ``cProfile`` (the 30 functions with
the largest cumulative time) with every subprocess the load starts recorded (command and seconds), then plainly,
twice. Call N (fifth session, torch 2.11): the toy's first load took 34 s, 26 s of them in 6 CPU-ISA test builds
(a compiler run and a child interpreter importing torch each) that ``cpp.vec_isa_ok`` did not skip; the product
now skips them too (``aoti_wrapper.loading``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CHILD = r"""
import cProfile, io, json, pstats, subprocess, sys, time
t0 = time.perf_counter()
import torch
from personalive.backends.aoti_wrapper import loading
path, device, profiled = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
torch.zeros(1, device=device)
ready = time.perf_counter() - t0
runs = []
original = subprocess.Popen.__init__
def recording(self, args, *a, **k):
    runs.append({"command": str(args)[:300], "start": time.perf_counter()})
    original(self, args, *a, **k)
subprocess.Popen.__init__ = recording
profiler = cProfile.Profile() if profiled else None
t1 = time.perf_counter()
if profiler: profiler.enable()
with loading():
    index = 0 if device == "cuda" else -1
    model = torch._inductor.aoti_load_package(path, run_single_threaded=True, device_index=index)
if profiler: profiler.disable()
load = time.perf_counter() - t1
result = {"import_and_device_s": round(ready, 2), "load_s": round(load, 2), "subprocesses": runs[:40]}
for r in runs: r["start"] = round(r["start"] - t1, 2)
if profiler:
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
    result["profile"] = text.getvalue()[-7000:]
print("RESULT " + json.dumps(result), flush=True)
"""


def toy_package(device: torch.device, folder: Path) -> Path:
    from benchmarks.aoti_probe import Toy
    from personalive.backends.aoti import compile_package

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    module = Toy(True).to(device)
    module.a.to(dtype), module.b.to(dtype)
    x = torch.randn(8, 64, device=device, dtype=dtype)
    with torch.no_grad():
        program = torch.export.export(module, (x,), strict=False)
    return compile_package(program, folder / "toy.pt2")


def load_child(path: Path, device: str, profiled: bool) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="ind-")}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), device, str(int(profiled))],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    row = json.loads(line[7:]) if line else {"stderr": proc.stderr[-1500:]}
    row |= {"rc": proc.returncode, "process_s": round(time.perf_counter() - start, 1), "profiled": profiled}
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--package", type=Path)
    args = p.parse_args()
    device = torch.device(args.device)
    result: dict = {"torch": torch.__version__, "rows": []}
    path = args.package
    if path is None:
        start = time.perf_counter()
        path = toy_package(device, Path(tempfile.mkdtemp(prefix="aoti-load-")))
        result["toy_build_s"] = round(time.perf_counter() - start, 1)
    result["package"] = str(path)
    result["package_bytes"] = path.stat().st_size
    for profiled in (True, False, False):
        result["rows"].append(load_child(path, device.type, profiled))
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        row = result["rows"][-1]
        print({k: row.get(k) for k in ("rc", "load_s", "process_s", "profiled")}, len(row.get("subprocesses", [])))


if __name__ == "__main__":
    main()
