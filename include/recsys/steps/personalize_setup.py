"""The setup DAG's steps that read or write state: the first import of an empty dataset group, and
recording what was provisioned (Airflow Variables + a report)."""

from __future__ import annotations

import json
from datetime import date

from recsys.config import load_settings
from recsys.steps.personalize_resources import DATASETS, recorded


def initial_imports(planned: dict, dataset_arns: dict, solution_arn: str, params: dict, run_id: str) -> list[dict]:
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
    settings = load_settings(use_airflow_variables=True)
    if not (settings.personalize_s3_uri.startswith("s3://") and settings.personalize_role_arn):
        raise AirflowFailException(
            "the first import needs personalize_s3_uri (s3://...) and personalize_role_arn "
            "(RECSYS_<NAME> or Variable recsys_<name>); or set initial_import_days=0"
        )
    days = PartitionStore(settings.extract_root).committed_days()
    if not days:
        raise AirflowFailException(
            f"no extracted partitions under {settings.extract_root}: run recsys_extract first "
            "(or set initial_import_days=0)"
        )
    uri = f"{settings.personalize_s3_uri.rstrip('/')}/setup/{params['prefix']}"
    try:
        staged = stage_personalize_files(
            settings.extract_root,
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
    planned: dict,
    params: dict,
    group_arn: str,
    dataset_arns: list[str],
    solution_arn: str,
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
    root = as_path(load_settings(use_airflow_variables=True).storage_root)
    atomic_write_text(root / "personalize" / "setup" / f"{params['prefix']}.json", json.dumps(report, indent=2))
    return report
