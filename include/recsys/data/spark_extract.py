"""The Spark backends of the extraction: what the submit operators run, and the partition they leave.

``prepare`` opens a new (unpublished) version folder, writes the job spec to ``<version>/_spark/spec.json``
and, for the cloud engines, puts the job's code where the engine reads it (``<code root>/``: the script,
a zip of the row validator for ``--py-files``, the JDBC driver jars). It returns everything the
``SparkSubmitOperator`` / ``GlueJobOperator`` / ``EmrServerlessStartJobOperator`` /
``DataprocCreateBatchOperator`` tasks are templated with. ``assemble`` reads the job's Parquet output in
order and writes the partition's files through the same writers as the other backends (the Arrow
backend's batch writer), then removes ``_spark``; ``publish_partition`` commits it as usual.

The job does the distributed part (JDBC reads split by hour, validation, the sort); assembling is one
streaming columnar pass over its output, Parquet to Parquet/CSV, with bounded memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
import zipfile
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.config import SPARK_BACKENDS, Settings
from recsys.data import spark_job, validate
from recsys.data import writers as w
from recsys.data.arrow_extract import DistinctIds, write_batch, write_snapshot_batch
from recsys.data.extract import StagedCounts, open_outputs, staged_record
from recsys.data.partitions import PartitionStore
from recsys.data.validate import Interval
from recsys.storage import as_path

PASSWORD_ENV = "RECSYS_SOURCE_PASSWORD"
_JDBC = {  # SQLAlchemy dialect -> (JDBC scheme, driver class, default port)
    "postgresql": ("jdbc:postgresql", "org.postgresql.Driver", 5432),
    # Spark picks its MySQL dialect (backquoted names) by the jdbc:mysql scheme, which Connector/J 2.x accepts.
    "mysql": ("jdbc:mysql", "org.mariadb.jdbc.Driver", 3306),
}


# spark-submit --conf for the local engine (the cloud engines set their own defaults).
LOCAL_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.driver.memory": "2g",  # local mode: the driver is the executor
}


CLOUD_CONF = {"spark.sql.session.timeZone": "UTC"}


def jdbc_source(engine) -> dict[str, str]:
    """JDBC URL, user and driver class of a PostgreSQL or MySQL/MariaDB source (no password)."""
    url = engine.url
    if url.get_backend_name() not in _JDBC:
        raise ValueError(
            f"the Spark backends read PostgreSQL or MySQL/MariaDB sources; this source is {url.drivername}"
        )
    scheme, driver, port = _JDBC[url.get_backend_name()]
    return {
        "jdbc_url": f"{scheme}://{url.host or 'localhost'}:{url.port or port}/{url.database or ''}",
        "user": url.username or "",
        "driver": driver,
        "password_env": PASSWORD_ENV,
    }


def _spark_uri(path) -> str:
    """A URI Spark's file systems read: ``file:///abs``, ``s3://bucket/...``, ``gs://bucket/...`` (the
    Airflow connection an ObjectStoragePath names, ``s3://conn_id@bucket``, is dropped)."""
    text = str(path)
    return re.sub(r"^(\w+://)[^@/]+@", r"\1", text) if "://" in text else Path(text).resolve().as_uri()


def _put(code_root, name: str, data: bytes) -> str:
    """Upload ``data`` under a content-addressed name (re-runs reuse it); return its URI."""
    digest = hashlib.sha256(data).hexdigest()[:12]
    stem, dot, ext = name.rpartition(".")
    target = code_root / f"{stem}-{digest}{dot}{ext}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return _spark_uri(target)


