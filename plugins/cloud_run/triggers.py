"""Wait for a Cloud Run job execution in the triggerer (no worker slot), as the Vertex triggers do."""

from __future__ import annotations

import asyncio

from vertex.triggers import _VertexPollingTrigger


def execution_outcome(execution) -> dict | None:
    """The final event of an ``Execution`` (success, or error with Cloud Run's reason), None while it runs."""
    if not execution.completion_time:
        return None
    if execution.succeeded_count >= max(execution.task_count, 1):
        return {"status": "success", "succeeded": execution.succeeded_count}
    reasons = [c.message for c in execution.conditions if c.message and c.type_ in ("Completed", "ResourcesAvailable")]
    if execution.cancelled_count:
        reasons.insert(0, "the execution was cancelled")
    return {"status": "error", "message": "; ".join(reasons) or f"{execution.failed_count} task(s) failed"}


class CloudRunExecutionTrigger(_VertexPollingTrigger):
    """Poll a job execution until it completes; ``on_kill`` cancels it."""

    kind = "execution"

    def _client(self):
        from cloud_run.hooks import CloudRunJobsHook

        return CloudRunJobsHook(gcp_conn_id=self.gcp_conn_id).executions_client(self.region)

    def check(self) -> dict | None:
        return execution_outcome(self._client().get_execution(name=self.resource))

    async def on_kill(self) -> None:
        """A user killed the deferred task (mark failed / clear): cancel the execution so it stops costing."""
        self.log.warning("task killed: cancelling %s", self.resource)
        await asyncio.to_thread(self._client().cancel_execution, name=self.resource)
