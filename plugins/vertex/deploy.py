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
            return {"model_id": model_id, "version_id": candidate.version_id,
                    "model": f"{candidate.name}@{candidate.version_id}"}  # fmt: skip
    return {"model_id": model_id, "version_id": None, "model": None}


def ensure_endpoint(endpoint_hook, project: str, region: str, display_name: str) -> dict:
    """Find the endpoint by name and label, or create it; report what is deployed there now."""
    wanted = f'display_name="{display_name}" AND labels.app="recsys"'
    found = list(endpoint_hook.list_endpoints(project_id=project, region=region, filter=wanted))
    if found:
        endpoint = found[0]
    else:
        endpoint = endpoint_hook.create_endpoint(
            project_id=project, region=region, endpoint={"display_name": display_name, "labels": {"app": "recsys"}}
        ).result(timeout=600)
    traffic = dict(endpoint.traffic_split)
    previous = max(traffic, key=traffic.get) if traffic else None
    return {"endpoint_id": endpoint.name.rsplit("/", 1)[-1], "previous_deployed_model_id": previous,
            "traffic_split": traffic}  # fmt: skip


def set_traffic(endpoint_hook, project: str, region: str, endpoint_id: str, split: dict[str, int]) -> None:
    endpoint_hook.update_endpoint(project_id=project, region=region, endpoint_id=endpoint_id,
                                  endpoint={"traffic_split": split},
                                  update_mask={"paths": ["traffic_split"]})  # fmt: skip


def smoke_test(prediction_hook, project: str, region: str, endpoint_id: str, user_ids: list[str]) -> dict:
    """Predict for real users through the endpoint; check the response schema and non-empty results."""
    from google.protobuf import json_format
    from google.protobuf.struct_pb2 import Value

    client = prediction_hook.get_prediction_service_client(region)
    endpoint = f"projects/{project}/locations/{region}/endpoints/{endpoint_id}"
    response = client.predict(endpoint=endpoint, instances=[json_format.ParseDict(u, Value()) for u in user_ids],
                              parameters=json_format.ParseDict({"k": 10}, Value()))  # fmt: skip
    predictions = [json_format.MessageToDict(p) for p in response._pb.predictions]
    if len(predictions) != len(user_ids):
        raise ValueError(f"smoke test: {len(predictions)} predictions for {len(user_ids)} instances")
    for user, prediction in zip(user_ids, predictions, strict=True):
        if prediction.get("user_id") != user or not list(prediction.get("item_ids", [])):
            raise ValueError(f"smoke test: bad prediction for {user}: {prediction}")
    return {"users": len(user_ids), "served_by": response.deployed_model_id}
