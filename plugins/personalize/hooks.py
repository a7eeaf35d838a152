"""``PersonalizeHook``: boto3/aiobotocore ``personalize`` clients plus the project's custom waiters.

botocore ships no Personalize waiters; ``waiters/personalize.json`` defines them in botocore's
waiter format, and ``get_waiter`` (sync or ``deferrable=True`` with an async client) finds them
the same way the amazon provider finds its own. Endpoint, region and credentials come from the
Airflow AWS connection (``service_config.personalize.endpoint_url`` reaches a local fake).
"""

from __future__ import annotations

from pathlib import Path

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

from personalize.names import attempt_of

ALIVE = ("CREATE PENDING", "CREATE IN_PROGRESS", "PENDING", "IN PROGRESS", "ACTIVE")
FAILED = ("CREATE FAILED", "CREATE STOPPING", "CREATE STOPPED")
BUSY_ERRORS = ("LimitExceededException", "ResourceInUseException", "ThrottlingException", "TooManyRequestsException")


class PersonalizeHook(AwsBaseHook):
    """Interact with Amazon Personalize (``client_type="personalize"``)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["client_type"] = "personalize"
        super().__init__(*args, **kwargs)

    @property
    def waiter_path(self) -> Path:
        return Path(__file__).parent / "waiters" / "personalize.json"

    # ---- finding the job a previous try started ---------------------------------------------------
    def _paginate(self, operation: str, key: str, **kwargs) -> list[dict]:
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
        jobs = self._paginate("list_dataset_import_jobs", "datasetImportJobs", datasetArn=dataset_arn)
        return self._pick(base_name, [(j["jobName"], j["datasetImportJobArn"], j["status"]) for j in jobs])

    def find_batch_inference_job(self, solution_version_arn: str, base_name: str) -> tuple[str | None, int]:
        jobs = self._paginate("list_batch_inference_jobs", "batchInferenceJobs",
                              solutionVersionArn=solution_version_arn)  # fmt: skip
        return self._pick(base_name, [(j["jobName"], j["batchInferenceJobArn"], j["status"]) for j in jobs])

    def find_solution_version(self, solution_arn: str, base_name: str) -> tuple[str | None, int]:
        """Solution version summaries carry no name: describe the recent ones."""
        summaries = self._paginate("list_solution_versions", "solutionVersions", solutionArn=solution_arn)
        summaries = sorted(summaries, key=lambda s: s["creationDateTime"], reverse=True)[:25]
        described = [self.conn.describe_solution_version(solutionVersionArn=s["solutionVersionArn"])["solutionVersion"]
                     for s in summaries]  # fmt: skip
        return self._pick(base_name, [(v.get("name", ""), v["solutionVersionArn"], v["status"]) for v in described])

    # ---- solution facts ----------------------------------------------------------------------------
    def latest_active_version(self, solution_arn: str, training_mode: str | None = None) -> str | None:
        """The newest ACTIVE solution version (trained with ``training_mode``, if given)."""
        versions = self._paginate("list_solution_versions", "solutionVersions", solutionArn=solution_arn)
        active = [v for v in versions if v["status"] == "ACTIVE"
                  and training_mode in (None, v.get("trainingMode", "FULL"))]  # fmt: skip
        return max(active, key=lambda v: v["creationDateTime"])["solutionVersionArn"] if active else None

    def supports_update(self, solution_arn: str) -> bool:
        """UPDATE training exists only for the User-Personalization recipes."""
        recipe = self.conn.describe_solution(solutionArn=solution_arn)["solution"]["recipeArn"]
        return recipe.rsplit("/", 1)[-1].startswith(("aws-user-personalization", "aws-user-personalization-v2"))

    def solution_metrics(self, solution_version_arn: str) -> dict[str, float]:
        return self.conn.get_solution_metrics(solutionVersionArn=solution_version_arn)["metrics"]
