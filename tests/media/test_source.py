"""Driving-video source: rates, counts, rotation, pixel formats, VFR, damage and bad files."""

from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np
import pytest

from personalive.errors import InputError
from personalive.media.source import VideoSource

from .synth import frame_pattern, make_video


@pytest.mark.parametrize("rate", [24, 25, Fraction(30000, 1001), 60])
def test_rate_and_count_exact(tmp_path, rate):
    path = make_video(tmp_path / "v.mp4", frames=7, rate=rate)
    with VideoSource(path) as source:
        assert source.info.rate == Fraction(rate)
        assert source.info.frames == 7
        frames = list(source)
    assert len(frames) == 7
    assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)
    # content order preserved: the green bar moves 7 px per frame
    for i, frame in enumerate(frames):
        expected = frame_pattern(i, 64, 64)
        assert np.abs(frame.astype(int) - expected).mean() < 8


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_applied(tmp_path, rotation):
    path = make_video(tmp_path / "r.mp4", frames=2, width=96, height=64, rotation=rotation)
    with VideoSource(path) as source:
        frame = next(iter(source))
        assert source.info.rotation == rotation % 360
    upright = np.rot90(frame_pattern(0, 96, 64), k=rotation // 90)  # counter-clockwise, like the display matrix
    assert frame.shape == upright.shape
    assert np.abs(frame.astype(int) - upright).mean() < 8
    w, h = (source.info.width, source.info.height)
    assert (h, w) == frame.shape[:2]


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "suffix"),
    [
        ("libx264", "yuv444p", ".mp4"),
        ("libx264", "gray", ".mp4"),
        ("mpeg4", "yuv420p", ".avi"),
        ("ffv1", "bgr0", ".mkv"),
    ],
)
def test_pixel_formats_to_rgb(tmp_path, codec, pix_fmt, suffix):
    path = make_video(tmp_path / f"p{suffix}", frames=3, width=66, height=50, codec=codec, pix_fmt=pix_fmt)
    with VideoSource(path) as source:
        frames = list(source)
    assert len(frames) == 3 and frames[0].shape == (50, 66, 3)
    expected = frame_pattern(1, 66, 50).astype(int)
    if pix_fmt == "gray":
        luma = expected @ np.array([0.299, 0.587, 0.114])
        expected = np.repeat(luma[..., None], 3, axis=-1)
    assert np.abs(frames[1].astype(int) - expected).mean() < 12


def test_variable_frame_rate_resampled_to_average(tmp_path):
    # timestamps in 1/100 s: gaps of 4 and 12 hundredths
    pts = [0, 4, 8, 20, 24, 28, 40, 44]
    path = make_video(tmp_path / "vfr.mkv", frames=8, rate=25, pts=pts, time_base=Fraction(1, 100))
    with VideoSource(path) as source:
        rate = source.info.rate
        frames = list(source)
    slots = [round(p / 100 * rate) for p in pts]
    assert len(frames) == slots[-1] + 1  # a constant-rate grid covering the clip
    # each output frame is the latest input frame at or before its slot
    for k, frame in enumerate(frames):
        src = max(i for i, s in enumerate(slots) if s <= k)
        assert np.abs(frame.astype(int) - frame_pattern(src, 64, 64)).mean() < 8


def test_max_frames(tmp_path):
    path = make_video(tmp_path / "v.mp4", frames=9)
    with VideoSource(path, max_frames=4) as source:
        assert source.expected_frames == 4
        assert len(list(source)) == 4


def test_audio_presence(tmp_path):
    with VideoSource(make_video(tmp_path / "a.mp4", frames=3, audio_seconds=0.5)) as source:
        assert source.info.has_audio
    with VideoSource(make_video(tmp_path / "n.mp4", frames=3)) as source:
        assert not source.info.has_audio


def test_missing_empty_random(tmp_path):
    with pytest.raises(InputError, match="not found"):
        VideoSource(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        VideoSource(tmp_path / "empty.mp4")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(InputError, match="noise.mp4: driving video is not a readable video"):
        VideoSource(tmp_path / "noise.mp4")


def test_audio_only(tmp_path):
    import av

    path = tmp_path / "audio.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(InputError, match=r"audio.m4a: driving video has no video stream \(found: audio\)"):
        VideoSource(path)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".bmp"])
def test_a_still_image_is_refused_as_driving_video_but_read_as_reference(tmp_path, suffix):
    from PIL import Image

    from personalive.media.source import first_frame

    path = tmp_path / f"face{suffix}"
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    with pytest.raises(InputError, match=rf"face{suffix}: driving video is a still image .*not a video.*swapped"):
        VideoSource(path)
    assert first_frame(path).shape == (48, 64, 3)


def test_an_animated_gif_is_a_driving_video(tmp_path):
    from PIL import Image

    path = tmp_path / "moves.gif"
    frames = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (0, 120, 240)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with VideoSource(path) as source:
        assert len(list(source)) == 3


def _mdat(data: bytes) -> int:
    at = data.index(b"mdat") + 4
    return at


def test_truncated_uses_frames_until_damage(tmp_path, caplog):
    path = make_video(tmp_path / "t.mp4", frames=40, width=96, height=96, faststart=True)
    data = path.read_bytes()
    start = _mdat(data)
    path.write_bytes(data[: start + (len(data) - start) // 2])
    with caplog.at_level(logging.WARNING), VideoSource(path) as source:
        frames = list(source)
    assert 0 < len(frames) < 40
    assert source.stopped_early
    assert "t.mp4" in caplog.text and "using the frames decoded" in caplog.text


def test_zero_decodable_frames(tmp_path):
    path = make_video(tmp_path / "z.mp4", frames=5, faststart=True)
    data = bytearray(path.read_bytes())
    start = _mdat(bytes(data))
    data[start:] = b"\x00" * (len(data) - start)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="z.mp4: driving video has no decodable video frame"):
        VideoSource(path)


@pytest.mark.parametrize(
    ("suffix", "codec", "message"),
    [
        (".ts", "libx264", "the transport stream ends inside a packet after"),
        (".mkv", "libx264", "the stream ended after"),
        (".webm", "libvpx", "the stream ended after"),
    ],
)
def test_truncation_warned_for_every_container(tmp_path, caplog, suffix, codec, message):
    audio = None if suffix == ".webm" else 3.0  # WebM takes no AAC
    whole = make_video(tmp_path / f"whole{suffix}", frames=40, width=96, height=96, codec=codec, audio_seconds=audio)
    with caplog.at_level(logging.WARNING), VideoSource(whole) as source:
        assert len(list(source)) == 40 and not source.stopped_early  # audio longer than video: not "truncated"
    assert caplog.text == ""
    cut = tmp_path / f"cut{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 1])
    with caplog.at_level(logging.WARNING), VideoSource(cut) as source:
        frames = list(source)
    assert 0 < len(frames) < 40 and source.stopped_early
    assert f"cut{suffix}: {message}" in caplog.text and "(file truncated?); using the frames decoded" in caplog.text
