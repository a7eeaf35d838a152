"""Extraction throughput and peak memory: PostgreSQL -> partition format, vs plain COPY TO STDOUT.

For each size (default 1M and 5M interactions, all in one day) this seeds a scratch database on the
local PostgreSQL server, then measures in separate processes:

* baseline: ``COPY (SELECT ... same rows, same order ...) TO STDOUT`` through psycopg2 into a sink
  that only counts bytes: the floor for moving these rows out of PostgreSQL;
* recsys, for each backend (``arrow``: ADBC record batches + vectorised validation; ``rows``:
  SQLAlchemy rows + the row validator): ``stage_partition`` + ``publish_partition`` (read, validation,
  Parquet + CSV + JSONL + manifest, atomic commit) into a temporary ``file://`` root;
* ``spark-local``: ``prepare`` + the PySpark job (``spark-submit --master local[2]``, JVM start
  included) + ``assemble`` + ``publish_partition``; the worker's peak RSS and the Spark process tree's
  (``spark_peak_rss_mib``) apart. No target: it exists to scale out, not to win on 2 cores.

COPY and ``arrow`` take turns five times (``--repeats``) and each reports its median run (on a shared
2-core machine one run of either varies by about 30%); ``rows`` and ``spark-local`` run once. The
scratch database is vacuumed after seeding, so autovacuum does not run during the timed turns. Each run
records ``cpu_seconds``: the client process's CPU time (every thread) over the timed region.

Imports, the object-storage layer's one-time filesystem registry (about 0.8 s together) and Airflow's
hook-lineage collector (its first use, by the first write through ``ObjectStoragePath``, loads the plugins
and the providers' asset resources: about 0.2-0.4 s, once per process) happen before the clock starts in
every child, as psycopg2's import does for COPY. Prints a table and
writes ``bench/results/bench_extract.json``.

    .venv/bin/python bench/bench_extract.py [--sizes 1000000 5000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

from results_file import write_results

ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DAY = date(2026, 11, 10)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    """This process's CPU time so far, every thread, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def seed(db: str, rows: int) -> float:
    from sqlalchemy import create_engine, text

    from recsys.data import schema

    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{db}"'))
    admin.dispose()
    engine = create_engine(ADMIN.rsplit("/", 1)[0] + f"/{db}")
    schema.metadata.create_all(engine)
    started = time.perf_counter()
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO users (user_id, age, gender, occupation) "
                "SELECT 'u' || g, 18 + g % 60, 'F', 'other' FROM generate_series(0, 49999) g"
            )
        )
        c.execute(
            text(
                "INSERT INTO items (item_id, title, genres, release_year) SELECT "
                "'i' || g, 'Item ' || g, 'Drama|Comedy', 2000 FROM generate_series(0, 9999) g"
            )
        )
        c.execute(
            text(
                "INSERT INTO interactions (user_id, item_id, event_type, event_value, occurred_at) "
                "SELECT 'u' || (g * 7919 % 50000), 'i' || (g * 104729 % 10000), "
                "(ARRAY['view','click','purchase'])[1 + g % 3], 1.0, "
                "timestamp '2026-11-10' + (g::float8 / :n * 86399) * interval '1 second' "
                "FROM generate_series(0::bigint, :n - 1) g"
            ),
            {"n": rows},
        )
    engine.dispose()
    # a 1M-row insert wakes autovacuum, which would then vacuum the table during the first timed runs and
    # make them ~20% slower; vacuumed here, every run reads all-visible pages with their hint bits set
    admin = create_engine(ADMIN.rsplit("/", 1)[0] + f"/{db}", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text("VACUUM ANALYZE interactions, users, items"))
    admin.dispose()
    return time.perf_counter() - started


def drop(db: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
    admin.dispose()


class _CountingSink:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data) -> int:
        self.bytes += len(data)
        return len(data)


def child_baseline(db: str) -> dict:
    import psycopg2

    rss_start = _rss_mib()
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=db)
    sink = _CountingSink()
    started, cpu = time.perf_counter(), _cpu_seconds()
    with conn.cursor() as cur:
        cur.copy_expert(
            "COPY (SELECT user_id, item_id, event_type, event_value, occurred_at FROM interactions "
            "WHERE occurred_at >= '2026-11-10' AND occurred_at < '2026-11-11' ORDER BY occurred_at, id) "
            "TO STDOUT WITH (FORMAT csv)",
            sink,
        )
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    conn.close()
    return {
        "seconds": seconds,
        "cpu_seconds": round(cpu, 3),
        "bytes_out": sink.bytes,
        "rss_start_mib": rss_start,
        "peak_rss_mib": _rss_mib(),
    }


