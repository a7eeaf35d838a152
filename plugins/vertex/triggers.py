"""Triggers that wait for Vertex AI work in the triggerer, not a worker.

The blocking GAPIC call runs in a thread of the triggerer's event loop every ``poll_interval``
seconds, through the same endpoint/transport-configurable hooks as the operators. ``started_at``
is serialized, so the overall ``timeout`` survives a triggerer restart. Events:
``{"status": "success", ...}``, ``{"status": "error", "message": ...}``,
``{"status": "timeout", "message": ...}``; every event names the polled resource.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class _VertexPollingTrigger(BaseTrigger):
    """Poll ``resource`` until :meth:`check` returns an event or ``timeout`` seconds pass.

    :param resource: the full resource name polled (an operation, a custom job, an execution).
    :param region: its region (the client's regional endpoint).
    :param gcp_conn_id: the Google Cloud connection.
    :param poll_interval: seconds between polls.
    :param timeout: seconds after ``started_at`` when the trigger reports a timeout.
    :param started_at: when the wait began (epoch seconds); kept across triggerer restarts.
    """

    kind = "resource"

    def __init__(
        self,
        resource: str,
        region: str,
        gcp_conn_id: str = "google_cloud_default",
        poll_interval: float = 10.0,
        timeout: float = 3600.0,
        started_at: float | None = None,
    ):
        super().__init__()
        self.resource, self.region, self.gcp_conn_id = resource, region, gcp_conn_id
        self.poll_interval, self.timeout = poll_interval, timeout
        self.started_at = started_at if started_at is not None else time.time()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "resource": self.resource,
                "region": self.region,
                "gcp_conn_id": self.gcp_conn_id,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "started_at": self.started_at,
            },
        )

    def check(self) -> dict | None:
        """One blocking poll: the final event's payload, or ``None`` while the work goes on."""
        raise NotImplementedError

    async def run(self):
        while True:
            outcome = await asyncio.to_thread(self.check)
            if outcome is not None:
                yield TriggerEvent({**outcome, self.kind: self.resource})
                return
            waited = time.time() - self.started_at
            if waited >= self.timeout:
                message = f"{self.resource} not done after {waited:.0f} s"
                yield TriggerEvent({"status": "timeout", self.kind: self.resource, "message": message})
                return
            self.log.info("%s not done yet (%.0f s)", self.resource, waited)
            await asyncio.sleep(self.poll_interval)


class VertexOperationTrigger(_VertexPollingTrigger):
    """Wait for a long-running operation (upload, deploy, undeploy...)."""

    kind = "operation"

    def check(self) -> dict | None:
        from google.protobuf.json_format import MessageToDict

        from vertex.hooks import VertexEndpointServiceHook

        client = VertexEndpointServiceHook(gcp_conn_id=self.gcp_conn_id).get_endpoint_service_client(self.region)
        operation = client.get_operation({"name": self.resource})
        if not operation.done:
            return None
        if operation.HasField("error"):
            return {"status": "error", "message": f"{operation.error.message} (code {operation.error.code})"}
        return {
            "status": "success",
            "response": MessageToDict(operation.response) if operation.HasField("response") else {},
        }


class VertexCustomJobTrigger(_VertexPollingTrigger):
    """Wait for a custom job to reach a final state (SUCCEEDED, FAILED, CANCELLED, EXPIRED)."""

    kind = "job"
    FAILED = ("JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")
    job_type = "custom_job"  # the JobService methods: get_<job_type>, cancel_<job_type>

    def _client(self):
        from vertex.hooks import VertexJobServiceHook

        return VertexJobServiceHook(gcp_conn_id=self.gcp_conn_id).get_job_service_client(self.region)

    def check(self) -> dict | None:
        job = getattr(self._client(), f"get_{self.job_type}")(name=self.resource)
        state = job.state.name
        if state == "JOB_STATE_SUCCEEDED":
            return {"status": "success", "state": state}
        if state in self.FAILED:
            return {"status": "error", "state": state, "message": f"{state}: {job.error.message or 'no reason given'}"}
        return None

    async def on_kill(self) -> None:
        """A user killed the deferred task (mark failed / clear): cancel the job so it stops costing money."""
        self.log.warning("task killed: cancelling %s", self.resource)
        await asyncio.to_thread(getattr(self._client(), f"cancel_{self.job_type}"), name=self.resource)


class VertexHyperparameterTuningJobTrigger(VertexCustomJobTrigger):
    """Wait for a hyperparameter tuning job (all its trials) to reach a final state."""

    job_type = "hyperparameter_tuning_job"
