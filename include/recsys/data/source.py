"""Reading the source database: engines from Airflow connections and streaming queries.

Only SQLAlchemy Core statements with bound parameters are executed. Rows are streamed with a
server-side cursor (``stream_results``) in chunks of ``chunk_rows``, so memory stays flat.
Selected columns are type-coerced to ``NullType`` so the driver's raw value reaches validation:
a malformed value becomes a quarantined row instead of a crash.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, create_engine, select, type_coerce
from sqlalchemy.engine import URL
from sqlalchemy.types import NullType

from recsys.data import schema

_DRIVERS = {"postgres": "postgresql+psycopg2", "postgresql": "postgresql+psycopg2", "mysql": "mysql+pymysql"}


def url_from_connection(conn: Any) -> URL:
    """Map an Airflow ``Connection`` (sqlite, postgres, mysql) to a SQLAlchemy URL."""
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        path = conn.host or conn.schema
        if not path:
            raise ValueError(f"sqlite connection {conn.conn_id!r} has no database path (set its host)")
        return URL.create("sqlite", database=path)
    if conn_type not in _DRIVERS:
        raise ValueError(
            f"connection {conn.conn_id!r} has type {conn.conn_type!r}; the source must be sqlite, postgres or mysql"
        )
    query = {k: str(v) for k, v in (conn.extra_dejson or {}).items() if isinstance(v, str | int)}
    return URL.create(
        _DRIVERS[conn_type],
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port or None,
        database=conn.schema or None,
        query=query,
    )


def engine_for_conn_id(conn_id: str) -> Engine:
    """Engine for an Airflow connection id (resolved through Airflow's secrets backends)."""
    from airflow.sdk import BaseHook

    return create_engine(url_from_connection(BaseHook.get_connection(conn_id)), pool_pre_ping=True)


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _raw(columns: Sequence) -> list:
    return [type_coerce(c, NullType()).label(c.name) for c in columns]


def _stream(engine: Engine, statement, chunk_rows: int) -> Iterator[Sequence[Sequence[Any]]]:
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(statement)
        yield from result.partitions()


def stream_interactions(engine: Engine, start: datetime, end: datetime, chunk_rows: int) -> Iterator[list[tuple]]:
    """Interactions with ``start <= occurred_at < end`` as ``(user, item, type, value, occurred_at)``."""
    t = schema.interactions
    statement = (
        select(*_raw([t.c.user_id, t.c.item_id, t.c.event_type, t.c.event_value, t.c.occurred_at]))
        .where(t.c.occurred_at >= _naive_utc(start), t.c.occurred_at < _naive_utc(end))
        .order_by(t.c.occurred_at, t.c.id)
    )
    return _stream(engine, statement, chunk_rows)


def stream_table(engine: Engine, table_name: str, chunk_rows: int) -> Iterator[list[tuple]]:
    """A whole snapshot table (``users`` or ``items``) in primary-key order."""
    table = {"users": schema.users, "items": schema.items}[table_name]
    fields = schema.USER_FIELDS if table_name == "users" else schema.ITEM_FIELDS
    statement = select(*_raw([table.c[f] for f in fields])).order_by(table.c[fields[0]])
    return _stream(engine, statement, chunk_rows)
