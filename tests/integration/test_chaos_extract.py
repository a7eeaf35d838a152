"""Crude faults in extraction: the source database kills the extraction's session mid-read
(``pg_terminate_backend``) — the attempt fails with the driver's error, publishes nothing, and the retry
commits exactly the partition a fault-free run commits (same rows, same files' contents, one live
version). Deterministic: the extraction's query is held on a table lock until it is terminated."""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta

import pytest
from conftest import partition_content, server_source
from fakes.faults import FaultyObjectStore, terminate_waiting_session
from sqlalchemy import text

from recsys.config import load_settings
from recsys.data.extract import QualityPolicy, publish_partition, stage_partition
from recsys.data.partitions import PartitionStore
from recsys.data.validate import Interval

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]
DAY = date(2026, 11, 10)


@pytest.fixture
def postgres_source(tmp_path):
    yield from server_source("postgres", tmp_path)


def seeded(insert, source, row):
    start = datetime(2026, 11, 10)
    rows = [row(f"u{n % 41}", f"i{n % 97}", start + timedelta(seconds=11 * n)) for n in range(3000)]
    insert(source.engine, interactions=rows + [row(" ", "i1", start)])


def extract(settings, engine):
    staged = stage_partition(engine, Interval.for_day(DAY), settings)
    return publish_partition(staged, settings, QualityPolicy(max_bad_fraction=0.5))


@pytest.mark.parametrize("backend", ["arrow", "rows"])
def test_a_killed_source_session_fails_the_attempt_and_the_retry_commits_the_same_partition(
    backend, postgres_source, insert, row, tmp_path
):
    from sqlalchemy import create_engine

    seeded(insert, postgres_source, row)
    fault_free = load_settings({"storage_root": (tmp_path / "clean").as_uri(), "extraction_backend": backend})
    extract(fault_free, postgres_source.engine)
    settings = load_settings({"storage_root": (tmp_path / "chaos").as_uri(), "extraction_backend": backend})

    admin = create_engine(postgres_source.url, isolation_level="AUTOCOMMIT")
    database = postgres_source.engine.url.database
    killed = []
    with postgres_source.engine.connect() as locker:
        locker.execute(text("BEGIN"))
        locker.execute(text("LOCK TABLE interactions IN ACCESS EXCLUSIVE MODE"))  # the read waits here
        killer = threading.Thread(
            target=lambda: killed.append(terminate_waiting_session(admin, database, "interactions"))
        )
        killer.start()
        with pytest.raises(Exception, match="(?i)terminat|connection|closed"):
            extract(settings, postgres_source.engine)
        killer.join()
        locker.execute(text("ROLLBACK"))
    admin.dispose()
    assert killed == [True]
    assert (
        PartitionStore(settings.storage.extract_root).read_manifest(DAY) is None
    )  # nothing published by the failed attempt

    postgres_source.engine.dispose()  # the retry is a new task process: fresh connections
    extract(settings, postgres_source.engine)
    clean, chaos = (
        partition_content(fault_free.storage.extract_root, DAY),
        partition_content(settings.storage.extract_root, DAY),
    )
    assert chaos["versions"] == [f"v={chaos['version']}"]  # the failed attempt's folder is gone
    for key in ("counts", "reasons", "files", "tables"):
        assert chaos[key] == clean[key], key


def test_a_failing_manifest_commit_publishes_nothing_and_the_retry_commits_once(
    postgres_source, insert, row, tmp_path, moto_s3, monkeypatch
):
    import json
    import uuid

    import boto3

    from recsys_devtools.emulators.ports import free_port
    from recsys_devtools.emulators.running import RunningFake

    seeded(insert, postgres_source, row)
    fault_free = load_settings({"storage_root": (tmp_path / "clean").as_uri()})
    extract(fault_free, postgres_source.engine)

    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    boto3.client(
        "s3", endpoint_url=moto_s3, aws_access_key_id="t", aws_secret_access_key="t", region_name="us-east-1"
    ).create_bucket(Bucket=bucket)
    store = FaultyObjectStore(moto_s3)
    store.fail(r"/_manifest\.json$", times=1000)  # more than every retry botocore and s3fs make
    with RunningFake(store, free_port()) as proxy:
        connection = {
            "conn_type": "aws",
            "login": "t",
            "password": "t",
            "extra": {
                "endpoint_url": proxy.url,
                "region_name": "us-east-1",
                "config_kwargs": {"retries": {"max_attempts": 2}},  # keep the giving-up short
            },
        }
        conn_id = f"chaos_{uuid.uuid4().hex[:8]}"  # its own: S3 filesystems are cached per connection id
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        settings = load_settings({"storage_root": f"s3://{conn_id}@{bucket}/recsys"})
        staged = stage_partition(postgres_source.engine, Interval.for_day(DAY), settings)
        with pytest.raises(Exception):  # noqa: B017 - whatever the S3 client raises once it gives up
            publish_partition(staged, settings, QualityPolicy(max_bad_fraction=0.5))
        assert store.refused > 1  # the client retried before giving up
        assert PartitionStore(settings.storage.extract_root).read_manifest(DAY) is None  # nothing published

        store.recover()  # the store recovers; the publish task's retry commits the staged version
        publish_partition(staged, settings, QualityPolicy(max_bad_fraction=0.5))
        chaos, clean = (
            partition_content(settings.storage.extract_root, DAY),
            partition_content(fault_free.storage.extract_root, DAY),
        )
    assert chaos["versions"] == [f"v={staged['version']}"] and chaos["version"] == staged["version"]
    for key in ("counts", "reasons", "files", "tables"):
        assert chaos[key] == clean[key], key
