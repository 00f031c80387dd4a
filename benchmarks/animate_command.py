"""The whole ``personalive animate`` command in a fresh process, timed from outside (start-up and loading included).

    python -m benchmarks.animate_command --weights DIR --frames 300 --out FILE.json [--size WxH] [-- ANIMATE OPTIONS]

Generates a WxH 29.97 fps H.264 clip with an AAC track (``personalive.bench.write_clip``) and a random reference,
runs ``personalive animate`` on them with ``--report``, and writes: wall seconds, exit status, the report's frames,
fps and stage timings, and the child's peak resident memory (``RUSAGE_CHILDREN``: the whole command, interpreter
and imports included). Comparing a 300-frame with an 1,800-frame run shows whether host memory grows with the
video's length. ``--profile FILE.txt`` runs the command under ``cProfile`` (the main thread only; its calls get
slower, so the run's times are not the product's) and writes the functions with the most cumulative time: where
the time outside the frame loop goes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--size", default="640x480")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--profile", type=Path, default=None, help="cProfile the command; its top functions to this file")
    p.add_argument(
        "--compile-stats", type=Path, default=None, help="torch.compile's work in the command (when, how long, caches)"
    )
    p.add_argument("animate_options", nargs="*")
    args = p.parse_args()

    import numpy as np
    from PIL import Image

    from personalive.bench import write_clip

    width, height = (int(v) for v in args.size.lower().split("x"))
    folder = Path(tempfile.mkdtemp(prefix="animate-command-"))
    start = time.perf_counter()
    clip = write_clip(folder / "drive.mp4", args.frames, width, height)
    clip_s = time.perf_counter() - start
    side = max(height, 256)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / "r.png")
    launch = ["-c", "import sys; from personalive.cli import main; sys.argv[0] = 'personalive'; main()"]
    if args.profile is not None:  # around the typer app: `main` ends the process before cProfile could write
        launch = ["-c", _PROFILED.format(stats=str(folder / "animate.prof"))]
    elif args.compile_stats is not None:
        args.compile_stats.parent.mkdir(parents=True, exist_ok=True)
        launch = ["-c", _COMPILE_STATS.format(stats=str(args.compile_stats))]
    cmd = [
        sys.executable,
        *launch,
        *("animate", "--ref", str(folder / "r.png"), "--drive", str(clip), "-o", str(folder / "out.mp4")),
        *("--weights", str(args.weights), "--report", str(folder / "report.json")),
        *args.animate_options,
    ]
    start, started_epoch = time.perf_counter(), time.time()
    proc, timeline = run_timed(cmd, args.timeout)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = {
        "frames_asked": args.frames,
        "clip": f"{width}x{height} 29.97 fps with AAC, written in {clip_s:.1f} s",
        "options": args.animate_options,
        "rc": proc.returncode,
        "seconds": round(seconds, 2),
        "started_epoch": round(started_epoch, 2),  # lines the timeline up with benchmarks.cpu_sampler's samples
        "peak_host_gib": round(peak_kib / 2**20, 2),
        "stderr_tail": proc.stderr[-2500:],
        # each log line with the seconds since the command started, and the exit: where the whole command's time
        # goes before the job (interpreter, imports, CUDA), between its log lines, and after the report (teardown)
        "timeline": [*timeline, [round(seconds, 2), "(exit)"]],
        "output_bytes": (folder / "out.mp4").stat().st_size if (folder / "out.mp4").is_file() else 0,
    }
    if (folder / "report.json").is_file():
        out["report"] = json.loads((folder / "report.json").read_text())
    if args.profile is not None and (folder / "animate.prof").is_file():
        write_profile(folder / "animate.prof", args.profile)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(json.dumps({k: out[k] for k in ("rc", "seconds", "peak_host_gib", "output_bytes")}))


_PROFILED = """
import cProfile, sys
from personalive.cli import app
sys.argv[0] = "personalive"
profile = cProfile.Profile()
profile.enable()
try:
    app()
except SystemExit as exc:
    code = exc.code
profile.disable()
profile.dump_stats({stats!r})
sys.exit(code)
"""


# Where a --backend compile command's compile time goes: each dynamo compilation's start and end (seconds after the
# wrapper's imports), dynamo's time by phase, and its counters (inductor's FX graph cache hits and
# misses, AOTAutograd's cache, recompilations, graph breaks). Run beside TORCH_LOGS=recompiles for the reasons.
_COMPILE_STATS = """
import json, sys, time
import torch._dynamo.callback as callback
import torch._dynamo.utils as utils
from personalive.cli import app
start = time.perf_counter()
events = []
def note(kind):
    return lambda args: events.append([kind, round(time.perf_counter() - start, 2), str(args.compile_id)])
callback.on_compile_start(note("start"))
callback.on_compile_end(note("end"))
sys.argv[0] = "personalive"
code = 0
try:
    app()
except SystemExit as exc:
    code = exc.code
stats = {{
    "events": events,
    "time_spent_s": utils.calculate_time_spent(),
    "compile_times": utils.compile_times(repr="str", aggregate=True),
    "counters": {{name: dict(counter) for name, counter in utils.counters.items()}},
}}
with open({stats!r}, "w") as f:
    json.dump(stats, f, indent=1, default=str)
sys.exit(code)
"""


def run_timed(cmd: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, list[list]]:
    """Run ``cmd``; its stderr lines stamped with the seconds since the start as they arrive."""
    import threading

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timeline: list[list] = []
    lines: list[str] = []

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            timeline.append([round(time.perf_counter() - start, 2), line.rstrip()[:160]])

    out: list[str] = []
    reader = threading.Thread(target=read, daemon=True)
    # stdout read on a thread too: reading it here would block until the command exits, past ``timeout``
    stdout_reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    stdout_reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        timeline.append([round(time.perf_counter() - start, 2), f"(killed after the {timeout} s timeout)"])
    reader.join(timeout=5)
    stdout_reader.join(timeout=5)
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(out), "".join(lines)), timeline


def write_profile(stats_file: Path, out: Path, top: int = 80) -> None:
    """The ``top`` functions by cumulative time, then by own time with their callers, as ``pstats`` prints them."""
    import io
    import pstats

    text = io.StringIO()
    stats = pstats.Stats(str(stats_file), stream=text)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top // 2)
    stats.print_callers(top // 4)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.getvalue())


if __name__ == "__main__":
    main()
