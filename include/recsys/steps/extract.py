"""The steps of ``recsys_extract``: the day, the backend, staging a version (in the worker or through a Spark
job), and publishing it under the quality policy. Bad data or configuration fails the task without retries."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime

from recsys.config import Settings, deployed_spark_backends, load_settings

# extraction_backend -> the task that runs the Spark job on that engine
SPARK_TASKS = {"spark-local": "spark_local", "glue": "glue", "emr-serverless": "emr_serverless", "dataproc": "dataproc"}


def settings_for(params: dict) -> Settings:
    """Task-time settings with the run's Params (source connection, backend) over them."""
    overrides = {"source_conn_id": params["source_conn_id"], "extraction_backend": params["extraction_backend"]}
    return load_settings(overrides, use_airflow_variables=True)


def fail_fast(exc: Exception):
    """Bad data or bad configuration is not transient: fail the task without burning retries."""
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(f"{type(exc).__name__}: {exc}")


def plan(extract_date: str | None, interval_start, interval_end, run_after) -> dict:
    """The UTC day this run extracts: the Param, the data interval, or (no interval) the day before the run."""
    from recsys.data.extract import resolve_interval

    interval = resolve_interval(extract_date, interval_start, interval_end, run_after)
    return {"start": interval.start.isoformat(), "end": interval.end.isoformat()}


def route(settings: Settings) -> str:
    """``extract`` for the worker backends, ``prepare_spark`` for a Spark engine deployed here."""
    from recsys.data.extract import BACKENDS

    backend = settings.extract.backend
    if backend not in BACKENDS:
        raise fail_fast(ValueError(f"extraction_backend must be one of {', '.join(BACKENDS)}, got {backend!r}"))
    deployed = deployed_spark_backends()
    if backend in SPARK_TASKS and backend not in deployed:
        raise fail_fast(ValueError(f"{backend} is not deployed here: add it to RECSYS_SPARK_BACKENDS (now {deployed})"))
    return "prepare_spark" if backend in SPARK_TASKS else "extract"


@contextmanager
def _source(settings: Settings):
    """The source database's engine, disposed afterwards; an unusable source or backend fails fast."""
    from recsys.data.source import engine_for_conn_id

    try:
        engine = engine_for_conn_id(settings.connections.source)
    except ValueError as exc:  # unsupported connection type, missing path
        raise fail_fast(exc) from exc
    try:
        yield engine
    except ValueError as exc:  # a backend this source does not support
        raise fail_fast(exc) from exc
    finally:
        engine.dispose()


def _day(interval: dict):
    from recsys.data.validate import Interval

    return Interval(datetime.fromisoformat(interval["start"]), datetime.fromisoformat(interval["end"]))


def extract(settings: Settings, interval: dict, run: dict) -> dict:
    """Stream the day's rows from the source, validate, write an unpublished version."""
    from recsys.data.extract import stage_partition

    with _source(settings) as engine:
        return stage_partition(engine, _day(interval), settings, run=run)


def prepare_spark(settings: Settings, interval: dict) -> dict:
    """A new version folder, the job spec in it and (cloud engines) the job's code in the object store."""
    from recsys.data import spark_extract

    with _source(settings) as engine:
        return spark_extract.prepare(
            engine, _day(interval), settings, settings.extract.backend, settings.connections.source
        )


def collect_spark(planned: dict, run: dict) -> dict:
    """The Spark job's output into the partition's files (one streaming columnar pass)."""
    from recsys.data import spark_extract

    return spark_extract.assemble(planned, run)


def publish(settings: Settings, staged: dict, params: dict) -> dict:
    """Apply the quality policy and commit the partition atomically; the asset event's summary."""
    from recsys.data.extract import DataQualityError, QualityPolicy, publish_partition

    policy = QualityPolicy(
        max_bad_fraction=float(params["max_bad_fraction"]),
        anomaly_action=params["anomaly_action"],
        fail_on_empty=bool(params["fail_on_empty"]),
    )
    try:
        manifest = publish_partition(staged, settings, policy)
    except DataQualityError as exc:
        raise fail_fast(exc) from exc
    return {
        "partition": manifest["partition"],
        "status": manifest["status"],
        "rows": manifest["counts"]["valid"],
        "quarantined": manifest["counts"]["quarantined"],
        "version": manifest["version"],
        "warnings": manifest["warnings"],
        "manifest": f"{settings.storage.extract_root}/dt={manifest['partition']}/_manifest.json",
    }
