"""Extraction against real SQLite, PostgreSQL and MariaDB sources, down to the published files."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, date, datetime, timedelta

import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from recsys.config import load_settings
from recsys.data.extract import DataQualityError, QualityPolicy, publish_partition, stage_partition
from recsys.data.partitions import PartitionStore
from recsys.data.validate import Interval

DAY = date(2026, 11, 10)
START = datetime(2026, 11, 10)  # naive UTC, as stored in the source
USERS = [{"user_id": f"u{i}", "age": 20 + i, "gender": "F", "occupation": "engineer"} for i in range(3)]
ITEMS = [{"item_id": f"i{i}", "title": f"Film, {i}", "genres": "Drama|Comedy", "release_year": 1999} for i in range(4)]


def extract(source, root, *, chunk_rows=2, policy=None, day=DAY):
    policy = policy or QualityPolicy()
    settings = load_settings({"storage_root": root, "extract_chunk_rows": chunk_rows})
    staged = stage_partition(source.engine, Interval.for_day(day), settings)
    return publish_partition(staged, settings, policy)


def read_file(root, manifest, name) -> bytes:
    return PartitionStore(root + "/extract").file_path(manifest, name).read_bytes()


def seed_day(insert, source, row):
    """Five rows inside DAY (both edges included), one before it and one exactly at its end."""
    insert(
        source.engine,
        users=USERS,
        items=ITEMS,
        interactions=[
            row("u0", "i0", START - timedelta(seconds=1)),  # previous day
            row("u0", "i1", START),  # first instant of the day
            row("u1", "i2", START + timedelta(hours=5), "purchase", 19.5),
            row("u1", "i0", START + timedelta(hours=12), "click", None),
            row("u2", "i3", START + timedelta(hours=20)),
            row("u2", "i1", START + timedelta(hours=23, minutes=59, seconds=59)),  # last second
            row("u0", "i2", START + timedelta(days=1)),  # next day's first instant
        ],
    )


def test_extracts_exactly_the_interval_into_every_format(source_db, storage_root, insert, row):
    seed_day(insert, source_db, row)
    manifest = extract(source_db, storage_root)

    assert manifest["status"] == "ok"
    assert manifest["counts"]["read"] == 5 and manifest["counts"]["valid"] == 5
    table = pq.read_table(io.BytesIO(read_file(storage_root, manifest, "interactions")))
    assert table.column("item_id").to_pylist() == ["i1", "i2", "i0", "i3", "i1"]
    start = int(datetime(2026, 11, 10, tzinfo=UTC).timestamp())
    assert table.column("timestamp").to_pylist() == [start, start + 5 * 3600, start + 12 * 3600,
                                                     start + 20 * 3600, start + 86399]  # fmt: skip
    assert table.column("event_value").to_pylist() == [1.0, 19.5, None, 1.0, 1.0]

    lines = read_file(storage_root, manifest, "personalize_interactions").decode().splitlines()
    assert lines[0] == "USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE"
    assert lines[2] == f"u1,i2,{start + 5 * 3600},purchase"
    assert len(lines) == 6
    items_csv = list(csv.reader(io.StringIO(read_file(storage_root, manifest, "personalize_items").decode())))
    assert items_csv[0] == ["ITEM_ID", "TITLE", "GENRES", "RELEASE_YEAR"]
    assert items_csv[1] == ["i0", "Film, 0", "Drama|Comedy", "1999"]  # the comma survives quoting
    users_jsonl = read_file(storage_root, manifest, "batch_inference_users").decode().splitlines()
    assert [json.loads(x) for x in users_jsonl] == [{"userId": "u0"}, {"userId": "u1"}, {"userId": "u2"}]
    assert pq.read_table(io.BytesIO(read_file(storage_root, manifest, "users"))).num_rows == 3

    for name, entry in manifest["files"].items():
        assert hashlib.sha256(read_file(storage_root, manifest, name)).hexdigest() == entry["sha256"], name


def test_rerun_is_idempotent_and_picks_up_late_rows(source_db, storage_root, insert, row):
    seed_day(insert, source_db, row)
    first = extract(source_db, storage_root)
    again = extract(source_db, storage_root)
    assert again["version"] != first["version"]
    assert again["files"]["interactions"]["sha256"] == first["files"]["interactions"]["sha256"]
    store = PartitionStore(storage_root + "/extract")
    versions = [p.name for p in store.partition_dir(DAY).iterdir() if p.name.startswith("v=")]
    assert versions == [f"v={again['version']}"]

    insert(source_db.engine, interactions=[row("u2", "i0", START + timedelta(hours=8)),
                                           row("u0", "i3", START + timedelta(hours=9))])  # fmt: skip
    late = extract(source_db, storage_root)
    assert late["counts"]["valid"] == 7
    table = pq.read_table(io.BytesIO(read_file(storage_root, late, "interactions")))
    assert table.num_rows == 7
    keys = list(zip(table.column("user_id").to_pylist(), table.column("timestamp").to_pylist(), strict=True))
    assert len(set(keys)) == 7  # no duplicates
    assert store.manifests() == [store.read_manifest(DAY)] and store.read_manifest(DAY)["version"] == late["version"]


def test_malformed_rows_are_quarantined_with_reasons(source_db, storage_root, insert, row):
    insert(
        source_db.engine,
        users=USERS,
        items=ITEMS,
        interactions=[row("u0", "i0", START + timedelta(hours=h)) for h in range(6)]
        + [
            row(None, "i0", START + timedelta(hours=7)),
            row("u1", "   ", START + timedelta(hours=8)),
            row("u1", "i1", START + timedelta(hours=9), "teleport"),
        ],
    )
    if source_db.kind == "sqlite":  # SQLite keeps whatever type it is given
        with source_db.engine.begin() as conn:
            conn.execute(text("INSERT INTO interactions (user_id, item_id, event_type, event_value, occurred_at) "
                              "VALUES ('u2', 'i2', 'view', 'lots', '2026-11-10 10:00:00'),"
                              "       ('u2', 'i2', 'view', 1.0, '2026-11-10 garbage')"))  # fmt: skip

    with pytest.raises(DataQualityError, match="failed validation") as failure:
        extract(source_db, storage_root)
    assert "Nothing was published" in str(failure.value)
    assert PartitionStore(storage_root + "/extract").read_manifest(DAY) is None

    manifest = extract(source_db, storage_root, policy=QualityPolicy(max_bad_fraction=0.5))
    reasons = manifest["quarantine_reasons"]["interactions"]
    expected = {"user_id is missing": 1, "item_id is empty": 1, "unknown event_type 'teleport'": 1}
    if source_db.kind == "sqlite":
        expected |= {"event_value is not a number": 1, "occurred_at is not a timestamp": 1}
    assert reasons == expected
    assert manifest["counts"]["valid"] == 6
    quarantine = list(csv.DictReader(io.StringIO(read_file(storage_root, manifest, "quarantine").decode())))
    assert sorted(r["reason"] for r in quarantine) == sorted(expected)
    teleport = next(r for r in quarantine if r["reason"].startswith("unknown"))
    assert json.loads(teleport["row"])[:3] == ["u1", "i1", "teleport"]


def test_empty_interval_is_recorded_as_an_outage(source_db, storage_root, insert, row):
    insert(source_db.engine, users=USERS, items=ITEMS, interactions=[row("u0", "i0", START - timedelta(days=2))])
    manifest = extract(source_db, storage_root)
    assert manifest["status"] == "empty"
    assert manifest["counts"]["valid"] == 0
    assert "data outage" in manifest["warnings"][0]
    lines = read_file(storage_root, manifest, "personalize_interactions").decode().splitlines()
    assert lines == ["USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE"]
    with pytest.raises(DataQualityError, match="empty interval"):
        extract(source_db, storage_root, policy=QualityPolicy(fail_on_empty=True))


def test_row_count_anomaly_warns_or_blocks_publishing(sqlite_source, storage_root, insert, row):
    days = [DAY - timedelta(days=d) for d in (3, 2, 1)]
    rows = [row("u0", "i0", datetime.combine(d, datetime.min.time()) + timedelta(minutes=m))
            for d in days for m in range(20)]  # fmt: skip
    rows += [row("u0", "i1", START + timedelta(minutes=m)) for m in range(3)]
    insert(sqlite_source.engine, users=USERS, items=ITEMS, interactions=rows)
    for d in days:
        assert extract(sqlite_source, storage_root, day=d)["volume"]["anomaly"] is False

    warned = extract(sqlite_source, storage_root)
    assert warned["status"] == "ok" and warned["volume"]["anomaly"] is True
    assert warned["volume"]["median"] == 20 and "0.15x" in warned["warnings"][0]

    with pytest.raises(DataQualityError, match="row count anomaly"):
        extract(sqlite_source, storage_root, policy=QualityPolicy(anomaly_action="fail"))
    assert PartitionStore(storage_root + "/extract").read_manifest(DAY)["version"] == warned["version"]


def test_partitions_on_s3_through_the_airflow_connection(sqlite_source, s3_bucket, insert, row):
    """The same extraction into s3:// (moto server over real HTTP, credentials from aws_default)."""
    import boto3

    seed_day(insert, sqlite_source, row)
    root = f"s3://aws_default@{s3_bucket}/recsys"
    first = extract(sqlite_source, root)
    again = extract(sqlite_source, root)
    assert first["files"]["interactions"]["sha256"] == again["files"]["interactions"]["sha256"]
    assert pq.read_table(io.BytesIO(read_file(root, again, "interactions"))).num_rows == 5
    conn = json.loads(__import__("os").environ["AIRFLOW_CONN_AWS_DEFAULT"])
    s3 = boto3.client("s3", endpoint_url=conn["extra"]["endpoint_url"], aws_access_key_id="test",
                      aws_secret_access_key="test", region_name="us-east-1")  # fmt: skip
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"])
    versions = {k.split("/")[3] for k in keys if "/v=" in k}
    assert versions == {f"v={again['version']}"}  # the older version was deleted
    assert "recsys/extract/dt=2026-11-10/_manifest.json" in keys
    assert not any(k.endswith(".tmp") for k in keys)
