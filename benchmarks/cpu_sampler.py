"""CPU time by process and by thread while something else runs: which processes take the host's cores.

    python -m benchmarks.cpu_sampler --out FILE.json [--interval 1.0]      (samples until SIGTERM or SIGINT)

Why: the whole ``animate --backend compile`` command's windows were slower than its step (calls AP, AT: ~180-200 ms
a window against 137 ms alone and ~140 ms in the job body run in one process, call AR), and its encoder's clock
doubled. Whether the encoder's child, the animating process's threads or inductor's compile workers take the CPU is
read here from ``/proc`` (Linux only): every interval, each thread's user + system time. Written on exit: per
interval the CPU seconds of each process that used any (with the epoch, to line up with a command's timeline), and
the threads with the most CPU over the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _threads() -> dict[tuple[int, int], tuple[str, float]]:
    """{(pid, tid): (thread name, CPU seconds so far)} for every thread readable now."""
    out = {}
    for pid_name in os.listdir("/proc"):
        if not pid_name.isdigit():
            continue
        try:
            tids = os.listdir(f"/proc/{pid_name}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{pid_name}/task/{tid}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()  # fields 3.. of proc(5): utime, stime are 14, 15
            out[(int(pid_name), int(tid))] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def _process(pid: int, names: dict[int, str]) -> str:
    if pid not in names:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        names[pid] = f"{pid} {cmd[:160]}"
    return names[pid]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--interval", type=float, default=1.0)
    args = p.parse_args()
    stop = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.append(True))
    names: dict[int, str] = {}
    first = previous = _threads()
    seen = dict(first)  # every thread's last reading, also of threads that have exited since
    samples = []
    while not stop:
        time.sleep(args.interval)
        now = _threads()
        by_process: dict[str, float] = {}
        for key, (_, cpu) in now.items():
            used = cpu - previous.get(key, ("", 0.0))[1]  # a thread new since the last reading: all of it
            if used > 0:
                process = _process(key[0], names)
                by_process[process] = by_process.get(process, 0.0) + used
        samples.append([round(time.time(), 2), {k: round(v, 2) for k, v in by_process.items() if v >= 0.05}])
        previous = now
        seen |= now
    totals = []
    for key, (name, cpu) in seen.items():
        used = cpu - first.get(key, ("", 0.0))[1]
        if used >= 0.1:
            totals.append({"process": _process(key[0], names), "tid": key[1], "thread": name, "cpu_s": round(used, 2)})
    totals.sort(key=lambda row: -row["cpu_s"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"interval_s": args.interval, "samples": samples, "threads": totals[:60]}) + "\n")


if __name__ == "__main__":
    main()
