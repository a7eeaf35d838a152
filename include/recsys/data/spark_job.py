"""The extraction as a PySpark job: one day read over JDBC, validated, staged as Parquet.

The same script runs under ``spark-submit`` (local mode), AWS Glue, EMR Serverless and Dataproc. Its one
argument, ``--spec <uri>``, names a JSON file that :mod:`recsys.data.spark_extract` wrote next to the
output: JDBC URL, user, driver class, the interval, the known event types, the output prefix. A password
is never in the spec: the job reads it from the environment variable the spec names (``password_env``).

What it does, in Spark:
- reads the interval's interactions with one JDBC query per hour of the day (``predicates``: the read is
  split by time range across executors), timestamps as ``TIMESTAMP_NTZ`` in UTC;
- validates with DataFrame expressions: the rows that are certainly valid (the same mask as the Arrow
  backend) are typed by expressions; the others go through the row validator itself
  (:func:`recsys.data.validate.validate_interaction`, shipped to the executors) in ``mapInArrow``, so
  every backend has the same rules, reasons and quarantine content;
- sorts by ``(occurred_at, id)`` (the source order of the other backends) and writes
  ``<output>/interactions`` (clean rows, and quarantined rows with ``reason`` and ``row``); the users and
  items snapshots likewise, in the source database's key order, to ``<output>/users`` and ``/items``.
The Airflow side (:func:`recsys.data.spark_extract.assemble`) turns these into the partition's files.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime, timedelta

SPACE_CHARS = [c for c in map(chr, range(0x3001)) if c.isspace()]  # what str.strip() removes
INTERACTION_COLUMNS = ("user_id", "item_id", "event_type", "event_value", "occurred_at")


def hourly_predicates(start: datetime, end: datetime, hours: int = 1) -> list[str]:
    """``WHERE`` clauses that split ``[start, end)`` into ranges of ``hours`` (one JDBC query each)."""
    bounds, moment = [], start
    while moment < end:
        bounds.append((moment, min(moment + timedelta(hours=hours), end)))
        moment += timedelta(hours=hours)
    return [f"occurred_at >= {_sql_timestamp(a)} AND occurred_at < {_sql_timestamp(b)}" for a, b in bounds]


def _sql_timestamp(moment: datetime, kind: str = "TIMESTAMP") -> str:
    """A UTC timestamp literal (rendered from a parsed ``datetime``, never from a user's string)."""
    return f"{kind} '{moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=' ')}'"


def _jdbc(spark, spec: dict, table: str, predicates: list[str] | None = None):
    properties = {
        "user": spec["user"],
        "driver": spec["driver"],
        "fetchsize": "10000",
        "preferTimestampNTZ": "true",
    }
    if spec.get("password_env") and os.environ.get(spec["password_env"]):
        properties["password"] = os.environ[spec["password_env"]]
    if predicates:
        return spark.read.jdbc(spec["jdbc_url"], table, predicates=predicates, properties=properties)
    return spark.read.jdbc(spec["jdbc_url"], table, properties=properties)


def _identifier_ok(column):
    from pyspark.sql import functions as F

    return (
        column.isNotNull()
        & (F.length(column) > 0)
        & (F.length(column) <= 256)
        & ~column.contains("\r")
        & ~column.contains("\n")
        & ~F.substring(column, 1, 1).isin(SPACE_CHARS)
        & ~F.substring(column, -1, 1).isin(SPACE_CHARS)
    )


def _text_ok(column, required: bool):
    from pyspark.sql import functions as F

    clean = (F.length(column) > 0) & ~F.substring(column, 1, 1).isin(SPACE_CHARS)
    clean = clean & ~F.substring(column, -1, 1).isin(SPACE_CHARS)
    return column.isNotNull() & clean if required else column.isNull() | clean


def certainly_valid(spec: dict):
    """The Arrow backend's mask as one Spark expression: True where the row validator accepts the row as is."""
    from pyspark.sql import functions as F

    value = F.col("event_value").cast("double")
    start, end = (_sql_timestamp(moment, "TIMESTAMP_NTZ") for moment in _bounds(spec))
    in_interval = F.expr(f"occurred_at >= {start} AND occurred_at < {end}")
    mask = (
        _identifier_ok(F.col("user_id"))
        & _identifier_ok(F.col("item_id"))
        & F.col("event_type").isin(list(spec["known_event_types"]))
        & (value.isNull() | (~F.isnan(value) & (F.abs(value) != float("inf"))))
        & in_interval
    )
    return F.coalesce(mask, F.lit(False))


INTERACTIONS_OUT = (
    "user_id string, item_id string, event_type string, event_value double, timestamp long, occurred_us long, "
    "reason string, row string, order_at timestamp_ntz, id long"
)


def _check_interactions(spec: dict):
    """``mapInArrow`` body: the row validator on the rows the mask could not accept."""
    known = frozenset(spec["known_event_types"])
    start, end = datetime.fromisoformat(spec["start"]), datetime.fromisoformat(spec["end"])

    def check(batches):
        import pyarrow as pa

        from recsys.data.validate import Interval, quarantine_row, validate_interaction

        interval = Interval(start, end)
        epoch = datetime(1970, 1, 1, tzinfo=start.tzinfo)
        for batch in batches:
            out = []
            for record in batch.to_pylist():
                raw = tuple(record[c] for c in INTERACTION_COLUMNS)
                clean, why = validate_interaction(raw, interval, known)
                keys = {"order_at": record["occurred_at"], "id": record["id"]}
                if clean is None:
                    out.append({"reason": why, "row": quarantine_row(raw), **keys})
                else:
                    micros = (clean.occurred_at - epoch) // timedelta(microseconds=1)
                    row = dict(zip(INTERACTION_COLUMNS[:4], clean[:4], strict=True))
                    out.append({**row, "timestamp": clean.timestamp, "occurred_us": micros, **keys})
            yield pa.RecordBatch.from_pylist(out, schema=_arrow_schema(INTERACTIONS_OUT))

    return check


def _arrow_schema(ddl: str):
    """The Arrow schema ``mapInArrow`` must yield for a Spark DDL string of the types used here."""
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "double": pa.float64(),
        "long": pa.int64(),
        "int": pa.int32(),
        "timestamp_ntz": pa.timestamp("us"),
    }
    return pa.schema([(name, types[kind]) for name, kind in (f.split() for f in ddl.split(", "))])


