"""The partition writers: the batch users' JSON lines whatever the ids hold, hashes that do not depend on how
the bytes were handed over, and the Parquet encodings (time columns delta-encoded, values unchanged)."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data import writers as w


def _version(tmp_path) -> w.VersionWriter:
    return w.VersionWriter(ObjectStoragePath(tmp_path.as_uri()), "v1")


@given(st.lists(st.text(min_size=1, max_size=8), max_size=30))
@settings(max_examples=100, deadline=None)
def test_user_id_lines_are_what_json_dumps_writes(tmp_path_factory, ids):
    tmp_path = tmp_path_factory.mktemp("ids")
    with _version(tmp_path) as vw:
        vw.jsonl("ids", "ids.jsonl").write_user_ids(ids)
    expected = "".join(json.dumps({"userId": u}, separators=(",", ":")) + "\n" for u in ids)
    assert (tmp_path / "ids.jsonl").read_text() == expected


@pytest.mark.parametrize("pieces", [[b"a" * 10], [b"a" * 3000, b"b" * 5, b"c" * 4096], [b"x" * 5000, b""]])
def test_hash_and_bytes_do_not_depend_on_how_the_writes_were_cut(pieces):
    sink = io.BytesIO()
    writer = w.HashingWriter(sink, block_size=1024)
    for piece in pieces:
        writer.write(memoryview(piece))
    writer.close()
    data = b"".join(pieces)
    assert sink.getvalue() == data and writer.bytes == len(data)
    assert writer.sha256 == hashlib.sha256(data).hexdigest()


def test_time_columns_are_delta_encoded_and_read_back_unchanged(tmp_path):
    moments = [datetime(2026, 11, 10, 0, 0, n, tzinfo=UTC) for n in range(50)]
    table = pa.table(
        {
            "user_id": [f"u{n % 7}" for n in range(50)],
            "item_id": [f"i{n % 5}" for n in range(50)],
            "event_type": ["view"] * 50,
            "event_value": [None, 1.5] * 25,
            "timestamp": [int(m.timestamp()) for m in moments],
            "occurred_at": moments,
        },
        schema=w.INTERACTIONS_SCHEMA,
    )
    with _version(tmp_path) as vw:
        vw.parquet("interactions", "interactions.parquet", w.INTERACTIONS_SCHEMA).write_table(table)
    path = tmp_path / "interactions.parquet"
    group = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {group.column(i).path_in_schema: group.column(i).encodings for i in range(group.num_columns)}
    assert "DELTA_BINARY_PACKED" in encodings["timestamp"] and "DELTA_BINARY_PACKED" in encodings["occurred_at"]
    assert "RLE_DICTIONARY" in encodings["user_id"]
    assert pq.read_table(path).equals(table)
