"""Plans as typed records across XCom, and the one way to pull a planned value into an operator's field."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def pulled(task_id: str, *keys: str, key: str | None = None) -> str:
    """A Jinja template for what ``task_id`` returned (or pushed under ``key``), indexed by ``keys``:
    ``pulled("plan", "names", "batch")`` -> ``{{ ti.xcom_pull(task_ids='plan')['names']['batch'] }}``."""
    pushed = f", key={key!r}" if key else ""
    path = "".join(f"[{k!r}]" for k in keys)
    return f"{{{{ ti.xcom_pull(task_ids={task_id!r}{pushed}){path} }}}}"


def as_xcom(record: Any) -> dict:
    """A plan dataclass as the plain dict XCom stores (operators' templates index it by key)."""
    return dataclasses.asdict(record)


def from_xcom(cls: type[T], value: dict) -> T:
    """The plan dataclass back from its XCom dict."""
    return cls(**value)
