"""The output video: H.264 frames streamed to a temporary file, the driving audio muxed in sync, atomic rename.

* Video: ``media.codec`` (libx264), ``media.pix_fmt`` (yuv420p), CRF ``media.crf``, preset ``media.preset``, at
  the driving video's exact rational frame rate (30000/1001 stays 30000/1001); frame ``i`` has pts ``i / rate``.
* Audio (optional): the driving file's first audio stream, decoded and re-encoded to AAC, interleaved as the
  video frames arrive. Its timing is kept relative to the driving video's first frame (audio before it is cut),
  and it is trimmed to the output's duration, so audio and video stay in sync even with ``--max-frames``.
* Everything goes to a hidden temporary file beside the target; :meth:`VideoSink.close` renames it into place.
  :meth:`VideoSink.abort` (or leaving the ``with`` block with an exception, Ctrl-C included) deletes it, so a
  failed run leaves neither a partial output nor a temporary file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from personalive.errors import InputError, OutputError

log = logging.getLogger(__name__)

AUDIO_CODEC = "aac"
AUDIO_BITRATE = 160_000


def check_output_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing output without ``overwrite``; the directory must exist and be writable."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: output exists (pass --overwrite to replace it)")
    if path.is_dir():
        raise OutputError(f"{path}: output is a directory (give a file name ending in .mp4)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{path}: output directory {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: output directory {parent} is not writable (choose another -o/--out)")
    return path


class VideoSink:
    """Write RGB frames as H.264 to ``path`` (atomically), optionally with the audio of ``audio_from``.

    ``rate`` is the exact frame rate, ``width`` x ``height`` the frame size. Frames are (H, W, 3) uint8 arrays
    or tensors, written in order with :meth:`write`; :meth:`close` finishes and renames into place.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        rate: Fraction,
        width: int,
        height: int,
        *,
        codec: str = "libx264",
        pix_fmt: str = "yuv420p",
        crf: int = 18,
        preset: str = "medium",
        audio_from: str | os.PathLike | None = None,
        audio_start: float = 0.0,
        overwrite: bool = False,
    ):
        import av

        self.path = check_output_path(path, overwrite)
        self.rate = Fraction(rate)
        self.width, self.height = width, height
        self.frames_written = 0
        self.audio_seconds = 0.0
        self._closed = False
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp.mp4", dir=self.path.parent or ".")
        except OSError as exc:
            raise OutputError(
                f"{self.path}: cannot write in {self.path.parent} ({exc.strerror}); choose another -o/--out"
            ) from exc
        os.close(fd)
        # mkstemp creates the file 0600; give the output the permissions of a normally created file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        self._tmp = Path(tmp)
        self._audio = None
        try:
            self._container = av.open(str(self._tmp), mode="w", format="mp4")
            stream = self._container.add_stream(codec, rate=self.rate)
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            stream.codec_context.time_base = 1 / self.rate
            options = {"crf": str(crf), "preset": preset} if codec in ("libx264", "libx265") else {}
            stream.options = options
            self._video = stream
            if audio_from is not None:
                self._audio = _AudioCopy(Path(audio_from), self._container, audio_start)
        except BaseException:
            self.abort()
            raise

    def write(self, frame) -> None:
        """Encode one (H, W, 3) uint8 frame (numpy or CPU tensor) and interleave the audio up to its time."""
        import av

        rgb = frame.numpy() if hasattr(frame, "numpy") else np.asarray(frame)
        if rgb.shape != (self.height, self.width, 3):
            raise ValueError(f"frame of shape {rgb.shape}, expected {(self.height, self.width, 3)}")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        video_frame.pts = self.frames_written
        video_frame.time_base = self._video.codec_context.time_base
        self._container.mux(self._video.encode(video_frame))
        self.frames_written += 1
        if self._audio is not None:
            self._audio.pump(self.frames_written / self.rate)

    @property
    def duration(self) -> float:
        return float(self.frames_written / self.rate)

    def close(self) -> Path:
        """Flush the encoders, close the file and move it to ``path``. Returns ``path``."""
        if self._closed:
            return self.path
        try:
            if self.frames_written == 0:
                raise OutputError(f"{self.path}: no frames were produced; nothing written")
            self._container.mux(self._video.encode(None))
            if self._audio is not None:
                self._audio.pump(self.frames_written / self.rate)
                self._audio.flush()
                self.audio_seconds = self._audio.seconds
            self._container.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop everything: close quietly and delete the temporary file."""
        self._closed = True
        for closeable in (getattr(self, "_audio", None), getattr(self, "_container", None)):
            if closeable is not None:
                try:
                    closeable.close()
                except Exception:  # noqa: BLE001 - the file is being discarded anyway
                    log.debug("ignored error while discarding %s", self._tmp, exc_info=True)
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _AudioCopy:
    """Decode the driving file's audio and encode it to AAC in the output, up to a given time."""

    def __init__(self, source: Path, output, start: float):
        import av

        try:
            self._input = av.open(str(source), mode="r")
        except av.error.FFmpegError as exc:
            raise InputError(f"{source}: cannot read its audio ({exc})") from exc
        if not self._input.streams.audio:
            self._input.close()
            raise InputError(f"{source}: has no audio stream to mux (use --no-audio)")
        in_stream = self._input.streams.audio[0]
        rate = in_stream.codec_context.sample_rate or 48000
        layout = in_stream.codec_context.layout.name if in_stream.codec_context.layout else "stereo"
        if in_stream.codec_context.channels > 2:
            layout = "stereo"
        self.rate = rate
        self._out = output.add_stream(AUDIO_CODEC, rate=rate)
        self._out.layout = layout
        self._out.bit_rate = AUDIO_BITRATE
        self._output = output
        self._resampler = av.AudioResampler(format=self._out.format.name, layout=layout, rate=rate)
        self._frames = self._input.decode(in_stream)
        self._start = start  # driving-video time of output t=0
        # the stream's stated end: decoders return the encoder's padding of the last frame too
        self._end: int | None = None
        if in_stream.duration is not None and in_stream.time_base is not None:
            first = float(in_stream.start_time * in_stream.time_base) if in_stream.start_time else 0.0
            self._end = round((first + float(in_stream.duration * in_stream.time_base) - start) * rate)
        self._pending: np.ndarray | None = None  # resampled samples (channels, n) not yet written
        self._pending_at = 0  # output sample index of the first pending sample
        self._written = 0  # output samples handed to the encoder
        self._done = False
        self._layout = layout

    @property
    def seconds(self) -> float:
        return self._written / self.rate

    def _next_chunk(self) -> bool:
        """Decode more audio into ``_pending``; False at the end of the stream or on damage."""
        import av

        while not self._done:
            try:
                frame = next(self._frames)
            except StopIteration:
                self._done = True
                break
            except av.error.FFmpegError as exc:
                log.warning("audio decoding stopped (%s); the rest of the output is silent", exc)
                self._done = True
                break
            time = frame.time
            for out in self._resampler.resample(frame):
                data = out.to_ndarray()  # (channels, n) planar
                at = round(((time if time is not None else 0.0) - self._start) * self.rate)
                if time is None or self._pending is not None:
                    at = self._pending_at + (self._pending.shape[1] if self._pending is not None else 0)
                if at < self._written:  # before the video's first frame (or overlapping): cut
                    data = data[:, self._written - at :]
                    at = self._written
                if data.shape[1] == 0:
                    continue
                if self._pending is None:
                    self._pending, self._pending_at = data, at
                else:
                    self._pending = np.concatenate([self._pending, data], axis=1)
                time = None
            if self._pending is not None:
                return True
        return False

    def pump(self, until_seconds: float) -> None:
        """Encode audio up to ``until_seconds`` of output time (exclusive), trimming at that point."""
        target = round(until_seconds * self.rate)
        if self._end is not None:
            target = min(target, self._end)
        while self._written < target:
            if self._pending is None and not self._next_chunk():
                return
            if self._pending_at > self._written:  # a gap before this audio: start it at its own time
                self._written = min(self._pending_at, target)
                if self._written >= target:
                    return
            take = min(self._pending.shape[1], target - self._written)
            self._encode(self._pending[:, :take], self._written)
            rest = self._pending[:, take:]
            self._written += take
            self._pending, self._pending_at = (rest, self._written) if rest.shape[1] else (None, self._written)

    def _encode(self, samples: np.ndarray, at: int) -> None:
        import av

        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples), format=self._out.format.name, layout=self._layout
        )
        frame.sample_rate = self.rate
        frame.pts = at
        frame.time_base = Fraction(1, self.rate)
        self._output.mux(self._out.encode(frame))

    def flush(self) -> None:
        self._output.mux(self._out.encode(None))

    def close(self) -> None:
        inp, self._input = self._input, None
        if inp is not None:
            inp.close()
