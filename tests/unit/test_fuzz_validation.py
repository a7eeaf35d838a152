"""Fuzzed rows (hypothesis): the row validator never crashes — every row is clean or quarantined with a
reason — and the Arrow backend's vectorised validation gives exactly the row validator's answer for any
batch of typed values (what PostgreSQL returns), including unicode whitespace, control characters,
NaN/inf and timestamps just outside the interval."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.data.arrow_extract import COLUMNS, split
from recsys.data.extract import split_rows
from recsys.data.validate import Interval, quarantine_row, validate_interaction

INTERVAL = Interval.for_day(date(2026, 11, 10))
KNOWN = frozenset({"view", "click", "purchase"})
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text that exercises the rules: edges with (unicode) whitespace, line breaks, empty, long, non-ASCII
EDGES = st.sampled_from(["", " ", "\t", "\u3000", "\u00a0", "\x1c", "\r", "\n", "\u2028", "\x00"])
IDENTIFIERS = st.one_of(
    st.text(max_size=12),
    st.builds(lambda a, b, c: a + b + c, EDGES, st.text(min_size=1, max_size=6), EDGES),
    st.text(alphabet="ab", min_size=250, max_size=260),
    st.sampled_from(["u1", "i1", "ü-ß", "😀"]),
)
MOMENTS = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(2026, 11, 9, 23), max_value=datetime(2026, 11, 11, 1)),
    st.just(datetime(2026, 11, 11)),  # the interval's end: excluded
    st.just(datetime(2026, 11, 10)),  # its start: included
)
VALUES = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**53), 2**53))
TYPED_ROWS = st.tuples(
    st.one_of(st.none(), IDENTIFIERS),
    st.one_of(st.none(), IDENTIFIERS),
    st.one_of(st.none(), st.sampled_from(sorted(KNOWN)), st.text(max_size=8)),
    VALUES.map(lambda v: None if v is None else float(v)),
    MOMENTS,
)
HUGE = st.integers(min_value=10**300, max_value=10**400) | st.integers(max_value=-(10**300), min_value=-(10**400))
ANYTHING = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), HUGE, st.floats(), st.text(), st.binary(max_size=8)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=5,
)


@FUZZ
@given(
    st.tuples(
        st.one_of(IDENTIFIERS, ANYTHING),
        st.one_of(IDENTIFIERS, ANYTHING),
        st.one_of(st.sampled_from(sorted(KNOWN)), ANYTHING),  # mostly valid, so the later fields are reached
        ANYTHING,
        st.one_of(MOMENTS, ANYTHING),
    )
)
def test_any_row_is_clean_or_quarantined_with_a_reason(raw):
    clean, reason = validate_interaction(raw, INTERVAL, KNOWN)
    assert (clean is None) != (reason is None)
    if clean is None:
        assert isinstance(reason, str) and reason
        assert json.loads(quarantine_row(raw)) is not None  # the raw row is kept, whatever it held
    else:
        assert INTERVAL.start <= clean.occurred_at < INTERVAL.end and clean.event_type in KNOWN


@FUZZ
@given(st.lists(TYPED_ROWS, min_size=1, max_size=40))
def test_arrow_validation_equals_the_row_validator(rows):
    batch = pa.RecordBatch.from_pylist(
        [dict(zip(COLUMNS, row, strict=True)) for row in rows],
        schema=pa.schema(
            [
                ("user_id", pa.string()),
                ("item_id", pa.string()),
                ("event_type", pa.string()),
                ("event_value", pa.float64()),
                ("occurred_at", pa.timestamp("us")),
            ]
        ),
    )
    table, quarantined, reasons = split(batch, INTERVAL, KNOWN)

    expected_rows, expected_quarantine, expected_reasons = split_rows(rows, INTERVAL, KNOWN)  # the row backend
    assert reasons == expected_reasons
    assert quarantined == expected_quarantine
    got = table.to_pylist()
    assert [(r["user_id"], r["item_id"], r["event_type"]) for r in got] == [
        (c.user_id, c.item_id, c.event_type) for c in expected_rows
    ]
    for r, c in zip(got, expected_rows, strict=True):
        assert r["event_value"] == c.event_value or (r["event_value"] is None and c.event_value is None)
        assert r["occurred_at"] == c.occurred_at.astimezone(UTC)
        assert r["timestamp"] == int(c.occurred_at.timestamp())


def test_an_integer_beyond_float_range_is_quarantined_not_a_crash():
    # found by the fuzzer above: float(10**400) raises OverflowError
    row = ("u", "i", "view", 10**400, datetime(2026, 11, 10, 1))
    assert validate_interaction(row, INTERVAL, KNOWN) == (None, "event_value is not finite")


def test_interval_bounds_are_half_open():
    inside = ("u", "i", "view", 1.0, INTERVAL.end - timedelta(microseconds=1))
    assert validate_interaction(inside, INTERVAL, KNOWN)[0] is not None
    assert validate_interaction(("u", "i", "view", 1.0, INTERVAL.end), INTERVAL, KNOWN)[0] is None


ASCII_EDGES = st.sampled_from(["", " ", "\t", "\x1c", "\x0b", "a", "9", "-", "\x00"])
ASCII_EDGED = st.one_of(
    st.none(),
    st.builds(lambda a, b, c: a + b + c, ASCII_EDGES, st.text(max_size=5), ASCII_EDGES),
    st.text(alphabet="ab", min_size=250, max_size=260),
)


@FUZZ
@given(st.lists(ASCII_EDGED, min_size=1, max_size=40), st.integers(0, 3))
def test_the_byte_level_identifier_check_agrees_with_the_per_value_check(values, offset):
    """The numpy fast path (ASCII first/last bytes) answers exactly as the per-distinct-value kernels, on
    sliced arrays and nulls too; where it cannot be sure it declines (None) rather than guess."""
    import pyarrow.compute as pc

    from recsys.data.arrow_extract import _ascii_identifier_ok, _distinct_identifier_ok

    start = min(offset, len(values) - 1)
    text, values = pa.array(values, pa.string()).slice(start), values[start:]
    quick = _ascii_identifier_ok(text)
    if quick is not None:
        assert quick.to_pylist() == pc.fill_null(_distinct_identifier_ok(text), False).to_pylist()
    usual = all(v is not None and len(v.encode()) <= 256 and "\n" not in v and "\r" not in v for v in values)
    if usual and all(v[:1].isascii() and v[-1:].isascii() for v in values) and any(values):
        assert quick is not None  # the usual case takes the fast path
