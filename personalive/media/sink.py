"""The output video: H.264 frames streamed to a temporary file, the driving audio muxed in sync, atomic publish.

* Video: ``media.codec`` (libx264), ``media.pix_fmt`` (yuv420p), CRF ``media.crf``, preset ``media.preset``, at
  the driving video's exact rational frame rate (30000/1001 stays 30000/1001); frame ``i`` has pts ``i / rate``.
* Audio (optional): the driving file's first audio stream, decoded and re-encoded to AAC, interleaved as the
  video frames arrive. Its timing is kept relative to the driving video's first frame (audio before it is cut),
  and it is trimmed to the output's duration, so audio and video stay in sync even with ``--max-frames``.
* The container is the one the output's extension names (``.mp4``, ``.mov``, ``.mkv``; see
  :mod:`personalive.media.outputs`).
* Everything goes to a hidden temporary file beside the target; :meth:`VideoSink.close` publishes it (a file that
  appeared at the target meanwhile is replaced only with ``overwrite``). :meth:`VideoSink.abort` (or leaving the
  ``with`` block with an exception, Ctrl-C included) deletes it, so a failed run leaves neither a partial output
  nor a temporary file. Temporary files of earlier runs killed hard (``kill -9``) are removed on the next run.
* Operating-system failures while writing (disk full, directory removed) are a :class:`WriteError` naming the
  output, not the temporary file.
* A run whose every frame is one flat colour (what NaN turns into), or flat away from its borders (what an
  overflow inside the decoder turned into in the twelfth session: zero padding still draws the edges), is a
  :class:`GarbageOutputError`: such a video is never published.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

import numpy as np

from personalive.errors import GarbageOutputError, InputError, OutputError, WriteError
from personalive.media.outputs import (
    check_output_path,
    container_format,
    publish,
    remove_stale_temps,
    shown,
    temp_output,
)

log = logging.getLogger(__name__)

# a frame whose interior (the middle 3/4 of each side, every other pixel) varies less than this, in 0-255 levels,
# shows no picture; a run of only such frames is garbage (a portrait never is: its face alone varies by tens)
FLAT_STD = 1.0

AUDIO_CODEC = "aac"
AUDIO_BITRATE = 160_000


class FrameSink:
    """What every output sink shares: frames checked against its size, its duration, ``with`` = close or abort."""

    rate: Fraction
    width: int
    height: int
    frames_written: int

    def frame_array(self, frame) -> np.ndarray:
        """One (H, W, 3) uint8 frame (numpy or CPU tensor) as an array of this sink's size (else ValueError)."""
        rgb = frame.numpy() if hasattr(frame, "numpy") else np.asarray(frame)
        if rgb.shape != (self.height, self.width, 3):
            raise ValueError(f"frame of shape {rgb.shape}, expected {(self.height, self.width, 3)}")
        return rgb

    @property
    def duration(self) -> float:
        return float(self.frames_written / self.rate)

    def close(self) -> Path:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):  # noqa: ANN204 - the subclass itself
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class VideoSink(FrameSink):
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
        inputs: Mapping[str, str | os.PathLike] | None = None,
    ):
        import av

        self.path = check_output_path(path, overwrite, inputs)
        self.overwrite = overwrite
        self.rate = Fraction(rate)
        self.width, self.height = width, height
        self.frames_written = 0
        self.uniform_frames = 0  # frames of one flat colour (all of them: the run produced no picture)
        self.flat_frames = 0  # frames flat away from their borders (the same: all of them)
        self.audio_seconds = 0.0
        self._closed = False
        self._first_colour: tuple[int, ...] | None = None
        remove_stale_temps(self.path)
        try:
            self._tmp = temp_output(self.path)
        except OSError as exc:
            raise OutputError(
                f"{shown(self.path)}: cannot write in {shown(self.path.parent)} ({exc.strerror}); "
                "choose another -o/--out"
            ) from exc
        self._audio = None
        try:
            self._container = av.open(str(self._tmp), mode="w", format=container_format(self.path))
            stream = self._container.add_stream(codec, rate=self.rate)
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            stream.codec_context.time_base = 1 / self.rate
            options = {"crf": str(crf), "preset": preset} if codec in ("libx264", "libx265") else {}
            stream.options = options
            self._video = stream
            if audio_from is not None:
                self._audio = _AudioCopy(Path(audio_from), self._container, audio_start)
        except OSError as exc:
            self.abort()
            raise self._write_error(exc) from exc
        except BaseException:
            self.abort()
            raise

    def _write_error(self, exc: OSError) -> WriteError:
        """A one-line runtime error naming the output (never the temporary file) and the system's reason."""
        parent = self.path.parent
        if not parent.is_dir():
            reason = f"its directory {shown(parent)} was removed while writing"
        else:
            reason = exc.strerror or type(exc).__name__
        return WriteError(f"{shown(self.path)}: cannot write the output ({reason}); nothing written")

    def write(self, frame) -> None:
        """Encode one (H, W, 3) uint8 frame (numpy or CPU tensor) and interleave the audio up to its time."""
        import av

        rgb = self.frame_array(frame)
        self._note_uniform(rgb)
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        video_frame.pts = self.frames_written
        video_frame.time_base = self._video.codec_context.time_base
        try:
            self._container.mux(self._video.encode(video_frame))
            self.frames_written += 1
            if self._audio is not None:
                self._audio.pump(self.frames_written / self.rate)
        except OSError as exc:
            raise self._write_error(exc) from exc

    def _note_uniform(self, rgb: np.ndarray) -> None:
        # only a run whose frames are all flat is refused: a single black frame can be legitimate
        if self.uniform_frames == self.frames_written and (rgb == rgb[:1, :1]).all():
            self.uniform_frames += 1
            if self._first_colour is None:
                self._first_colour = tuple(int(c) for c in rgb[0, 0])
        if self.flat_frames == self.frames_written and interior_is_flat(rgb):
            self.flat_frames += 1

    def close(self) -> Path:
        """Flush the encoders, close the file and move it to ``path``. Returns ``path``."""
        if self._closed:
            return self.path
        try:
            if self.frames_written == 0:
                raise OutputError(f"{shown(self.path)}: no frames were produced; nothing written")
            if self.uniform_frames == self.frames_written:
                raise GarbageOutputError(
                    f"{shown(self.path)}: all {self.frames_written} frames are one flat colour "
                    f"{self._first_colour}, so the model produced no picture (NaN or broken weights); nothing "
                    "written (run `personalive weights check`; in fp16 try --dtype fp32)"
                )
            if self.flat_frames == self.frames_written:
                raise GarbageOutputError(
                    f"{shown(self.path)}: all {self.frames_written} frames are flat away from their borders (pixel "
                    f"spread under {FLAT_STD:g} level), so the model produced no picture (overflow, NaN or broken "
                    "weights); nothing written (run `personalive weights check`; in fp16 try --dtype fp32)"
                )
            try:
                self._container.mux(self._video.encode(None))
                if self._audio is not None:
                    self._audio.pump(self.frames_written / self.rate)
                    self._audio.flush()
                    self.audio_seconds = self._audio.seconds
                self._container.close()
                publish(self._tmp, self.path, self.overwrite)
            except OSError as exc:
                raise self._write_error(exc) from exc
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop everything: delete the temporary file (first: a second Ctrl-C during the rest leaves nothing), then
        close quietly."""
        self._closed = True
        self._tmp.unlink(missing_ok=True)
        for closeable in (getattr(self, "_audio", None), getattr(self, "_container", None)):
            if closeable is not None:
                try:
                    closeable.close()
                except Exception:  # noqa: BLE001 - the file is being discarded anyway
                    log.debug("ignored error while discarding %s", self._tmp, exc_info=True)


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


def interior_is_flat(rgb: np.ndarray) -> bool:
    """Whether an (H, W, 3) frame's interior varies by less than :data:`FLAT_STD` levels (a subsample: ~50K values
    of a 512x512 frame)."""
    height, width = rgb.shape[:2]
    inner = rgb[height // 8 : height - height // 8 : 2, width // 8 : width - width // 8 : 2]
    return inner.size == 0 or float(inner.std()) < FLAT_STD
