"""Jobs per hour of `personalive batch` on one device and on several (``--devices``), and the scaling efficiency.

    python -m benchmarks.multi_gpu --weights /tmp/pw-full --init --runs 0 all --json benchmarks/multi-gpu.json

writes a fixed manifest (``--clips`` synthetic driving clips of ``--frames`` frames, 4 references), then runs
``personalive batch MANIFEST --devices SPEC`` once per ``--runs`` entry as a user would (a fresh process, outputs
in a fresh folder, wall clock from start to exit, model loading included) and prints jobs/hour and the efficiency
of each run against the first: ``(jobs/hour) / (workers x jobs/hour of the first run / its workers)``.
``--init`` writes random weights in the official layout first (``--size full``: real sizes, ~7 GB).
CPU check at tiny size: ``--size tiny --runs cpu:1 cpu:2 --clips 4 --frames 8 --height 64``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger("benchmarks.multi_gpu")


def write_inputs(folder: Path, clips: int, frames: int, size: int) -> Path:
    """``clips`` driving videos (a moving pattern; the content does not change the arithmetic), 4 references, and
    the manifest that pairs them."""
    import av
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for r in range(4):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"ref{r}.png")
    for c in range(clips):
        path = folder / f"clip{c}.mp4"
        if path.exists():
            continue
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=Fraction(25))
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            for i in range(frames):
                rgb = np.full((size, size, 3), 60, np.uint8)
                x = (i * 5 + c * 11) % (size - 16)
                rgb[size // 4 : 3 * size // 4, x : x + 16] = (220, 180, 150)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            container.mux(stream.encode(None))
    manifest = folder / "jobs.yaml"
    rows = [f"  - {{ref: ref{c % 4}.png, drive: clip{c}.mp4, out: out/{c}.mp4}}" for c in range(clips)]
    manifest.write_text("jobs:\n" + "\n".join(rows) + "\n")
    return manifest


def run_batch(manifest: Path, devices: str, weights: Path, extra: list[str], report: Path) -> dict:
    out = manifest.parent / "out"
    if out.exists():
        for old in out.iterdir():
            old.unlink()
    out.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "personalive.cli", "-q", "batch", str(manifest), "--devices", devices]
    command += ["--weights", str(weights), "--report", str(report), "--no-audio", *extra]
    log.info("%s", " ".join(command))
    t0 = time.perf_counter()
    code = subprocess.run(command, check=False).returncode
    wall = time.perf_counter() - t0
    data = json.loads(report.read_text())
    done = data["summary"]["done"]
    if code != 0 or done != len(data["jobs"]):
        raise SystemExit(f"--devices {devices}: exit {code}, {done} of {len(data['jobs'])} jobs done (see {report})")
    workers = len(data["workers"])
    frames = sum(e["frames"] for e in data["jobs"])
    return {
        "devices": devices,
        "workers": workers,
        "jobs": done,
        "frames": frames,
        "wall_seconds": round(wall, 2),
        "jobs_per_hour": round(done / wall * 3600, 2),
        "frames_per_second": round(frames / wall, 3),
        "job_seconds": [e["seconds"] for e in data["jobs"]],
        "gpus": sorted({e["device"] for e in data["jobs"]}),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--init", action="store_true", help="write random weights there first (if missing)")
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument("--runs", nargs="+", default=["0", "all"], help="--devices of each run; the first is 1x")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--height", type=int, default=512, help="model resolution (and clip size)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/personalive-multi-gpu"))
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--set", action="append", default=[], help="extra config key=value for every run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from personalive.environment import cuda_devices, versions

    if args.init and not args.weights.exists():
        from personalive.random_weights import init_random_weights

        init_random_weights(args.weights, args.size, seed=0)
    manifest = write_inputs(args.workdir, args.clips, args.frames, args.height)
    extra = [x for key in (f"generation.height={args.height}", f"generation.width={args.height}", *args.set)
             for x in ("--set", key)]  # fmt: skip
    if args.size == "tiny":
        extra += ["--dtype", "fp32"]
    runs = [run_batch(manifest, spec, args.weights, extra, args.workdir / f"report-{i}.json")
            for i, spec in enumerate(args.runs)]  # fmt: skip
    base = runs[0]["jobs_per_hour"] / runs[0]["workers"]
    for run in runs:
        run["efficiency"] = round(run["jobs_per_hour"] / (run["workers"] * base), 3)
    result = {"clips": args.clips, "frames": args.frames, "size": args.size, "height": args.height, "runs": runs}
    result.update({"cuda_devices": cuda_devices(), "versions": versions()})
    print("| --devices | workers | jobs | wall s | jobs/hour | frames/s | efficiency |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['devices']} | {r['workers']} | {r['jobs']} | {r['wall_seconds']} | {r['jobs_per_hour']} | "
              f"{r['frames_per_second']} | {r['efficiency']:.0%} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
