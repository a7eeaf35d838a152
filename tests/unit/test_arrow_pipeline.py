"""The Arrow extraction's read-ahead and write-behind threads (order kept, errors surface in the caller) and
its distinct active users (in ``sorted()``'s order, whatever the characters)."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data.arrow_extract import DistinctIds, _read_ahead, _WriteBehind


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


@given(st.lists(st.lists(st.text(min_size=1, max_size=6), max_size=40), max_size=6), st.integers(1, 4))
@settings(max_examples=150, deadline=None)
def test_distinct_ids_are_sorted_as_python_sorts_the_set(batches, compact_every):
    ids = DistinctIds(compact_every)
    for batch in batches:
        ids.add(pa.array(batch, pa.string()))
    assert ids.sorted() == sorted({value for batch in batches for value in batch})
