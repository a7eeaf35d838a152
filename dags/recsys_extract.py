"""
### recsys_extract — nightly extraction of interactions, users and items

Every night at 00:00 UTC this DAG extracts the **previous UTC day** (a one-day data interval) from
the source database connection (`recsys_source` by default: SQLite, PostgreSQL or MySQL/MariaDB),
validates the rows and publishes one partition under `<storage_root>/extract/dt=YYYY-MM-DD/`:

| file | for |
|---|---|
| `interactions.parquet`, `users.parquet`, `items.parquet` | model training |
| `personalize/interactions.csv`, `users.csv`, `items.csv` | Amazon Personalize imports |
| `batch_inference/users.jsonl` (`{"userId": ...}`) | Personalize batch inference |
| `quarantine.csv` | rows that failed validation, with the reason |
| `_manifest.json` | the commit: counts, checksums, validation report, status (`ok` / `empty`) |

The Personalize interactions CSV has the header `USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE` (epoch seconds).

**Backends** (`extraction_backend`): `arrow` reads PostgreSQL as Arrow record batches (ADBC, binary
COPY) and validates them vectorised — same rules, reasons and files as `rows` (SQLAlchemy rows, every
source; Parquet row groups differ); `auto` (default) picks `arrow` for PostgreSQL. The Spark backends
run the same extraction as a PySpark job (JDBC read split by hour, validation as DataFrame expressions)
for PostgreSQL and MySQL/MariaDB sources: `spark-local` (`SparkSubmitOperator`, connection
`spark_local`, e.g. master `local[2]`), `glue` (`GlueJobOperator`), `emr-serverless`
(`EmrServerlessStartJobOperator`), `dataproc` (`DataprocCreateBatchOperator`), the cloud ones deferrable.

**Tasks**: `plan` (which day) → `route` (the backend) → either `extract` (stream + validate into an
unpublished version, in the worker) or `prepare_spark` (version folder, job spec, code upload) →
`engine` → the engine's task → `collect_spark` (the job's output into the partition's files) → `publish` (quality
policy, atomic commit, `recsys_extract_partitions` asset event).

**Re-running a day replaces its partition exactly**, so backfills after an outage are safe:
`airflow backfill create --dag-id recsys_extract --from-date 2026-11-01 --to-date 2026-11-05
--reprocess-behavior completed`.

**Manual trigger**: set `extract_date` to re-extract one day; leave it empty to use the run's data
interval (or, without a logical date, yesterday). An empty day is published with status `empty`
(a data outage) so training never consumes it silently.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from recsys.alerts import deadline_alert, task_defaults  # notifiers built from settings at parse time
from recsys.assets import EXTRACT_PARTITIONS
from recsys.config import deployed_spark_backends, load_dag_settings  # stdlib only: cheap at parse time
from recsys.steps.extract import SPARK_TASKS
from recsys.steps.xcom import pulled

PARAMS = {
    "source_conn_id": Param(
        None,
        type=["null", "string"],
        pattern=r"^[A-Za-z0-9_.\-]{1,250}$",
        title="Source connection id",
        description="Airflow connection of the source database; empty = the configured one (recsys_source).",
    ),
    "extract_date": Param(
        None,
        type=["null", "string"],
        format="date",
        title="Day to (re-)extract",
        description="YYYY-MM-DD (UTC). Empty = the run's data interval, or yesterday for a run without one.",
    ),
    "max_bad_fraction": Param(
        0.01,
        type="number",
        minimum=0,
        maximum=1,
        title="Maximum fraction of invalid rows",
        description="Above this, nothing is published and the task fails (rows stay in quarantine.csv).",
    ),
    "anomaly_action": Param(
        "warn",
        enum=["warn", "fail"],
        title="On a row-count anomaly",
        description="Row count outside 0.5x-2x of the median of the previous 7 partitions.",
    ),
    "fail_on_empty": Param(
        False,
        type="boolean",
        title="Fail when the day has no interactions",
        description="Fail the run when the day has no interactions (an outage) instead of committing it empty.",
    ),
    "extraction_backend": Param(
        None,
        type=["null", "string"],
        enum=[None, "auto", "arrow", "rows", "spark-local", "glue", "emr-serverless", "dataproc"],
        title="Extraction backend",
        description="arrow = Arrow record batches over ADBC, vectorised validation (PostgreSQL sources); "
        "rows = SQLAlchemy rows (every source); auto = arrow where it applies; spark-local / glue / "
        "emr-serverless / dataproc = the PySpark job (PostgreSQL, MySQL/MariaDB). Empty = the setting.",
    ),
}


def _submitted(*fields: str) -> dict:
    """Cloud operator arguments, templated from the request ``prepare_spark`` planned for its engine."""
    return {field: pulled("prepare_spark", "submit", field) for field in fields}


def _engine_task(backend: str):
    """The task that runs the Spark job on ``backend`` (its provider imported only when deployed)."""
    if backend == "spark-local":
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

        password = "{{ conn.get(ti.xcom_pull(task_ids='prepare_spark')['source_conn_id']).password or '' }}"
        return SparkSubmitOperator(
            task_id="spark_local",
            conn_id="spark_local",
            application=pulled("prepare_spark", "script"),
            jars=pulled("prepare_spark", "jars"),
            conf=pulled("prepare_spark", "local_conf"),
            name="recsys-extract",
            application_args=["--spec", pulled("prepare_spark", "spec_uri")],
            env_vars={"RECSYS_SOURCE_PASSWORD": password},
            execution_timeout=timedelta(hours=2),
        )
    waits = {  # environment only at parse time: how often and how long the triggerer waits
        "waiter_delay": _SETTINGS.spark_poll_seconds,
        "waiter_max_attempts": max(1, _SETTINGS.spark_timeout_seconds // _SETTINGS.spark_poll_seconds),
    }
    if backend == "glue":
        from airflow.providers.amazon.aws.operators.glue import GlueJobOperator

        fields = ("job_name", "script_location", "iam_role_arn", "script_args", "create_job_kwargs", "aws_conn_id")
        return GlueJobOperator(task_id="glue", deferrable=True, update_config=True, **waits, **_submitted(*fields))
    if backend == "emr-serverless":
        from airflow.providers.amazon.aws.operators.emr import EmrServerlessStartJobOperator

        fields = ("application_id", "execution_role_arn", "name", "job_driver", "config", "aws_conn_id")
        return EmrServerlessStartJobOperator(task_id="emr_serverless", deferrable=True, **waits, **_submitted(*fields))
    from airflow.providers.google.cloud.operators.dataproc import DataprocCreateBatchOperator

    fields = ("project_id", "region", "batch_id", "batch", "gcp_conn_id")
    return DataprocCreateBatchOperator(
        task_id="dataproc",
        deferrable=True,
        polling_interval_seconds=_SETTINGS.spark_poll_seconds,
        **_submitted(*fields),
    )


def _settings():
    from recsys.steps.extract import settings_for

    return settings_for(get_current_context()["params"])


def _run_record(settings) -> dict:
    context = get_current_context()
    return {
        "dag_id": context["dag"].dag_id,
        "run_id": context["run_id"],
        "try_number": context["ti"].try_number,
        "source_conn_id": settings.connections.source,
    }


_SETTINGS = load_dag_settings()  # parse time: the environment only (retries, notifiers, deadlines)


@dag(
    dag_id="recsys_extract",
    deadline=deadline_alert(_SETTINGS, "recsys_extract", _SETTINGS.extract_deadline_hours),
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime.fromisoformat(_SETTINGS.extract_start_date).replace(tzinfo=UTC),
    catchup=True,
    max_active_runs=3,
    default_args=task_defaults(_SETTINGS),
    tags=["recsys", "extract"],
    params=PARAMS,
    doc_md=__doc__,
    render_template_as_native_obj=True,  # the Spark tasks take the plan's dicts and lists as they are
)
def recsys_extract():
    @task(multiple_outputs=False)
    def plan() -> dict:
        """Decide which UTC day this run extracts."""
        from recsys.steps import extract

        context = get_current_context()
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        run_after = getattr(context["dag_run"], "run_after", None)
        return extract.plan(context["params"]["extract_date"], start, end, run_after)

    @task.branch
    def route() -> str:
        """The worker backends run in ``extract``; a Spark backend in ``prepare_spark`` + its engine's task."""
        from recsys.steps import extract

        return extract.route(_settings())

    @task(multiple_outputs=False, execution_timeout=timedelta(hours=2))
    def extract(interval: dict) -> dict:
        """Stream the day's rows from the source, validate, write an unpublished version."""
        from recsys.steps import extract

        settings = _settings()
        return extract.extract(settings, interval, _run_record(settings))

    @task(multiple_outputs=False)
    def prepare_spark(interval: dict) -> dict:
        """A new version folder, the job spec in it and (cloud engines) the job's code in the object store."""
        from recsys.steps import extract

        return extract.prepare_spark(_settings(), interval)

    @task.branch
    def engine(plan: dict) -> str:
        """The task of the engine this run's plan is for (the other engines' tasks are skipped)."""
        return SPARK_TASKS[plan["backend"]]

    @task(multiple_outputs=False, trigger_rule="none_failed_min_one_success")
    def collect_spark(plan: dict) -> dict:
        """The Spark job's output into the partition's files (one streaming columnar pass)."""
        from recsys.steps import extract

        return extract.collect_spark(plan, _run_record(_settings()))

    @task(multiple_outputs=False, outlets=[EXTRACT_PARTITIONS], trigger_rule="none_failed_min_one_success")
    def publish() -> dict:
        """Apply the quality policy and commit the partition atomically; emit the asset event."""
        from recsys.steps import extract

        context = get_current_context()
        staged = next(s for s in context["ti"].xcom_pull(task_ids=["extract", "collect_spark"]) if s)
        summary = extract.publish(_settings(), staged, context["params"])
        context["outlet_events"][EXTRACT_PARTITIONS].extra = summary
        return summary

    interval = plan()
    routed = route()
    interval >> routed
    staged = extract(interval)
    prepared = prepare_spark(interval)
    engines = [_engine_task(backend) for backend in deployed_spark_backends()]
    routed >> [staged, prepared]
    engine(prepared) >> engines
    collected = collect_spark(prepared)
    engines >> collected
    [staged, collected] >> publish()


recsys_extract()
