"""Where the window loop makes the host wait for the GPU: every synchronising CUDA call, with its Python stack.

    python -m benchmarks.sync_probe --out FILE.json [--size full|tiny] [--device cuda] [--frames 48] [--graphs]

Runs the stream over device frames and the animate job body over a generated clip (PyAV decode and encode) once to
warm up, then again under ``torch.cuda.set_sync_debug_mode("warn")``, which warns at each synchronising call
(``.item()``, ``bool()`` of a device tensor, a blocking copy). Each warning's stack, cut to the frames in this
repository, is counted; the JSON lists the distinct stacks with their counts per run. On a CPU nothing
synchronises and the lists are empty: the smoke test only checks the script runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import torch

log = logging.getLogger("benchmarks.sync_probe")
ROOT = str(Path(__file__).resolve().parents[1])


def _our_frames(stack: list[traceback.FrameSummary]) -> tuple[str, ...]:
    """The stack frames in this repository (not torch's, not the standard library's), innermost last."""
    return tuple(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in stack if f.filename.startswith(ROOT))


class SyncRecorder:
    """Counts synchronising calls by the repository frames that made them, while active."""

    def __init__(self) -> None:
        self.stacks: Counter[tuple[str, ...]] = Counter()
        self._saved = None

    def __enter__(self) -> SyncRecorder:
        self._filters = warnings.catch_warnings()
        self._filters.__enter__()
        warnings.simplefilter("always")
        self._saved = warnings.showwarning
        warnings.showwarning = self._record  # type: ignore[assignment]
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def _record(self, message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if "synchroniz" not in str(message):
            return
        self.stacks[_our_frames(traceback.extract_stack()[:-1])] += 1

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode(0)
        warnings.showwarning = self._saved  # type: ignore[assignment]
        self._filters.__exit__(*exc)

    def rows(self) -> list[dict]:
        return [{"count": n, "stack": list(s[-8:])} for s, n in self.stacks.most_common()]


def main() -> None:
    from benchmarks.random_run import random_run
    from personalive import bench
    from personalive.backends.eager import EagerWindowStep
    from personalive.config import load_config

    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", default="full")
    p.add_argument("--device", default="cuda")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--graphs", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    models, device, options = random_run(args.size, args.device)
    options["runtime.cuda_graphs"] = "on" if args.graphs else "off"
    config = load_config(options=options)
    step = EagerWindowStep.from_models(models, config, device)
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC"), "graphs": args.graphs, "frames": args.frames}
    stream = bench.BenchOptions(random=args.size, frames=args.frames, warmup=1)
    video = bench.BenchOptions(**{**vars(stream), "video_frames": args.frames, "warmup": 0})
    runs = {
        "stream": lambda: bench.measure_stream(models, config, device, stream, step),
        "video": lambda: bench.measure_video(models, config, device, video, step),
    }
    for name, run in runs.items():
        run()  # warm: cuDNN autotuning, captures, the pinned-memory pool
        with SyncRecorder() as recorder:
            timing = run()
        result[name] = {"timing": timing, "syncs": recorder.rows()}
        count = sum(recorder.stacks.values())
        log.info("%s: %d synchronising calls at %d places", name, count, len(recorder.stacks))
        args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
