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
from collections.abc import Generator, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recsys.data import writers as w
from recsys.data.validate import MAX_ID_LENGTH, Interval, quarantine_row, snapshot_row, validate_interaction

COLUMNS = ("user_id", "item_id", "event_type", "event_value", "occurred_at")
BATCH_BYTES = 8 << 20


def supports(engine) -> bool:
    """The Arrow path reads PostgreSQL sources."""
    return engine.dialect.name == "postgresql"


def adbc_uri(engine) -> str:
    """The libpq URI of a PostgreSQL SQLAlchemy engine (driver suffix dropped)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _literal(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=' ')}'"


def connect(engine):
    """An ADBC connection to the engine's PostgreSQL database. Its type catalog is read once here (tens of
    milliseconds); ``adbc_clone()`` opens a second connection that shares it (~2 ms)."""
    import adbc_driver_postgresql.dbapi as adbc

    return adbc.connect(adbc_uri(engine))


@contextmanager
def interaction_batches(
    conn, interval: Interval, batch_bytes: int = BATCH_BYTES
) -> Generator[Iterator[pa.RecordBatch]]:
    """The interval's rows over ADBC connection ``conn``, read ahead in a thread: PostgreSQL and ADBC's
    decoding (which releases the GIL) overlap with validating and writing the batches before. The query is
    sent on entering the block, so the server sorts while the caller starts other work."""
    query = (
        f"SELECT {', '.join(COLUMNS)} FROM interactions WHERE occurred_at >= {_literal(interval.start)} "
        f"AND occurred_at < {_literal(interval.end)} ORDER BY occurred_at, id"
    )
    with conn.cursor() as cursor:
        cursor.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(batch_bytes)})
        cursor.execute(query)
        with closing(_read_ahead(cursor.fetch_record_batch())) as batches:  # its thread ends before the cursor
            yield batches


def _read_ahead(reader, depth: int = 2) -> Iterator:
    """Iterate ``reader`` in a background thread, at most ``depth`` items ahead; errors are re-raised here."""
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def pump():
        try:
            for item in reader:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            items.put(exc)

    thread = threading.Thread(target=pump, name="adbc-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


_SPACE_CHARS = pa.array([c for c in map(chr, range(0x3001)) if c.isspace()], pa.string())


def _no_edge_space(text: pa.Array) -> pa.Array:
    """True where ``str.strip()`` would leave the value as it is (first and last character not whitespace)."""
    first = pc.utf8_slice_codeunits(text, 0, 1)
    last = pc.utf8_slice_codeunits(text, -1)
    return pc.invert(pc.or_kleene(pc.is_in(first, value_set=_SPACE_CHARS), pc.is_in(last, value_set=_SPACE_CHARS)))


def _identifier_ok(column: pa.Array) -> pa.Array:
    """The identifier checks: from the values' bytes when every value starts and ends with an ASCII byte
    and none holds a line break (the usual case), else once per distinct value (ids repeat)."""
    text = column.cast(pa.string())
    quick = _ascii_identifier_ok(text)
    if quick is not None:
        return quick
    encoded = pc.dictionary_encode(text)
    return pc.take(_distinct_identifier_ok(encoded.dictionary), encoded.indices)


_ASCII_SPACE = np.array([chr(c).isspace() for c in range(128)])


def _ascii_identifier_ok(text: pa.Array) -> pa.Array | None:
    """``_distinct_identifier_ok`` of every value, from the offsets and bytes with numpy; None when a value's
    first or last byte is not ASCII (a character beyond it may be a space), a value has more bytes than
    ``MAX_ID_LENGTH`` (its characters may be fewer) or a line break is in the bytes."""
    if len(text) == 0 or text.buffers()[2] is None:
        return None
    offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset : text.offset + len(text) + 1]
    data = np.frombuffer(text.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    if data.size == 0:
        return None
    starts, ends = offsets[:-1] - offsets[0], offsets[1:] - offsets[0]
    filled = ends > starts
    first, last = data[np.where(filled, starts, 0)], data[np.where(filled, ends - 1, 0)]
    if (ends - starts).max() > MAX_ID_LENGTH or (first | last).max() >= 128 or (data == 10).any() or (data == 13).any():
        return None
    if text.null_count:
        filled &= pc.is_valid(text).to_numpy(zero_copy_only=False)
    return pa.array(filled & ~_ASCII_SPACE[first] & ~_ASCII_SPACE[last])


def _distinct_identifier_ok(text: pa.Array) -> pa.Array:
    length = pc.utf8_length(text)
    fits = pc.and_kleene(pc.greater(length, 0), pc.less_equal(length, MAX_ID_LENGTH))
    no_break = pc.invert(pc.or_kleene(pc.match_substring(text, "\r"), pc.match_substring(text, "\n")))
    return pc.and_kleene(pc.and_kleene(fits, no_break), _no_edge_space(text))


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
    kept = pa.Table.from_batches([batch])
    if not pc.all(mask).as_py():  # most batches keep every row: no copy then
        kept = kept.filter(mask)
    occurred = kept.column("occurred_at").cast(pa.timestamp("us", tz="UTC"))  # a naive time is UTC: no tz lookups
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


def _with_fixed(table: pa.Table, mask: pa.Array, fixed: dict[int, tuple], schema: pa.Schema) -> pa.Table:
    """``table`` (the rows ``mask`` kept) plus the rows the Python validator cleaned, in the batch's order."""
    if not fixed:
        return table
    order = pc.indices_nonzero(mask).to_pylist() + list(fixed)
    extra = pa.table({n: [row[k] for row in fixed.values()] for k, n in enumerate(schema.names)}, schema=schema)
    return pa.concat_tables([table, extra]).take(pc.sort_indices(pa.array(order)))


