"""Personalize operators: start a job idempotently, then wait (deferrable by default, or synchronously).

Every operator first looks for the job this run already started (by its deterministic name; for a
campaign, by the update in progress) and reattaches to it, so a retry or a re-run never creates a
duplicate. A *failed* job's name cannot be reused (Personalize names are unique), so the next
attempt is ``<name>-2``, ``-3``... ``LimitExceededException`` (more than 5 imports in flight),
``ResourceInUseException`` (resource busy) and throttling on the create call are waited out —
deferred to the triggerer between tries, up to ``busy_timeout_seconds`` — without burning task retries.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowException, conf
from botocore.exceptions import ClientError

from personalize import triggers
from personalize.hooks import ALIVE, BUSY_ERRORS, PersonalizeHook
from personalize.names import attempt_name


class _PersonalizeJobOperator(AwsBaseOperator[PersonalizeHook]):
    """Find this run's job or start it, then wait for it (the flow every Personalize operator shares).

    :param deferrable: wait in the triggerer (no worker slot held); default ``[operators] default_deferrable``.
    :param wait_for_completion: wait for the job at all; ``False`` returns its ARN once started.
    :param waiter_delay: seconds between status checks.
    :param waiter_max_attempts: status checks before giving up (``waiter_delay`` x this = the timeout).
    :param busy_retry_seconds: seconds between create calls while the service answers busy / limit exceeded.
    :param busy_timeout_seconds: how long to keep trying a busy create call before failing.
    :param aws_conn_id: the AWS connection (``service_config.personalize.endpoint_url`` may point elsewhere).
    :param region_name: the AWS region; default the connection's.
    :param verify: TLS verification for botocore; default the connection's.
    :param botocore_config: a botocore ``Config`` as a dict.
    """

    aws_hook_class = PersonalizeHook
    trigger_class: type[triggers._PersonalizeTrigger]
    template_fields: Sequence[str] = aws_template_fields("waiter_delay")

    def __init__(
        self,
        *,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        wait_for_completion: bool = True,
        waiter_delay: int = 30,
        waiter_max_attempts: int = 240,
        busy_retry_seconds: float = 60,
        busy_timeout_seconds: float = 3600,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.deferrable, self.wait_for_completion = deferrable, wait_for_completion
        self.waiter_delay, self.waiter_max_attempts = waiter_delay, waiter_max_attempts
        self.busy_retry_seconds, self.busy_timeout_seconds = busy_retry_seconds, busy_timeout_seconds
        self.arn: str | None = None

    # ---- what subclasses define ------------------------------------------------------------------
    def find(self) -> tuple[str | None, int]:
        """The ARN of this run's live job (or ``None``) and the attempt number for a new one."""
        raise NotImplementedError

    def create(self, attempt: int) -> str:
        raise NotImplementedError

    def trigger_kwargs(self) -> dict:
        """Extra arguments of ``trigger_class`` besides the ARN (a resource trigger needs its kind)."""
        return {}

    # ---- the flow --------------------------------------------------------------------------------
    def execute(self, context, event=None, busy_since: float | None = None):
        arn, attempt = self.find()
        if arn:
            self.log.info("reattaching to %s (started by an earlier try or run)", arn)
        else:
            try:
                arn = self.create(attempt)
            except ClientError as error:
                return self._wait_until_not_busy(context, error, busy_since or time.time())
            self.log.info("started %s", arn)
        self.arn, self.waiter_delay = arn, float(self.waiter_delay)  # may arrive templated, as a string
        if not self.wait_for_completion:
            return arn
        trigger = self.trigger_class(
            arn=arn,
            **self.trigger_kwargs(),
            waiter_delay=self.waiter_delay,
            waiter_max_attempts=self.waiter_max_attempts,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
        )
        if self.deferrable:
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=timedelta(seconds=self.waiter_delay * self.waiter_max_attempts + 300),
            )
        from airflow.providers.amazon.aws.utils.waiter_with_logging import wait

        wait(
            waiter=self.hook.get_waiter(trigger.waiter_name),
            waiter_delay=self.waiter_delay,
            waiter_max_attempts=self.waiter_max_attempts,
            args=trigger.waiter_args,
            failure_message=trigger.failure_message,
            status_message=trigger.status_message,
            status_args=trigger.status_queries,
        )
        return arn

    def _wait_until_not_busy(self, context, error, busy_since: float):
        code = error.response.get("Error", {}).get("Code")
        waited = time.time() - busy_since
        if code not in BUSY_ERRORS:
            raise error
        if waited >= self.busy_timeout_seconds:
            raise AirflowException(f"still {code} after {waited:.0f} s, giving up: {error}") from error
        self.log.warning(
            "%s (%s); trying again in %s s without using a task retry", code, error, self.busy_retry_seconds
        )
        if self.deferrable:
            from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

            self.defer(
                trigger=TimeDeltaTrigger(timedelta(seconds=self.busy_retry_seconds)),
                method_name="execute",
                kwargs={"busy_since": busy_since},
            )
        time.sleep(self.busy_retry_seconds)
        return self.execute(context, busy_since=busy_since)

    def execute_complete(self, context, event: dict | None = None) -> str:
        return triggers.arn_from_event(event)


