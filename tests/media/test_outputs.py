"""Outputs never destroy inputs or other runs' files; containers by extension; OS errors and garbage refused."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from personalive.errors import GarbageOutputError, OutputError, WriteError
from personalive.media import outputs
from personalive.media.outputs import check_output_path, remove_stale_temps, shown
from personalive.media.sink import VideoSink

from .synth import frame_pattern, make_video, probe

RATE = Fraction(25)


def _write(path, n=3, **kwargs):
    with VideoSink(path, RATE, 64, 64, **kwargs) as sink:
        for i in range(n):
            sink.write(frame_pattern(i, 64, 64))
    return sink


def test_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path):
    drive = make_video(tmp_path / "d.mp4", frames=2)
    ref = tmp_path / "r.mp4"
    ref.write_bytes(b"reference bytes")
    (tmp_path / "sym.mp4").symlink_to(drive)
    os.link(drive, tmp_path / "hard.mp4")
    inputs = {"driving video": drive, "reference image": ref}
    cases = {
        drive: "output is the driving video; choose another",
        tmp_path / "sub" / ".." / "d.mp4": "output is the driving video",
        tmp_path / "sym.mp4": f"output is the driving video ({drive})",
        tmp_path / "hard.mp4": f"output is the driving video ({drive})",
        ref: "output is the reference image",
    }
    (tmp_path / "sub").mkdir()
    before = drive.read_bytes()
    for out, message in cases.items():
        for overwrite in (False, True):
            with pytest.raises(OutputError) as info:
                VideoSink(out, RATE, 64, 64, overwrite=overwrite, inputs=inputs)
            assert message in str(info.value) and "--overwrite" not in str(info.value)
    assert drive.read_bytes() == before and ref.read_bytes() == b"reference bytes"
    assert sorted(os.listdir(tmp_path)) == ["d.mp4", "hard.mp4", "r.mp4", "sub", "sym.mp4"]  # no temp file


def test_directory_and_extensions(tmp_path):
    (tmp_path / "dir.mp4").mkdir()
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="dir.mp4: output is a directory; give a file name ending in .mp4"):
            check_output_path(tmp_path / "dir.mp4", overwrite)
    for name, found in [("x.avi", "extension '.avi'"), ("x.txt", "extension '.txt'"), ("x", "no extension")]:
        with pytest.raises(OutputError, match=f"{name}: output has {found}; name it .mp4, .mov or .mkv"):
            VideoSink(tmp_path / name, RATE, 64, 64)
    assert os.listdir(tmp_path) == ["dir.mp4"]


@pytest.mark.parametrize(
    ("name", "format_name", "brand"),
    [("o.mp4", "mov,mp4", b"isom"), ("o.MOV", "mov,mp4", b"qt  "), ("o.mkv", "matroska", None)],
)
def test_container_follows_extension(tmp_path, name, format_name, brand):
    import av

    drive = make_video(tmp_path / "d.mp4", frames=2, audio_seconds=1.0)
    out = tmp_path / name
    _write(out, n=5, audio_from=drive)
    with av.open(str(out)) as container:
        assert container.format.name.startswith(format_name)
    if brand is not None:
        assert out.read_bytes()[8:12] == brand  # ftyp major brand: mp4 muxer vs QuickTime muxer
    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(out)) as container:
        audio = sum(f.samples / f.sample_rate for f in container.decode(audio=0))
    assert frames == 5 and audio == pytest.approx(0.2, abs=0.07)  # AAC's priming samples may be decoded too


def test_output_appearing_meanwhile_is_kept_without_overwrite(tmp_path, monkeypatch):
    out = tmp_path / "o.mp4"
    sink = VideoSink(out, RATE, 64, 64)
    sink.write(frame_pattern(0, 64, 64))
    out.write_bytes(b"the other run's video")  # another run published first
    with pytest.raises(OutputError, match="o.mp4: output appeared while this run was writing it"):
        sink.close()
    assert out.read_bytes() == b"the other run's video" and os.listdir(tmp_path) == ["o.mp4"]
    # with --overwrite the later run replaces it
    sink = VideoSink(out, RATE, 64, 64, overwrite=True)
    sink.write(frame_pattern(0, 64, 64))
    sink.close()
    assert probe(out)["frames"] == 1 and os.listdir(tmp_path) == ["o.mp4"]
    # a file system without hard links: an exclusive claim of the name, same outcome
    monkeypatch.setattr(outputs.os, "link", lambda a, b: (_ for _ in ()).throw(OSError(errno.EPERM, "no links")))
    out2 = tmp_path / "p.mp4"
    _write(out2, n=2)
    assert probe(out2)["frames"] == 2
    sink = VideoSink(tmp_path / "q.mp4", RATE, 64, 64)
    sink.write(frame_pattern(0, 64, 64))
    (tmp_path / "q.mp4").write_bytes(b"other")
    with pytest.raises(OutputError, match="output appeared while"):
        sink.close()
    assert (tmp_path / "q.mp4").read_bytes() == b"other"
    assert sorted(os.listdir(tmp_path)) == ["o.mp4", "p.mp4", "q.mp4"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temp_names_carry_the_pid_and_stale_ones_are_removed(tmp_path):
    out = tmp_path / "o.mp4"
    sink = VideoSink(out, RATE, 64, 64)
    [tmp] = os.listdir(tmp_path)
    assert tmp.startswith(".o.mp4.") and f".{os.getpid()}-" in tmp and tmp.endswith(".tmp.mp4")
    sink.abort()
    host = outputs._host()
    dead = tmp_path / f".o.mp4.{host}.{_dead_pid()}-abcd1234.tmp.mp4"
    alive = tmp_path / f".o.mp4.{host}.{os.getppid()}-abcd1234.tmp.mp4"  # our parent runs: not stale
    other_host = tmp_path / f".o.mp4.elsewhere.{_dead_pid()}-abcd1234.tmp.mp4"  # cannot tell: kept
    other_out = tmp_path / f".p.mp4.{host}.{_dead_pid()}-abcd1234.tmp.mp4"  # another output's: left to it
    for path in (dead, alive, other_host, other_out):
        path.write_bytes(b"partial")
    assert remove_stale_temps(out) == [dead]
    assert not dead.exists() and alive.exists() and other_host.exists() and other_out.exists()


_KILLED_WRITER = """
import sys, time
from fractions import Fraction
sys.path.insert(0, {tests!r})
from media.synth import frame_pattern
from personalive.media.sink import VideoSink
sink = VideoSink(sys.argv[1], Fraction(25), 64, 64)
sink.write(frame_pattern(0, 64, 64))
print("writing", flush=True)
time.sleep(60)
"""


def test_kill_9_leftover_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "o.mp4"
    script = _KILLED_WRITER.format(tests=str(Path(__file__).parents[1]))
    child = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"writing\n"
    child.send_signal(signal.SIGKILL)
    child.wait()
    [left] = os.listdir(tmp_path)
    assert f".{child.pid}-" in left
    _write(out, n=2)
    assert os.listdir(tmp_path) == ["o.mp4"]


_DISK_FULL = """
import resource, signal, sys
from fractions import Fraction
sys.path.insert(0, {tests!r})
from media.synth import frame_pattern
from personalive.errors import PersonaLiveError
from personalive.media.sink import VideoSink
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
rng = __import__("numpy").random.default_rng(0)
try:
    with VideoSink(sys.argv[1], Fraction(25), 64, 64, crf=0, preset="ultrafast") as sink:
        for i in range(200):
            sink.write(rng.integers(0, 255, (64, 64, 3), dtype="uint8"))
