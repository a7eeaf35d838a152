"""Crude faults in extraction: the source database kills the extraction's session mid-read
(``pg_terminate_backend``) — the attempt fails with the driver's error, publishes nothing, and the retry
commits exactly the partition a fault-free run commits (same rows, same files' contents, one live
version). Deterministic: the extraction's query is held on a table lock until it is terminated."""

from __future__ import annotations

import threading
import time
from datetime import date, datetime, timedelta

import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from recsys.config import load_settings
from recsys.data.extract import QualityPolicy, publish_partition, stage_partition
from recsys.data.partitions import PartitionStore
from recsys.data.validate import Interval

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]
DAY = date(2026, 11, 10)


@pytest.fixture
def postgres_source(tmp_path):
    from conftest import server_source

    yield from server_source("postgres", tmp_path)


def seeded(insert, source, row):
    start = datetime(2026, 11, 10)
    rows = [row(f"u{n % 41}", f"i{n % 97}", start + timedelta(seconds=11 * n)) for n in range(3000)]
    insert(source.engine, interactions=rows + [row(" ", "i1", start)])


def extract(settings, engine):
    staged = stage_partition(engine, Interval.for_day(DAY), settings)
    return publish_partition(staged, settings, QualityPolicy(max_bad_fraction=0.5))


def content(root: str) -> dict:
    store = PartitionStore(root)
    manifest = store.read_manifest(DAY)
    part = store.partition_dir(DAY)
    files = {
        name: (part / f["path"]).read_bytes()
        for name, f in manifest["files"].items()
        if not f["path"].endswith(".parquet")
    }
    tables = {
        name: pq.read_table((part / f["path"]).open("rb")).to_pylist()
        for name, f in manifest["files"].items()
        if f["path"].endswith(".parquet")
    }
    versions = sorted(p.name for p in part.iterdir() if p.name.startswith("v="))
    return {
        "counts": manifest["counts"],
        "reasons": manifest["quarantine_reasons"],
        "files": files,
        "tables": tables,
        "versions": versions,
        "version": manifest["version"],
    }


def kill_the_extraction_session(admin, database: str, killed: list) -> None:
    """Wait for the extraction's query (blocked on the lock) and terminate its backend."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with admin.connect() as conn:
            pids = (
                conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = :db AND query ILIKE '%FROM interactions%' "
                        "AND wait_event_type = 'Lock'"
                    ),
                    {"db": database},
                )
                .scalars()
                .all()
            )
            if pids:
                killed.extend(conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pids[0]}).scalars().all())
                return
        time.sleep(0.05)


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
    killed: list = []
    with postgres_source.engine.connect() as locker:
        locker.execute(text("BEGIN"))
        locker.execute(text("LOCK TABLE interactions IN ACCESS EXCLUSIVE MODE"))  # the read waits here
        killer = threading.Thread(target=kill_the_extraction_session, args=(admin, database, killed))
        killer.start()
        with pytest.raises(Exception, match="(?i)terminat|connection|closed"):
            extract(settings, postgres_source.engine)
        killer.join()
        locker.execute(text("ROLLBACK"))
    admin.dispose()
    assert killed == [True]
    assert PartitionStore(settings.extract_root).read_manifest(DAY) is None  # nothing published by the failed attempt

    postgres_source.engine.dispose()  # the retry is a new task process: fresh connections
    extract(settings, postgres_source.engine)
    clean, chaos = content(fault_free.extract_root), content(settings.extract_root)
    assert chaos["versions"] == [f"v={chaos['version']}"]  # the failed attempt's folder is gone
    for key in ("counts", "reasons", "files", "tables"):
        assert chaos[key] == clean[key], key


class FailingStore:
    """A proxy in front of the S3 server (moto) that answers ``failures`` writes of ``_manifest.json`` with
    503 SlowDown (what S3 sends under load) before it lets them through again."""

    def __init__(self, upstream: str, failures: int):
        self.upstream, self.failures, self.refused = upstream, failures, 0

    def app(self):
        import httpx
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def forward(request: Request) -> Response:
            if request.method == "PUT" and request.url.path.endswith("/_manifest.json") and self.failures:
                self.failures -= 1
                self.refused += 1
                body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                return Response(body, status_code=503, media_type="application/xml")
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as client:
                answer = await client.request(
                    request.method,
                    request.url.path,
                    params=request.query_params,
                    headers=headers,
                    content=await request.body(),
                )
            drop = {"transfer-encoding", "content-encoding", "connection"}
            if request.method != "HEAD":  # a HEAD's length is the object's, not the (empty) body's
                drop.add("content-length")
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in drop}
            return Response(answer.content, status_code=answer.status_code, headers=kept)

        methods = ["GET", "PUT", "POST", "DELETE", "HEAD"]
        return Starlette(routes=[Route("/{path:path}", forward, methods=methods), Route("/", forward, methods=methods)])


def test_a_failing_manifest_commit_publishes_nothing_and_the_retry_commits_once(
    postgres_source, insert, row, tmp_path, moto_s3, monkeypatch
):
    import json
    import uuid

    import boto3

    from recsys.emulators.ports import free_port
    from recsys.emulators.running import RunningFake

    seeded(insert, postgres_source, row)
    fault_free = load_settings({"storage_root": (tmp_path / "clean").as_uri()})
    extract(fault_free, postgres_source.engine)

    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    boto3.client(
        "s3", endpoint_url=moto_s3, aws_access_key_id="t", aws_secret_access_key="t", region_name="us-east-1"
    ).create_bucket(Bucket=bucket)
    store = FailingStore(moto_s3, failures=1000)  # more than every retry botocore and s3fs make
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
        assert PartitionStore(settings.extract_root).read_manifest(DAY) is None  # nothing published

        store.failures = 0  # the store recovers; the publish task's retry commits the staged version
        publish_partition(staged, settings, QualityPolicy(max_bad_fraction=0.5))
        chaos, clean = content(settings.extract_root), content(fault_free.extract_root)
    assert chaos["versions"] == [f"v={staged['version']}"] and chaos["version"] == staged["version"]
    for key in ("counts", "reasons", "files", "tables"):
        assert chaos[key] == clean[key], key
