"""The application's ``recommendations`` table and its atomic replacement.

``recommendations(user_id, rank, item_id, score, source, model_version, generated_at)``, one set of rows
per ``source`` (``personalize``, ``two_tower``). Publishing a source loads the new rows into a staging
table first (as slow as it needs to be, invisible to readers), then swaps them in with one transaction:
``DELETE ... WHERE source = ?`` + ``INSERT ... SELECT`` from staging. Readers see the old rows or the new
ones, never a half-loaded or empty table (MVCC on PostgreSQL and InnoDB; SQLite's writer lock). Works on
SQLite, PostgreSQL and MySQL/MariaDB through the same SQLAlchemy code; the engine comes from an Airflow
SQL connection (``delivery_conn_id``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Float, Index, Integer, MetaData, String, Table, delete, func, insert, select
from sqlalchemy.engine import Engine

TABLE = "recommendations"
COLUMNS = ("user_id", "rank", "item_id", "score", "source", "model_version", "generated_at")
CHUNK = 5000


def _table(metadata: MetaData, name: str, with_index: bool) -> Table:
    table = Table(
        name,
        metadata,
        Column("user_id", String(64), primary_key=True),
        Column("rank", Integer, primary_key=True, autoincrement=False),
        Column("source", String(32), primary_key=True),
        Column("item_id", String(64), nullable=False),
        Column("score", Float, nullable=True),
        Column("model_version", String(255), nullable=False),
        Column("generated_at", DateTime, nullable=False),
    )
    if with_index:
        Index(f"ix_{name}_source", table.c.source)
    return table


def recommendations_table(metadata: MetaData | None = None) -> Table:
    return _table(metadata or MetaData(), TABLE, with_index=True)


def publish(engine: Engine, rows: Iterable[tuple], source: str, model_version: str) -> dict:
    """Replace ``source``'s recommendations with ``rows`` of ``(user_id, rank, item_id, score)``."""
    metadata = MetaData()
    target = recommendations_table(metadata)
    staging = _table(metadata, f"{TABLE}_staging_{source}", with_index=False)
    target.create(engine, checkfirst=True)
    staging.drop(engine, checkfirst=True)
    staging.create(engine)
    generated_at = datetime.now(UTC).replace(tzinfo=None)
    loaded = 0
    chunk: list[dict] = []
    with engine.begin() as conn:
        for user_id, rank, item_id, score in rows:
            chunk.append(
                {
                    "user_id": str(user_id),
                    "rank": int(rank),
                    "item_id": str(item_id),
                    "score": None if score is None else float(score),
                    "source": source,
                    "model_version": model_version,
                    "generated_at": generated_at,
                }
            )
            if len(chunk) >= CHUNK:
                conn.execute(insert(staging), chunk)
                loaded, chunk = loaded + len(chunk), []
        if chunk:
            conn.execute(insert(staging), chunk)
            loaded += len(chunk)
    if not loaded:
        staging.drop(engine)
        raise ValueError(f"no {source} recommendations to publish: the table keeps its current rows")
    with engine.begin() as conn:  # the swap: one transaction
        replaced = conn.execute(delete(target).where(target.c.source == source)).rowcount
        conn.execute(insert(target).from_select(list(COLUMNS), select(*[staging.c[c] for c in COLUMNS])))
    staging.drop(engine)
    with engine.connect() as conn:
        users = conn.execute(select(func.count(func.distinct(target.c.user_id))).where(target.c.source == source))
        users = users.scalar_one()
    return {
        "source": source,
        "model_version": model_version,
        "rows": loaded,
        "replaced": replaced,
        "users": users,
        "generated_at": generated_at.isoformat(),
    }
