from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from recsys.data.extract import QualityPolicy, resolve_interval
from recsys.data.validate import Interval, assess_volume, validate_interaction

DAY = Interval.for_day(date(2026, 11, 10))
KNOWN = frozenset({"view", "purchase"})
NOON = datetime(2026, 11, 10, 12, 0, 0)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ((None, "i", "view", 1, NOON), "user_id is missing"),
        (("  ", "i", "view", 1, NOON), "user_id is empty"),
        (("u" * 257, "i", "view", 1, NOON), "user_id is longer than 256 characters"),
        (("u", None, "view", 1, NOON), "item_id is missing"),
        (("u", "i", None, 1, NOON), "event_type is missing"),
        (("u", "i", "VIEW", 1, NOON), "unknown event_type 'VIEW'"),
        (("u", "i", "view", "abc", NOON), "event_value is not a number"),
        (("u", "i", "view", float("nan"), NOON), "event_value is not finite"),
        (("u", "i", "view", 1, None), "occurred_at is missing"),
        (("u", "i", "view", 1, "yesterday"), "occurred_at is not a timestamp"),
        (("u", "i", "view", 1, 1731240000), "occurred_at is not a timestamp"),
        (("u", "i", "view", 1, datetime(2026, 11, 11)), "occurred_at outside the data interval"),
        (("u", "i", "view", 1, datetime(2026, 11, 9, 23, 59, 59)), "occurred_at outside the data interval"),
    ],
)
def test_bad_rows_get_a_reason(row, reason):
    clean, why = validate_interaction(row, DAY, KNOWN)
    assert clean is None and why == reason


def test_good_row_is_normalised():
    clean, why = validate_interaction((" u1 ", 42, "purchase", "3.5", "2026-11-10 12:00:00.250000"), DAY, KNOWN)
    assert why is None
    assert (clean.user_id, clean.item_id, clean.event_value) == ("u1", "42", 3.5)
    assert clean.timestamp == int(datetime(2026, 11, 10, 12, tzinfo=UTC).timestamp())
    aware = datetime(2026, 11, 10, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 04:30 UTC next day
    assert (
        validate_interaction(("u", "i", "view", None, aware), DAY, KNOWN)[1] == "occurred_at outside the data interval"
    )


def test_interval_must_be_a_whole_utc_day():
    with pytest.raises(ValueError, match="whole UTC days"):
        Interval(datetime(2026, 11, 10, 2, tzinfo=UTC), datetime(2026, 11, 11, 2, tzinfo=UTC))
    with pytest.raises(ValueError, match="aware"):
        Interval(datetime(2026, 11, 10), datetime(2026, 11, 11))
    shifted = Interval(
        datetime(2026, 11, 10, 1, tzinfo=timezone(timedelta(hours=1))),
        datetime(2026, 11, 11, 1, tzinfo=timezone(timedelta(hours=1))),
    )
    assert shifted.day == date(2026, 11, 10)


def test_resolve_interval_for_every_kind_of_run():
    start, end = datetime(2026, 11, 5, tzinfo=UTC), datetime(2026, 11, 6, tzinfo=UTC)
    assert resolve_interval(None, start, end, None).day == date(2026, 11, 5)  # scheduled / backfill
    assert resolve_interval("2026-10-01", start, end, None).day == date(2026, 10, 1)  # explicit Param wins
    run_after = datetime(2026, 11, 23, 7, 30, tzinfo=UTC)
    assert resolve_interval(None, None, None, run_after).day == date(2026, 11, 22)  # manual, no logical date
    assert resolve_interval(None, start, start, run_after).day == date(2026, 11, 22)  # zero-length interval
    with pytest.raises(ValueError):
        resolve_interval("2026-02-30", None, None, None)


def test_volume_assessment():
    assert assess_volume(100, [], 0.5, 2.0)["anomaly"] is False
    ok = assess_volume(100, [90, 110, 0, 100], 0.5, 2.0)
    assert ok == {"anomaly": False, "reason": ok["reason"], "median": 100, "ratio": 1.0}
    low = assess_volume(40, [90, 110, 100], 0.5, 2.0)
    assert low["anomaly"] is True and "0.40x the median 100" in low["reason"]
    assert assess_volume(201, [100], 0.5, 2.0)["anomaly"] is True


def test_quality_policy_rejects_bad_values():
    with pytest.raises(ValueError, match="max_bad_fraction"):
        QualityPolicy(max_bad_fraction=1.5)
    with pytest.raises(ValueError, match="anomaly_action"):
        QualityPolicy(anomaly_action="ignore")


def test_clean_rows_line_up_with_the_parquet_schema():
    from recsys.data.validate import CleanInteraction
    from recsys.data.writers import INTERACTIONS_SCHEMA

    assert CleanInteraction._fields == tuple(INTERACTIONS_SCHEMA.names)
