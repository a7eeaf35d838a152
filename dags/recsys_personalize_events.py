"""
### recsys_personalize_events — keep Personalize and the lake in step between FULL imports

Runs after every extraction (asset `recsys_extract_partitions`; the days are those the triggering
extractions published) and from the UI (`day`).

1. `put_records` — the users and items new or changed since the previous partition go to
   Personalize with PutUsers / PutItems (10 per call; throttling and 5xx retried by botocore);
   what was sent is recorded per day (`<storage_root>/personalize/puts/dt=<day>/`), so a re-run
   sends nothing twice.
2. `export_events` — a dataset export job (`ingestionMode=PUT`) of the interactions the application
   sent through the event tracker (PutEvents), waited on in the triggerer.
3. `merge_events` — the day's exported events are merged into that day's partition: deduplicated
   against the source database's rows, provenance kept (`origin` column, `merged_events` in the
   manifest), so `recsys_two_tower` learns from the events Personalize saw. Merging again adds nothing.

Settings (Variables from `recsys_personalize_setup`): `personalize_users_dataset_arn`,
`personalize_items_dataset_arn`, `personalize_interactions_dataset_arn`, `personalize_s3_uri`,
`personalize_role_arn`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Param, dag, get_current_context, task

from recsys.alerts import task_defaults  # notifiers built from settings at parse time
from recsys.assets import EXTRACT_PARTITIONS
from recsys.config import load_dag_settings, load_settings
from recsys.steps.xcom import pulled

PARAMS = {
    "day": Param(
        None,
        type=["null", "string"],
        format="date",
        title="Day",
        description="YYYY-MM-DD; empty = the days the triggering extractions published, or the newest one.",
    ),
    "put_records": Param(
        True,
        type="boolean",
        title="PutUsers / PutItems of what changed",
        description="Send the day's new or changed users and items with PutUsers / PutItems.",
    ),
    "merge_events": Param(
        True,
        type="boolean",
        title="Export the PUT events and merge them into the lake",
        description="Export the event tracker's interactions and merge them into the lake.",
    ),
}


_SETTINGS = load_dag_settings()  # parse time: the environment only (retries, notifiers, deadlines)


@dag(
    dag_id="recsys_personalize_events",
    schedule=[EXTRACT_PARTITIONS],
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=task_defaults(_SETTINGS),
    tags=["recsys", "personalize", "aws"],
    params=PARAMS,
    doc_md=__doc__,
)
def recsys_personalize_events():
    @task(multiple_outputs=False)
    def plan() -> dict:
        from recsys.steps.personalize_events import plan_days

        context = get_current_context()
        settings = load_settings(use_airflow_variables=True)
        events = context.get("triggering_asset_events") or {}
        extras = [e.extra for group in events.values() for e in group]
        return plan_days(settings, context["params"]["day"], extras, context["dag_run"].run_id)

    @task(multiple_outputs=False)
    def put_records(planned: dict) -> list[dict]:
        from recsys.steps.personalize_events import put_changed

        if not get_current_context()["params"]["put_records"]:
            return []
        return put_changed(load_settings(use_airflow_variables=True), planned)

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def merge_wanted(planned: dict) -> bool:
        return bool(get_current_context()["params"]["merge_events"] and planned["export"])

    @task(multiple_outputs=False)
    def merge_events(planned: dict, export_job: str) -> list[dict]:
        from recsys.steps.personalize_events import merge_exported

        return merge_exported(load_settings(use_airflow_variables=True), planned, export_job)

    from personalize.operators import PersonalizeCreateDatasetExportJobOperator

    planned = plan()
    export = PersonalizeCreateDatasetExportJobOperator(
        task_id="export_events",
        job_name=pulled("plan", "export", "job_name"),
        dataset_arn=pulled("plan", "export", "dataset_arn"),
        output_path=pulled("plan", "export", "output_path"),
        role_arn=pulled("plan", "export", "role_arn"),
        ingestion_mode="PUT",
        deferrable=True,
        aws_conn_id=pulled("plan", "aws_conn_id"),
        waiter_delay=pulled("plan", "poll_seconds"),
    )
    put_records(planned)
    merge_wanted(planned) >> export
    merge_events(planned, export.output)


recsys_personalize_events()
