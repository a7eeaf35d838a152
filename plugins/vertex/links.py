"""Google Cloud console links for the Vertex AI operators: the same pages, XCom keys and names as the Google
provider's ``VertexAIModelLink`` / ``VertexAIEndpointLink`` / ``VertexAICustomJobLink``.

The provider's link module imports ``google.api_core`` and the protobuf runtime when it is imported; the DAG
files import these operators at parse time, so these links carry the provider's URL formats without that import.
In Airflow 3 the worker renders each link after the task ran (``get_link``) and stores it in XCom; the UI
reads it from there, so no plugin registration is needed.
"""

from __future__ import annotations

from typing import ClassVar

from airflow.sdk import BaseOperatorLink

CONSOLE = "https://console.cloud.google.com/vertex-ai"


class _VertexConsoleLink(BaseOperatorLink):
    name: ClassVar[str]
    key: ClassVar[str]  # the XCom key the operator persists the link's values under
    format_str: ClassVar[str]

    @property
    def xcom_key(self) -> str:
        return self.key

    @classmethod
    def persist(cls, context, **values) -> None:
        """Store what the link needs (``region``, ``project_id``, the resource id) for ``get_link``; nothing
        when called without a task instance (an operator's ``execute`` driven directly, as in unit tests)."""
        if "ti" in context:
            context["ti"].xcom_push(key=cls.key, value=values)

    def get_link(self, operator, *, ti_key) -> str:
        from airflow.sdk.bases.xcom import BaseXCom

        values = BaseXCom.get_value(ti_key=ti_key, key=self.key)
        if isinstance(values, str):  # already rendered: the worker stores the link under the same key
            return values
        if not values:
            return ""
        try:
            return self.format_str.format(**values)
        except KeyError:
            return ""


class VertexModelLink(_VertexConsoleLink):
    name = "Vertex AI Model"
    key = "model_conf"
    format_str = (
        CONSOLE + "/models/locations/{region}/models/{model_id}/versions/default/properties?project={project_id}"
    )


class VertexEndpointLink(_VertexConsoleLink):
    name = "Endpoint"
    key = "endpoint_conf"
    format_str = CONSOLE + "/locations/{region}/endpoints/{endpoint_id}?project={project_id}"


class VertexCustomJobLink(_VertexConsoleLink):
    name = "Vertex AI Custom Job"
    key = "custom_job_conf"
    format_str = CONSOLE + "/locations/{region}/training/{custom_job_id}/cpu?project={project_id}"