def interactions(spark, spec: dict):
    """The interval's rows, validated: clean columns, or ``reason`` + ``row`` for quarantined rows."""
    from pyspark.sql import functions as F

    raw = _jdbc(spark, spec, "interactions", hourly_predicates(*_bounds(spec))).select(
        F.col("id").cast("long").alias("id"),
        *[F.col(c).cast("string").alias(c) for c in ("user_id", "item_id", "event_type")],
        F.col("event_value").cast("double").alias("event_value"),
        F.col("occurred_at"),
    )
    mask = certainly_valid(spec)
    micros = F.unix_micros(F.col("occurred_at").cast("timestamp"))
    certain = raw.where(mask).select(
        "user_id",
        "item_id",
        "event_type",
        "event_value",
        F.floor(micros / 1_000_000).cast("long").alias("timestamp"),
        micros.alias("occurred_us"),
        F.lit(None).cast("string").alias("reason"),
        F.lit(None).cast("string").alias("row"),
        F.col("occurred_at").alias("order_at"),
        "id",
    )
    checked = raw.where(~mask).mapInArrow(_check_interactions(spec), INTERACTIONS_OUT)
    return certain.unionByName(checked).orderBy("order_at", "id").drop("order_at", "id")


SNAPSHOT_DDL = {
    "users": "user_id string, age int, gender string, occupation string",
    "items": "item_id string, title string, genres string, release_year int",
}


def _check_snapshot(table: str):
    names = [f.split()[0] for f in SNAPSHOT_DDL[table].split(", ")]
    ddl = f"{SNAPSHOT_DDL[table]}, reason string, row string, source_order long"

    def check(batches):
        import pyarrow as pa

        from recsys.data.validate import quarantine_row, snapshot_row

        for batch in batches:
            out = []
            for record in batch.to_pylist():
                raw = tuple(record[n] for n in names)
                typed, why = snapshot_row(table, raw)
                if typed is None:
                    out.append({"reason": why, "row": quarantine_row(raw), "source_order": record["source_order"]})
                else:
                    out.append({**dict(zip(names, typed, strict=True)), "source_order": record["source_order"]})
            yield pa.RecordBatch.from_pylist(out, schema=_arrow_schema(ddl))

    return check, ddl


def snapshot(spark, spec: dict, table: str):
    """The ``users`` / ``items`` table in the source's key order (its own collation), validated."""
    from pyspark.sql import functions as F

    fields = [f.split() for f in SNAPSHOT_DDL[table].split(", ")]
    names = [name for name, _ in fields]
    query = f"(SELECT {', '.join(names)}, row_number() OVER (ORDER BY {names[0]}) AS source_order FROM {table}) t"
    raw = _jdbc(spark, spec, query).select(
        *[F.col(name).cast(kind).alias(name) for name, kind in fields], F.col("source_order").cast("long")
    )
    mask = F.lit(True)
    for index, (name, kind) in enumerate(fields):
        if kind == "string":
            mask = mask & _text_ok(F.col(name), required=index == 0)
    mask = F.coalesce(mask, F.lit(False))
    certain = raw.where(mask).select(
        *names, F.lit(None).cast("string").alias("reason"), F.lit(None).cast("string").alias("row"), "source_order"
    )
    check, ddl = _check_snapshot(table)
    checked = raw.where(~mask).mapInArrow(check, ddl)
    return certain.unionByName(checked).orderBy("source_order").drop("source_order")


def _bounds(spec: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(spec["start"]), datetime.fromisoformat(spec["end"])


def read_spec(spark, uri: str) -> dict:
    """The job spec, read through Spark's own file systems (``file:``, ``s3:``, ``gs:``)."""
    return json.loads(spark.read.text(uri, wholetext=True).first()[0])


def run(spark, spec: dict) -> None:
    output = spec["output"].rstrip("/")
    interactions(spark, spec).write.mode("overwrite").parquet(f"{output}/interactions")
    for table in ("users", "items"):
        snapshot(spark, spec, table).write.mode("overwrite").parquet(f"{output}/{table}")


def main(argv: list[str] | None = None) -> None:
    from pyspark.sql import SparkSession

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="URI of the job spec JSON")
    args, _ = parser.parse_known_args(argv)  # Glue adds its own --JOB_NAME etc.
    spark = SparkSession.builder.appName("recsys-extract").config("spark.sql.session.timeZone", "UTC").getOrCreate()
    try:
        run(spark, read_spec(spark, args.spec))
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
