"""The steps of a safe Vertex AI rollout, on the project's configurable hooks.

Idempotent by construction: an upload is found again by its ``recsys-version`` label, the endpoint
by its display name and ``app`` label, so a retried task or a re-run reattaches instead of
duplicating. The long waits (upload, deploy, undeploy) are in the deferrable operators.
"""

from __future__ import annotations

import re

LABEL = "recsys-version"


def version_label(version: str) -> str:
    """Vertex labels: lowercase letters, digits, '-' and '_', at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", version.lower())[:63]


def model_spec(display_name: str, model_dir: str, image_uri: str, version: str) -> dict:
    """An ``aiplatform.v1.Model`` for the project's serving container (Vertex's custom-container contract)."""
    return {
        "display_name": display_name,
        "artifact_uri": model_dir,
        "labels": {LABEL: version_label(version), "app": "recsys"},
        "version_aliases": [f"v-{version_label(version)}"[:63]],
        "container_spec": {
            "image_uri": image_uri,
            "predict_route": "/predict",
            "health_route": "/health",
            "ports": [{"container_port": 8080}],
            "env": [{"name": "RECSYS_SERVING_WORKERS", "value": "2"}],
        },
    }


def find_model_version(model_hook, project: str, region: str, display_name: str, version: str) -> dict | None:
    """The parent model and, if this version was uploaded already, its version id."""
    client = model_hook.get_model_service_client(region)
    parent = f"projects/{project}/locations/{region}"
    models = list(client.list_models(request={"parent": parent, "filter": f'display_name="{display_name}"'}))
    if not models:
        return None
    model_id = models[0].name.rsplit("/", 1)[-1]
    for candidate in model_hook.list_model_versions(project_id=project, region=region, model_id=model_id):
        if candidate.labels.get(LABEL) == version_label(version):
            model = f"{candidate.name}@{candidate.version_id}"
            return {"model_id": model_id, "version_id": candidate.version_id, "model": model}
    return {"model_id": model_id, "version_id": None, "model": None}


def ensure_endpoint(endpoint_hook, project: str, region: str, display_name: str, dedicated: bool = False) -> dict:
    """Find the endpoint by name and label, or create it (``dedicated``: with its own DNS); report what is
    deployed there now. Whether an endpoint is dedicated is fixed at creation, so asking for the other
    kind than the existing endpoint is an error that names the way out."""
    wanted = f'display_name="{display_name}" AND labels.app="recsys"'
    found = list(endpoint_hook.list_endpoints(project_id=project, region=region, filter=wanted))
    if found:
        endpoint = found[0]
        if bool(endpoint.dedicated_endpoint_enabled) != dedicated:
            kind = "a dedicated" if endpoint.dedicated_endpoint_enabled else "a shared"
            raise ValueError(
                f"endpoint {display_name!r} exists as {kind} endpoint and that cannot change; deploy to another "
                "endpoint name (vertex_endpoint_display_name) or set dedicated_endpoint to match"
            )
    else:
        spec = {"display_name": display_name, "labels": {"app": "recsys"}, "dedicated_endpoint_enabled": dedicated}
        endpoint = endpoint_hook.create_endpoint(project_id=project, region=region, endpoint=spec).result(timeout=600)
    traffic = dict(endpoint.traffic_split)
    return {
        "endpoint_id": endpoint.name.rsplit("/", 1)[-1],
        "previous_deployed_model_id": max(traffic, key=traffic.get) if traffic else None,
        "traffic_split": traffic,
        "dedicated_endpoint_dns": endpoint.dedicated_endpoint_dns or None,
    }


def set_traffic(endpoint_hook, project: str, region: str, endpoint_id: str, split: dict[str, int]) -> None:
    endpoint_hook.update_endpoint(
        project_id=project,
        region=region,
        endpoint_id=endpoint_id,
        endpoint={"traffic_split": split},
        update_mask={"paths": ["traffic_split"]},
    )


def predict(
    prediction_hook,
    project: str,
    region: str,
    endpoint_id: str,
    instances: list,
    parameters: dict,
    dedicated_dns: str | None = None,
):
    """A Vertex ``:predict`` call (through the endpoint's own DNS for a dedicated endpoint)."""
    from google.protobuf import json_format
    from google.protobuf.struct_pb2 import Value

    client = prediction_hook.get_prediction_service_client(region, dedicated_dns=dedicated_dns)
    return client.predict(
        endpoint=f"projects/{project}/locations/{region}/endpoints/{endpoint_id}",
        instances=[json_format.ParseDict(i, Value()) for i in instances],
        parameters=json_format.ParseDict(parameters, Value()),
    )


def smoke_test(
    prediction_hook, project: str, region: str, endpoint_id: str, user_ids: list[str], dedicated_dns: str | None = None
) -> dict:
    """Predict for real users through the endpoint; check the response schema and non-empty results."""
    from google.protobuf import json_format

    response = predict(prediction_hook, project, region, endpoint_id, user_ids, {"k": 10}, dedicated_dns)
    predictions = [json_format.MessageToDict(p) for p in response._pb.predictions]
    if len(predictions) != len(user_ids):
        raise ValueError(f"smoke test: {len(predictions)} predictions for {len(user_ids)} instances")
    for user, prediction in zip(user_ids, predictions, strict=True):
        if prediction.get("user_id") != user or not list(prediction.get("item_ids", [])):
            raise ValueError(f"smoke test: bad prediction for {user}: {prediction}")
    return {"users": len(user_ids), "served_by": response.deployed_model_id, "host": dedicated_dns or "regional"}
