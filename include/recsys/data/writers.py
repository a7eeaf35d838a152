"""Streaming writers for one partition version: Parquet, Personalize CSV, JSON lines.

Every file is written through :class:`HashingWriter`, so its SHA-256 and size are known when it is
closed without reading it back.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

INTERACTIONS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("event_type", pa.string()),
        ("event_value", pa.float64()),
        ("timestamp", pa.int64()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
    ]
)
TIME_COLUMNS = ("timestamp", "occurred_at")
USERS_SCHEMA = pa.schema(
    [("user_id", pa.string()), ("age", pa.int32()), ("gender", pa.string()), ("occupation", pa.string())]
)
ITEMS_SCHEMA = pa.schema(
    [("item_id", pa.string()), ("title", pa.string()), ("genres", pa.string()), ("release_year", pa.int32())]
)

PERSONALIZE_INTERACTIONS_HEADER = ("USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE")
PERSONALIZE_USERS_HEADER = ("USER_ID", "AGE", "GENDER", "OCCUPATION")
PERSONALIZE_ITEMS_HEADER = ("ITEM_ID", "TITLE", "GENRES", "RELEASE_YEAR")
QUARANTINE_HEADER = ("table", "reason", "row")
_PLAIN = re.compile(r"[ !#-\[\]-~]*")  # printable ASCII without '"' and '\\': json.dumps leaves it as it is


class HashingWriter(io.RawIOBase):
    """A write-only binary stream that hashes and counts what passes through it.

    Writes reach the underlying store in blocks of ``block_size`` bytes: per-call overhead of the
    object-storage file wrappers is paid once per block, not once per row.
    """

    def __init__(self, raw, block_size: int = 1 << 20):
        super().__init__()
        self._raw = raw
        self._sha = hashlib.sha256()
        self._buffer = bytearray()
        self._block_size = block_size
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._sha.update(view)
        self.bytes += len(view)
        if not self._buffer and len(view) >= self._block_size:
            self._raw.write(view)  # a whole block already: no copy into the buffer
        else:
            self._buffer += view
            if len(self._buffer) >= self._block_size:
                self._drain()
        return len(view)

    def _drain(self) -> None:
        if self._buffer:
            self._raw.write(bytes(self._buffer))
            self._buffer.clear()

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        self._drain()
        self._raw.flush()

    def close(self) -> None:
        if not self.closed:
            self._drain()
        super().close()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


class _OutFile:
    """One output file of a version: its path relative to the partition, row count and hash."""

    def __init__(self, stack: ExitStack, version_dir: ObjectStoragePath, relative: str, version: str):
        path = version_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        self.relative = f"v={version}/{relative}"
        self.hashing = HashingWriter(stack.enter_context(path.open("wb")))
        self.rows = 0

    def entry(self) -> dict[str, Any]:
        return {"path": self.relative, "rows": self.rows, "bytes": self.hashing.bytes, "sha256": self.hashing.sha256}


class _CsvFile(_OutFile):
    def __init__(self, stack, version_dir, relative, version, header: Sequence[str]):
        super().__init__(stack, version_dir, relative, version)
        self._text = io.TextIOWrapper(self.hashing, encoding="utf-8", newline="")
        self._csv = csv.writer(self._text, lineterminator="\n")
        self._csv.writerow(header)

    def write_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        self._csv.writerows(rows)  # the csv module writes None as an empty field
        self.rows += len(rows)

    def write_bytes(self, data: bytes, rows: int) -> None:
        """Rows already rendered as CSV (e.g. by pyarrow's CSV writer), after what was written so far."""
        self._text.flush()
        self.hashing.write(data)
        self.rows += rows

    def close(self) -> None:
        self._text.flush()
        self._text.detach()
        self.hashing.close()


class _JsonLinesFile(_OutFile):
    def write_records(self, records: Iterable[dict]) -> None:
        for record in records:
            self.hashing.write((json.dumps(record, separators=(",", ":")) + "\n").encode())
            self.rows += 1

    def write_user_ids(self, user_ids: Sequence[str]) -> None:
        """``{"userId": ...}`` lines, as ``write_records`` writes them: plain ASCII ids need no escaping,
        so when every id is plain (one regex over them all) they are joined directly; else each id that is
        not goes through ``json.dumps``."""
        if not user_ids:
            return
        if _PLAIN.fullmatch("".join(user_ids)):
            text = '{"userId":"' + '"}\n{"userId":"'.join(user_ids) + '"}\n'
        else:
            plain = _PLAIN.fullmatch
            lines = [
                f'{{"userId":"{u}"}}' if plain(u) else json.dumps({"userId": u}, separators=(",", ":"))
                for u in user_ids
            ]
            text = "\n".join(lines) + "\n"
        self.hashing.write(text.encode())
        self.rows += len(user_ids)

    def close(self) -> None:
        self.hashing.close()


def parquet_encodings(schema: pa.Schema) -> dict[str, Any]:
    """ParquetWriter options: the time columns (ordered, nearly every value distinct) delta-encoded, a third
    of their dictionary-then-plain bytes; dictionaries for the others, whose values repeat."""
    delta = [f.name for f in schema if f.name in TIME_COLUMNS]
    return {
        "use_dictionary": [n for n in schema.names if n not in delta],
        "column_encoding": dict.fromkeys(delta, "DELTA_BINARY_PACKED"),
    }


class _ParquetFile(_OutFile):
    def __init__(self, stack, version_dir, relative, version, schema: pa.Schema):
        super().__init__(stack, version_dir, relative, version)
        self._writer = pq.ParquetWriter(self.hashing, schema, compression="zstd", **parquet_encodings(schema))
        self._schema = schema

    def write_columns(self, columns: dict[str, list]) -> None:
        self.write_table(pa.table(columns, schema=self._schema))

    def write_table(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table)
            self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()
        self.hashing.close()


class VersionWriter:
    """Opens every file of one partition version and closes them all together."""

    def __init__(self, version_dir: ObjectStoragePath, version: str):
        self._dir, self._version = version_dir, version
        self._stack = ExitStack()
        self.files: dict[str, _OutFile] = {}

    def parquet(self, name: str, relative: str, schema: pa.Schema) -> _ParquetFile:
        return self._add(name, _ParquetFile(self._stack, self._dir, relative, self._version, schema))

    def csv(self, name: str, relative: str, header: Sequence[str]) -> _CsvFile:
        return self._add(name, _CsvFile(self._stack, self._dir, relative, self._version, header))

    def jsonl(self, name: str, relative: str) -> _JsonLinesFile:
        return self._add(name, _JsonLinesFile(self._stack, self._dir, relative, self._version))

    def _add(self, name: str, out: _OutFile):
        self.files[name] = out
        return out

    def __enter__(self) -> VersionWriter:
        return self

    def __exit__(self, *exc) -> None:
        try:
            for out in self.files.values():
                out.close()
        finally:
            self._stack.close()

    def entries(self) -> dict[str, dict[str, Any]]:
        return {name: out.entry() for name, out in self.files.items()}
