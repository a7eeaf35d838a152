"""Personalize hooks: ``PersonalizeHook`` (``personalize`` clients plus the project's custom waiters),
``PersonalizeEventsHook`` (``personalize-events``: PutEvents / PutUsers / PutItems in batches of 10) and
``PersonalizeRuntimeHook`` (``personalize-runtime``: GetRecommendations).

botocore ships no Personalize waiters; ``waiters/personalize.json`` defines them in botocore's
waiter format, and ``get_waiter`` (sync or ``deferrable=True`` with an async client) finds them
the same way the amazon provider finds its own. Endpoint, region and credentials come from the
Airflow AWS connection (``service_config.<service>.endpoint_url`` reaches a local fake). Throttling and
5xx answers of the real-time services are retried by botocore (standard retry mode, 8 attempts).
"""

from __future__ import annotations

from pathlib import Path

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

from personalize.names import attempt_of
from personalize.resources import RESOURCES

ALIVE = ("CREATE PENDING", "CREATE IN_PROGRESS", "PENDING", "IN PROGRESS", "ACTIVE")
FAILED = ("CREATE FAILED", "CREATE STOPPING", "CREATE STOPPED")
MAX_RECORDS_PER_CALL = 10  # PutEvents / PutUsers / PutItems
RETRIES = {"retries": {"mode": "standard", "max_attempts": 8}}
BUSY_ERRORS = ("LimitExceededException", "ResourceInUseException", "ThrottlingException", "TooManyRequestsException")


