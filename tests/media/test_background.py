"""Background decode/encode threads: order, bounded look-ahead, errors reach the main thread, early stop."""

from __future__ import annotations

import threading
import time

import pytest

from personalive.media.background import BackgroundWriter, prefetch


def test_prefetch_keeps_order_and_reads_at_most_maxsize_ahead():
    produced = []

    def source():
        for i in range(20):
            produced.append(i)
            yield i

    out = []
    for item in prefetch(source(), maxsize=3):
        time.sleep(0.002)
        # the producer may hold one more item while it waits for room in the queue
        assert len(produced) - len(out) <= 3 + 1 + 1
        out.append(item)
    assert out == list(range(20))


def test_prefetch_raises_the_source_error_where_it_happened():
    def source():
        yield 1
        yield 2
        raise ValueError("bad packet")

    seen = []
    with pytest.raises(ValueError, match="bad packet"):
        for item in prefetch(source()):
            seen.append(item)
    assert seen == [1, 2]


def test_prefetch_closed_early_stops_the_thread():
    def source():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    for item in prefetch(source(), maxsize=2):
        if item == 5:
            break
    time.sleep(0.3)
    assert threading.active_count() == before


def test_writer_writes_in_order_on_another_thread():
    written, threads = [], set()

    def write(item):
        threads.add(threading.current_thread().name)
        time.sleep(0.001)
        written.append(item)

    with BackgroundWriter(write, maxsize=2) as writer:
        for i in range(30):
            writer.put(i)
        writer.close()
    assert written == list(range(30))
    assert threads == {"personalive-encode"}


def test_writer_error_is_raised_on_the_main_thread_and_later_items_are_dropped():
    written = []

    def write(item):
        if item == 3:
            raise OSError("disk full")
        written.append(item)

    writer = BackgroundWriter(write, maxsize=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):
            writer.put(i)
        writer.close()
    writer.abort()
    assert written == [0, 1, 2]


def test_writer_left_on_an_exception_writes_nothing_more():
    written, gate = [], threading.Event()

    def write(item):
        gate.wait(2)
        written.append(item)

    with pytest.raises(RuntimeError, match="window failed"):
        with BackgroundWriter(write, maxsize=10) as writer:
            for i in range(5):
                writer.put(i)
            raise RuntimeError("window failed")
    gate.set()
    assert len(written) <= 1  # at most the item that was being written when the job failed
