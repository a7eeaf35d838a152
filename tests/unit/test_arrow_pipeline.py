"""The Arrow extraction's read-ahead and write-behind threads: order kept, errors surface in the caller."""

from __future__ import annotations

import threading

import pytest

from recsys.data.arrow_extract import _read_ahead, _WriteBehind


def test_read_ahead_keeps_order_and_reraises_the_readers_error():
    def reader():
        yield from range(5)
        raise ConnectionError("server closed the connection")

    seen = []
    with pytest.raises(ConnectionError, match="server closed"):
        for item in _read_ahead(reader()):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_read_ahead_stops_its_thread_when_the_consumer_stops_early():
    produced = []

    def reader():
        for n in range(1000):
            produced.append(n)
            yield n

    for item in _read_ahead(reader(), depth=2):
        if item == 3:
            break
    assert not [t for t in threading.enumerate() if t.name == "adbc-read-ahead"]
    assert len(produced) < 10  # it read at most a few batches ahead


def test_write_behind_runs_in_order_and_raises_the_first_error():
    done = []
    with _WriteBehind() as writer:
        for n in range(20):
            writer.submit(done.append, n)
    assert done == list(range(20))

    def disk_full(n):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        with _WriteBehind() as writer:
            writer.submit(disk_full, 1)
            writer.submit(done.append, "never written after the failure")
    assert done[-1] == 19
