"""The whole-command benchmark's runner: stamped stderr lines, and a timeout that ends a command still writing."""

from __future__ import annotations

import sys
import time

from benchmarks.animate_command import run_timed


def test_run_timed_stamps_stderr_lines_and_returns_stdout():
    code = (
        "import sys, time; print('out'); sys.stderr.write('one\\n'); sys.stderr.flush(); time.sleep(0.3); "
        "sys.stderr.write('two\\n')"
    )
    proc, timeline = run_timed([sys.executable, "-c", code], timeout=30)
    assert proc.returncode == 0 and proc.stdout == "out\n"
    assert [line for _, line in timeline] == ["one", "two"]
    assert timeline[1][0] - timeline[0][0] >= 0.25


def test_run_timed_kills_a_command_past_its_timeout_with_stdout_open():
    code = "import sys, time; sys.stderr.write('started\\n'); sys.stderr.flush(); time.sleep(60)"
    started = time.perf_counter()
    proc, timeline = run_timed([sys.executable, "-c", code], timeout=1)
    assert time.perf_counter() - started < 15
    assert proc.returncode != 0
    assert timeline[0][1] == "started" and "timeout" in timeline[-1][1]
