"""The steps of ``recsys_personalize_events``: which days, PutUsers/PutItems, export merge."""

from __future__ import annotations

from datetime import date

from recsys.config import Settings
from recsys.data.partitions import PartitionStore


def plan_days(settings: Settings, day: str | None, extras: list[dict], run_id: str) -> dict:
    """The days to handle (the Param, the triggering extractions' partitions, or the newest one) and
    the export job; ``export`` is ``None`` when the interactions dataset, bucket or role is not set."""
    from personalize.names import run_name

    if day:
        days = [day]
    else:
        days = sorted({e["partition"] for e in extras if e and e.get("status") == "ok"})
        if not days and not extras:
            committed = PartitionStore(settings.storage.extract_root).committed_days()
            days = [committed[-1].isoformat()] if committed else []
    export = None
    if days and settings.personalize.interactions_dataset_arn and settings.personalize.s3_uri.startswith("s3://"):
        name = run_name("recsys", run_id, "events", days[-1])
        export = {
            "job_name": name,
            "dataset_arn": settings.personalize.interactions_dataset_arn,
            "role_arn": settings.personalize.role_arn,
            "output_path": f"{settings.personalize.s3_uri.rstrip('/')}/events-export/{name}/",
        }
    return {
        "days": days,
        "export": export,
        "aws_conn_id": settings.connections.aws,
        "poll_seconds": settings.personalize.poll_seconds,
    }


def put_changed(settings: Settings, planned: dict) -> list[dict]:
    """PutUsers / PutItems of each day's changes, for the datasets that are configured."""
    from personalize.hooks import PersonalizeEventsHook

    from recsys.personalize.records import send_changed

    hook = PersonalizeEventsHook(aws_conn_id=planned["aws_conn_id"])
    arns = settings.personalize.dataset_arns()
    return [
        send_changed(
            hook, settings.storage.root, settings.storage.extract_root, date.fromisoformat(day), kind, arns[kind]
        )
        for day in planned["days"]
        for kind in ("users", "items")
        if arns[kind]
    ]


def merge_exported(settings: Settings, planned: dict, export_job: str) -> list[dict]:
    """Read the export once; merge each planned day into its partition."""
    from recsys.personalize.events import merge_events, read_export

    rows = read_export(planned["export"]["output_path"], planned["aws_conn_id"])
    return [
        {
            "day": day,
            **merge_events(
                settings.storage.extract_root,
                date.fromisoformat(day),
                rows,
                settings.extract.known_event_types,
                export_job,
            ),
        }
        for day in planned["days"]
    ]
