"""The recommendations table on SQLite, PostgreSQL and MariaDB: a source's rows are replaced in one
transaction (a concurrent reader sees the old set or the new one, never a mix, a half-loaded or an empty
table), other sources are untouched, an empty publish changes nothing."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, text

from recsys.delivery.table import publish

READ = text("SELECT COUNT(*), MIN(model_version), MAX(model_version) FROM recommendations WHERE source = 'two_tower'")


def rows(users: int, k: int = 10, prefix: str = "u"):
    return (
        (f"{prefix}{u}", rank, f"i{(u + rank) % 997}", 1.0 / rank) for u in range(users) for rank in range(1, k + 1)
    )


def test_publish_swaps_a_source_atomically_under_a_concurrent_reader(source_db):
    engine = source_db.engine
    first = publish(engine, rows(300), "two_tower", "v1")
    assert (first["rows"], first["users"], first["replaced"]) == (3000, 300, 0)
    publish(engine, rows(50, 5, "p"), "personalize", "sv-1")
    seen, stop = [], threading.Event()

    def reader():
        reading = create_engine(source_db.url)
        while not stop.is_set():
            with reading.connect() as conn:
                seen.append(tuple(conn.execute(READ).one()))
        reading.dispose()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for version, users in (("v2", 700), ("v3", 200), ("v4", 900)):
            result = publish(engine, rows(users), "two_tower", version)
            assert result["rows"] == users * 10
    finally:
        stop.set()
        thread.join(timeout=60)
    allowed = {(3000, "v1", "v1"), (7000, "v2", "v2"), (2000, "v3", "v3"), (9000, "v4", "v4")}
    assert seen and set(seen) <= allowed, set(seen) - allowed  # never empty, never half-loaded, never mixed
    with engine.connect() as conn:
        counts = dict(conn.execute(text("SELECT source, COUNT(*) FROM recommendations GROUP BY source")).all())
        staging = [n for n in conn.dialect.get_table_names(conn) if "staging" in n]
    assert counts == {"two_tower": 9000, "personalize": 250} and staging == []


def test_an_empty_publish_is_refused_and_keeps_the_rows(source_db):
    publish(source_db.engine, rows(3), "two_tower", "v1")
    with pytest.raises(ValueError, match="no two_tower recommendations"):
        publish(source_db.engine, iter(()), "two_tower", "v2")
    with source_db.engine.connect() as conn:
        assert tuple(conn.execute(READ).one()) == (30, "v1", "v1")
