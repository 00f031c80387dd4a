"""Stopping on signals: Ctrl-C (SIGINT), SIGTERM and SIGHUP stop a run the same way.

During a run SIGTERM and SIGHUP (a closed terminal, ``kill``) raise :class:`Terminated`, a ``KeyboardInterrupt``,
in the main thread, so every ``with`` block unwinds and the output's temporary file is deleted as for Ctrl-C.
Once the command line has caught the interruption, :func:`ignore_stop_signals` makes further signals harmless:
pressing Ctrl-C again while the interpreter exits (joining its threads) would otherwise print a
``threading._shutdown`` traceback or kill the process with another exit code.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP received: handled like Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated(f"signal {signum}")


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While active, SIGTERM and SIGHUP raise :class:`Terminated` (Ctrl-C raises ``KeyboardInterrupt`` anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in STOP_SIGNALS:
        if signum != signal.SIGINT and signal.getsignal(signum) != signal.SIG_IGN:
            previous[signum] = signal.signal(signum, _raise_terminated)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def ignore_stop_signals() -> None:
    """For a process that has been stopped, or whose command is over, and now only exits: ignore stop signals.
    (Python resets its own handlers to the default action late in its shutdown; an ignored signal stays
    ignored.) Only for the command line's own process, never for a library caller."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