def split(batch: pa.RecordBatch, interval: Interval, known: frozenset[str]) -> tuple[pa.Table, list[tuple], Counter]:
    """The batch's clean rows (query order) and its quarantine rows ``(table, reason, raw row)``."""
    mask = certainly_valid(batch, interval, known)
    reasons: Counter = Counter()
    quarantined, fixed = [], {}
    for index in pc.indices_nonzero(pc.invert(mask)).to_pylist():
        raw = tuple(batch.column(c)[index].as_py() for c in COLUMNS)
        clean, why = validate_interaction(raw, interval, known)
        if clean is None:
            reasons[why] += 1
            quarantined.append(("interactions", why, quarantine_row(raw)))
        else:
            fixed[index] = tuple(clean)
    return _with_fixed(_clean_table(batch, mask), mask, fixed, w.INTERACTIONS_SCHEMA), quarantined, reasons


def csv_bytes(table: pa.Table) -> bytes | memoryview:
    """CSV rows (no header) of ``table``, byte for byte as the csv module writes them: pyarrow's writer
    unquoted when no value needs quotes (its ``needed`` style quotes every string), the csv module when
    one does."""
    strings = [c for c in table.column_names if pa.types.is_string(table[c].type)]
    if any(_may_need_quotes(table[c]) for c in strings):
        text = io.StringIO(newline="")
        csv.writer(text, lineterminator="\n").writerows(
            zip(*(table[c].to_pylist() for c in table.column_names), strict=True)
        )
        return text.getvalue().encode()
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none", batch_size=1 << 16))
    return memoryview(sink.getvalue())


def _may_need_quotes(column: pa.ChunkedArray) -> bool:
    """Whether a value may hold a comma, quote or line break: a byte search of each chunk's values (a slice's
    buffer may hold bytes outside it, which can only say yes: the csv module then writes the same bytes)."""
    for chunk in column.chunks:
        data = chunk.buffers()[2]
        values = data.to_pybytes() if data is not None else b""
        if any(char in values for char in (b",", b'"', b"\r", b"\n")):
            return True
    return False


def write_interactions(batches: Iterator[pa.RecordBatch], interval: Interval, out: dict, known: frozenset[str]):
    """Same contract as the row path: ``(reasons, rows read, active users)``. Four stages overlap: the
    read-ahead thread (PostgreSQL + ADBC), validation here, and two writer threads (Parquet; the
    Personalize CSV and the quarantine), each writing its own files in batch order."""
    reasons: Counter = Counter()
    read, active = 0, DistinctIds()
    with _WriteBehind() as parquet, _WriteBehind() as personalize:
        for batch in batches:
            read += batch.num_rows
            table, quarantined, why = split(batch, interval, known)
            reasons.update(why)
            parquet.submit(out["interactions"].write_table, table)
            personalize.submit(write_personalize_batch, out, table, quarantined)
            active.add(table["user_id"])
        active_users = active.sorted()  # while the writers finish
    return reasons, read, active_users


class DistinctIds:
    """The distinct values of a string column over many batches, kept in Arrow (no Python string per row)."""

    def __init__(self, compact_every: int = 32):
        self._parts: list[pa.Array] = []
        self._compact_every = compact_every

    def add(self, column: pa.Array | pa.ChunkedArray) -> None:
        self._parts.append(pc.unique(column))
        if len(self._parts) >= self._compact_every:
            self._parts = [self._distinct()]

    def _distinct(self) -> pa.Array:
        return pc.unique(pa.chunked_array(self._parts, pa.string()))

    def sorted(self) -> list[str]:
        """The distinct values in ``sorted()``'s order (UTF-8 byte order is code point order)."""
        distinct = self._distinct()
        return distinct.take(pc.sort_indices(distinct)).to_pylist()


def write_batch(out: dict, table: pa.Table, quarantined: list[tuple]) -> None:
    """One batch of clean interactions (and its quarantined rows) into the partition's files."""
    out["interactions"].write_table(table)
    write_personalize_batch(out, table, quarantined)


