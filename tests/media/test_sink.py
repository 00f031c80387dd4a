"""H.264 sink: exact rational rate, streamed frames, audio trimmed in sync, atomic rename, errors."""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest

from personalive.errors import OutputError
from personalive.media.sink import VideoSink

from .synth import frame_pattern, make_video, probe


def _write(path, rate, n, **kwargs):
    with VideoSink(path, rate, 64, 64, **kwargs) as sink:
        for i in range(n):
            sink.write(frame_pattern(i, 64, 64))
    return sink


@pytest.mark.parametrize("rate", [Fraction(30000, 1001), Fraction(60), Fraction(24)])
def test_rate_and_frames(tmp_path, rate):
    out = tmp_path / "o.mp4"
    _write(out, rate, 5)
    info = probe(out)
    assert info["rate"] == rate and info["frames"] == 5 and info["audio"] is None
    assert (info["width"], info["height"]) == (64, 64)


def test_audio_trimmed_to_video_duration(tmp_path):
    drive = make_video(tmp_path / "d.mp4", frames=3, audio_seconds=2.0)
    out = tmp_path / "o.mp4"
    sink = _write(out, Fraction(25), 10, audio_from=drive)
    info = probe(out)
    assert info["frames"] == 10
    assert info["audio"] == pytest.approx(0.4, abs=0.03)
    assert sink.audio_seconds == pytest.approx(0.4, abs=1e-3)


def test_short_audio_is_not_padded(tmp_path):
    drive = make_video(tmp_path / "d.mp4", frames=3, audio_seconds=0.2)
    out = tmp_path / "o.mp4"
    _write(out, Fraction(25), 25, audio_from=drive)
    assert probe(out)["audio"] == pytest.approx(0.2, abs=0.03)


def test_audio_content_in_sync(tmp_path):
    import av

    # a click at 0.5 s in the driving audio must stay at 0.5 s in the output
    src = tmp_path / "click.mp4"
    with av.open(str(src), "w") as container:
        v = container.add_stream("libx264", rate=25)
        v.width = v.height = 64
        v.pix_fmt = "yuv420p"
        a = container.add_stream("aac", rate=16000)
        a.layout = "mono"
        for i in range(25):
            container.mux(v.encode(av.VideoFrame.from_ndarray(frame_pattern(i, 64, 64), format="rgb24")))
        container.mux(v.encode(None))
        samples = np.zeros(16000, np.float32)
        samples[8000:8160] = 0.8
        for start in range(0, 16000, 1024):
            f = av.AudioFrame.from_ndarray(samples[None, start : start + 1024].copy(), format="fltp", layout="mono")
            f.sample_rate, f.pts = 16000, start
            container.mux(a.encode(f))
        container.mux(a.encode(None))
    out = tmp_path / "o.mp4"
    _write(out, Fraction(25), 25, audio_from=src)
    with av.open(str(out)) as container:
        decoded = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
        first = container.streams.audio[0]
    loud = np.flatnonzero(np.abs(decoded) > 0.3)
    # AAC adds encoder delay; allow up to one frame of 1024 samples (the edit list may not be applied on decode)
    assert first is not None and loud.size
    assert 8000 - 50 <= loud[0] <= 8000 + 1024 + 50


def test_exception_leaves_nothing(tmp_path):
    out = tmp_path / "o.mp4"
    with pytest.raises(RuntimeError), VideoSink(out, Fraction(25), 64, 64) as sink:
        sink.write(frame_pattern(0, 64, 64))
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with pytest.raises(KeyboardInterrupt), VideoSink(out, Fraction(25), 64, 64) as sink:
        sink.write(frame_pattern(0, 64, 64))
        assert len(os.listdir(tmp_path)) == 1 and not out.exists()  # only the hidden temp file while writing
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_no_frames_is_an_error_and_leaves_nothing(tmp_path):
    with pytest.raises(OutputError, match="no frames"):
        with VideoSink(tmp_path / "o.mp4", Fraction(25), 64, 64):
            pass
    assert os.listdir(tmp_path) == []


def test_overwrite_and_bad_directories(tmp_path):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"old")
    with pytest.raises(OutputError, match="o.mp4: output exists \\(pass --overwrite"):
        VideoSink(out, Fraction(25), 64, 64)
    _write(out, Fraction(25), 2, overwrite=True)
    assert probe(out)["frames"] == 2
    with pytest.raises(OutputError, match="does not exist"):
        VideoSink(tmp_path / "missing" / "o.mp4", Fraction(25), 64, 64)
    with pytest.raises(OutputError, match=r"o.mp4: (cannot write in /sys|output directory /sys is not writable)"):
        VideoSink("/sys/o.mp4", Fraction(25), 64, 64)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(OutputError, match="locked is not writable"):
            VideoSink(locked / "o.mp4", Fraction(25), 64, 64)
    finally:
        locked.chmod(0o700)


def test_output_gets_umask_permissions_not_tempfile_ones(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "o.mp4"
        _write(out, Fraction(25), 2)
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644