def validator_zip() -> bytes:
    """``recsys/data/validate.py`` as a package zip for ``--py-files`` (the executors import it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("recsys/__init__.py", "recsys/data/__init__.py"):
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), "")
        info = zipfile.ZipInfo("recsys/data/validate.py", date_time=(1980, 1, 1, 0, 0, 0))
        archive.writestr(info, Path(validate.__file__).read_bytes())
    return buffer.getvalue()


def prepare(engine, interval: Interval, settings: Settings, backend: str, source_conn_id: str) -> dict[str, Any]:
    """A new version folder and the job spec in it; for cloud engines, the code uploaded. Returns the plan."""
    if backend not in SPARK_BACKENDS:
        raise ValueError(f"not a Spark backend: {backend!r}")
    source = jdbc_source(engine)
    version, version_dir = PartitionStore(settings.storage.extract_root).new_version(interval.day)
    staging = version_dir / "_spark"
    spec = {
        **source,
        "start": interval.start.isoformat(),
        "end": interval.end.isoformat(),
        "known_event_types": list(settings.extract.known_event_types),
        "output": _spark_uri(staging / "out"),
    }
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "spec.json").write_text(json.dumps(spec, indent=1))
    jars = [j for j in settings.spark.jdbc_jars.split(",") if j]
    plan = {
        "backend": backend,
        "partition": interval.day.isoformat(),
        "interval": spec_interval(interval),
        "version": version,
        "version_dir": str(version_dir),
        "spec_uri": _spark_uri(staging / "spec.json"),
        "source_conn_id": source_conn_id,
        "script": spark_job.__file__,
        "py_files": "",
        "jars": ",".join(jars),
        "local_conf": {**LOCAL_CONF, "spark.pyspark.python": sys.executable},
    }
    if backend != "spark-local":
        code_root = as_path(settings.spark.code_uri or settings.storage.root.rstrip("/") + "/code/spark")
        plan["script"] = _put(code_root, "spark_job.py", Path(spark_job.__file__).read_bytes())
        plan["py_files"] = _put(code_root, "recsys_validate.zip", validator_zip())
        plan["jars"] = ",".join(_put(code_root, Path(j).name, Path(j).read_bytes()) for j in jars)
    plan["submit"] = cloud_requests(plan, settings)[backend] if backend != "spark-local" else {}
    return plan


def cloud_requests(plan: dict[str, Any], settings: Settings) -> dict[str, dict[str, Any]]:
    """What each cloud engine's operator is called with, for one prepared run (the job id is the version)."""
    args = ["--spec", plan["spec_uri"]]
    run_name = f"recsys-extract-{plan['version'].lower()}"
    conf = " ".join(f"--conf {k}={v}" for k, v in CLOUD_CONF.items())
    return {
        "glue": {
            "job_name": settings.spark.glue_job_name,
            "script_location": plan["script"],
            "iam_role_arn": settings.spark.glue_role_arn,
            "script_args": {
                "--spec": plan["spec_uri"],
                "--extra-py-files": plan["py_files"],
                "--extra-jars": plan["jars"],
                "--conf": " --conf ".join(f"{k}={v}" for k, v in CLOUD_CONF.items()),
            },
            "create_job_kwargs": {"GlueVersion": "5.0", "WorkerType": "G.1X", "NumberOfWorkers": 2},
            "aws_conn_id": settings.connections.aws,
        },
        "emr-serverless": {
            "application_id": settings.spark.emr_serverless_application_id,
            "execution_role_arn": settings.spark.emr_serverless_role_arn,
            "name": run_name,
            "job_driver": {
                "sparkSubmit": {
                    "entryPoint": plan["script"],
                    "entryPointArguments": args,
                    "sparkSubmitParameters": f"--py-files {plan['py_files']} --jars {plan['jars']} {conf}",
                }
            },
            # StartJobRun's idempotency token, fixed per prepared run: a retry of the task gets the same
            # job run back instead of starting a second one (the operator's own token is a new uuid
            # per parse; ``config`` is its documented pass-through to StartJobRun)
            "config": {"clientToken": run_name[:64]},
            "aws_conn_id": settings.connections.aws,
        },
        "dataproc": {
            "project_id": settings.spark.dataproc_project or settings.vertex.project,
            "region": settings.spark.dataproc_region or settings.vertex.region,
            "batch_id": run_name[:63],
            "batch": {
                "pyspark_batch": {
                    "main_python_file_uri": plan["script"],
                    "args": args,
                    "python_file_uris": [plan["py_files"]],
                    "jar_file_uris": plan["jars"].split(","),
                },
                "runtime_config": {"properties": dict(CLOUD_CONF)},
                **(
                    {
                        "environment_config": {
                            "execution_config": {"service_account": settings.spark.dataproc_service_account}
                        }
                    }
                    if settings.spark.dataproc_service_account
                    else {}
                ),
            },
            "gcp_conn_id": settings.connections.gcp,
        },
    }