class PersonalizeCreateDatasetImportJobOperator(_PersonalizeJobOperator):
    """Import a CSV file or folder (``data_location``, ``s3://.../``) into a dataset.

    :param job_name: the job's name, derived from the run (a failed one's retry becomes ``<name>-2``).
    :param dataset_arn: the dataset to import into.
    :param data_location: the CSV file or ``s3://`` folder.
    :param role_arn: the IAM role Personalize assumes to read it.
    :param import_mode: ``FULL`` (replace) or ``INCREMENTAL`` (append).
    """

    template_fields: Sequence[str] = aws_template_fields(
        "waiter_delay", "job_name", "dataset_arn", "data_location", "role_arn", "import_mode"
    )
    trigger_class = triggers.DatasetImportJobTrigger

    def __init__(
        self, *, job_name: str, dataset_arn: str, data_location: str, role_arn: str, import_mode: str = "FULL", **kwargs
    ):
        super().__init__(**kwargs)
        self.job_name, self.dataset_arn, self.data_location = job_name, dataset_arn, data_location
        self.role_arn, self.import_mode = role_arn, import_mode

    def find(self):
        return self.hook.find_dataset_import_job(self.dataset_arn, self.job_name)

    def create(self, attempt: int) -> str:
        return self.hook.conn.create_dataset_import_job(
            jobName=attempt_name(self.job_name, attempt),
            datasetArn=self.dataset_arn,
            dataSource={"dataLocation": self.data_location},
            roleArn=self.role_arn,
            importMode=self.import_mode,
        )["datasetImportJobArn"]


class PersonalizeCreateSolutionVersionOperator(_PersonalizeJobOperator):
    """Train a solution version (``FULL`` or ``UPDATE``); killing the task stops the training.

    :param solution_arn: the solution to train.
    :param name: the version's name, derived from the run.
    :param training_mode: ``FULL``, ``UPDATE`` (User-Personalization after an ACTIVE FULL one) or ``AUTOTRAIN``.
    """

    template_fields: Sequence[str] = aws_template_fields("waiter_delay", "solution_arn", "name", "training_mode")
    trigger_class = triggers.SolutionVersionTrigger

    def __init__(self, *, solution_arn: str, name: str, training_mode: str = "FULL", **kwargs):
        kwargs.setdefault("waiter_delay", 60)
        kwargs.setdefault("waiter_max_attempts", 1440)  # a day
        super().__init__(**kwargs)
        self.solution_arn, self.name, self.training_mode = solution_arn, name, training_mode

    def find(self):
        return self.hook.find_solution_version(self.solution_arn, self.name)

    def create(self, attempt: int) -> str:
        return self.hook.conn.create_solution_version(
            solutionArn=self.solution_arn, trainingMode=self.training_mode, name=attempt_name(self.name, attempt)
        )["solutionVersionArn"]

    def on_kill(self) -> None:
        if self.arn:
            self.log.warning("task killed: stopping %s", self.arn)
            self.hook.conn.stop_solution_version_creation(solutionVersionArn=self.arn)


class PersonalizeCreateBatchInferenceJobOperator(_PersonalizeJobOperator):
    """Batch recommendations: JSON lines ``{"userId": ...}`` in ``input_path``, results under ``output_path``;
    ``filter_arn`` (optional, templated; empty = none) applies a Personalize filter.

    :param job_name: the job's name, derived from the run.
    :param solution_version_arn: the version that scores.
    :param input_path: the ``s3://`` JSON-lines input.
    :param output_path: the ``s3://`` folder for the results.
    :param role_arn: the IAM role Personalize assumes to read and write them.
    :param num_results: items per user.
    :param filter_arn: a filter to apply; empty = none.
    """

    template_fields: Sequence[str] = aws_template_fields(
        "waiter_delay", "job_name", "solution_version_arn", "input_path", "output_path", "role_arn", "filter_arn"
    )
    trigger_class = triggers.BatchInferenceJobTrigger

    def __init__(
        self,
        *,
        job_name: str,
        solution_version_arn: str,
        input_path: str,
        output_path: str,
        role_arn: str,
        num_results: int = 25,
        filter_arn: str | None = None,
        **kwargs,
    ):
        kwargs.setdefault("waiter_delay", 60)
        kwargs.setdefault("waiter_max_attempts", 720)
        super().__init__(**kwargs)
        self.job_name, self.solution_version_arn = job_name, solution_version_arn
        self.input_path, self.output_path, self.role_arn = input_path, output_path, role_arn
        self.num_results, self.filter_arn = num_results, filter_arn

    def find(self):
        return self.hook.find_batch_inference_job(self.solution_version_arn, self.job_name)

    def create(self, attempt: int) -> str:
        extra = {"filterArn": self.filter_arn} if self.filter_arn else {}
        return self.hook.conn.create_batch_inference_job(
            jobName=attempt_name(self.job_name, attempt),
            solutionVersionArn=self.solution_version_arn,
            jobInput={"s3DataSource": {"path": self.input_path}},
            jobOutput={"s3DataDestination": {"path": self.output_path}},
            roleArn=self.role_arn,
            numResults=self.num_results,
            **extra,
        )["batchInferenceJobArn"]


