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
source; Parquet row groups differ); `auto` (default) picks `arrow` for PostgreSQL.

**Tasks**: `plan` (which day) → `extract` (stream + validate into an unpublished version) →
`publish` (quality policy, atomic commit, `recsys_extract_partitions` asset event).

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

from recsys.assets import EXTRACT_PARTITIONS

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
    "fail_on_empty": Param(False, type="boolean", title="Fail when the day has no interactions"),
    "extraction_backend": Param(
        None,
        type=["null", "string"],
        enum=[None, "auto", "arrow", "rows"],
        title="Extraction backend",
        description="arrow = Arrow record batches over ADBC, vectorised validation (PostgreSQL sources); "
        "rows = SQLAlchemy rows (every source); auto = arrow where it applies. Empty = the setting.",
    ),
}


def _fail_fast(exc: Exception):
    """Bad data or bad configuration is not transient: fail the task without burning retries."""
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(f"{type(exc).__name__}: {exc}")


def _settings():
    from recsys.config import load_settings

    params = get_current_context()["params"]
    overrides = {"source_conn_id": params["source_conn_id"], "extraction_backend": params["extraction_backend"]}
    return load_settings(overrides, use_airflow_variables=True)


@dag(
    dag_id="recsys_extract",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=True,
    max_active_runs=3,
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["recsys", "extract"],
    params=PARAMS,
    doc_md=__doc__,
)
def recsys_extract():
    @task(multiple_outputs=False)
    def plan() -> dict:
        """Decide which UTC day this run extracts."""
        from recsys.data.extract import resolve_interval

        context = get_current_context()
        dag_run = context["dag_run"]
        interval = resolve_interval(
            context["params"]["extract_date"],
            context.get("data_interval_start"),
            context.get("data_interval_end"),
            getattr(dag_run, "run_after", None),
        )
        return {"start": interval.start.isoformat(), "end": interval.end.isoformat()}

    @task(multiple_outputs=False, execution_timeout=timedelta(hours=2))
    def extract(interval: dict) -> dict:
        """Stream the day's rows from the source, validate, write an unpublished version."""
        from recsys.data.extract import stage_partition
        from recsys.data.source import engine_for_conn_id
        from recsys.data.validate import Interval

        settings = _settings()
        context = get_current_context()
        try:
            engine = engine_for_conn_id(settings.source_conn_id)
        except ValueError as exc:  # unsupported connection type, missing path
            raise _fail_fast(exc) from exc
        try:
            staged = stage_partition(
                engine,
                Interval(datetime.fromisoformat(interval["start"]), datetime.fromisoformat(interval["end"])),
                settings,
                run={
                    "dag_id": context["dag"].dag_id,
                    "run_id": context["run_id"],
                    "try_number": context["ti"].try_number,
                    "source_conn_id": settings.source_conn_id,
                },
            )
        except ValueError as exc:  # a backend this source does not support
            raise _fail_fast(exc) from exc
        finally:
            engine.dispose()
        return staged

    @task(multiple_outputs=False, outlets=[EXTRACT_PARTITIONS])
    def publish(staged: dict) -> dict:
        """Apply the quality policy and commit the partition atomically; emit the asset event."""
        from recsys.data.extract import DataQualityError, QualityPolicy, publish_partition

        context = get_current_context()
        params = context["params"]
        policy = QualityPolicy(
            max_bad_fraction=float(params["max_bad_fraction"]),
            anomaly_action=params["anomaly_action"],
            fail_on_empty=bool(params["fail_on_empty"]),
        )
        settings = _settings()
        try:
            manifest = publish_partition(staged, settings, policy)
        except DataQualityError as exc:
            raise _fail_fast(exc) from exc
        summary = {
            "partition": manifest["partition"],
            "status": manifest["status"],
            "rows": manifest["counts"]["valid"],
            "quarantined": manifest["counts"]["quarantined"],
            "version": manifest["version"],
            "warnings": manifest["warnings"],
            "manifest": f"{settings.extract_root}/dt={manifest['partition']}/_manifest.json",
        }
        context["outlet_events"][EXTRACT_PARTITIONS].extra = summary
        return summary

    publish(extract(plan()))


recsys_extract()