def write_personalize_batch(out: dict, table: pa.Table, quarantined: list[tuple]) -> None:
    """The Personalize interactions CSV rows of a clean batch, and the batch's quarantined rows."""
    rows = table.select(["user_id", "item_id", "timestamp", "event_type"])
    out["personalize_interactions"].write_bytes(csv_bytes(rows), table.num_rows)
    out["quarantine"].write_rows(quarantined)


class _WriteBehind:
    """Run submitted writes in order on one background thread, at most ``depth`` behind; the first error
    is raised at the next ``submit`` or on leaving the block."""

    def __init__(self, depth: int = 2):
        import queue
        import threading

        self.jobs: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="partition-writer", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.error is None:
                try:
                    job[0](*job[1])
                except BaseException as exc:  # noqa: BLE001 - re-raised in the submitting thread
                    self.error = exc

    def submit(self, fn, *args) -> None:
        if self.error is not None:
            raise self.error
        self.jobs.put((fn, args))

    def __enter__(self) -> _WriteBehind:
        return self

    def __exit__(self, *exc) -> None:
        self.jobs.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error


def _snapshot_certain(batch: pa.RecordBatch, schema: pa.Schema) -> pa.Array:
    """Rows whose key is present and every string is absent or needs no stripping (and is not empty)."""
    mask = pc.is_valid(batch.column(0))
    for field in schema:
        column = batch.column(field.name)
        if pa.types.is_string(field.type):
            text = column.cast(pa.string())
            clean = pc.and_kleene(pc.greater(pc.utf8_length(text), 0), _no_edge_space(text))
            mask = pc.and_kleene(mask, clean if field is schema[0] else pc.or_kleene(pc.is_null(text), clean))
    return pc.fill_null(mask, False)


def write_partition(engine, interval: Interval, out: dict, known: frozenset[str]):
    """A partition's interactions and, beside them in a thread, its users and items snapshots (each writes
    its own files; the snapshots' quarantined rows follow the interactions', in the row path's order).
    Returns ``(reasons, rows read, active users, users reasons, items reasons)``."""
    from concurrent.futures import ThreadPoolExecutor

    held: list[tuple] = []
    with (
        connect(engine) as conn,
        interaction_batches(conn, interval) as batches,
        ThreadPoolExecutor(1, "snapshots") as pool,
    ):
        snapshot_reasons = pool.submit(write_snapshots, conn.adbc_clone(), out, held)
        reasons, read, active = write_interactions(batches, interval, out, known)
        user_reasons, item_reasons = snapshot_reasons.result()
    out["quarantine"].write_rows(held)
    return reasons, read, active, user_reasons, item_reasons


def write_snapshots(conn, out: dict, held: list) -> tuple[Counter, Counter]:
    """The ``users`` and ``items`` snapshots, one after the other over ADBC connection ``conn`` (closed
    after them); returns each one's reasons."""
    with conn, conn.cursor() as cursor:
        return tuple(
            write_snapshot(cursor, *each, out, held) for each in (("users", w.USERS_SCHEMA), ("items", w.ITEMS_SCHEMA))
        )


def write_snapshot(cursor, table_name: str, schema: pa.Schema, out: dict, held: list) -> Counter:
    """The ``users`` / ``items`` snapshot as the row path writes it (same files, reasons, order by key);
    its quarantined rows are appended to ``held``, for the caller to write after the interactions'."""
    reasons: Counter = Counter()
    cursor.execute(f"SELECT {', '.join(schema.names)} FROM {table_name} ORDER BY {schema.names[0]}")
    with closing(_read_ahead(cursor.fetch_record_batch())) as batches:  # its thread ends before the cursor
        for batch in batches:
            mask = _snapshot_certain(batch, schema)
            fixed = {}
            for index in pc.indices_nonzero(pc.invert(mask)).to_pylist():
                raw = tuple(batch.column(n)[index].as_py() for n in schema.names)
                good, why = snapshot_row(table_name, raw)
                if good is None:
                    held.append((table_name, why, quarantine_row(raw)))
                    reasons[why] += 1
                else:
                    fixed[index] = good
            kept = pa.Table.from_batches([batch]).filter(mask)
            kept = pa.table([kept[n].cast(f.type) for n, f in zip(schema.names, schema, strict=True)], schema=schema)
            write_snapshot_batch(out, table_name, _with_fixed(kept, mask, fixed, schema), [])
    return reasons


def write_snapshot_batch(out: dict, name: str, table: pa.Table, quarantined: list[tuple]) -> None:
    """One batch of a users/items snapshot (and its quarantined rows) into the partition's files."""
    out[name].write_table(table)
    out[f"personalize_{name}"].write_bytes(csv_bytes(table), table.num_rows)
    out["quarantine"].write_rows(quarantined)
