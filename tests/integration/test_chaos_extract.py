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
