"""The driving video: streamed decoding with PyAV, one RGB frame at a time.

* Memory is constant in the video's length: frames are decoded, converted and handed out one by one.
* Any pixel format is converted to RGB (``rgb24``) by FFmpeg's swscale.
* Rotation metadata (the display matrix side data of phone videos) is applied, so frames come out upright.
  Flips in the display matrix are ignored (FFmpeg's ``rotation`` does not carry them; they are rare).
* The frame rate is the stream's average rate. Frames are placed on a constant-rate grid at that rate by their
  timestamps: a variable-frame-rate video is resampled to a constant rate equal to its average (frames are
  repeated to fill gaps and dropped where two land on one slot); a constant-rate video passes unchanged.
* A damaged or truncated file: the frames decoded up to the damage are used, and a warning names the file and
  where decoding stopped. A file with no decodable frame at all is an :class:`InputError`. Truncation is detected
  in every container (see :meth:`VideoSource._truncation`): by the frame count or the video track's duration the
  container states (MP4/MOV, Matroska/WebM), and for MPEG transport streams, which state neither, by a file that
  ends inside a transport packet.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from personalive.errors import InputError
from personalive.media.outputs import shown

log = logging.getLogger(__name__)

FALLBACK_RATE = Fraction(25)  # used only when the container states no rate at all (with a warning)
# sizes of a transport-stream packet: 188 bytes, 192 in Blu-ray M2TS (timecode prefix), 204 with Reed-Solomon
TS_PACKET_SIZES = (188, 192, 204)
SHORT_FRACTION = 0.9  # fewer frames than this fraction of the stated count: the file was cut


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the driving video (sizes are after rotation)."""

    path: Path
    width: int
    height: int
    rate: Fraction  # average frame rate, exact (30000/1001 for 29.97)
    frames: int | None  # frame count when the container knows it, else None
    duration: float | None  # seconds
    rotation: int  # counter-clockwise degrees applied to every frame (0, 90, 180, 270)
    pix_fmt: str
    has_audio: bool
    start: float = 0.0  # time of the first frame in seconds (the audio is aligned to it)


