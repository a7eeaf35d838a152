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
from recsys.config import PERSONALIZE_IMPORT_POOL, load_settings  # stdlib only: cheap at parse time

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


_SETTINGS = load_settings()  # the environment only: retries, notifiers, deadlines


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
        from datetime import date

        from airflow.sdk.exceptions import AirflowFailException
        from personalize.names import run_name

        from recsys.data.partitions import PartitionStore

        context = get_current_context()
        params, settings, dag_run = context["params"], load_settings(use_airflow_variables=True), context["dag_run"]
        arns = settings.personalize_dataset_arns()
        missing = [f"personalize_{d}_dataset_arn" for d in params["datasets"] if not arns[d]]
        missing += [k for k in ("personalize_s3_uri", "personalize_role_arn", "personalize_solution_arn")
                    if not getattr(settings, k)]  # fmt: skip
        if missing or not settings.personalize_s3_uri.startswith("s3://"):
            raise AirflowFailException(f"set these settings (RECSYS_<NAME> or Variable recsys_<name>): {missing} "
                                       "(personalize_s3_uri must be s3://bucket/prefix)")  # fmt: skip
        interval_start = context.get("data_interval_start")
        if params["end_day"]:
            end_day = date.fromisoformat(params["end_day"])
        elif dag_run.run_type != "manual" and interval_start is not None:
            end_day = interval_start.date()
        else:
            days = PartitionStore(settings.extract_root).committed_days()
            if not days:
                raise AirflowFailException(f"no extracted partitions under {settings.extract_root} yet")
            end_day = days[-1]
        run_after = dag_run.run_after or datetime.now(UTC)
        mode = params["training_mode"]
        if mode == "auto":
            mode = "FULL" if run_after.weekday() == 6 else "UPDATE"
        import_mode = params["import_mode"]
        if import_mode == "auto":
            import_mode = "FULL" if mode == "FULL" else "INCREMENTAL"
        key = run_name("recsys", dag_run.run_id, end_day.isoformat())
        names = {
            "imports": {d: run_name("recsys", dag_run.run_id, end_day.isoformat(), d) for d in DATASETS},
            "solution_version": key,
            "batch": run_name("recsys", dag_run.run_id, end_day.isoformat(), "batch"),
        }
        run_uri = f"{settings.personalize_s3_uri.rstrip('/')}/runs/{key}"
        return {"names": names, "end_day": end_day.isoformat(), "requested_training_mode": mode,
                "import_mode": import_mode, "run_key": key, "run_uri": run_uri,
                "dataset_arns": arns, "role_arn": settings.personalize_role_arn,
                "solution_arn": settings.personalize_solution_arn, "campaign_arn": settings.personalize_campaign_arn,
                "filter_arn": settings.personalize_filter_arn,
                "aws_conn_id": settings.aws_conn_id, "poll_seconds": settings.personalize_poll_seconds,
                "dry_run": params["dry_run"]}  # fmt: skip

    @task.short_circuit
    def changes_allowed(planned: dict) -> bool:
        return not planned["dry_run"]

    @task(multiple_outputs=False)
    def upload(planned: dict) -> list[dict]:
        """Copy the files; return one import job per dataset (XCom ``batch_input``: the batch input path)."""
        from datetime import date

        from airflow.sdk.exceptions import AirflowFailException

        from recsys.data.personalize_files import NothingToImportError, stage_personalize_files

        context = get_current_context()
        params, settings = context["params"], load_settings(use_airflow_variables=True)
        try:
            staged = stage_personalize_files(settings.extract_root, date.fromisoformat(planned["end_day"]),
                                             params["window_days"], params["datasets"], planned["import_mode"],
                                             planned["run_uri"], planned["aws_conn_id"])  # fmt: skip
        except NothingToImportError as exc:
            raise AirflowFailException(str(exc)) from exc
        jobs = [{"job_name": planned["names"]["imports"][i["dataset"]],
                 "dataset_arn": planned["dataset_arns"][i["dataset"]],
                 "data_location": i["data_location"],
                 "import_mode": planned["import_mode"] if i["dataset"] == "interactions" else "FULL"}
                for i in staged["imports"]]  # fmt: skip
        for warning in staged["warnings"]:
            print("WARNING", warning)
        context["ti"].xcom_push(key="batch_input", value=staged["batch_input"])
        return jobs

    @task(multiple_outputs=False, trigger_rule="none_failed")
    def training_mode(planned: dict) -> dict:
        """UPDATE needs a User-Personalization recipe and an ACTIVE FULL version; else FULL."""
        from personalize.hooks import PersonalizeHook

        hook = PersonalizeHook(aws_conn_id=planned["aws_conn_id"])
        solution, mode = planned["solution_arn"], planned["requested_training_mode"]
        reason = "requested"
        if mode == "UPDATE" and not hook.supports_update(solution):
            mode, reason = "FULL", "the solution's recipe does not support UPDATE"
        elif mode == "UPDATE" and not hook.latest_active_version(solution, "FULL"):
            mode, reason = "FULL", "no ACTIVE FULL solution version yet"
        previous = hook.latest_active_version(solution)
        serving = None
        if planned["campaign_arn"]:
            serving = hook.conn.describe_campaign(campaignArn=planned["campaign_arn"])["campaign"]["solutionVersionArn"]
        return {"mode": mode, "reason": reason, "previous_version": previous, "serving_version": serving}

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def compare_metrics(planned: dict, mode: dict, version_arn: str) -> bool:
        """Continue unless the new version is worse than the previous one beyond ``max_metric_drop``."""
        from personalize.hooks import PersonalizeHook
        from personalize.metrics import metric_verdict

        params = get_current_context()["params"]
        verdict = metric_verdict(PersonalizeHook(aws_conn_id=planned["aws_conn_id"]), version_arn,
                                 mode["previous_version"], params["max_metric_drop"])  # fmt: skip
        print(verdict["summary"])
        return not (verdict["regressed"] and params["stop_on_regression"])

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
        from datetime import date

        from recsys.delivery.personalize import deliver

        params = get_current_context()["params"]
        if not params["deliver_top_k"]:
            return None
        settings = load_settings(use_airflow_variables=True)
        return deliver(planned["run_uri"] + "/batch-output/", planned["aws_conn_id"], settings.extract_root,
                       date.fromisoformat(planned["end_day"]), params["window_days"], settings.delivery_conn_id,
                       params["deliver_top_k"], version_arn)  # fmt: skip

    @task.branch
    def smoke_test(planned: dict) -> list[str]:
        """Ask the updated campaign; on failure go to ``rollback_campaign`` (the reason is in the XCom)."""
        from datetime import date

        from personalize.hooks import PersonalizeRuntimeHook

        from recsys.personalize.smoke import smoke_inputs, smoke_test

        context = get_current_context()
        wanted = context["params"]["smoke_test_users"]
        if not wanted:
            return []
        users, catalog = smoke_inputs(load_settings(use_airflow_variables=True).extract_root,
                                      date.fromisoformat(planned["end_day"]), wanted)  # fmt: skip
        verdict = smoke_test(PersonalizeRuntimeHook(aws_conn_id=planned["aws_conn_id"]), planned["campaign_arn"],
                             users, catalog)  # fmt: skip
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
        import json

        from personalize.hooks import PersonalizeHook
        from personalize.metrics import metric_verdict

        from recsys.storage import as_path, atomic_write_text

        context = get_current_context()
        run = context["dag_run"]
        states = context["ti"].get_task_states(dag_id=run.dag_id, run_ids=[run.run_id]).get(run.run_id, {})
        pull = context["ti"].xcom_pull
        version = pull(task_ids="solution_version")
        hook = PersonalizeHook(aws_conn_id=planned["aws_conn_id"])
        mode = pull(task_ids="training_mode") or {}
        body = {"run_id": context["dag_run"].run_id, "plan": planned, "task_states": states,
                "imports": list(pull(task_ids="import_dataset") or []), "training": mode, "solution_version": version,
                "metrics": None,
                "batch_output": (planned["run_uri"] + "/batch-output/") if pull(task_ids="batch_inference") else None,
                "campaign": pull(task_ids="update_campaign"),
                "smoke_test": pull(task_ids="smoke_test", key="verdict"),
                "rolled_back_to": pull(task_ids="rollback_campaign"), "delivery": pull(task_ids="deliver")}  # fmt: skip
        if version:
            try:
                body["metrics"] = metric_verdict(hook, version, mode.get("previous_version"),
                                                 context["params"]["max_metric_drop"])  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - the report must be written whatever AWS says
                body["metrics"] = {"error": str(exc)}
        path = as_path(load_settings(use_airflow_variables=True).storage_root) / "personalize" / "runs"
        atomic_write_text(path / planned["run_key"] / "report.json", json.dumps(body, indent=2, default=str))
        return body

    from personalize.operators import (
        PersonalizeCreateBatchInferenceJobOperator,
        PersonalizeCreateDatasetImportJobOperator,
        PersonalizeCreateSolutionVersionOperator,
        PersonalizeUpdateCampaignOperator,
    )

    def planned_value(key: str) -> str:
        return "{{ ti.xcom_pull(task_ids='plan')['" + key + "'] }}"

    aws = {"aws_conn_id": planned_value("aws_conn_id"), "waiter_delay": planned_value("poll_seconds")}
    planned = plan()
    uploaded = upload(planned)
    imports = PersonalizeCreateDatasetImportJobOperator.partial(
        task_id="import_dataset", role_arn=planned_value("role_arn"), pool=PERSONALIZE_IMPORT_POOL[0], **aws,
    ).expand_kwargs(uploaded)  # fmt: skip
    mode = training_mode(planned)
    version = PersonalizeCreateSolutionVersionOperator(
        task_id="solution_version", solution_arn=planned_value("solution_arn"),
        name="{{ ti.xcom_pull(task_ids='plan')['names']['solution_version'] }}",
        training_mode="{{ ti.xcom_pull(task_ids='training_mode')['mode'] }}", **aws)  # fmt: skip
    compared = compare_metrics(planned, mode, version.output)
    batch = PersonalizeCreateBatchInferenceJobOperator(
        task_id="batch_inference", job_name="{{ ti.xcom_pull(task_ids='plan')['names']['batch'] }}",
        solution_version_arn=version.output,
        input_path="{{ ti.xcom_pull(task_ids='upload', key='batch_input') }}",
        output_path=planned_value("run_uri") + "/batch-output/", filter_arn=planned_value("filter_arn"),
        role_arn=planned_value("role_arn"), **aws)  # fmt: skip
    campaign = PersonalizeUpdateCampaignOperator(
        task_id="update_campaign", campaign_arn=planned_value("campaign_arn"), solution_version_arn=version.output,
        **aws)  # fmt: skip

    changes_allowed(planned) >> uploaded
    imports >> mode >> version
    rollback = PersonalizeUpdateCampaignOperator(
        task_id="rollback_campaign", campaign_arn=planned_value("campaign_arn"),
        solution_version_arn="{{ ti.xcom_pull(task_ids='training_mode')['serving_version'] }}", **aws)  # fmt: skip
    delivered = deliver(planned, version.output)
    smoked = smoke_test(planned)

    [compared, uploaded] >> batch_wanted() >> batch >> delivered
    compared >> campaign_wanted(planned) >> campaign >> smoked >> rollback >> rolled_back()
    # a teardown: it always runs, and the run still fails when a task failed (a plain all_done leaf would hide it)
    [delivered, rollback] >> report(planned).as_teardown()


recsys_personalize()