def child_recsys(db: str, backend: str) -> dict:
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.lineage import get_hook_lineage_collector
    from sqlalchemy import create_engine

    from recsys.config import load_settings
    from recsys.data.extract import QualityPolicy, publish_partition, stage_partition
    from recsys.data.validate import Interval

    ObjectStoragePath("file:///tmp").fs  # one-time filesystem registry of the object-storage layer  # noqa: B018
    get_hook_lineage_collector()  # made once per process, by the first write through ObjectStoragePath
    if backend == "arrow":
        import adbc_driver_postgresql.dbapi  # noqa: F401 - imported before the clock, as psycopg2 for COPY
    rss_start = _rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings({"storage_root": Path(tmp).as_uri(), "extraction_backend": backend})
        engine = create_engine(ADMIN.rsplit("/", 1)[0] + f"/{db}")
        started, cpu = time.perf_counter(), _cpu_seconds()
        staged = stage_partition(engine, Interval.for_day(DAY), settings)
        manifest = publish_partition(staged, settings, QualityPolicy())
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
        out_bytes = sum(f["bytes"] for f in manifest["files"].values())
    return {
        "seconds": seconds,
        "cpu_seconds": round(cpu, 3),
        "rows": manifest["counts"]["valid"],
        "bytes_out": out_bytes,
        "rss_start_mib": rss_start,
        "peak_rss_mib": _rss_mib(),
        "chunk_rows": settings.extract.chunk_rows,
    }


def child_spark(db: str) -> dict:
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.lineage import get_hook_lineage_collector
    from sqlalchemy import create_engine

    from recsys.config import load_settings
    from recsys.data import spark_extract
    from recsys.data.extract import QualityPolicy, publish_partition
    from recsys.data.validate import Interval

    ObjectStoragePath("file:///tmp").fs  # noqa: B018 - as in child_recsys
    get_hook_lineage_collector()
    rss_start = _rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings({"storage_root": Path(tmp).as_uri(), "extraction_backend": "spark-local"})
        engine = create_engine(ADMIN.rsplit("/", 1)[0] + f"/{db}")
        started, cpu = time.perf_counter(), _cpu_seconds()
        plan = spark_extract.prepare(engine, Interval.for_day(DAY), settings, "spark-local", "bench")
        job_started = time.perf_counter()
        spark_extract.run_local(plan)
        job_seconds = time.perf_counter() - job_started
        manifest = publish_partition(spark_extract.assemble(plan, {}), settings, QualityPolicy())
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    spark = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "seconds": seconds,
        "cpu_seconds": round(cpu, 3),
        "spark_cpu_seconds": round(spark.ru_utime + spark.ru_stime, 3),
        "job_seconds": job_seconds,
        "rows": manifest["counts"]["valid"],
        "bytes_out": sum(f["bytes"] for f in manifest["files"].values()),
        "rss_start_mib": rss_start,
        "peak_rss_mib": _rss_mib(),
        "spark_peak_rss_mib": spark.ru_maxrss / 1024,
    }


def run_child(kind: str, db: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--db", db], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict]) -> dict:
    """The run with the median time, and every run's seconds and CPU seconds."""
    chosen = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]
    each = {f"{key}_each": [round(run[key], 3) for run in runs] for key in ("seconds", "cpu_seconds")}
    return {**chosen, **each}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--child", choices=["baseline", "arrow", "rows", "spark-local"])
    parser.add_argument("--db")
    parser.add_argument("--repeats", type=int, default=5, help="COPY and arrow runs per size (the median counts)")
    args = parser.parse_args()
    if args.child:
        children = {"baseline": child_baseline, "spark-local": child_spark}
        child = children.get(args.child, lambda db: child_recsys(db, args.child))
        print(json.dumps(child(args.db)))
        return 0

    runs = []
    for rows in args.sizes:
        db = f"recsys_bench_{uuid.uuid4().hex[:8]}"
        try:
            seed_s = seed(db, rows)
            # COPY and arrow take turns, ``repeats`` times each, and each reports its median run: on a shared
            # 2-core machine a single run of either varies by +-30%
            turns = [(run_child("baseline", db), run_child("arrow", db)) for _ in range(args.repeats)]
            baseline, arrow = (median_run([turn[side] for turn in turns]) for side in (0, 1))
            backends = {"arrow": arrow, **{b: run_child(b, db) for b in ("rows", "spark-local")}}
        finally:
            drop(db)
        run = {
            "rows": rows,
            "seed_seconds": round(seed_s, 2),
            "baseline_copy": {**baseline, "rows_per_s": round(rows / baseline["seconds"])},
        }
        copy_speed = rows / baseline["seconds"]
        line = f"{rows:>9,} rows  COPY: {copy_speed:>10,.0f} rows/s  peak {baseline['peak_rss_mib']:.0f} MiB"
        for backend, ours in backends.items():
            assert ours["rows"] == rows, ours
            speed = round(baseline["seconds"] / ours["seconds"], 3)
            run[f"recsys_{backend.replace('-', '_')}"] = {
                **ours,
                "rows_per_s": round(rows / ours["seconds"]),
                "vs_copy_rows_per_s": speed,
            }
            line += f" | {backend}: {rows / ours['seconds']:>9,.0f} rows/s ({speed:.2f}x COPY)"
            line += f" peak {ours['peak_rss_mib']:.0f} MiB, CPU {ours['cpu_seconds']:.2f} s"
        runs.append(run)
        print(line, flush=True)
    write_results("bench_extract", {"source": "PostgreSQL on 127.0.0.1:5432, one day of interactions", "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
