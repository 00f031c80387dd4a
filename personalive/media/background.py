"""Decoding and encoding on background threads, so that the GPU does not wait for the codecs.

PyAV releases the GIL inside FFmpeg's decode and encode calls, so a decoder thread and an encoder thread run beside
the main thread's window loop (which itself mostly waits on the GPU). Both hand items over through bounded queues
(memory stays flat in the video's length) and pass any exception to the main thread, which re-raises it: the job
then fails as it would have without the threads (the sink aborts, no partial file).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["BackgroundWriter", "prefetch"]

_DONE = object()
_POLL_S = 0.1  # how often a blocked thread looks whether the other side has gone away


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _put(items: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item``, waiting for room; False when ``stop`` was set meanwhile (the consumer has gone)."""
    while not stop.is_set():
        try:
            items.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _join(thread: threading.Thread) -> None:
    """Wait for ``thread`` even through Ctrl-C, then re-raise the interruption: a thread left running while the
    interpreter exits is killed inside a C++ call (``terminate called without an active exception``, exit -6)."""
    interrupted: BaseException | None = None
    while thread.is_alive():
        try:
            thread.join()
        except KeyboardInterrupt as exc:  # the thread is stopping already: it finishes its current item
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def prefetch(iterable: Iterable[Any], maxsize: int = 8, name: str = "personalive-decode") -> Iterator[Any]:
    """Iterate ``iterable`` on a background thread, at most ``maxsize`` items ahead of the consumer.

    Items come out in order; an exception raised by ``iterable`` is raised here, at the item where it happened.
    Closing the returned generator early (``break``, an exception in the consumer) stops the thread.
    """
    items: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                if not _put(items, item, stop):
                    return
            _put(items, _DONE, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            _put(items, _Failure(exc), stop)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        _join(thread)


class BackgroundWriter:
    """Calls ``write(item)`` for each :meth:`put` item on a background thread, in order, ``maxsize`` items queued.

    An exception in ``write`` is re-raised by the next :meth:`put` or by :meth:`close`, and later items are
    dropped. :meth:`close` waits until every item is written. Use as a context manager: leaving it on an exception
    stops the thread without writing what is still queued.
    """

    def __init__(self, write: Callable[[Any], None], maxsize: int = 8, name: str = "personalive-encode") -> None:
        self._write = write
        self._items: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self._items.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is _DONE:
                return
            if self._error is not None or self._stop.is_set():
                continue  # drain without writing
            try:
                self._write(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
                self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: Any) -> None:
        self._raise()
        if not _put(self._items, item, self._stop):
            self._raise()

    def close(self) -> None:
        """Write everything queued, stop the thread, re-raise a write error."""
        if self._thread.is_alive():
            _put(self._items, _DONE, self._stop)
            _join(self._thread)
        self._raise()

    def abort(self) -> None:
        """Stop without writing what is queued."""
        self._stop.set()
        _join(self._thread)

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
