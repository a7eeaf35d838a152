"""A Cloud Run Admin API v2 hook with the connection's ``api_endpoint`` / ``api_transport`` extras.

The provider's ``CloudRunHook`` always builds its client for ``run.googleapis.com`` (or the regional
host), so it cannot reach a Private Service Connect address or a local fake; this hook builds the
same GAPIC clients (jobs and executions) the way the project's Vertex hooks do
(:class:`vertex.hooks.ConfigurableEndpointMixin`), on the provider's credentials handling.
"""

from __future__ import annotations

from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
from vertex.hooks import ConfigurableEndpointMixin


class _GlobalEndpoint(GoogleBaseHook):
    def _get_api_endpoint(self, region: str | None = None) -> str | None:
        return None  # the client's default: run.googleapis.com


class CloudRunJobsHook(ConfigurableEndpointMixin, _GlobalEndpoint):
    """Cloud Run Admin API v2 clients (jobs, executions), pointable at another host like the Vertex hooks.

    :param gcp_conn_id: the Google Cloud connection (its extra ``api_endpoint`` may point at a local fake).
    """

    def __init__(self, gcp_conn_id: str = "google_cloud_default", **kwargs):
        super().__init__(gcp_conn_id=gcp_conn_id, **kwargs)

    def jobs_client(self, region: str | None = None):
        from google.cloud.run_v2 import JobsClient

        return self._build_client(JobsClient, region)

    def executions_client(self, region: str | None = None):
        from google.cloud.run_v2 import ExecutionsClient

        return self._build_client(ExecutionsClient, region)
