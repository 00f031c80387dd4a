"""Stop signals: the first one stops the run and cleans up; later ones never interrupt the cleanup or the exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = str(Path(__file__).parent)

_CHILD = """
import sys, threading, time
from fractions import Fraction
sys.path.insert(0, {tests!r})
from media.synth import frame_pattern
from personalive.media.sink import VideoSink
from personalive.signals import ignore_stop_signals, stop_on_signals
# a non-daemon worker (decoding, encoding) that the interpreter joins at exit
threading.Thread(target=time.sleep, args=(1.5,)).start()
try:
    with stop_on_signals(), VideoSink(sys.argv[1], Fraction(25), 64, 64) as sink:
        print("writing", flush=True)
        for i in range(100000):
            sink.write(frame_pattern(i, 64, 64))
            time.sleep(0.01)
except KeyboardInterrupt as exc:
    if sys.argv[2] == "process":
        ignore_stop_signals()
    print("interrupted", type(exc).__name__, flush=True)
    time.sleep(0.3)  # more cleanup after the message: signals keep coming meanwhile
    sys.exit(130)
"""


def _run_child(tmp_path: Path, mode: str, signals: list[int], gap: float) -> tuple[int, str]:
    out = tmp_path / "o.mp4"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(tests=TESTS), str(out), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert child.stdout.readline() == b"writing\n"
    time.sleep(0.2)
    for signum in signals:
        child.send_signal(signum)
        time.sleep(gap)
    output, _ = child.communicate(timeout=60)
    return child.returncode, output.decode()


@pytest.mark.parametrize("gap", [0.05, 0.4])
def test_ctrl_c_three_times_no_traceback(tmp_path, gap):
    code, output = _run_child(tmp_path, "process", [signal.SIGINT] * 3, gap)
    assert code == 130, output
    assert "interrupted KeyboardInterrupt" in output
    assert "Traceback" not in output and "Exception ignored" not in output
    assert os.listdir(tmp_path) == []  # the temporary file was removed


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
def test_sighup_and_sigterm_stop_like_ctrl_c(tmp_path, signum):
    code, output = _run_child(tmp_path, "context", [signum], 0.0)
    assert code == 130 and "interrupted Terminated" in output, output
    assert os.listdir(tmp_path) == []


def test_sighup_stops_animate_and_leaves_no_file(tmp_path):
    import numpy as np
    from media.synth import make_video
    from PIL import Image
    from test_animate_cli import _SLOW_CHILD, SIZE

    ref = tmp_path / "face.png"
    Image.fromarray(np.full((90, 70, 3), 120, np.uint8)).save(ref)
    drive = make_video(tmp_path / "d.mp4", frames=60)
    script = _SLOW_CHILD.format(tests=TESTS)
    args = [sys.executable, "-c", script, "animate", "--ref", str(ref), "--drive", str(drive), "-o", "o.mp4", *SIZE]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.time() + 60
    while not any(name.endswith(".tmp.mp4") for name in os.listdir(tmp_path)) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    child.send_signal(signal.SIGHUP)
    output, _ = child.communicate(timeout=60)
    assert child.returncode == 130, output.decode()
    assert b"interrupted" in output and b"Traceback" not in output
    assert sorted(os.listdir(tmp_path)) == ["d.mp4", "face.png"]


@pytest.mark.parametrize("gap", [0.05, 0.3])
def test_cli_ctrl_c_three_times_no_traceback(tmp_path, gap):
    import numpy as np
    from media.synth import make_video
    from PIL import Image
    from test_animate_cli import _SLOW_CHILD, SIZE

    ref = tmp_path / "face.png"
    Image.fromarray(np.full((90, 70, 3), 120, np.uint8)).save(ref)
    drive = make_video(tmp_path / "d.mp4", frames=60, audio_seconds=2.0)
    script = _SLOW_CHILD.format(tests=TESTS)
    args = [sys.executable, "-c", script, "animate", "--ref", str(ref), "--drive", str(drive), "-o", "o.mp4", *SIZE]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.time() + 60
    while not any(name.endswith(".tmp.mp4") for name in os.listdir(tmp_path)) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    for _ in range(3):
        child.send_signal(signal.SIGINT)
        time.sleep(gap)
    output, _ = child.communicate(timeout=60)
    assert child.returncode == 130, output.decode()
    assert output.decode().count("interrupted") == 1
    assert b"Traceback" not in output and b"Exception ignored" not in output
    assert sorted(os.listdir(tmp_path)) == ["d.mp4", "face.png"]
