"""What a process's first convolutions, matrix products and attentions cost on the GPU, with and without
:mod:`personalive.device_warmup`'s thread before them. Each mode runs in a fresh process:

    python -m benchmarks.first_calls --out FILE.json [--device cuda] [--repeat 2]

Rows per mode (ms, each call synchronised): the first fp16 3x3 convolution; a second convolution of a new shape;
the first shape again; 8 more new shapes (mean); the first fp16 and fp32 linear layers; the first fp16 attention.
``cold`` runs them right after CUDA's context is made; ``warmed`` runs the warm-up thread first (its own time and
the wait are reported) and then the same calls on the main thread: what the thread saves the networks' first calls
is the difference. Shapes differ from the warm-up's, as the networks' do.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def _timed(fn) -> float:
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)  # the CPU: a smoke test only
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return round((time.perf_counter() - start) * 1e3, 2)


def child(mode: str, device_name: str) -> dict:
    t0 = time.perf_counter()
    import torch
    import torch.nn.functional as F

    device = torch.device(device_name)
    torch.empty(0, device=device)
    row: dict = {"mode": mode, "import_and_context_s": round(time.perf_counter() - t0, 2)}
    if mode == "warmed":
        from personalive.device_warmup import DeviceWarmup

        warmup = DeviceWarmup(device, [torch.float16, torch.float32])
        warmup.beside(lambda: None)
        row |= {"warmup_s": round(warmup.seconds, 3), "warmup_error": warmup.error}

    def conv(channels: int, size: int, dtype=torch.float16):
        x = torch.ones(2, channels, size, size, device=device, dtype=dtype)
        w = torch.ones(channels, channels, 3, 3, device=device, dtype=dtype)
        return lambda: F.conv2d(x, w, padding=1)

    def linear(n: int, dtype):
        x, w = (torch.ones(77, n, device=device, dtype=dtype), torch.ones(n, n, device=device, dtype=dtype))
        return lambda: F.linear(x, w, torch.zeros(n, device=device, dtype=dtype))

    q = torch.ones(2, 5, 1024, 64, device=device, dtype=torch.float16)
    with torch.inference_mode():
        row["conv_first_ms"] = _timed(conv(64, 48))
        row["conv_new_shape_ms"] = _timed(conv(96, 40))
        row["conv_same_shape_ms"] = _timed(conv(64, 48))
        row["conv_8_new_shapes_mean_ms"] = round(sum(_timed(conv(16 * (i + 1), 24 + 4 * i)) for i in range(8)) / 8, 2)
        row["linear_fp16_first_ms"] = _timed(linear(320, torch.float16))
        row["linear_fp32_first_ms"] = _timed(linear(384, torch.float32))
        row["attention_fp16_first_ms"] = _timed(lambda: F.scaled_dot_product_attention(q, q, q))
    row["process_s"] = round(time.perf_counter() - t0, 2)
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path)
    p.add_argument("--device", default="cuda")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--child", choices=("cold", "warmed"))
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.device)))
        return
    rows = []
    for _ in range(args.repeat):
        for mode in ("cold", "warmed"):
            cmd = [sys.executable, "-m", "benchmarks.first_calls", "--child", mode, "--device", args.device]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            lines = done.stdout.strip().splitlines()
            rows.append(
                json.loads(lines[-1])
                if done.returncode == 0 and lines
                else {"mode": mode, "error": done.stderr[-800:]}
            )
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
