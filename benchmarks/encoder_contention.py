"""The output encoder beside a busy Python thread: on a thread of this process, and in a child process.

    python -m benchmarks.encoder_contention [--frames 60] [--size 512] [--repeat 3] [--json FILE]

Why the sink runs in a child process (``media.encode_process``): PyAV holds the interpreter lock for much of its
work, and the animating process's main thread (queueing the GPU's work) is busy all the time, so an encoder on a
thread of that process waits for the lock at every switch. Here the main thread spins in Python until ``--frames``
synthetic frames handed to the sink from another thread are encoded; wall seconds per sink, medians of
``--repeat``. Measured on the 2-core CPU machine (fifth session): 1.9-2.5 s on a thread, 0.7-0.8 s in the child.
On the H200's host (call N): 31 ms a frame on a thread of the animating process, 24 ms in the child.

A timing, so it is a benchmark, not a test: the suite's tests check what the child sink writes and how it fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np


def encoded_while_busy(sink_class, path: Path, frames: list[np.ndarray], size: int) -> float:
    sink = sink_class(path, Fraction(25), size, size, preset="medium")
    done = threading.Event()

    def encode() -> None:
        for frame in frames:
            sink.write(frame)
        sink.close()
        done.set()

    thread = threading.Thread(target=encode)
    start = time.perf_counter()
    thread.start()
    spins = 0
    while not done.is_set():  # the busy main thread
        spins += 1
    thread.join()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from personalive.media.sink import VideoSink
    from personalive.media.sink_process import SinkProcess

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    frames = [np.ascontiguousarray(np.roll(base, 3 * i, axis=1)) for i in range(args.frames)]
    seconds: dict[str, list[float]] = {"thread": [], "child process": []}
    with tempfile.TemporaryDirectory() as folder:
        for r in range(args.repeat):
            for name, sink_class in (("thread", VideoSink), ("child process", SinkProcess)):
                path = Path(folder) / f"{name.replace(' ', '-')}-{r}.mp4"
                seconds[name].append(encoded_while_busy(sink_class, path, frames, args.size))
    result = {name: round(statistics.median(values), 3) for name, values in seconds.items()}
    result |= {"frames": args.frames, "size": args.size, "repeat": args.repeat}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
