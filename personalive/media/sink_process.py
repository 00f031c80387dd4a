"""The output video encoded in a child process: a :class:`~personalive.media.sink.VideoSink` behind a pipe.

Why: PyAV holds the interpreter lock for much of its work (frame conversion, the encoder call, muxing), so on a
thread of the animating process the encoder and the thread that queues the GPU's work take turns with the lock.
Measured: on the 2-core CPU machine, 60 frames of 512x512 H.264 beside a busy Python thread took 1.9-2.5 s on a
thread and 0.7-0.8 s in a child (``benchmarks/encoder_contention.py``); on the H200 the encoder's pace in the
animate job body was 31 ms a frame on a thread and 24 ms in a child. At the eager step's ~17 fps the GPU is the
bound and the loop runs at the same speed either way (``benchmarks/RESULTS.md``, fifth session); a loop above
~32 fps (the compiled backends) needs the child's pace. The parent only copies each frame into a pipe, with the
lock released.

:class:`SinkProcess` has the sink's interface (``write``, ``close``, ``abort``, ``frames_written``,
``audio_seconds``, a context manager) and keeps its guarantees: the child writes to the hidden temporary file
and publishes it only on ``close``; errors (disk full, all frames one flat colour, the output appeared meanwhile)
come back as the same one-line errors, raised by the parent's next call; a child that dies is a
:class:`~personalive.errors.WriteError` naming the output, and its temporary file is removed.

Protocol: the parent writes one JSON line (the sink's arguments), then per frame the byte ``F`` and the frame's
``height * width * 3`` bytes, and finally ``C`` (close) or ``A`` (abort). The child answers with JSON lines:
``{"ready": temp path}``, ``{"error": class name, "message": ...}``, ``{"closed": {...}}``, ``{"aborted": true}``.
The child ignores Ctrl-C (the terminal sends it to the whole process group): the parent decides, and aborts it.

Run as ``python -m personalive.media.sink_process`` (by :class:`SinkProcess` only).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from personalive import errors
from personalive.media.sink import FrameSink

log = logging.getLogger(__name__)

FRAME, CLOSE, ABORT = b"F", b"C", b"A"
_STOP_WAIT_S = 10.0  # how long an aborted or closing child may take before it is killed


class SinkProcess(FrameSink):
    """A :class:`~personalive.media.sink.VideoSink` (same arguments) run in a child process."""

    def __init__(
        self,
        path: str | os.PathLike,
        rate: Fraction,
        width: int,
        height: int,
        *,
        audio_from: str | os.PathLike | None = None,
        inputs: Mapping[str, str | os.PathLike] | None = None,
        **options: Any,
    ) -> None:
        self.path = Path(path)
        self.rate = Fraction(rate)
        self.width, self.height = width, height
        self.frames_written = 0  # frames handed to the child (the child's count once closed)
        self.uniform_frames = 0
        self.audio_seconds = 0.0
        self._tmp: Path | None = None
        self._closed = False
        self._messages: list[dict[str, Any]] = []
        self._arrived = threading.Condition()
        header = {
            "path": str(self.path),
            "rate": [self.rate.numerator, self.rate.denominator],
            "width": width,
            "height": height,
            "audio_from": None if audio_from is None else str(audio_from),
            "inputs": {k: str(v) for k, v in (inputs or {}).items()},
            "options": options,
        }
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
        )
        self._reader = threading.Thread(target=self._read, name="personalive-encoder-reader", daemon=True)
        self._reader.start()
        self._send(json.dumps(header).encode() + b"\n")
        self._await("ready")  # construction errors (the output exists, an unwritable folder) come now

    # ------------------------------------------------------------------------------------------ the pipe
    def _read(self) -> None:
        for line in self._proc.stdout:  # type: ignore[union-attr]
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "log" in message:  # the sink's own warnings (audio decoding stopped, ...), logged here
                log.log(int(message["log"]), "%s", message["message"])
                continue
            with self._arrived:
                self._messages.append(message)
                self._arrived.notify_all()
        with self._arrived:
            self._messages.append({"eof": True})
            self._arrived.notify_all()

    def _died(self) -> errors.WriteError:
        code = self._proc.wait()
        self._remove_temp()
        return errors.WriteError(
            f"{self.path}: the encoder process ended unexpectedly (exit code {code}); nothing written"
        )

    def _raise_if_failed(self, message: dict[str, Any]) -> None:
        if "error" in message:
            self._closed = True
            cls = getattr(errors, message["error"], None)
            if not (isinstance(cls, type) and issubclass(cls, errors.PersonaLiveError)):
                cls = errors.WriteError
            raise cls(message["message"])
        if "eof" in message:
            self._closed = True
            raise self._died()

    def _poll(self) -> None:
        """Raise the child's error, if it reported one (no waiting)."""
        with self._arrived:
            pending = list(self._messages)
        for message in pending:
            self._raise_if_failed(message)

    def _await(self, key: str) -> dict[str, Any]:
        with self._arrived:
            while True:
                for i, message in enumerate(self._messages):
                    self._raise_if_failed(message)
                    if key in message:
                        del self._messages[i]
                        if key == "ready":
                            self._tmp = Path(message["ready"])
                        return message
                self._arrived.wait()

    def _send(self, *chunks: bytes | memoryview) -> None:
        stdin: BinaryIO = self._proc.stdin  # type: ignore[assignment]
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    written = stdin.write(view)
                    view = view[written:]
        except (BrokenPipeError, ValueError):
            self._closed = True
            self._reader.join(timeout=_STOP_WAIT_S)
            self._poll()  # the child's own error, if it sent one before exiting
            raise self._died() from None

    # ------------------------------------------------------------------------------------------ the sink
    def write(self, frame: Any) -> None:
        """Hand one (H, W, 3) uint8 frame (numpy or CPU tensor) to the encoder."""
        rgb = self.frame_array(frame)
        self._poll()
        self._send(FRAME, np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1).data)
        self.frames_written += 1

    def close(self) -> Path:
        """Flush and publish (in the child); returns ``path``. The child's errors are raised here."""
        if self._closed:
            return self.path
        try:
            self._send(CLOSE)
            closed = self._await("closed")["closed"]
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self.frames_written = closed["frames_written"]
        self.uniform_frames = closed["uniform_frames"]
        self.audio_seconds = closed["audio_seconds"]
        # the output is published: return now and let the child exit on its own. A batch worker reports the job
        # done as soon as this returns, and a stop signal arriving in between would lose a finished job's entry
        threading.Thread(target=self._stop, name="personalive-encoder-reaper", daemon=True).start()
        return self.path

    def abort(self) -> None:
        """Drop everything: the child deletes its temporary file; a child that does not answer is killed."""
        self._closed = True
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(ABORT)  # type: ignore[union-attr]
                self._proc.stdin.close()  # type: ignore[union-attr]
            except (BrokenPipeError, ValueError, OSError):
                pass
        self._stop()
        self._remove_temp()

    def _stop(self) -> None:
        try:
            self._proc.wait(timeout=_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("%s: the encoder process did not stop; killing it", self.path)
            self._proc.kill()
            self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def _remove_temp(self) -> None:
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- the child
def _reply(out: BinaryIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message).encode() + b"\n")
    out.flush()


