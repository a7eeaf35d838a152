"""Arrow-native extraction of a day's interactions from PostgreSQL (ADBC), written batch by batch.

The interval's rows arrive as Arrow record batches (ADBC runs the query as binary COPY; the interval
bounds are SQL timestamp literals rendered from the validated :class:`Interval`, because a query with
bound parameters takes a path about 2x slower; ``adbc.postgresql.batch_size_hint_bytes`` bounds memory).
pyarrow's CSV ``quoting_style="needed"`` quotes every string value: the CSV is written unquoted
(``"none"``) unless a value holds a comma, quote or line break.

Validation keeps the row validator's rules and reasons exactly: a vectorised mask accepts the rows that
are certainly valid (ids present, nothing for ``str.strip`` to remove, at most 256 characters, no
CR/LF; a known event type; a finite or missing value; a time inside the interval); the few other rows go through
:func:`recsys.data.validate.validate_interaction` one by one, which cleans them (e.g. trims ids) or
quarantines them with its reason and the raw row. Clean rows keep the query's order.

Differences to the row path, by design: Parquet row groups follow the Arrow batches (same rows and
values, other row-group boundaries, so other bytes); the Personalize CSV, the batch users and the
quarantine file are byte-identical (``tests/integration/test_extract_backends.py``).

SQLite and MySQL/MariaDB use the row path: SQLite's dynamic typing breaks ADBC's per-batch type
inference (a REAL column holding one TEXT value fails with "Type mismatch", and floats come back as
``'1.500000e+00'`` strings), and no maintained Arrow reader for MySQL was verifiable here.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recsys.data import writers as w
from recsys.data.validate import MAX_ID_LENGTH, Interval, validate_interaction

COLUMNS = ("user_id", "item_id", "event_type", "event_value", "occurred_at")
BATCH_BYTES = 16 << 20


def supports(engine) -> bool:
    """The Arrow path reads PostgreSQL sources."""
    return engine.dialect.name == "postgresql"


def adbc_uri(engine) -> str:
    """The libpq URI of a PostgreSQL SQLAlchemy engine (driver suffix dropped)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _literal(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=' ')}'"


def interaction_batches(engine, interval: Interval, batch_bytes: int = BATCH_BYTES) -> Iterator[pa.RecordBatch]:
    import adbc_driver_postgresql.dbapi as adbc

    query = (
        f"SELECT {', '.join(COLUMNS)} FROM interactions WHERE occurred_at >= {_literal(interval.start)} "
        f"AND occurred_at < {_literal(interval.end)} ORDER BY occurred_at, id"
    )
    with adbc.connect(adbc_uri(engine)) as conn, conn.cursor() as cursor:
        cursor.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(batch_bytes)})
        cursor.execute(query)
        yield from cursor.fetch_record_batch()


# the characters str.strip() removes (str.isspace), as a regex class: an id starting or ending with one is doubtful
_SPACE = "".join(f"\\x{{{ord(c):04x}}}" for c in map(chr, range(0x3001)) if c.isspace())  # RE2 syntax
_EDGE_SPACE_OR_LINE_BREAK = f"^[{_SPACE}]|[{_SPACE}]$|[\\r\\n]"


def _identifier_ok(column: pa.Array) -> pa.Array:
    text = column.cast(pa.string())
    length = pc.utf8_length(text)
    fits = pc.and_kleene(pc.greater(length, 0), pc.less_equal(length, MAX_ID_LENGTH))
    return pc.and_kleene(fits, pc.invert(pc.match_substring_regex(text, _EDGE_SPACE_OR_LINE_BREAK)))


def certainly_valid(batch: pa.RecordBatch, interval: Interval, known: frozenset[str]) -> pa.Array:
    """True where the row validator would accept the row unchanged; False where it must look."""
    occurred = batch.column("occurred_at")
    if pa.types.is_timestamp(occurred.type) and occurred.type.tz is None:
        start, end = interval.start.replace(tzinfo=None), interval.end.replace(tzinfo=None)
    else:
        start, end = interval.start, interval.end
    value = batch.column("event_value").cast(pa.float64())
    checks = [
        _identifier_ok(batch.column("user_id")),
        _identifier_ok(batch.column("item_id")),
        pc.is_in(batch.column("event_type").cast(pa.string()), value_set=pa.array(sorted(known), pa.string())),
        pc.or_kleene(pc.is_null(value), pc.is_finite(value)),
        pc.and_kleene(
            pc.greater_equal(occurred, pa.scalar(start, occurred.type)),
            pc.less(occurred, pa.scalar(end, occurred.type)),
        ),
    ]
    mask = checks[0]
    for check in checks[1:]:
        mask = pc.and_kleene(mask, check)
    return pc.fill_null(mask, False)


