"""The backends give the same partition for the same day: the Arrow backend (ADBC) and the row backend on
PostgreSQL — identical Personalize CSV, batch users and quarantine bytes, identical Parquet rows and values,
the same counts and reasons — with every kind of bad row the row validator knows, and rows it cleans
(trimmed ids); the Spark backend (a real spark-submit in local mode) against Arrow on PostgreSQL and against
the row backend on MariaDB, compared by sorted content checksums of every file."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from datetime import date, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from recsys.config import load_settings
from recsys.data.arrow_extract import connect, interaction_batches
from recsys.data.extract import QualityPolicy, extraction_backend, publish_partition, stage_partition
from recsys.data.partitions import PartitionStore
from recsys.data.validate import Interval

DAY = date(2026, 11, 10)
START = datetime(2026, 11, 10)


@pytest.fixture
def postgres_source(tmp_path):
    from conftest import server_source

    yield from server_source("postgres", tmp_path)


@pytest.fixture(
    params=[pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mariadb", marks=pytest.mark.mariadb)]
)
def spark_source(request, tmp_path):
    from conftest import server_source

    yield from server_source(request.param, tmp_path)


def seed(insert, source, row):
    good = [
        row(
            f"u{n % 37}",
            f"i{n % 101}",
            START + timedelta(seconds=7 * n),
            ("view", "click", "purchase")[n % 3],
            None if n % 5 == 0 else n / 4,
        )
        for n in range(5000)
    ]
    odd = [
        row(None, "i1", START + timedelta(hours=1)),  # user_id is missing
        row("  ", "i1", START + timedelta(hours=1)),  # user_id is empty
        row("u1", "i1", START + timedelta(hours=2), "teleport"),  # unknown event_type
        row("u1", "i1", START + timedelta(hours=2), None),  # event_type is missing
        *(  # event_value is not finite (MariaDB stores no NaN/inf)
            [
                row("u1", "i1", START + timedelta(hours=3), "view", float("nan")),
                row("u1", "i1", START + timedelta(hours=3), "view", float("inf")),
            ]
            if source.kind == "postgres"
            else []
        ),
        row(" x9 ", "y9\t", START + timedelta(hours=4)),  # cleaned: trimmed ids
        row("u,comma", 'i"quote', START + timedelta(hours=5)),  # CSV quoting
        row("x\u3000", "y1", START + timedelta(hours=6)),  # trimmed by str.strip (ideographic space)
    ]
    users = [
        {"user_id": f"u{n}", "age": 20 + n % 50, "gender": "FM"[n % 2], "occupation": "writer"} for n in range(1500)
    ]
    users += [
        {"user_id": " v1 ", "age": None, "gender": "", "occupation": " poet "},  # trimmed; "" -> empty
        {"user_id": "  ", "age": 3, "gender": "F", "occupation": "x"},  # user_id is missing
        {"user_id": "v2", "age": 40, "gender": "  ", "occupation": "a, b"},  # stripped to ""; quoted in the CSV
    ]
    items = [
        {"item_id": f"i{n}", "title": f"Film {n}", "genres": "Drama|Comedy", "release_year": 1990 + n % 30}
        for n in range(800)
    ]
    items += [{"item_id": "j1", "title": 'The "Best", again', "genres": None, "release_year": None}]
    insert(source.engine, interactions=good + odd, users=users, items=items)


def extract(source, root: str, backend: str) -> dict:
    settings = load_settings({"storage_root": root, "extraction_backend": backend, "extract_chunk_rows": 700})
    staged = stage_partition(source.engine, Interval.for_day(DAY), settings)
    return publish_partition(staged, settings, QualityPolicy(max_bad_fraction=0.5))


@pytest.mark.postgres
def test_arrow_and_row_backends_write_the_same_partition(postgres_source, tmp_path, insert, row):
    seed(insert, postgres_source, row)
    assert extraction_backend(postgres_source.engine, "auto") == "arrow"
    manifests = {b: extract(postgres_source, (tmp_path / b).as_uri(), b) for b in ("rows", "arrow")}
    stores = {b: PartitionStore((tmp_path / b).as_uri() + "/extract") for b in manifests}
    rows, arrow = manifests["rows"], manifests["arrow"]
    assert arrow["run"]["extraction_backend"] == "arrow" and rows["run"]["extraction_backend"] == "rows"
    assert arrow["counts"] == rows["counts"] and arrow["counts"]["quarantined"] == 6
    assert arrow["quarantine_reasons"] == rows["quarantine_reasons"]
    files = (
        "personalize_interactions",
        "personalize_users",
        "personalize_items",
        "quarantine",
        "batch_inference_users",
    )
    for name in files:
        assert arrow["files"][name]["sha256"] == rows["files"][name]["sha256"], name
    for name in ("interactions", "users", "items"):  # rows, order and values; the row groups differ
        tables = {b: pq.read_table(stores[b].file_path(manifests[b], name).path) for b in manifests}
        assert tables["arrow"].schema == tables["rows"].schema, name
        assert tables["arrow"].to_pylist() == tables["rows"].to_pylist(), name
    assert arrow["quarantine_reasons"]["users"] == {"user_id is missing": 1}
    tables = {b: pq.read_table(stores[b].file_path(manifests[b], "interactions").path) for b in manifests}
    cleaned = [(r["user_id"], r["item_id"]) for r in tables["arrow"].to_pylist() if r["user_id"].startswith("x")]
    assert cleaned == [("x9", "y9"), ("x", "y1")]


def test_the_arrow_backend_refuses_other_sources(sqlite_source):
    with pytest.raises(ValueError, match="reads PostgreSQL sources"):
        extraction_backend(sqlite_source.engine, "arrow")
    assert extraction_backend(sqlite_source.engine, "auto") == "rows"


def sorted_content_checksum(path: str) -> str:
    """SHA-256 of a file's rows, sorted (Parquet: every row's values; CSV/JSON lines: the lines)."""
    if path.endswith(".parquet"):
        lines = [repr(sorted(r.items())) for r in pq.read_table(path).to_pylist()]
    else:
        lines = open(path, encoding="utf-8").read().splitlines()
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def run_spark_local(plan: dict, monkeypatch) -> None:
    """What the DAG's ``spark_local`` task does: spark-submit through the provider's hook, local mode."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    monkeypatch.setenv("AIRFLOW_CONN_SPARK_LOCAL", '{"conn_type": "spark", "host": "local[2]"}')
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    hook = SparkSubmitHook(
        conn_id="spark_local",
        conf=plan["local_conf"],
        jars=plan["jars"],
        name="recsys-extract-test",
        application_args=["--spec", plan["spec_uri"]],
    )
    hook.submit(plan["script"])