class PersonalizeHook(AwsBaseHook):
    """Interact with Amazon Personalize (``client_type="personalize"``), with the project's waiters.

    Additional arguments (``aws_conn_id``, ``region_name``, ``verify``, ``config``) are passed to
    :class:`~airflow.providers.amazon.aws.hooks.base_aws.AwsBaseHook`.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs["client_type"] = "personalize"
        super().__init__(*args, **kwargs)

    @property
    def waiter_path(self) -> Path:
        return Path(__file__).parent / "waiters" / "personalize.json"

    # ---- finding the job a previous try started ---------------------------------------------------
    def paginate(self, operation: str, key: str, **kwargs) -> list[dict]:
        """Every item of a paginated List* call (``key``: the items' key in each page)."""
        return [item for page in self.conn.get_paginator(operation).paginate(**kwargs) for item in page[key]]

    @staticmethod
    def _pick(base: str, candidates: list[tuple[str, str, str]]) -> tuple[str | None, int]:
        """From ``(name, arn, status)``: the live job of this run (if any) and the next attempt number."""
        mine = [(attempt_of(base, name), arn, status) for name, arn, status in candidates]
        mine = sorted((a, arn, status) for a, arn, status in mine if a is not None)
        alive = [(a, arn) for a, arn, status in mine if status in ALIVE]
        next_attempt = (mine[-1][0] + 1) if mine else 1
        return (alive[-1][1] if alive else None), next_attempt

    def find_dataset_import_job(self, dataset_arn: str, base_name: str) -> tuple[str | None, int]:
        jobs = self.paginate("list_dataset_import_jobs", "datasetImportJobs", datasetArn=dataset_arn)
        return self._pick(base_name, [(j["jobName"], j["datasetImportJobArn"], j["status"]) for j in jobs])

    def find_batch_inference_job(self, solution_version_arn: str, base_name: str) -> tuple[str | None, int]:
        jobs = self.paginate("list_batch_inference_jobs", "batchInferenceJobs", solutionVersionArn=solution_version_arn)
        return self._pick(base_name, [(j["jobName"], j["batchInferenceJobArn"], j["status"]) for j in jobs])

    def find_solution_version(self, solution_arn: str, base_name: str) -> tuple[str | None, int]:
        """Solution version summaries carry no name: describe the recent ones."""
        summaries = self.paginate("list_solution_versions", "solutionVersions", solutionArn=solution_arn)
        summaries = sorted(summaries, key=lambda s: s["creationDateTime"], reverse=True)[:25]
        described = [
            self.conn.describe_solution_version(solutionVersionArn=s["solutionVersionArn"])["solutionVersion"]
            for s in summaries
        ]
        return self._pick(base_name, [(v.get("name", ""), v["solutionVersionArn"], v["status"]) for v in described])

    def find_resource(self, kind: str, name: str, parent_arn: str | None = None) -> tuple[str | None, int]:
        """A long-lived resource by name (``kind`` as in :data:`personalize.resources.RESOURCES`)."""
        resource = RESOURCES[kind]
        kwargs = {resource.parent_key: parent_arn} if resource.parent_key and parent_arn else {}
        found = self.paginate(f"list_{kind}s", resource.list_key, **kwargs)
        return self._pick(name, [(r["name"], r[resource.arn_key], r.get("status", "ACTIVE")) for r in found])

    def describe_resource(self, kind: str, arn: str) -> dict | None:
        """The described resource, or ``None`` when it does not exist (any more)."""
        resource = RESOURCES[kind]
        try:
            return getattr(self.conn, f"describe_{kind}")(**{resource.arn_key: arn})[resource.response_key]
        except self.conn.exceptions.ResourceNotFoundException:
            return None

    def find_dataset_export_job(self, dataset_arn: str, base_name: str) -> tuple[str | None, int]:
        jobs = self.paginate("list_dataset_export_jobs", "datasetExportJobs", datasetArn=dataset_arn)
        return self._pick(base_name, [(j["jobName"], j["datasetExportJobArn"], j["status"]) for j in jobs])

    # ---- solution facts ----------------------------------------------------------------------------
    def latest_active_version(self, solution_arn: str, training_mode: str | None = None) -> str | None:
        """The newest ACTIVE solution version (trained with ``training_mode``, if given)."""
        versions = self.paginate("list_solution_versions", "solutionVersions", solutionArn=solution_arn)
        active = [
            v for v in versions if v["status"] == "ACTIVE" and training_mode in (None, v.get("trainingMode", "FULL"))
        ]
        return max(active, key=lambda v: v["creationDateTime"])["solutionVersionArn"] if active else None

    def supports_update(self, solution_arn: str) -> bool:
        """UPDATE training exists only for the User-Personalization recipes."""
        recipe = self.conn.describe_solution(solutionArn=solution_arn)["solution"]["recipeArn"]
        return recipe.rsplit("/", 1)[-1].startswith(("aws-user-personalization", "aws-user-personalization-v2"))

    def solution_metrics(self, solution_version_arn: str) -> dict[str, float]:
        return self.conn.get_solution_metrics(solutionVersionArn=solution_version_arn)["metrics"]


class _RealtimeHook(AwsBaseHook):
    """A Personalize data-plane client (``client_type`` set by the subclass) with botocore's standard retries.
    Arguments as :class:`~airflow.providers.amazon.aws.hooks.base_aws.AwsBaseHook`'s."""

    client_type: str

    def __init__(self, *args, **kwargs) -> None:
        kwargs["client_type"] = self.client_type
        kwargs.setdefault("config", RETRIES)
        super().__init__(*args, **kwargs)


class PersonalizeEventsHook(_RealtimeHook):
    """``personalize-events``: records go in calls of at most 10 (the service's limit)."""

    client_type = "personalize-events"

    def put_records(self, kind: str, dataset_arn: str, records: list[dict]) -> int:
        """PutUsers (``kind="users"``) or PutItems (``"items"``); returns the number of calls made."""
        put = self.conn.put_users if kind == "users" else self.conn.put_items
        return _in_calls(put, kind, records, datasetArn=dataset_arn)

    def put_events(self, tracking_id: str, user_id: str, session_id: str, events: list[dict]) -> int:
        return _in_calls(
            self.conn.put_events, "eventList", events, trackingId=tracking_id, userId=user_id, sessionId=session_id
        )


def _in_calls(call, key: str, items: list[dict], **fixed) -> int:
    """``call(**fixed, key=<at most 10 items>)`` over ``items``; returns the number of calls made."""
    starts = range(0, len(items), MAX_RECORDS_PER_CALL)
    for start in starts:
        call(**fixed, **{key: items[start : start + MAX_RECORDS_PER_CALL]})
    return len(starts)


class PersonalizeRuntimeHook(_RealtimeHook):
    """``personalize-runtime``: what a campaign answers the application."""

    client_type = "personalize-runtime"

    def recommended_items(self, campaign_arn: str, user_id: str, num_results: int = 25, **kwargs) -> list[str]:
        answer = self.conn.get_recommendations(
            campaignArn=campaign_arn, userId=user_id, numResults=num_results, **kwargs
        )
        return [item["itemId"] for item in answer["itemList"]]