def _clean_table(batch: pa.RecordBatch, mask: pa.Array) -> pa.Table:
    kept = pa.Table.from_batches([batch]).filter(mask)
    occurred = kept.column("occurred_at")
    if occurred.type.tz is None:
        occurred = pc.assume_timezone(occurred, "UTC")
    occurred = occurred.cast(pa.timestamp("us", tz="UTC"))
    seconds = pc.divide(occurred.cast(pa.int64()), 1_000_000)
    return pa.table(
        [
            kept.column("user_id").cast(pa.string()),
            kept.column("item_id").cast(pa.string()),
            kept.column("event_type").cast(pa.string()),
            kept.column("event_value").cast(pa.float64()),
            seconds,
            occurred,
        ],
        schema=w.INTERACTIONS_SCHEMA,
    )


def split(batch: pa.RecordBatch, interval: Interval, known: frozenset[str]) -> tuple[pa.Table, list[tuple], Counter]:
    """The batch's clean rows (query order) and its quarantine rows ``(table, reason, raw row)``."""
    from recsys.data.extract import quarantine_row

    mask = certainly_valid(batch, interval, known)
    doubtful = pc.indices_nonzero(pc.invert(mask)).to_pylist()
    if not doubtful:
        return _clean_table(batch, mask), [], Counter()
    reasons: Counter = Counter()
    quarantined, fixed = [], {}
    rows = batch.take(pa.array(doubtful)).to_pylist()
    for index, record in zip(doubtful, rows, strict=True):
        raw = tuple(record[c] for c in COLUMNS)
        clean, why = validate_interaction(raw, interval, known)
        if clean is None:
            reasons[why] += 1
            quarantined.append(("interactions", why, quarantine_row(raw)))
        else:
            fixed[index] = clean
    table = _clean_table(batch, mask)
    if fixed:
        order = pc.indices_nonzero(mask).to_pylist() + list(fixed)
        extra = pa.table(
            {n: [getattr(c, n) for c in fixed.values()] for n in w.INTERACTIONS_SCHEMA.names},
            schema=w.INTERACTIONS_SCHEMA,
        )
        table = pa.concat_tables([table, extra]).take(pc.sort_indices(pa.array(order)))
    return table, quarantined, reasons


def csv_bytes(table: pa.Table) -> bytes:
    """The Personalize interactions CSV rows (no header) of a clean table, byte for byte as the csv module
    writes them: pyarrow's writer unquoted when no value needs quotes (its ``needed`` style quotes every
    string), the csv module for a batch that has one."""
    rows = pa.table(
        {
            "USER_ID": table["user_id"],
            "ITEM_ID": table["item_id"],
            "TIMESTAMP": table["timestamp"],
            "EVENT_TYPE": table["event_type"],
        }
    )
    special = [
        pc.any(pc.match_substring_regex(rows[c], '[,"\r\n]')).as_py() for c in ("USER_ID", "ITEM_ID", "EVENT_TYPE")
    ]
    if any(special):
        text = io.StringIO(newline="")
        csv.writer(text, lineterminator="\n").writerows(
            zip(*(rows[c].to_pylist() for c in rows.column_names), strict=True)
        )
        return text.getvalue().encode()
    sink = io.BytesIO()
    pacsv.write_csv(rows, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return sink.getvalue()


def write_interactions(engine, interval: Interval, settings, out: dict, known: frozenset[str]):
    """Same contract as the row path: ``(reasons, rows read, active users)``."""
    reasons: Counter = Counter()
    read, active = 0, set()
    for batch in interaction_batches(engine, interval):
        read += batch.num_rows
        table, quarantined, why = split(batch, interval, known)
        reasons.update(why)
        out["interactions"].write_table(table)
        out["personalize_interactions"].write_bytes(csv_bytes(table), table.num_rows)
        out["quarantine"].write_rows(quarantined)
        active.update(pc.unique(table["user_id"]).to_pylist())
    return reasons, read, active