@pytest.mark.spark
def test_the_spark_backend_writes_the_same_partition(spark_source, tmp_path, insert, row, monkeypatch):
    from recsys.data import spark_extract

    seed(insert, spark_source, row)
    reference = "arrow" if spark_source.kind == "postgres" else "rows"
    expected = extract(spark_source, (tmp_path / reference).as_uri(), reference)
    settings = load_settings({"storage_root": (tmp_path / "spark").as_uri(), "extraction_backend": "spark-local"})
    plan = spark_extract.prepare(spark_source.engine, Interval.for_day(DAY), settings, "spark-local", "src")
    run_spark_local(plan, monkeypatch)
    staged = spark_extract.assemble(plan, {"run_id": "test"})
    spark = publish_partition(staged, settings, QualityPolicy(max_bad_fraction=0.5))

    assert spark["run"]["extraction_backend"] == "spark-local"
    assert spark["counts"] == expected["counts"]
    assert spark["quarantine_reasons"] == expected["quarantine_reasons"]
    assert spark["counts"]["quarantined"] == (6 if spark_source.kind == "postgres" else 4)
    stores = {b: PartitionStore((tmp_path / b).as_uri() + "/extract") for b in (reference, "spark")}
    for name in expected["files"]:
        paths = [stores[b].file_path(m, name).path for b, m in ((reference, expected), ("spark", spark))]
        assert sorted_content_checksum(paths[0]) == sorted_content_checksum(paths[1]), name
        assert spark["files"][name]["rows"] == expected["files"][name]["rows"], name
    for name in ("personalize_interactions", "quarantine", "batch_inference_users"):  # the same order, too
        assert spark["files"][name]["sha256"] == expected["files"][name]["sha256"], name
    version_dir = stores["spark"].partition_dir(DAY) / f"v={spark['version']}"
    assert not (version_dir / "_spark").exists()  # the job's staging output is gone after assembling


def test_the_spark_backends_refuse_sqlite(sqlite_source, tmp_path):
    from recsys.data import spark_extract

    settings = load_settings({"storage_root": tmp_path.as_uri()})
    with pytest.raises(ValueError, match="read PostgreSQL or MySQL/MariaDB"):
        spark_extract.prepare(sqlite_source.engine, Interval.for_day(DAY), settings, "spark-local", "src")


@pytest.mark.postgres
def test_leaving_the_interaction_batches_early_stops_the_read_ahead_before_the_connection_closes(
    postgres_source, insert, row
):
    seed(insert, postgres_source, row)
    with (
        connect(postgres_source.engine) as conn,
        interaction_batches(conn, Interval.for_day(DAY), batch_bytes=1 << 10) as batches,
    ):
        next(batches)  # the consumer stops early (e.g. a write failed); the reader thread has more to give
    assert not [t for t in threading.enumerate() if t.name == "adbc-read-ahead" and t.is_alive()]
