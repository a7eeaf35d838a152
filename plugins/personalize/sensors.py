"""Sensors for Personalize jobs started elsewhere: poke ``Describe*``, or defer to the same triggers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from airflow.providers.amazon.aws.sensors.base_aws import AwsBaseSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowException, conf

from personalize import triggers
from personalize.hooks import FAILED, PersonalizeHook


class _PersonalizeSensor(AwsBaseSensor[PersonalizeHook]):
    """Wait until a job or campaign update is ACTIVE; fail with its ``failureReason`` when it failed.

    :param arn: the job's ARN (the campaign's for a campaign update).
    :param deferrable: wait in the triggerer; default ``[operators] default_deferrable``.
    :param aws_conn_id: the AWS connection.
    :param region_name: the AWS region; default the connection's.
    :param verify: TLS verification for botocore; default the connection's.
    :param botocore_config: a botocore ``Config`` as a dict.
    """

    aws_hook_class = PersonalizeHook
    template_fields: Sequence[str] = aws_template_fields("arn")
    trigger_class: type[triggers._PersonalizeTrigger]
    describe: str

    def __init__(
        self,
        *,
        arn: str,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.arn, self.deferrable = arn, deferrable

    def poke(self, context) -> bool:
        trigger = self.trigger_class
        found = getattr(self.hook.conn, self.describe)(**{trigger.arn_argument: self.arn})[trigger.resource]
        for key in trigger.status_path.split(".")[:-1]:  # the campaign's status is its latest update's
            found = found.get(key) or {}
        status, reason = found.get("status"), found.get("failureReason")
        self.log.info("%s: %s", self.arn, status)
        if status in FAILED:
            raise AirflowException(f"{trigger.resource} {self.arn} {status}: {reason or 'no failureReason given'}")
        return status == "ACTIVE"

    def execute(self, context):
        if not self.deferrable:
            return super().execute(context)
        attempts = max(1, int(self.timeout / self.poke_interval))
        self.defer(
            trigger=self.trigger_class(
                arn=self.arn,
                waiter_delay=int(self.poke_interval),
                waiter_max_attempts=attempts,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                verify=self.verify,
                botocore_config=self.botocore_config,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + 300),
        )

    def execute_complete(self, context, event: dict | None = None) -> str:
        return triggers.arn_from_event(event)


class PersonalizeDatasetImportJobSensor(_PersonalizeSensor):
    trigger_class, describe = triggers.DatasetImportJobTrigger, "describe_dataset_import_job"


class PersonalizeSolutionVersionSensor(_PersonalizeSensor):
    trigger_class, describe = triggers.SolutionVersionTrigger, "describe_solution_version"


class PersonalizeBatchInferenceJobSensor(_PersonalizeSensor):
    trigger_class, describe = triggers.BatchInferenceJobTrigger, "describe_batch_inference_job"


class PersonalizeCampaignUpdateSensor(_PersonalizeSensor):
    trigger_class, describe = triggers.CampaignUpdateTrigger, "describe_campaign"