def check_input_file(path: Path, what: str) -> Path:
    """Existence, type and size checks shared by the reference and the driving video."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{shown(path)}: {what} not found")
    if not path.is_file():
        raise InputError(f"{shown(path)}: {what} is not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{shown(path)}: {what} is an empty file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{shown(path)}: {what} is not readable (check its permissions)")
    return path


def _open_container(path: Path, what: str):
    import av

    try:
        return av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{shown(path)}: {what} is not a readable video ({_short(exc)})") from exc


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."


def rotate_upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a counter-clockwise display rotation (degrees) to an (H, W, 3) frame."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb


class VideoSource:
    """A driving video opened for streamed reading.

    ``VideoSource(path)`` probes the file and decodes its first frame (so that a bad file fails before any
    model loads); iterating yields (H, W, 3) uint8 numpy frames, upright, at the constant rate ``info.rate``.
    ``max_frames`` stops after that many output frames. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        max_frames: int | None = None,
        what: str = "driving video",
        still_ok: bool = False,
    ):
        """``still_ok``: accept a still image (for :func:`first_frame`, which reads a reference given either way).
        A driving video that is one is refused: it is a swapped --ref/--drive far more often than a wish for a
        one-frame video at a made-up 25 fps."""
        self.path = check_input_file(Path(path), what)
        self.what = what
        self.still_ok = still_ok
        self.max_frames = max_frames
        self.frames_read = 0  # output frames handed out so far
        self.stopped_early = False  # True when decoding stopped at damage before the end
        self._container = _open_container(self.path, what)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------------- probing
    def _setup(self) -> None:
        container = self._container
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
            raise InputError(f"{shown(self.path)}: {self.what} has no video stream (found: {kinds})")
        fmt = container.format.name
        if not self.still_ok and (fmt.endswith("_pipe") or fmt.startswith("image2")):
            raise InputError(
                f"{shown(self.path)}: {self.what} is a still image ({fmt.removesuffix('_pipe')}), not a video; "
                "pass a video (or a .motion template) -- were --ref and --drive swapped?"
            )
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        self._stream = stream
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or rate <= 0:
            log.warning("%s: the container states no frame rate; assuming %s fps", shown(self.path), FALLBACK_RATE)
            rate = FALLBACK_RATE
        self._rate = Fraction(rate)
        self._decoded = self._decode_frames()
        first = next(self._decoded, None)
        if first is None:
            raise InputError(f"{shown(self.path)}: {self.what} has no decodable video frame (empty or damaged stream)")
        self._first = first
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        frames = stream.frames or None
        if frames is None and duration is not None:
            frames = max(1, round(duration * self._rate))
        rotation = int(first.rotation or 0) % 360
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        self.info = VideoInfo(
            path=self.path,
            width=width,
            height=height,
            rate=self._rate,
            frames=frames,
            duration=duration,
            rotation=rotation,
            pix_fmt=first.format.name,
            has_audio=bool(container.streams.audio),
            start=float(first.time or 0.0),
        )

    def _decode_frames(self) -> Iterator:
        """Decoded ``av.VideoFrame`` objects; stops with a warning at the first decoding error."""
        import av

        count = 0
        try:
            for packet in self._container.demux(self._stream):
                for frame in packet.decode():
                    count += 1
                    yield frame
        except (av.error.FFmpegError, EOFError) as exc:
            if count:
                self.stopped_early = True
                log.warning(
                    "%s: decoding stopped after %d frames (%s); using the frames decoded so far",
                    shown(self.path),
                    count,
                    _short(exc),
                )
            else:
                raise InputError(
                    f"{shown(self.path)}: {self.what} has no decodable video frame ({_short(exc)})"
                ) from exc

    # ------------------------------------------------------------------------------------------- reading
    @property
    def expected_frames(self) -> int | None:
        """Output frames this source will yield if the container's count is right (for progress bars)."""
        n = self.info.frames
        if self.max_frames is not None:
            n = self.max_frames if n is None else min(n, self.max_frames)
        return n

    def _to_rgb(self, frame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")
        if not rgb.flags.writeable:  # may view FFmpeg's buffer; the caller owns what it gets
            rgb = rgb.copy()
        return rotate_upright(rgb, self.info.rotation)

    def _slots(self) -> Iterator[tuple[int, object]]:
        """(slot index on the constant-rate grid, frame); slot = round((t - t0) * rate)."""
        t0 = None
        sequential = 0
        for frame in self._iter_decoded():
            time = frame.time
            if time is None:
                slot = sequential
            else:
                if t0 is None:
                    t0 = time
                slot = round((time - t0) * self._rate)
            sequential += 1
            yield slot, frame

    def _iter_decoded(self) -> Iterator:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._decoded

    def __iter__(self) -> Iterator[np.ndarray]:
        limit = self.max_frames
        previous = None  # (slot, frame) waiting for the next frame to know how many slots it covers
        for slot, frame in self._slots():
            if previous is not None and slot <= previous[0]:
                continue  # two frames on one slot (VFR burst or duplicate timestamp): keep the first
            if previous is not None:
                repeats = slot - previous[0]
                rgb = self._to_rgb(previous[1])
                for _ in range(repeats):
                    if limit is not None and self.frames_read >= limit:
                        return
                    self.frames_read += 1
                    yield rgb
            previous = (slot, frame)
            if limit is not None and self.frames_read >= limit:
                return
        if previous is not None and (limit is None or self.frames_read < limit):
            self.frames_read += 1
            yield self._to_rgb(previous[1])
        if limit is None and not self.stopped_early:
            problem = self._truncation()
            if problem:
                self.stopped_early = True
                log.warning("%s: %s (file truncated?); using the frames decoded", shown(self.path), problem)

    def _truncation(self) -> str | None:
        """Why the whole stream was read yet the file looks cut short, or None."""
        stated = self._stated_frames()
        if stated and self.frames_read < stated * SHORT_FRACTION:
            return f"the stream ended after {self.frames_read} of {stated} frames"
        if self._container.format.name == "mpegts":
            size = self.path.stat().st_size
            if all(size % packet for packet in TS_PACKET_SIZES):
                return f"the transport stream ends inside a packet after {self.frames_read} frames"
        return None

    def _stated_frames(self) -> int | None:
        """The video track's frame count as the container states it up front (MP4/MOV: the sample count;
        Matroska/WebM: the track's DURATION tag). Not the duration of a transport stream: FFmpeg estimates it
        from the file's last timestamps, so it shrinks with the file."""
        if self._stream.frames:
            return self._stream.frames
        duration = self._stream.metadata.get("DURATION")  # HH:MM:SS.fraction, written by Matroska muxers
        if duration:
            try:
                hours, minutes, seconds = duration.split(":")
                total = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            except ValueError:
                return None
            return max(1, round(total * self._rate))
        return None

    def close(self) -> None:
        container, self._container = getattr(self, "_container", None), None
        if container is not None:
            container.close()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def first_frame(path: str | os.PathLike, what: str = "reference") -> np.ndarray:
    """The first frame of a video, upright, as (H, W, 3) uint8 (a video given as the reference)."""
    with VideoSource(path, max_frames=1, what=what, still_ok=True) as source:
        return next(iter(source))
