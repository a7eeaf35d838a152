"""Deferrable Vertex AI operators: start the long-running operation, then wait in the triggerer.

The provider's upload/deploy/undeploy operators block a worker slot for the whole operation
(deploys take 5-15 minutes). These start it with the project's configurable hooks, defer to
:class:`~vertex.triggers.VertexOperationTrigger`, and fail with the operation's own error message.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator


class VertexOperationFailed(RuntimeError):
    """The Vertex AI operation ended with an error or did not finish in time."""


class _DeferrableVertexOperator(BaseOperator):
    template_fields: tuple[str, ...] = ("project_id", "region", "gcp_conn_id", "poll_interval")

    def __init__(self, *, project_id: str, region: str, gcp_conn_id: str = "google_cloud_default",
                 poll_interval: float = 10.0, operation_timeout: float = 3600.0, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.project_id, self.region, self.gcp_conn_id = project_id, region, gcp_conn_id
        self.poll_interval, self.operation_timeout = poll_interval, operation_timeout

    def start(self):
        """Start the operation; return the ``google.api_core.operation.Operation``."""
        raise NotImplementedError

    def finish(self, response: dict, context) -> Any:
        return response

    def execute(self, context):
        from vertex.triggers import VertexOperationTrigger

        operation = self.start()
        name = operation.operation.name
        self.log.info("started %s; deferring until it is done", name)
        self.defer(
            trigger=VertexOperationTrigger(
                name, self.region, self.gcp_conn_id, self.poll_interval, self.operation_timeout
            ),  # fmt: skip
            method_name="execute_complete",
            timeout=timedelta(seconds=self.operation_timeout + 60),
        )

    def execute_complete(self, context, event: dict):
        if event["status"] != "success":
            raise VertexOperationFailed(f"{event['operation']}: {event['message']}")
        return self.finish(event["response"], context)


class DeferrableUploadModelOperator(_DeferrableVertexOperator):
    template_fields = (*_DeferrableVertexOperator.template_fields, "model", "parent_model")

    def __init__(self, *, model: dict, parent_model: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model, self.parent_model = model, parent_model

    def start(self):
        from vertex.hooks import VertexModelServiceHook

        return VertexModelServiceHook(gcp_conn_id=self.gcp_conn_id).upload_model(
            project_id=self.project_id, region=self.region, model=self.model, parent_model=self.parent_model
        )

    def finish(self, response: dict, context) -> dict:
        return {"model": response["model"], "model_id": response["model"].rsplit("/", 1)[-1],
                "version_id": response.get("modelVersionId")}  # fmt: skip


class DeferrableDeployModelOperator(_DeferrableVertexOperator):
    template_fields = (*_DeferrableVertexOperator.template_fields, "endpoint_id", "deployed_model", "traffic_split")

    def __init__(self, *, endpoint_id: str, deployed_model: dict, traffic_split: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.endpoint_id, self.deployed_model, self.traffic_split = endpoint_id, deployed_model, traffic_split

    def start(self):
        from vertex.hooks import VertexEndpointServiceHook

        return VertexEndpointServiceHook(gcp_conn_id=self.gcp_conn_id).deploy_model(
            project_id=self.project_id, region=self.region, endpoint=self.endpoint_id,
            deployed_model=self.deployed_model, traffic_split=self.traffic_split)  # fmt: skip

    def finish(self, response: dict, context) -> dict:
        return {"deployed_model_id": response["deployedModel"]["id"], "endpoint_id": self.endpoint_id}


class DeferrableUndeployModelOperator(_DeferrableVertexOperator):
    template_fields = (*_DeferrableVertexOperator.template_fields, "endpoint_id", "deployed_model_id",
                       "traffic_split")  # fmt: skip

    def __init__(self, *, endpoint_id: str, deployed_model_id: str, traffic_split: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.endpoint_id, self.deployed_model_id, self.traffic_split = endpoint_id, deployed_model_id, traffic_split

    def execute(self, context):
        if not self.deployed_model_id:
            self.log.info("nothing to undeploy")
            return None
        return super().execute(context)

    def start(self):
        from vertex.hooks import VertexEndpointServiceHook

        return VertexEndpointServiceHook(gcp_conn_id=self.gcp_conn_id).undeploy_model(
            project_id=self.project_id, region=self.region, endpoint=self.endpoint_id,
            deployed_model_id=self.deployed_model_id, traffic_split=self.traffic_split)  # fmt: skip

    def finish(self, response: dict, context) -> dict:
        return {"undeployed_model_id": self.deployed_model_id, "endpoint_id": self.endpoint_id}


class IdempotentUploadModelOperator(DeferrableUploadModelOperator):
    """Upload as a new version of the parent model found by display name, unless this version
    (its ``recsys-version`` label) is already there: then return it without uploading again."""

    def __init__(self, *, version: str, **kwargs):
        super().__init__(**kwargs)
        self.version = version

    template_fields = (*DeferrableUploadModelOperator.template_fields, "version")

    def execute(self, context):
        from vertex.deploy import find_model_version
        from vertex.hooks import VertexModelServiceHook

        hook = VertexModelServiceHook(gcp_conn_id=self.gcp_conn_id)
        found = find_model_version(hook, self.project_id, self.region, self.model["display_name"], self.version)
        if found and found["version_id"]:
            self.log.info("version %s is already uploaded as %s: not uploading again", self.version, found["model"])
            return {"model": found["model"], "model_id": found["model_id"], "version_id": found["version_id"],
                    "reused": True}  # fmt: skip
        self.parent_model = found["model_id"] if found else None
        return super().execute(context)

    def finish(self, response: dict, context) -> dict:
        result = super().finish(response, context)
        return {**result, "model": f"{response['model']}@{result['version_id']}", "reused": False}
