"""A source data set (users, items, interactions) and writing it into the source database."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select

from recsys.data import schema

log = logging.getLogger(__name__)


@dataclass
class SourceDataset:
    """Users and items in memory; interactions as a re-iterable stream of row chunks."""

    users: list[dict]
    items: list[dict]
    interaction_chunks: Callable[[], Iterator[list[dict]]]
    # generators may also offer the interactions as numpy columns (see recsys_devtools.synthetic)
    interaction_columns: Callable[[], Iterator[dict]] | None = None
    start: datetime | None = None  # the time column offsets count from


class SourceNotEmptyError(RuntimeError):
    """The target database already holds rows and neither replace nor append was asked for."""


def write_dataset(engine: Engine, dataset: SourceDataset, *, mode: str = "fail") -> dict[str, int]:
    """Create the schema and load ``dataset`` in one transaction.

    ``mode``: ``fail`` (refuse a non-empty database), ``replace`` (delete existing rows first) or
    ``append``. Any error rolls the whole load back, so nothing half-written is left behind.
    """
    if mode not in {"fail", "replace", "append"}:
        raise ValueError(f"mode must be fail, replace or append, got {mode!r}")
    schema.metadata.create_all(engine)
    counts = {"users": 0, "items": 0, "interactions": 0}
    with engine.begin() as conn:
        existing = conn.execute(select(func.count()).select_from(schema.interactions)).scalar_one()
        if existing and mode == "fail":
            raise SourceNotEmptyError(
                f"{engine.url.render_as_string(hide_password=True)} already has {existing} interactions; "
                "pass --replace to overwrite or --append to add"
            )
        if mode == "replace":
            for table in (schema.interactions, schema.users, schema.items):
                conn.execute(table.delete())
        if mode == "append":
            known_users = set(conn.execute(select(schema.users.c.user_id)).scalars())
            known_items = set(conn.execute(select(schema.items.c.item_id)).scalars())
        else:
            known_users, known_items = set(), set()
        new_users = [u for u in dataset.users if u["user_id"] not in known_users]
        new_items = [i for i in dataset.items if i["item_id"] not in known_items]
        if new_users:
            conn.execute(schema.users.insert(), new_users)
        if new_items:
            conn.execute(schema.items.insert(), new_items)
        counts["users"], counts["items"] = len(new_users), len(new_items)
        for chunk in dataset.interaction_chunks():
            if chunk:
                conn.execute(schema.interactions.insert(), chunk)
                counts["interactions"] += len(chunk)
    log.info("loaded %s into %s", counts, engine.url.render_as_string(hide_password=True))
    return counts
