"""The steps of ``recsys_personalize``: the run's plan, the upload, the training mode, the metric check,
delivery, the campaign smoke test and the report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from recsys.config import Settings
from recsys.steps.xcom import XComRecord

DATASETS = ("interactions", "users", "items")
# what the report shows -> (task id, XCom key) of the task that produced it
REPORTED = {
    "imports": ("import_dataset", "return_value"),
    "training": ("training_mode", "return_value"),
    "solution_version": ("solution_version", "return_value"),
    "batch_output": ("batch_inference", "return_value"),
    "campaign": ("update_campaign", "return_value"),
    "smoke_test": ("smoke_test", "verdict"),
    "rolled_back_to": ("rollback_campaign", "return_value"),
    "delivery": ("deliver", "return_value"),
}


@dataclass(frozen=True)
class PersonalizePlan(XComRecord):
    """What a run imports, trains and names; the operators read these keys from the ``plan`` XCom."""

    end_day: str
    run_key: str
    run_uri: str
    names: dict  # {"imports": {dataset: job name}, "solution_version": name, "batch": name}
    requested_training_mode: str
    import_mode: str
    dataset_arns: dict
    role_arn: str
    solution_arn: str
    campaign_arn: str
    filter_arn: str
    aws_conn_id: str
    poll_seconds: float
    dry_run: bool


def _missing_settings(settings: Settings, datasets: list[str]) -> list[str]:
    arns = settings.personalize.dataset_arns()
    missing = [f"personalize_{d}_dataset_arn" for d in datasets if not arns[d]]
    required = ("s3_uri", "role_arn", "solution_arn")
    return missing + [f"personalize_{name}" for name in required if not getattr(settings.personalize, name)]


def _end_day(settings: Settings, end_day: str | None, scheduled_day: date | None) -> date:
    """The Param, else a scheduled run's data interval, else the newest extracted day."""
    from airflow.sdk.exceptions import AirflowFailException

    from recsys.data.partitions import PartitionStore

    if end_day:
        return date.fromisoformat(end_day)
    if scheduled_day is not None:
        return scheduled_day
    days = PartitionStore(settings.storage.extract_root).committed_days()
    if not days:
        raise AirflowFailException(f"no extracted partitions under {settings.storage.extract_root} yet")
    return days[-1]


def plan(settings: Settings, params: dict, run_id: str, scheduled_day: date | None, run_after: datetime | None) -> dict:
    """The day, the training and import modes and every job name (derived from the run: a retry reattaches).
    ``scheduled_day`` is the data interval's start for a scheduled run, ``None`` for a manual one."""
    from airflow.sdk.exceptions import AirflowFailException
    from personalize.names import run_name

    missing = _missing_settings(settings, params["datasets"])
    if missing or not settings.personalize.s3_uri.startswith("s3://"):
        raise AirflowFailException(
            f"set these settings (RECSYS_<NAME> or Variable recsys_<name>): {missing} "
            "(personalize_s3_uri must be s3://bucket/prefix)"
        )
    day = _end_day(settings, params["end_day"], scheduled_day).isoformat()
    mode = params["training_mode"]
    if mode == "auto":
        mode = "FULL" if (run_after or datetime.now(UTC)).weekday() == 6 else "UPDATE"
    import_mode = params["import_mode"]
    if import_mode == "auto":
        import_mode = "FULL" if mode == "FULL" else "INCREMENTAL"
    key = run_name("recsys", run_id, day)
    names = {
        "imports": {d: run_name("recsys", run_id, day, d) for d in DATASETS},
        "solution_version": key,
        "batch": run_name("recsys", run_id, day, "batch"),
    }
    return PersonalizePlan(
        end_day=day,
        run_key=key,
        run_uri=f"{settings.personalize.s3_uri.rstrip('/')}/runs/{key}",
        names=names,
        requested_training_mode=mode,
        import_mode=import_mode,
        dataset_arns=settings.personalize.dataset_arns(),
        role_arn=settings.personalize.role_arn,
        solution_arn=settings.personalize.solution_arn,
        campaign_arn=settings.personalize.campaign_arn,
        filter_arn=settings.personalize.filter_arn,
        aws_conn_id=settings.connections.aws,
        poll_seconds=settings.personalize.poll_seconds,
        dry_run=params["dry_run"],
    ).as_xcom()