class PersonalizeUpdateCampaignOperator(_PersonalizeJobOperator):
    """Point a campaign at a solution version and wait for ``latestCampaignUpdate`` to be ACTIVE.

    :param campaign_arn: the campaign to update.
    :param solution_version_arn: the version it should serve.
    :param min_provisioned_tps: a new minimum provisioned TPS; ``None`` keeps the campaign's.
    """

    template_fields: Sequence[str] = aws_template_fields("waiter_delay", "campaign_arn", "solution_version_arn")
    trigger_class = triggers.CampaignUpdateTrigger

    def __init__(
        self, *, campaign_arn: str, solution_version_arn: str, min_provisioned_tps: int | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        self.campaign_arn, self.solution_version_arn = campaign_arn, solution_version_arn
        self.min_provisioned_tps = min_provisioned_tps

    def find(self):
        campaign = self.hook.conn.describe_campaign(campaignArn=self.campaign_arn)["campaign"]
        latest = campaign.get("latestCampaignUpdate")
        if latest and latest["solutionVersionArn"] == self.solution_version_arn and latest["status"] in ALIVE:
            return self.campaign_arn, 1
        return None, 1

    def execute(self, context, event=None, busy_since: float | None = None):
        campaign = self.hook.conn.describe_campaign(campaignArn=self.campaign_arn)["campaign"]
        if not campaign.get("latestCampaignUpdate") and campaign["solutionVersionArn"] == self.solution_version_arn:
            self.log.info("%s already serves %s", self.campaign_arn, self.solution_version_arn)
            return self.campaign_arn
        return super().execute(context, event, busy_since)

    def create(self, attempt: int) -> str:
        extra = {"minProvisionedTPS": self.min_provisioned_tps} if self.min_provisioned_tps else {}
        return self.hook.conn.update_campaign(
            campaignArn=self.campaign_arn, solutionVersionArn=self.solution_version_arn, **extra
        )["campaignArn"]


class PersonalizeCreateDatasetExportJobOperator(_PersonalizeJobOperator):
    """Export a dataset's records to ``output_path`` (``ingestion_mode`` PUT: what the event tracker and
    PutUsers/PutItems recorded; BULK: what was imported; ALL: both).

    :param job_name: the job's name, derived from the run.
    :param dataset_arn: the dataset to export.
    :param output_path: the ``s3://`` folder for the CSV part files.
    :param role_arn: the IAM role Personalize assumes to write them.
    :param ingestion_mode: ``PUT``, ``BULK`` or ``ALL``.
    """

    template_fields: Sequence[str] = aws_template_fields(
        "waiter_delay", "job_name", "dataset_arn", "output_path", "role_arn", "ingestion_mode"
    )
    trigger_class = triggers.DatasetExportJobTrigger

    def __init__(
        self, *, job_name: str, dataset_arn: str, output_path: str, role_arn: str, ingestion_mode: str = "PUT", **kwargs
    ):
        super().__init__(**kwargs)
        self.job_name, self.dataset_arn, self.output_path = job_name, dataset_arn, output_path
        self.role_arn, self.ingestion_mode = role_arn, ingestion_mode

    def find(self):
        return self.hook.find_dataset_export_job(self.dataset_arn, self.job_name)

    def create(self, attempt: int) -> str:
        return self.hook.conn.create_dataset_export_job(
            jobName=attempt_name(self.job_name, attempt),
            datasetArn=self.dataset_arn,
            ingestionMode=self.ingestion_mode,
            roleArn=self.role_arn,
            jobOutput={"s3DataDestination": {"path": self.output_path}},
        )["datasetExportJobArn"]