def run_local(plan: dict[str, Any], master: str = "local[2]") -> None:
    """Run the job as the ``spark_local`` task does, without Airflow (benchmarks use it)."""
    import os
    import subprocess

    conf = [x for key, value in plan["local_conf"].items() for x in ("--conf", f"{key}={value}")]
    binary = Path(sys.executable).parent / "spark-submit"  # its launcher scripts are found on PATH
    command = [
        str(binary),
        "--master",
        master,
        *conf,
        "--jars",
        plan["jars"],
        plan["script"],
        "--spec",
        plan["spec_uri"],
    ]
    env = {**os.environ, "PATH": f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"spark-submit exited with {done.returncode}: {done.stderr[-3000:]}")


def spec_interval(interval: Interval) -> dict[str, str]:
    return {"start": interval.start.isoformat(), "end": interval.end.isoformat()}


def _parts(folder) -> list:
    """The Parquet part files Spark wrote, in partition order (the sort order of the job's output)."""
    if not (folder / "_SUCCESS").exists():
        raise FileNotFoundError(f"{folder}: the Spark job did not finish (no _SUCCESS); nothing was assembled")
    return sorted((p for p in folder.iterdir() if p.name.endswith(".parquet")), key=lambda p: p.name)


def _batches(folder):
    for part in _parts(folder):
        with part.open("rb") as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=65_536)


def _quarantined(batch: pa.RecordBatch, table: str) -> tuple[list[tuple], Counter]:
    bad = batch.filter(pc.is_valid(batch.column("reason")))
    rows = [(table, why, row) for why, row in zip(bad["reason"].to_pylist(), bad["row"].to_pylist(), strict=True)]
    return rows, Counter(why for _, why, _ in rows)


def _clean_interactions(batch: pa.RecordBatch) -> pa.Table:
    good = pa.Table.from_batches([batch]).filter(pc.is_null(batch.column("reason")))
    occurred = good["occurred_us"].cast(pa.timestamp("us", tz="UTC"))
    columns = [good[n] for n in w.INTERACTIONS_SCHEMA.names[:5]]
    return pa.table([*columns, occurred], schema=w.INTERACTIONS_SCHEMA)


def assemble(plan: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Write the partition's files from the job's output; return the staged record ``publish`` takes."""
    version_dir = as_path(plan["version_dir"])
    output = version_dir / "_spark" / "out"
    interval = Interval(*(datetime.fromisoformat(plan["interval"][k]) for k in ("start", "end")))
    read, reasons, active = 0, Counter(), DistinctIds()
    snapshot_reasons = {}
    with w.VersionWriter(version_dir, plan["version"]) as vw:
        out = open_outputs(vw)
        for batch in _batches(output / "interactions"):
            read += batch.num_rows
            quarantined, why = _quarantined(batch, "interactions")
            reasons.update(why)
            table = _clean_interactions(batch)
            write_batch(out, table, quarantined)
            active.add(table["user_id"])
        for name, schema in (("users", w.USERS_SCHEMA), ("items", w.ITEMS_SCHEMA)):
            snapshot_reasons[name] = Counter()
            for batch in _batches(output / name):
                quarantined, why = _quarantined(batch, name)
                snapshot_reasons[name].update(why)
                good = pa.Table.from_batches([batch]).filter(pc.is_null(batch.column("reason")))
                write_snapshot_batch(out, name, pa.table([good[n] for n in schema.names], schema=schema), quarantined)
        active = active.sorted()
        out["batch_inference_users"].write_user_ids(active)
    (version_dir / "_spark").rmdir(recursive=True)
    counts = StagedCounts(read, reasons, snapshot_reasons["users"], snapshot_reasons["items"], active)
    run = {**run, "extraction_backend": plan["backend"]}
    return staged_record(interval, plan["version"], version_dir, vw.entries(), counts, run)
