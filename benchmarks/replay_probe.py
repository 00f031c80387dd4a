"""How long a plan book's replay takes, alone (after the imports) and beside the imports, in a fresh process:

    python -m benchmarks.replay_probe --book FILE.json --out FILE.json --mode alone|beside|per-op [--python]
        [--switch SECONDS]

``alone``: the network code imported first (timed), then ``device_plans.replay`` twice (the second pass finds
every plan cached: what is left is the calls' own cost). ``beside``: :class:`personalive.device_warmup.DeviceWarmup`
as loading runs it (the imports on a helper thread), Python's switch interval set to ``--switch`` while it runs.
``--python``: the replay from Python, not as one TorchScript call. ``per-op``: after the imports, every call from
Python, each synchronised and timed, summed by operator.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--book", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mode", choices=("alone", "beside", "per-op"), required=True)
    p.add_argument("--python", action="store_true")
    p.add_argument("--switch", type=float, default=None)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    t0 = time.perf_counter()
    import torch

    from personalive import device_plans, device_warmup
    from personalive.device_plans import PlanBook
    from personalive.weights.layout import NETWORKS
    from personalive.weights.load import _import_networks

    device = torch.device(args.device)
    torch.empty(0, device=device)
    data = json.loads(args.book.read_text())
    book = PlanBook(None, data["key"])
    book.groups = data["groups"]
    row: dict = {"mode": args.mode, "python": args.python, "switch": args.switch, "calls": len(book)}
    row["torch_and_context_s"] = round(time.perf_counter() - t0, 2)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if args.python:
        device_warmup.replay = lambda book, device: device_plans.replay(book, device, script=False)
    if args.mode == "beside":
        if args.switch is not None:  # the interpreter's, while the imports run beside the replay
            sys.setswitchinterval(args.switch)
        warmup = device_warmup.DeviceWarmup(device, (torch.float16, torch.float32), book)
        started = time.perf_counter()
        warmup.beside(lambda: _import_networks(list(NETWORKS)))
        row |= {
            "wall_s": round(time.perf_counter() - started, 3),
            "imports_s": round(warmup.imports_seconds, 3),
            "warmup_s": round(warmup.seconds, 3),
            "replayed": warmup.replayed,
            "error": warmup.error,
        }
    else:
        started = time.perf_counter()
        _import_networks(list(NETWORKS))
        row["imports_s"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        device_warmup.warm_libraries(device, (torch.float16, torch.float32))
        row["libraries_s"] = round(time.perf_counter() - started, 3)
    if args.mode == "alone":
        for rnd in ("first", "second"):
            started = time.perf_counter()
            row[f"replay_{rnd}"] = device_plans.replay(book, device, script=not args.python)
            row[f"replay_{rnd}_s"] = round(time.perf_counter() - started, 3)
    if args.mode == "per-op":
        calls = [c for group in book.groups.values() for c in group]
        scratch = device_plans.scratch_for(calls, device)
        by_op: dict[str, list[float]] = {}
        with torch.inference_mode():
            for rnd in ("first", "second"):
                started = time.perf_counter()
                for call in calls:
                    one = time.perf_counter()
                    a = device_plans._decode(call["args"], scratch)
                    kw = {k: device_plans._decode(v, scratch) for k, v in call["kwargs"].items()}
                    device_plans._operator(call["op"])(*a, **kw)
                    sync()
                    if rnd == "first":
                        by_op.setdefault(call["op"], []).append(time.perf_counter() - one)
                row[f"replay_{rnd}_s"] = round(time.perf_counter() - started, 3)
        row["first_by_op"] = {
            op: {"calls": len(v), "total_s": round(sum(v), 3), "max_ms": round(max(v) * 1e3, 1)}
            for op, v in sorted(by_op.items(), key=lambda kv: -sum(kv[1]))
        }
    print(json.dumps(row))
    args.out.write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
