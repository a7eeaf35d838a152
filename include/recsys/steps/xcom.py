"""Plans as typed records across XCom, and the one way to pull a planned value into an operator's field."""

from __future__ import annotations

import dataclasses
from typing import Self


def pulled(task_id: str, *keys: str, key: str | None = None) -> str:
    """A Jinja template for what ``task_id`` returned (or pushed under ``key``), indexed by ``keys``:
    ``pulled("plan", "names", "batch")`` -> ``{{ ti.xcom_pull(task_ids='plan')['names']['batch'] }}``."""
    pushed = f", key={key!r}" if key else ""
    path = "".join(f"[{k!r}]" for k in keys)
    return f"{{{{ ti.xcom_pull(task_ids={task_id!r}{pushed}){path} }}}}"


class XComRecord:
    """Base of the plan dataclasses. XCom carries a plan as a plain dict (its deserializer admits only
    ``airflow.*`` classes, and the operators' templates index the dict by key)."""

    def as_xcom(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_xcom(cls, value: dict) -> Self:
        return cls(**value)
