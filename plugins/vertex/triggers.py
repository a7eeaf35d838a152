"""A trigger that waits for a Vertex AI long-running operation in the triggerer, not a worker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class VertexOperationTrigger(BaseTrigger):
    """Poll ``operations.get`` for ``operation_name`` until done, failed or ``timeout`` seconds.

    Polling uses the same endpoint/transport-configurable client as the hooks. The blocking GAPIC
    call runs in a thread of the triggerer's event loop, so no worker slot is held while Vertex works.
    Events: ``{"status": "success", "response": {...}}``, ``{"status": "error", "message": ...}``,
    ``{"status": "timeout", "message": ...}``.
    """

    def __init__(self, operation_name: str, region: str, gcp_conn_id: str = "google_cloud_default",
                 poll_interval: float = 10.0, timeout: float = 3600.0, started_at: float | None = None):  # fmt: skip
        super().__init__()
        self.operation_name, self.region, self.gcp_conn_id = operation_name, region, gcp_conn_id
        self.poll_interval, self.timeout = poll_interval, timeout
        self.started_at = started_at if started_at is not None else time.time()  # survives triggerer restarts

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"operation_name": self.operation_name, "region": self.region, "gcp_conn_id": self.gcp_conn_id,
             "poll_interval": self.poll_interval, "timeout": self.timeout, "started_at": self.started_at},
        )  # fmt: skip

    def _get_operation(self):
        from vertex.hooks import VertexEndpointServiceHook

        client = VertexEndpointServiceHook(gcp_conn_id=self.gcp_conn_id).get_endpoint_service_client(self.region)
        return client.get_operation({"name": self.operation_name})

    async def run(self):
        from google.protobuf.json_format import MessageToDict

        while True:
            operation = await asyncio.to_thread(self._get_operation)
            if operation.done:
                if operation.HasField("error"):
                    message = f"{operation.error.message} (code {operation.error.code})"
                    yield TriggerEvent({"status": "error", "operation": self.operation_name, "message": message})
                else:
                    response = MessageToDict(operation.response) if operation.HasField("response") else {}
                    yield TriggerEvent({"status": "success", "operation": self.operation_name, "response": response})
                return
            waited = time.time() - self.started_at
            if waited >= self.timeout:
                yield TriggerEvent({"status": "timeout", "operation": self.operation_name,
                                    "message": f"{self.operation_name} not done after {waited:.0f} s"})  # fmt: skip
                return
            self.log.info("%s not done yet (%.0f s)", self.operation_name, waited)
            await asyncio.sleep(self.poll_interval)
