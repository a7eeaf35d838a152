"""The setup DAG's steps that read or write state: the first import of an empty dataset group, and
recording what was provisioned (Airflow Variables + a report)."""

from __future__ import annotations

import json
from datetime import date

from recsys.config import Settings
from recsys.steps.personalize_resources import DATASETS, recorded


def initial_imports(
    settings: Settings, planned: dict, dataset_arns: dict, solution_arn: str, params: dict, run_id: str
) -> list[dict]:
    """Import jobs (FULL) for the newest ``initial_import_days`` extracted days; ``[]`` when the solution
    already has an ACTIVE version, the interactions dataset an ACTIVE import, or the Param is 0."""
    from airflow.sdk.exceptions import AirflowFailException
    from personalize.hooks import PersonalizeHook

    from recsys.data.partitions import PartitionStore
    from recsys.data.personalize_files import NothingToImportError, stage_personalize_files

    if not params["initial_import_days"]:
        return []
    hook = PersonalizeHook(aws_conn_id=planned["aws_conn_id"])
    if hook.latest_active_version(solution_arn):
        return []
    imported = hook.paginate("list_dataset_import_jobs", "datasetImportJobs", datasetArn=dataset_arns["interactions"])
    if any(job["status"] == "ACTIVE" for job in imported):
        return []
    if not (settings.personalize.s3_uri.startswith("s3://") and settings.personalize.role_arn):
        raise AirflowFailException(
            "the first import needs personalize_s3_uri (s3://...) and personalize_role_arn "
            "(RECSYS_<NAME> or Variable recsys_<name>); or set initial_import_days=0"
        )
    days = PartitionStore(settings.storage.extract_root).committed_days()
    if not days:
        raise AirflowFailException(
            f"no extracted partitions under {settings.storage.extract_root}: run recsys_extract first "
            "(or set initial_import_days=0)"
        )
    uri = f"{settings.personalize.s3_uri.rstrip('/')}/setup/{params['prefix']}"
    try:
        staged = stage_personalize_files(
            settings.storage.extract_root,
            days[-1],
            params["initial_import_days"],
            list(DATASETS),
            "FULL",
            uri,
            planned["aws_conn_id"],
        )
    except NothingToImportError as exc:
        raise AirflowFailException(str(exc)) from exc
    return [
        {
            "job_name": f"{params['prefix']}-initial-{i['dataset']}",
            "dataset_arn": dataset_arns[i["dataset"]],
            "data_location": i["data_location"],
            "import_mode": "FULL",
        }
        for i in staged["imports"]
    ]


def record_setup(
    settings: Settings,
    planned: dict,
    params: dict,
    group_arn: str,
    solution_arn: str,
    dataset_arns: list[str],
    campaigns: list[str],
    trackers: list[str],
    filters: list[str],
) -> dict:
    """Set ``recsys_personalize_*`` Variables; write ``<storage_root>/personalize/setup/<prefix>.json``."""
    from airflow.sdk import Variable
    from personalize.hooks import PersonalizeHook

    from recsys.storage import as_path, atomic_write_text

    hook = PersonalizeHook(aws_conn_id=planned["aws_conn_id"])
    tracker = trackers[0] if trackers else None
    filter_names = {hook.describe_resource("filter", arn)["name"]: arn for arn in filters}
    batch_filter = filter_names.get(f"{params['prefix']}-{params['batch_filter']}") if params["batch_filter"] else None
    resources = {
        "dataset_group": group_arn,
        **dict(zip(DATASETS, dataset_arns, strict=True)),
        "solution": solution_arn,
        "campaign": campaigns[0] if campaigns else None,
        "event_tracker": tracker,
        "tracking_id": hook.describe_resource("event_tracker", tracker)["trackingId"] if tracker else None,
        "batch_filter": batch_filter,
        "filters": filter_names,
        "solution_versions": [
            v["solutionVersionArn"]
            for v in hook.paginate("list_solution_versions", "solutionVersions", solutionArn=solution_arn)
        ],
    }
    variables = recorded(resources)
    for key, value in variables.items():
        Variable.set(key, value)
    report = {
        "prefix": params["prefix"],
        "recorded_at": date.today().isoformat(),
        "resources": resources,
        "variables": variables,
        "params": params,
    }
    root = as_path(settings.storage.root)
    atomic_write_text(root / "personalize" / "setup" / f"{params['prefix']}.json", json.dumps(report, indent=2))
    return report


def plan(settings: Settings, params: dict) -> dict:
    """The resources' names from the prefix, and the connection, poll interval and role every task uses."""
    from airflow.sdk.exceptions import AirflowFailException

    from recsys.steps.personalize_resources import names

    if params["batch_filter"] and params["batch_filter"] not in params["filters"]:
        raise AirflowFailException(f"batch_filter {params['batch_filter']!r} is not one of {sorted(params['filters'])}")
    return {
        "names": names(params["prefix"]),
        "aws_conn_id": settings.connections.aws,
        "poll_seconds": settings.personalize.poll_seconds,
        "role_arn": settings.personalize.role_arn,
    }


def first_version(planned: dict, solution_arn: str) -> list[dict]:
    """A FULL solution version when the solution has no ACTIVE one (else nothing: mapped over [])."""
    from personalize.hooks import PersonalizeHook

    if PersonalizeHook(aws_conn_id=planned["aws_conn_id"]).latest_active_version(solution_arn):
        return []
    return [{"solution_arn": solution_arn, "name": planned["names"]["initial_version"]}]


def campaign_request(planned: dict, params: dict, solution_arn: str) -> list[dict]:
    """The campaign to create (nothing when ``create_campaign`` is off), on the newest ACTIVE version."""
    from personalize.hooks import PersonalizeHook

    from recsys.steps.personalize_resources import campaign_config

    if not params["create_campaign"]:
        return []
    latest = PersonalizeHook(aws_conn_id=planned["aws_conn_id"]).latest_active_version(solution_arn)
    return [{"name": planned["names"]["campaign"], "config": campaign_config(params, solution_arn, latest)}]


def tracker_request(planned: dict, params: dict, group_arn: str) -> list[dict]:
    """The event tracker to create, when ``create_event_tracker`` is on."""
    if not params["create_event_tracker"]:
        return []
    return [{"name": planned["names"]["event_tracker"], "config": {"datasetGroupArn": group_arn}}]


def teardown_plan(settings: Settings, params: dict) -> dict:
    """Refuse without confirmation; what exists under the prefix, by kind, as delete requests."""
    import json

    from airflow.sdk.exceptions import AirflowFailException
    from personalize.hooks import PersonalizeHook

    from recsys.steps.personalize_resources import teardown_targets

    if params["confirm"] != params["prefix"]:
        raise AirflowFailException(f"not confirmed: set confirm to {params['prefix']!r} to delete it")
    targets = teardown_targets(PersonalizeHook(aws_conn_id=settings.connections.aws), params["prefix"])
    print(json.dumps(targets, indent=2))
    return {
        "aws_conn_id": settings.connections.aws,
        "poll_seconds": settings.personalize.poll_seconds,
        **{kind: [{"resource_arn": arn} for arn in arns] for kind, arns in targets.items()},
    }


def clear_variables() -> list[str]:
    """Delete the Variables the setup recorded."""
    from airflow.sdk import Variable

    from recsys.steps.personalize_resources import RECORDED

    keys = [f"recsys_{setting}" for setting in RECORDED]
    for key in keys:
        Variable.delete(key)
    return keys
