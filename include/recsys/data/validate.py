"""Row-level validation of extracted interactions and the volume (row count) anomaly check."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple

MAX_ID_LENGTH = 256  # Amazon Personalize's limit for USER_ID / ITEM_ID


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
