"""
### recsys_personalize — retrain Amazon Personalize from the extracted data

Replaces the Step Functions workflow and its `Wait 600 s` loops: every wait is deferrable (the
triggerer polls; no worker slot is held while AWS works), failures carry Personalize's
`failureReason`, and job names derive from the run, so a retry reattaches instead of duplicating.

**Schedules** (UTC): Monday–Saturday 04:00 an incremental retrain (`UPDATE`) on the previous day;
Sunday 04:00 a full retrain (`FULL`) on the window. Also from the UI with the form below.

1. `plan` — the day (data interval, `end_day`, or the newest extracted day), modes and names.
   `dry_run` stops after it.
2. `upload` — the extraction's Personalize CSVs (+ batch-inference users) to
   `<personalize_s3_uri>/runs/<run>/`.
3. `import_dataset` — one import job per dataset (mapped), at most 5 in flight (pool
   `personalize_imports`, deferred tasks counted).
4. `training_mode` — `UPDATE` only when the solution's recipe supports it and an ACTIVE `FULL`
   version exists; otherwise `FULL` (the reason is logged and reported).
5. `solution_version` — trains; killing the task stops the training.
6. `compare_metrics` — `GetSolutionMetrics` against the previous ACTIVE version; a drop beyond
   `max_metric_drop` stops the run before anything is published (when `stop_on_regression`).
7. `batch_inference` (`run_batch_inference`) — recommendations for the newest day's users (with the
   `personalize_filter_arn` filter, if set), output under the run's prefix; `deliver` — items the user
   already interacted with and items gone from the catalog dropped, top `deliver_top_k` kept, the
   `personalize` rows of the application's `recommendations` table replaced atomically.
8. `update_campaign` (`update_campaign`) — the campaign serves the new version; `smoke_test` —
   GetRecommendations for the `smoke_test_users` most active users and an unknown one must return
   catalog items, else `rollback_campaign` puts the previous version back and `rolled_back` fails
   the run with the reason.
9. `report` — always: `<storage_root>/personalize/runs/<run>/report.json`.

AWS resources (dataset ARNs, solution, campaign, filter, role, bucket) come from the Variables
`recsys_personalize_setup` records (or `RECSYS_PERSONALIZE_*`) and the `aws_default` connection.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import MultipleCronTriggerTimetable, Param, dag, get_current_context, task

from recsys.alerts import task_defaults  # notifiers built from settings at parse time
from recsys.config import PERSONALIZE_IMPORT_POOL, load_dag_settings, load_settings  # stdlib only: cheap at parse time
from recsys.steps.personalize import PersonalizePlan
from recsys.steps.xcom import pulled

DATASETS = ["interactions", "users", "items"]
INCREMENTAL_CRON, FULL_CRON = "0 4 * * 1-6", "0 4 * * 0"

PARAMS = {
    "training_mode": Param(
        "auto",
        enum=["auto", "FULL", "UPDATE"],
        title="Training mode",
        description="auto = FULL on Sundays, UPDATE otherwise (FULL when UPDATE is impossible).",
    ),
    "import_mode": Param(
        "auto",
        enum=["auto", "FULL", "INCREMENTAL"],
        title="Interactions import mode",
        description="auto = FULL (whole window) for FULL training, INCREMENTAL (the day) for UPDATE.",
    ),
    "datasets": Param(
        DATASETS,
        type="array",
        items={"type": "string", "enum": DATASETS},
        uniqueItems=True,
        title="Datasets to import",
        description="Empty = retrain on what Personalize already has.",
    ),
    "end_day": Param(
        None,
        type=["null", "string"],
        format="date",
        title="Day to import",
        description="YYYY-MM-DD; empty = the run's data interval, or the newest extracted day.",
    ),
    "window_days": Param(
        30,
        type="integer",
        minimum=1,
        maximum=365,
        title="FULL import window (days)",
        description="Days of interactions a FULL import sends (ending at the day to import).",
    ),
    "run_batch_inference": Param(
        True,
        type="boolean",
        title="Run batch inference",
        description="After training: recommendations for the active users, delivered to the application table.",
    ),
    "update_campaign": Param(
        True,
        type="boolean",
        title="Update the campaign",
        description="Point the campaign at the new solution version (skipped when the metrics regressed).",
    ),
    "stop_on_regression": Param(
        True,
        type="boolean",
        title="Stop on a metric regression",
        description="Fail before the campaign update when the new version is worse than the allowed drop.",
    ),
    "max_metric_drop": Param(
        0.05,
        type="number",
        minimum=0,
        maximum=1,
        title="Allowed relative drop of normalized_discounted_cumulative_gain_at_10",
        description="Relative drop vs the live version that still counts as no regression (0.05 = 5%).",
    ),
    "deliver_top_k": Param(
        25,
        type="integer",
        minimum=0,
        maximum=500,
        title="Recommendations per user published to the application table (0 = none)",
        description="Rows per user written to the recommendations table from the batch output.",
    ),
    "smoke_test_users": Param(
        5,
        type="integer",
        minimum=0,
        maximum=100,
        title="Known users asked after the campaign update (0 = no smoke test)",
        description="GetRecommendations for this many known users once the campaign serves the new version.",
    ),
    "dry_run": Param(
        False,
        type="boolean",
        title="Plan only: start no AWS job",
        description="Log the plan (imports, training mode, jobs) and change nothing.",
    ),
}


_plan = PersonalizePlan.from_xcom  # the plan task's XCom dict, as the typed plan
_SETTINGS = load_dag_settings()  # parse time: the environment only (retries, notifiers, deadlines)


def _settings():
    return load_settings(use_airflow_variables=True)


# The Personalize jobs: every wait deferred to the triggerer, every value planned by ``plan``.
AWS = {"aws_conn_id": pulled("plan", "aws_conn_id"), "waiter_delay": pulled("plan", "poll_seconds"), "deferrable": True}


def _import_jobs(uploaded):
    """One dataset import job per uploaded dataset, at most 5 in flight (the pool counts deferred tasks)."""
    from personalize.operators import PersonalizeCreateDatasetImportJobOperator

    return PersonalizeCreateDatasetImportJobOperator.partial(
        task_id="import_dataset", role_arn=pulled("plan", "role_arn"), pool=PERSONALIZE_IMPORT_POOL[0], **AWS
    ).expand_kwargs(uploaded)


def _solution_version():
    from personalize.operators import PersonalizeCreateSolutionVersionOperator

    return PersonalizeCreateSolutionVersionOperator(
        task_id="solution_version",
        solution_arn=pulled("plan", "solution_arn"),
        name=pulled("plan", "names", "solution_version"),
        training_mode=pulled("training_mode", "mode"),
        **AWS,
    )


def _batch_inference(version_arn):
    from personalize.operators import PersonalizeCreateBatchInferenceJobOperator

    return PersonalizeCreateBatchInferenceJobOperator(
        task_id="batch_inference",
        job_name=pulled("plan", "names", "batch"),
        solution_version_arn=version_arn,
        input_path=pulled("upload", key="batch_input"),
        output_path=pulled("plan", "run_uri") + "/batch-output/",
        filter_arn=pulled("plan", "filter_arn"),
        role_arn=pulled("plan", "role_arn"),
        **AWS,
    )


def _campaign_update(task_id: str, version_arn):
    from personalize.operators import PersonalizeUpdateCampaignOperator

    return PersonalizeUpdateCampaignOperator(
        task_id=task_id, campaign_arn=pulled("plan", "campaign_arn"), solution_version_arn=version_arn, **AWS
    )


@dag(
    dag_id="recsys_personalize",
    schedule=MultipleCronTriggerTimetable(INCREMENTAL_CRON, FULL_CRON, timezone="UTC", interval=timedelta(days=1)),
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=task_defaults(_SETTINGS),
    tags=["recsys", "personalize", "aws"],
    params=PARAMS,
    doc_md=__doc__,
)
def recsys_personalize():
    @task(multiple_outputs=False)
    def plan() -> dict:
        from recsys.steps import personalize

        context = get_current_context()
        dag_run, start = context["dag_run"], context.get("data_interval_start")
        scheduled_day = start.date() if dag_run.run_type != "manual" and start is not None else None
        return personalize.plan(_settings(), context["params"], dag_run.run_id, scheduled_day, dag_run.run_after)

    @task.short_circuit
    def changes_allowed(planned: dict) -> bool:
        return not planned["dry_run"]

    @task(multiple_outputs=False)
    def upload(planned: dict) -> list[dict]:
        """Copy the files; return one import job per dataset (XCom ``batch_input``: the batch input path)."""
        from recsys.steps import personalize

        context = get_current_context()
        jobs, batch_input = personalize.upload(_settings(), _plan(planned), context["params"])
        context["ti"].xcom_push(key="batch_input", value=batch_input)
        return jobs

    @task(multiple_outputs=False, trigger_rule="none_failed")
    def training_mode(planned: dict) -> dict:
        """UPDATE needs a User-Personalization recipe and an ACTIVE FULL version; else FULL."""
        from recsys.steps import personalize

        return personalize.training_mode(_plan(planned))

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def compare_metrics(planned: dict, mode: dict, version_arn: str) -> bool:
        """Continue unless the new version is worse than the previous one beyond ``max_metric_drop``."""
        from recsys.steps import personalize

        return personalize.metrics_allow(_plan(planned), mode, version_arn, get_current_context()["params"])

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def batch_wanted() -> bool:
        context = get_current_context()
        batch_input = context["ti"].xcom_pull(task_ids="upload", key="batch_input")
        return bool(context["params"]["run_batch_inference"] and batch_input)

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def campaign_wanted(planned: dict) -> bool:
        return bool(get_current_context()["params"]["update_campaign"] and planned["campaign_arn"])

    @task(multiple_outputs=False)
    def deliver(planned: dict, version_arn: str) -> dict | None:
        """Post-process the batch output and replace the table's ``personalize`` rows."""
        from recsys.steps import personalize

        return personalize.deliver(_settings(), _plan(planned), version_arn, get_current_context()["params"])

    @task.branch
    def smoke_test(planned: dict) -> list[str]:
        """Ask the updated campaign; on failure go to ``rollback_campaign`` (the reason is in the XCom)."""
        from recsys.steps import personalize

        context = get_current_context()
        if not context["params"]["smoke_test_users"]:
            return []
        verdict = personalize.smoke_test(_settings(), _plan(planned), context["params"]["smoke_test_users"])
        context["ti"].xcom_push(key="verdict", value=verdict)
        print("smoke test:", "ok" if verdict["ok"] else verdict["problems"])
        return [] if verdict["ok"] else ["rollback_campaign"]

    @task
    def rolled_back() -> None:
        from airflow.sdk.exceptions import AirflowFailException

        verdict = get_current_context()["ti"].xcom_pull(task_ids="smoke_test", key="verdict")
        raise AirflowFailException(f"the campaign failed its smoke test and was rolled back: {verdict['problems']}")

    @task(multiple_outputs=False)
    def report(planned: dict) -> dict:
        """What this run did, whatever happened: written to storage and returned."""
        from recsys.steps import personalize

        context = get_current_context()
        run, ti = context["dag_run"], context["ti"]
        outcome = {
            name: ti.xcom_pull(task_ids=task_id, key=key) for name, (task_id, key) in personalize.REPORTED.items()
        }
        outcome["task_states"] = ti.get_task_states(dag_id=run.dag_id, run_ids=[run.run_id]).get(run.run_id, {})
        max_drop = context["params"]["max_metric_drop"]
        return personalize.report(_settings(), _plan(planned), run.run_id, outcome, max_drop)

    planned = plan()
    uploaded = upload(planned)
    imports = _import_jobs(uploaded)
    mode = training_mode(planned)
    version = _solution_version()
    compared = compare_metrics(planned, mode, version.output)
    batch = _batch_inference(version.output)
    campaign = _campaign_update("update_campaign", version.output)
    rollback = _campaign_update("rollback_campaign", pulled("training_mode", "serving_version"))
    delivered = deliver(planned, version.output)

    changes_allowed(planned) >> uploaded
    imports >> mode >> version
    [compared, uploaded] >> batch_wanted() >> batch >> delivered
    compared >> campaign_wanted(planned) >> campaign >> smoke_test(planned) >> rollback >> rolled_back()
    # a teardown: it always runs, and the run still fails when a task failed (a plain all_done leaf would hide it)
    [delivered, rollback] >> report(planned).as_teardown()


recsys_personalize()
