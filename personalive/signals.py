"""Stopping on signals: Ctrl-C (SIGINT), SIGTERM and SIGHUP stop a run the same way, once.

The first of these signals raises an exception in the main thread (``KeyboardInterrupt`` for SIGINT,
:class:`Terminated` for SIGTERM and SIGHUP — a closed terminal or ``kill``), so every ``with`` block unwinds and the
output's temporary file is deleted. Signals after the first are ignored: pressing Ctrl-C again while the run
cleans up, or while the interpreter joins its threads at exit, would otherwise interrupt the cleanup halfway and
print a ``threading._shutdown`` traceback.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP received: handled like Ctrl-C."""


class _StopOnce:
    def __init__(self) -> None:
        self.received: int | None = None

    def __call__(self, signum, frame) -> None:
        if self.received is not None:
            log.debug("signal %d ignored: already stopping after signal %d", signum, self.received)
            return
        self.received = signum
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(f"signal {signum}")


def install_stop_handlers() -> bool:
    """For the process's lifetime (the command line's entry point): the first stop signal raises, later ones are
    ignored. False (nothing done) outside the main thread, where Python cannot install handlers."""
    if threading.current_thread() is not threading.main_thread():
        return False
    handler = _StopOnce()
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    return True


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While active, SIGTERM and SIGHUP raise :class:`Terminated` like Ctrl-C (and only the first stop signal
    raises). Handlers installed for the whole process by :func:`install_stop_handlers` are kept as they are."""
    if threading.current_thread() is not threading.main_thread() or isinstance(
        signal.getsignal(signal.SIGTERM), _StopOnce
    ):
        yield
        return
    handler = _StopOnce()
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS if signum != signal.SIGINT}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