except PersonaLiveError as exc:
    print(type(exc).__name__, exc.exit_code, exc)
"""


def test_disk_full_is_a_write_error_naming_the_output(tmp_path):
    out = tmp_path / "o.mp4"
    script = _DISK_FULL.format(tests=str(Path(__file__).parents[1]))
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=120)
    line = done.stdout.strip()
    assert line.startswith(f"WriteError 1 {out}: cannot write the output (File too large); nothing written"), (
        line + done.stderr
    )
    assert ".tmp" not in line and os.listdir(tmp_path) == []


def test_output_directory_removed_while_writing(tmp_path):
    folder = tmp_path / "outs"
    folder.mkdir()
    out = folder / "o.mp4"
    with pytest.raises(WriteError) as info, VideoSink(out, RATE, 64, 64) as sink:
        sink.write(frame_pattern(0, 64, 64))
        shutil.rmtree(folder)
    assert str(info.value) == (
        f"{out}: cannot write the output (its directory {folder} was removed while writing); nothing written"
    )
    assert WriteError.exit_code == 1 and os.listdir(tmp_path) == []


def test_flat_frames_are_garbage_not_a_video(tmp_path):
    out = tmp_path / "o.mp4"
    black = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(GarbageOutputError, match=r"o.mp4: all 4 frames are one flat colour \(0, 0, 0\)"):
        with VideoSink(out, RATE, 64, 64) as sink:
            for _ in range(4):
                sink.write(black)
    assert os.listdir(tmp_path) == [] and GarbageOutputError.exit_code == 1
    # one flat frame among pictures (a fade from black) is a legitimate video
    with VideoSink(out, RATE, 64, 64) as sink:
        sink.write(black)
        sink.write(frame_pattern(1, 64, 64))
    assert probe(out)["frames"] == 2


def test_frames_flat_away_from_their_borders_are_garbage(tmp_path):
    # what an overflowed decoder drew (twelfth session): one colour inside, the convolutions' zero padding at the edges
    rng = np.random.default_rng(0)
    frame = np.full((64, 64, 3), 120, np.uint8)
    frame[:4], frame[-4:], frame[:, :4] = rng.integers(0, 255, (4, 64, 3)), 30, 200
    out = tmp_path / "o.mp4"
    with pytest.raises(GarbageOutputError, match=r"o.mp4: all 3 frames are flat away from their borders"):
        with VideoSink(out, RATE, 64, 64) as sink:
            for _ in range(3):
                sink.write(frame)
    assert os.listdir(tmp_path) == []
    # a faint picture inside (a few levels of texture) is a picture
    faint = frame.copy()
    faint[8:56, 8:56] += rng.integers(0, 5, (48, 48, 3), dtype=np.uint8)
    with VideoSink(out, RATE, 64, 64) as sink:
        for _ in range(3):
            sink.write(faint)
    assert probe(out)["frames"] == 3


def test_names_with_control_characters_are_quoted(tmp_path):
    odd = tmp_path / "a\nb.avi"
    assert shown(odd) == repr(str(odd)) and shown(tmp_path / "été.mp4") == str(tmp_path / "été.mp4")
    with pytest.raises(OutputError) as info:
        check_output_path(odd, False)
    assert "\n" not in str(info.value) and "\\n" in str(info.value)


def test_relative_output_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(Path("rel.mp4"), n=1)
    assert os.listdir(tmp_path) == ["rel.mp4"]
