"""Row-level validation of extracted rows and the volume (row count) anomaly check.

Standard library only: the Spark extraction job ships this module to its executors, so every
backend applies the same rules and gives the same reasons.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple

MAX_ID_LENGTH = 256  # Amazon Personalize's limit for USER_ID / ITEM_ID
# The users/items snapshot columns and their types (the Parquet schemas in recsys.data.writers follow them).
SNAPSHOT_FIELDS = {
    "users": (("user_id", str), ("age", int), ("gender", str), ("occupation", str)),
    "items": (("item_id", str), ("title", str), ("genres", str), ("release_year", int)),
}


@dataclass(frozen=True)
class Interval:
    """A one-day data interval ``[start, end)`` in UTC; its partition key is the start date."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None:
                raise ValueError(f"interval {name} must be time-zone aware, got {value!r}")
        start, end = self.start.astimezone(UTC), self.end.astimezone(UTC)
        if end - start != timedelta(days=1) or start.timetz() != time(tzinfo=UTC):
            raise ValueError(f"extraction partitions are whole UTC days; got [{start.isoformat()}, {end.isoformat()})")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)

    @classmethod
    def for_day(cls, day: date) -> Interval:
        start = datetime.combine(day, time(), tzinfo=UTC)
        return cls(start, start + timedelta(days=1))

    @property
    def day(self) -> date:
        return self.start.date()


class CleanInteraction(NamedTuple):
    """A valid row; its field order is the Parquet column order."""

    user_id: str
    item_id: str
    event_type: str
    event_value: float | None
    timestamp: int  # epoch seconds, UTC
    occurred_at: datetime  # aware, UTC


def _identifier(name: str, value: Any) -> tuple[str | None, str | None]:
    if value is None:
        return None, f"{name} is missing"
    text = str(value).strip()
    if not text:
        return None, f"{name} is empty"
    if len(text) > MAX_ID_LENGTH:
        return None, f"{name} is longer than {MAX_ID_LENGTH} characters"
    return text, None


def _timestamp(value: Any) -> tuple[datetime | None, str | None]:
    if value is None:
        return None, "occurred_at is missing"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None, "occurred_at is not a timestamp"
    if not isinstance(value, datetime):
        return None, "occurred_at is not a timestamp"
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)), None


def _event_value(value: Any) -> tuple[float | None, str | None]:
    if value is None or value == "":
        return None, None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range (e.g. a huge NUMERIC)
        return None, "event_value is not finite"
    except (TypeError, ValueError):
        return None, "event_value is not a number"
    if not math.isfinite(number):
        return None, "event_value is not finite"
    return number, None


def validate_interaction(
    row: Sequence[Any], interval: Interval, known_event_types: frozenset[str]
) -> tuple[CleanInteraction | None, str | None]:
    """Return the clean row, or ``None`` and the reason it goes to quarantine.

    ``row`` is ``(user_id, item_id, event_type, event_value, occurred_at)`` as the driver returned it.
    """
    user_raw, item_raw, event_raw, value_raw, occurred_raw = row
    user_id, why = _identifier("user_id", user_raw)
    if why:
        return None, why
    item_id, why = _identifier("item_id", item_raw)
    if why:
        return None, why
    if event_raw is None:
        return None, "event_type is missing"
    event_type = str(event_raw).strip()
    if event_type not in known_event_types:
        return None, f"unknown event_type {event_type!r}"
    event_value, why = _event_value(value_raw)
    if why:
        return None, why
    occurred_at, why = _timestamp(occurred_raw)
    if why:
        return None, why
    if not interval.start <= occurred_at < interval.end:
        return None, "occurred_at outside the data interval"
    return (
        CleanInteraction(user_id, item_id, event_type, event_value, int(occurred_at.timestamp()), occurred_at),
        None,
    )


def quarantine_row(row: Sequence[Any]) -> str:
    """A quarantined row as the quarantine file stores it (JSON, timestamps in ISO format)."""
    return json.dumps([v.isoformat() if isinstance(v, datetime) else v for v in row], default=str)


def snapshot_row(table: str, row: Sequence[Any]) -> tuple[tuple | None, str | None]:
    """A ``users``/``items`` row typed for the snapshot files, or ``None`` and the reason it is quarantined."""
    fields = SNAPSHOT_FIELDS[table]
    key = row[0]
    if key is None or not str(key).strip():
        return None, f"{fields[0][0]} is missing"
    try:
        return tuple(
            None if value is None or value == "" else kind(value) if kind is int else str(value).strip()
            for value, (_, kind) in zip(row, fields, strict=True)
        ), None
    except (TypeError, ValueError) as exc:
        return None, f"malformed value ({exc})"


def assess_volume(count: int, previous_counts: Sequence[int], low_ratio: float, high_ratio: float) -> dict:
    """Compare ``count`` with the median of previous non-empty partitions."""
    history = [c for c in previous_counts if c > 0]
    if not history:
        return {"anomaly": False, "reason": "no history to compare with", "median": None, "ratio": None}
    median = statistics.median(history)
    ratio = count / median
    anomaly = not low_ratio <= ratio <= high_ratio
    reason = (
        f"{count} rows is {ratio:.2f}x the median {median:g} of the previous {len(history)} partitions "
        f"(allowed {low_ratio:g}x to {high_ratio:g}x)"
    )
    return {"anomaly": anomaly, "reason": reason, "median": median, "ratio": round(ratio, 4)}
