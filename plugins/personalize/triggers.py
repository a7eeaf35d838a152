"""Triggers that wait for Personalize jobs in the triggerer, on the custom waiters (``AwsBaseWaiterTrigger``).

The failure message carries the job's ``failureReason``; throttling during the wait is retried by
the provider's ``async_wait``. ``waiter_delay * waiter_max_attempts`` is the overall timeout.
When a user kills the deferred task (mark failed / clear), a solution version that is still
training is stopped (``StopSolutionVersionCreation``); a triggerer restart does not stop anything.
"""

from __future__ import annotations

from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger

from personalize.hooks import PersonalizeHook


def arn_from_event(event: dict | None) -> str:
    """The watched resource's ARN from a successful event; the waiter's failure (with the job's
    ``failureReason``) as an ``AirflowException`` otherwise."""
    from airflow.providers.amazon.aws.utils import validate_execute_complete_event
    from airflow.providers.common.compat.sdk import AirflowException

    event = validate_execute_complete_event(event)
    if event["status"] != "success":
        raise AirflowException(event["message"].split("\nWaiter")[0])
    return event["arn"]


class _PersonalizeTrigger(AwsBaseWaiterTrigger):
    """Wait on the custom waiter ``waiter`` for the resource ``arn``; the event carries the ARN.

    :param arn: the watched resource's ARN.
    :param waiter_delay: seconds between status checks.
    :param waiter_max_attempts: checks before the trigger reports a timeout.
    :param aws_conn_id: the AWS connection.
    """

    aws_hook_class = PersonalizeHook
    waiter: str
    arn_argument: str  # the Describe call's ARN parameter
    resource: str  # the key of the described resource in the response
    status_path: str = "status"

    def __init__(
        self,
        *,
        arn: str,
        waiter_delay: int = 30,
        waiter_max_attempts: int = 240,
        aws_conn_id: str | None = "aws_default",
        **kwargs,
    ):
        super().__init__(
            serialized_fields={"arn": arn},
            waiter_name=self.waiter,
            waiter_args={self.arn_argument: arn},
            failure_message=f"{self.resource} {arn} failed",
            status_message=f"{self.resource} {arn} status",
            status_queries=[
                f"{self.resource}.{self.status_path}",
                f"{self.resource}.{self.status_path.removesuffix('status')}failureReason",
            ],
            return_key="arn",
            return_value=arn,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            aws_conn_id=aws_conn_id,
            **kwargs,
        )


class DatasetImportJobTrigger(_PersonalizeTrigger):
    waiter, arn_argument, resource = "dataset_import_job_active", "datasetImportJobArn", "datasetImportJob"


class BatchInferenceJobTrigger(_PersonalizeTrigger):
    waiter, arn_argument, resource = "batch_inference_job_active", "batchInferenceJobArn", "batchInferenceJob"


class CampaignUpdateTrigger(_PersonalizeTrigger):
    waiter, arn_argument, resource = "campaign_update_active", "campaignArn", "campaign"
    status_path = "latestCampaignUpdate.status"


class SolutionVersionTrigger(_PersonalizeTrigger):
    waiter, arn_argument, resource = "solution_version_active", "solutionVersionArn", "solutionVersion"

    async def on_kill(self) -> None:
        hook = self.hook()
        async with await hook.get_async_conn() as client:
            self.log.warning("task killed: stopping %s", self.return_value)
            await client.stop_solution_version_creation(solutionVersionArn=self.return_value)


class DatasetExportJobTrigger(_PersonalizeTrigger):
    waiter, arn_argument, resource = "dataset_export_job_active", "datasetExportJobArn", "datasetExportJob"


class ResourceTrigger(_PersonalizeTrigger):
    """Wait until a long-lived resource (``kind`` of :data:`personalize.resources.RESOURCES`) is ACTIVE
    (``action="create"``) or gone (``action="delete"``).

    :param kind: the resource kind.
    :param arn: the resource's ARN.
    :param action: ``create`` (wait for ACTIVE) or ``delete`` (wait until not found).
    """

    def __init__(self, *, kind: str, arn: str, action: str = "create", **kwargs):
        from personalize.resources import RESOURCES

        resource = RESOURCES[kind]
        self.waiter = f"{kind}_{'active' if action == 'create' else 'deleted'}"
        self.arn_argument, self.resource = resource.arn_key, resource.response_key
        super().__init__(arn=arn, **kwargs)
        self.serialized_fields |= {"kind": kind, "action": action}