def _read_exactly(stream: BinaryIO, buffer: bytearray) -> bool:
    view, got = memoryview(buffer), 0
    while got < len(buffer):
        n = stream.readinto(view[got:])
        if not n:
            return False
        got += n
    return True


def _error(exc: BaseException) -> dict[str, Any]:
    name = type(exc).__name__ if isinstance(exc, errors.PersonaLiveError) else "WriteError"
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return {"error": name, "message": message}


def serve(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """The child: one sink, fed from ``stdin``; answers on ``stdout``. Returns the exit code."""
    from personalive.media.sink import VideoSink

    header = json.loads(stdin.readline())
    options = dict(header["options"])
    options["inputs"] = header["inputs"]
    options["audio_from"] = header["audio_from"]
    try:
        sink = VideoSink(header["path"], Fraction(*header["rate"]), header["width"], header["height"], **options)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        _reply(stdout, _error(exc))
        return 1
    _reply(stdout, {"ready": str(sink._tmp)})
    frame = bytearray(header["width"] * header["height"] * 3)
    shape = (header["height"], header["width"], 3)
    while True:
        tag = stdin.read(1)
        if tag == FRAME and _read_exactly(stdin, frame):
            try:
                sink.write(np.frombuffer(frame, dtype=np.uint8).reshape(shape))
            except BaseException as exc:  # noqa: BLE001
                sink.abort()
                _reply(stdout, _error(exc))
                return 1
            continue
        if tag == CLOSE:
            try:
                sink.close()
            except BaseException as exc:  # noqa: BLE001 - close has already removed the temporary file
                _reply(stdout, _error(exc))
                return 1
            stats = {"frames_written": sink.frames_written, "uniform_frames": sink.uniform_frames}
            _reply(stdout, {"closed": stats | {"audio_seconds": sink.audio_seconds}})
            return 0
        # abort, or the parent is gone (end of input, a cut frame): nothing is published
        sink.abort()
        if tag == ABORT:
            _reply(stdout, {"aborted": True})
        return 0


class _ToParent(logging.Handler):
    """The child's log records, sent to the parent as ``{"log": level, "message": ...}`` lines."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__(level=logging.INFO)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _reply(self.out, {"log": record.levelno, "message": record.getMessage()})
        except (OSError, ValueError):
            pass


def main() -> int:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent aborts the child
    root = logging.getLogger("personalive")
    root.addHandler(_ToParent(sys.stdout.buffer))
    root.setLevel(logging.INFO)
    try:
        return serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
