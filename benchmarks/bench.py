"""`python -m benchmarks.bench`: the body of `personalive bench` (see personalive/bench.py) from the command line.

python -m benchmarks.bench --random full --frames 96 --keyframes 0,3 --video-frames 300 --json out.json
python -m benchmarks.bench --random tiny --frames 12 --keyframes 0 --json out.json   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from personalive.bench import BenchOptions, run_bench


def parse(argv: list[str] | None = None) -> tuple[BenchOptions, Path | None]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path)
    p.add_argument("--random", choices=["full", "tiny"])
    p.add_argument("--backend", default="eager")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--keyframes", default="0,3")
    p.add_argument("--video-frames", type=int, default=0)
    p.add_argument("--video-size", default="640x480")
    p.add_argument("--no-savings", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    width, height = (int(x) for x in a.video_size.split("x"))
    options = BenchOptions(
        weights=a.weights,
        random=a.random,
        backend=a.backend,
        dtype=a.dtype,
        device=a.device,
        frames=a.frames,
        warmup=a.warmup,
        iters=a.iters,
        keyframes=tuple(int(k) for k in a.keyframes.split(",") if k != ""),
        video_frames=a.video_frames,
        video_size=(width, height),
        savings=not a.no_savings,
        channels_last=a.channels_last,
    )
    return options, a.json


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    options, out = parse(argv)
    report = run_bench(options)
    text = json.dumps(report, indent=2, default=str)
    if out is not None:
        out.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
