"""The source database schema that extraction reads.

``interactions(user_id, item_id, event_type, event_value, occurred_at)``: one row per event;
``occurred_at`` is stored in UTC without a time zone. ``users`` and ``items`` hold the current
snapshot of user and item metadata. The same definitions create the tables on SQLite, PostgreSQL
and MySQL/MariaDB.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

metadata = MetaData()

interactions = Table(
    "interactions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(64), nullable=True, comment="required; null rows are quarantined"),
    Column("item_id", String(64), nullable=True, comment="required; null rows are quarantined"),
    Column("event_type", String(32), nullable=True, comment="one of the known event types"),
    Column("event_value", Float, nullable=True, comment="e.g. the rating; optional"),
    Column("occurred_at", DateTime, nullable=True, comment="UTC, no time zone"),
    Index("ix_interactions_occurred_at", "occurred_at"),
)

users = Table(
    "users",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("age", Integer, nullable=True),
    Column("gender", String(16), nullable=True),
    Column("occupation", String(64), nullable=True),
)

items = Table(
    "items",
    metadata,
    Column("item_id", String(64), primary_key=True),
    Column("title", String(255), nullable=True),
    Column("genres", String(255), nullable=True, comment="pipe-separated, e.g. 'Action|Comedy'"),
    Column("release_year", Integer, nullable=True),
)

USER_FIELDS = ("user_id", "age", "gender", "occupation")
ITEM_FIELDS = ("item_id", "title", "genres", "release_year")
