"""Vertex AI hooks that honour two connection extras (apache/airflow#53596).

* ``api_endpoint``: host (``europe-west4-aiplatform.googleapis.com``, a Private Service Connect
  address, or ``http://127.0.0.1:PORT`` for a local fake); default: the provider's regional endpoint.
* ``api_transport``: ``grpc`` (default, as the provider) or ``rest``.
* Predictions for a dedicated endpoint go to its ``dedicatedEndpointDns``
  (:class:`VertexPredictionServiceHook`).

Everything else (credentials, ``is_anonymous``, impersonation, retries, operation helpers) is the
provider's own code: these classes only change how the GAPIC client is built.
"""

from __future__ import annotations

from airflow.providers.google.cloud.hooks.vertex_ai.custom_job import CustomJobHook
from airflow.providers.google.cloud.hooks.vertex_ai.endpoint_service import EndpointServiceHook
from airflow.providers.google.cloud.hooks.vertex_ai.model_service import ModelServiceHook
from airflow.providers.google.cloud.hooks.vertex_ai.prediction_service import PredictionServiceHook
from airflow.providers.google.common.consts import CLIENT_INFO

TRANSPORTS = ("grpc", "rest")


class ConfigurableEndpointMixin:
    """Builds GAPIC clients with the connection's ``api_endpoint`` and ``api_transport``."""

    def _get_api_endpoint(self, region: str | None = None) -> str | None:
        return self._get_field("api_endpoint") or super()._get_api_endpoint(region=region)

    @property
    def api_transport(self) -> str:
        transport = (self._get_field("api_transport") or "grpc").lower()
        if transport not in TRANSPORTS:
            raise ValueError(f"connection {self.gcp_conn_id!r}: api_transport must be one of {TRANSPORTS}")
        return transport

    def _build_client(self, client_class, region: str | None, host: str | None = None):
        return client_class(
            credentials=self.get_credentials(),
            client_info=CLIENT_INFO,
            client_options=self.get_client_options(api_endpoint_override=host or self._get_api_endpoint(region=region)),
            transport=self.api_transport,
        )


class VertexModelServiceHook(ConfigurableEndpointMixin, ModelServiceHook):
    def get_model_service_client(self, region: str | None = None):
        from google.cloud.aiplatform_v1 import ModelServiceClient

        return self._build_client(ModelServiceClient, region)


class VertexEndpointServiceHook(ConfigurableEndpointMixin, EndpointServiceHook):
    def get_endpoint_service_client(self, region: str | None = None):
        from google.cloud.aiplatform_v1 import EndpointServiceClient

        return self._build_client(EndpointServiceClient, region)


class VertexPredictionServiceHook(ConfigurableEndpointMixin, PredictionServiceHook):
    """Predictions go to the regional (or configured) host, or, for a dedicated endpoint, to the endpoint's
    own ``dedicatedEndpointDns``: the shared host refuses dedicated endpoints. The provider's hook always
    calls the shared host."""

    def get_prediction_service_client(self, region: str | None = None, dedicated_dns: str | None = None):
        from google.cloud.aiplatform_v1 import PredictionServiceClient

        return self._build_client(PredictionServiceClient, region, self.dedicated_host(dedicated_dns))

    def dedicated_host(self, dns: str | None) -> str | None:
        """The endpoint's DNS, over plain HTTP only when the connection's own host is (a local fake)."""
        if not dns:
            return None
        configured = self._get_field("api_endpoint") or ""
        return f"http://{dns}" if configured.startswith("http://") and "://" not in dns else dns


class VertexJobServiceHook(ConfigurableEndpointMixin, CustomJobHook):
    def get_job_service_client(self, region: str | None = None):
        from google.cloud.aiplatform_v1 import JobServiceClient

        return self._build_client(JobServiceClient, region)
