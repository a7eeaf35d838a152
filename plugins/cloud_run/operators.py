"""Run one execution of a Cloud Run job and wait for it in the triggerer.

Contract (as :class:`vertex.operators.DeferrableCustomJobOperator`):

* **Find or create**: the job ``job_id`` is created from ``job`` if missing, else updated to it (its
  image and resources follow the settings); then the run's execution is found or started.
* **Idempotent**: ``run_key`` (e.g. the model version) goes to the container as ``RECSYS_RUN_KEY``; a
  retry or re-run that finds a running or succeeded execution carrying it reattaches instead of
  starting a second one (a failed or cancelled one is not reused).
* **Deferrable**: the wait runs in :class:`cloud_run.triggers.CloudRunExecutionTrigger`; the task fails
  with Cloud Run's reason; on timeout (or when the task is killed) the execution is cancelled.

The provider's ``CloudRunExecuteJobOperator`` starts a new execution on every try, has no cancel on
kill, and cannot be pointed at another API host; this operator fills those gaps with the same client.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

RUN_KEY = "RECSYS_RUN_KEY"


class CloudRunExecutionFailed(RuntimeError):
    """The execution failed, was cancelled or did not finish in time."""


class CloudRunJobExecutionOperator(BaseOperator):
    """Create or update the job, find or start the run's execution, defer until it ends (always deferrable).

    :param project_id: the Google Cloud project.
    :param region: the Cloud Run region.
    :param job_id: the job's id.
    :param job: the ``Job`` resource to create or update it to.
    :param run_key: identifies this run's execution (``RECSYS_RUN_KEY`` in its environment).
    :param overrides: the execution's overrides (container args, env).
    :param gcp_conn_id: the Google Cloud connection.
    :param poll_interval: seconds between the triggerer's polls.
    :param timeout_seconds: seconds the execution may run before it is cancelled and the task fails.
    """

    template_fields = (
        "project_id",
        "region",
        "gcp_conn_id",
        "job_id",
        "job",
        "overrides",
        "run_key",
        "poll_interval",
        "timeout_seconds",
    )

    def __init__(
        self,
        *,
        project_id: str,
        region: str,
        job_id: str,
        job: dict,
        run_key: str,
        overrides: dict | None = None,
        gcp_conn_id: str = "google_cloud_default",
        poll_interval: float = 10.0,
        timeout_seconds: float = 4 * 3600.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.project_id, self.region, self.job_id, self.job = project_id, region, job_id, job
        self.run_key, self.overrides, self.gcp_conn_id = run_key, overrides or {}, gcp_conn_id
        self.poll_interval, self.timeout_seconds = poll_interval, timeout_seconds
        self.execution_name: str | None = None

    @property
    def job_name(self) -> str:
        return f"projects/{self.project_id}/locations/{self.region}/jobs/{self.job_id}"

    def _hook(self):
        from cloud_run.hooks import CloudRunJobsHook

        return CloudRunJobsHook(gcp_conn_id=self.gcp_conn_id)

    def ensure_job(self, jobs) -> None:
        from google.api_core.exceptions import NotFound

        try:
            jobs.get_job(name=self.job_name)
        except NotFound:
            parent = self.job_name.rsplit("/jobs/", 1)[0]
            jobs.create_job(parent=parent, job=self.job, job_id=self.job_id).result(timeout=600)
            self.log.info("created %s", self.job_name)
            return
        jobs.update_job(job={**self.job, "name": self.job_name}).result(timeout=600)

    def find_execution(self, executions):
        """The newest execution of this run that is running or succeeded, if any."""
        alive = []
        for execution in executions.list_executions(parent=self.job_name):
            env = {e.name: e.value for c in execution.template.containers for e in c.env}
            failed = execution.completion_time and execution.succeeded_count < max(execution.task_count, 1)
            if env.get(RUN_KEY) == self.run_key and not failed:
                alive.append(execution)
        return max(alive, key=lambda e: e.create_time, default=None)

    def run_overrides(self) -> dict:
        """The overrides with ``RECSYS_RUN_KEY`` added to the first container's env."""
        containers = [dict(c) for c in self.overrides.get("container_overrides") or [{}]]
        containers[0]["env"] = [*containers[0].get("env", []), {"name": RUN_KEY, "value": self.run_key}]
        return {**self.overrides, "container_overrides": containers}

    def execute(self, context):
        from vertex.operators import quota_retry

        from cloud_run.triggers import CloudRunExecutionTrigger

        hook = self._hook()
        jobs, executions = hook.jobs_client(self.region), hook.executions_client(self.region)
        self.ensure_job(jobs)
        execution = self.find_execution(executions)
        if execution is not None:
            self.log.info("reattaching to %s instead of starting another execution", execution.name)
            self.execution_name = execution.name
            if execution.completion_time:
                return self.finish()
        else:
            request = {"name": self.job_name, "overrides": self.run_overrides()}
            operation = jobs.run_job(request=request, retry=quota_retry())
            self.execution_name = operation.metadata.name
            self.log.info("started %s", self.execution_name)
        self.defer(
            trigger=CloudRunExecutionTrigger(
                self.execution_name,
                self.region,
                self.gcp_conn_id,
                float(self.poll_interval),
                float(self.timeout_seconds),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout_seconds) + 60),
        )

    def execute_complete(self, context, event: dict) -> Any:
        self.execution_name = event["execution"]
        if event["status"] == "timeout":
            self.cancel()
        if event["status"] != "success":
            raise CloudRunExecutionFailed(f"{event['execution']}: {event['message']}")
        return self.finish()

    def finish(self) -> dict:
        return {"execution": self.execution_name, "job": self.job_name}

    def cancel(self) -> None:
        if self.execution_name:
            self.log.warning("cancelling %s", self.execution_name)
            self._hook().executions_client(self.region).cancel_execution(name=self.execution_name)

    def on_kill(self) -> None:
        self.cancel()