def upload(settings: Settings, planned: PersonalizePlan, params: dict) -> tuple[list[dict], str | None]:
    """Copy the extraction's CSVs to the run's prefix: one import job request per dataset, and the batch
    inference input's path (``None`` when there are no users to score)."""
    from airflow.sdk.exceptions import AirflowFailException

    from recsys.data.personalize_files import NothingToImportError, stage_personalize_files

    try:
        staged = stage_personalize_files(
            settings.storage.extract_root,
            date.fromisoformat(planned.end_day),
            params["window_days"],
            params["datasets"],
            planned.import_mode,
            planned.run_uri,
            planned.aws_conn_id,
        )
    except NothingToImportError as exc:
        raise AirflowFailException(str(exc)) from exc
    for warning in staged["warnings"]:
        print("WARNING", warning)
    jobs = [
        {
            "job_name": planned.names["imports"][staged_import["dataset"]],
            "dataset_arn": planned.dataset_arns[staged_import["dataset"]],
            "data_location": staged_import["data_location"],
            "import_mode": planned.import_mode if staged_import["dataset"] == "interactions" else "FULL",
        }
        for staged_import in staged["imports"]
    ]
    return jobs, staged["batch_input"]


def training_mode(planned: PersonalizePlan) -> dict:
    """UPDATE needs a User-Personalization recipe and an ACTIVE FULL version; else FULL (with the reason).
    Also the previous ACTIVE version (metrics baseline) and the version the campaign serves (rollback)."""
    from personalize.hooks import PersonalizeHook

    hook = PersonalizeHook(aws_conn_id=planned.aws_conn_id)
    solution, mode, reason = planned.solution_arn, planned.requested_training_mode, "requested"
    if mode == "UPDATE" and not hook.supports_update(solution):
        mode, reason = "FULL", "the solution's recipe does not support UPDATE"
    elif mode == "UPDATE" and not hook.latest_active_version(solution, "FULL"):
        mode, reason = "FULL", "no ACTIVE FULL solution version yet"
    serving = None
    if planned.campaign_arn:
        serving = hook.conn.describe_campaign(campaignArn=planned.campaign_arn)["campaign"]["solutionVersionArn"]
    return {
        "mode": mode,
        "reason": reason,
        "previous_version": hook.latest_active_version(solution),
        "serving_version": serving,
    }


def _verdict(planned: PersonalizePlan, version_arn: str, previous_arn: str | None, max_drop: float) -> dict:
    from personalize.hooks import PersonalizeHook
    from personalize.metrics import metric_verdict

    return metric_verdict(PersonalizeHook(aws_conn_id=planned.aws_conn_id), version_arn, previous_arn, max_drop)


def metrics_allow(planned: PersonalizePlan, mode: dict, version_arn: str, params: dict) -> bool:
    """Continue unless the new version is worse than the previous one beyond ``max_metric_drop``."""
    verdict = _verdict(planned, version_arn, mode["previous_version"], params["max_metric_drop"])
    print(verdict["summary"])
    return not (verdict["regressed"] and params["stop_on_regression"])


def deliver(settings: Settings, planned: PersonalizePlan, version_arn: str, params: dict) -> dict | None:
    """The batch output, post-processed, replaces the table's ``personalize`` rows (``None``: not wanted)."""
    from recsys.delivery.personalize import deliver as deliver_batch

    if not params["deliver_top_k"]:
        return None
    return deliver_batch(
        planned.run_uri + "/batch-output/",
        planned.aws_conn_id,
        settings.storage.extract_root,
        date.fromisoformat(planned.end_day),
        params["window_days"],
        settings.connections.delivery,
        params["deliver_top_k"],
        version_arn,
    )


def smoke_test(settings: Settings, planned: PersonalizePlan, wanted_users: int) -> dict:
    """GetRecommendations from the updated campaign for known and unknown users."""
    from personalize.hooks import PersonalizeRuntimeHook

    from recsys.personalize.smoke import smoke_inputs
    from recsys.personalize.smoke import smoke_test as ask

    users, catalog = smoke_inputs(settings.storage.extract_root, date.fromisoformat(planned.end_day), wanted_users)
    return ask(PersonalizeRuntimeHook(aws_conn_id=planned.aws_conn_id), planned.campaign_arn, users, catalog)


def report(settings: Settings, planned: PersonalizePlan, run_id: str, outcome: dict, max_drop: float) -> dict:
    """What the run did, whatever happened (``outcome``: the tasks' states and results), with the new
    version's metrics; written to ``<storage_root>/personalize/runs/<run>/report.json`` and returned."""
    import json

    from recsys.storage import as_path, atomic_write_text

    body = {"run_id": run_id, "plan": planned.as_xcom(), **outcome, "metrics": None}
    body["imports"] = list(outcome.get("imports") or [])
    body["training"] = outcome.get("training") or {}
    body["batch_output"] = (planned.run_uri + "/batch-output/") if outcome.get("batch_output") else None
    version = outcome.get("solution_version")
    if version:
        try:
            body["metrics"] = _verdict(
                planned, version, (outcome.get("training") or {}).get("previous_version"), max_drop
            )
        except Exception as exc:  # noqa: BLE001 - the report must be written whatever AWS says
            body["metrics"] = {"error": str(exc)}
    target = as_path(settings.storage.root) / "personalize" / "runs" / planned.run_key / "report.json"
    atomic_write_text(target, json.dumps(body, indent=2, default=str))
    return body
