"""The steps of a safe Vertex AI rollout, on the project's configurable hooks.

Idempotent by construction: an upload is found again by its ``recsys-version`` label, the endpoint
by its display name and ``app`` label, so a retried task or a re-run reattaches instead of
duplicating. The long waits (upload, deploy, undeploy) are in the deferrable operators.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

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


@dataclass(frozen=True)
class SmokeCheck:
    """What a smoke test asks and what a right answer is.

    ``instances`` are sent as they are; ``forbidden[i]`` are the items instance ``i`` must never get
    back (its seen and recent items); every returned item must be in ``catalog``. The canary is proven
    when ``deployed_model_id`` (the new deployment) has answered ``answers`` calls correctly within
    ``max_latency_seconds`` each; the endpoint splits traffic per request, so the test calls it until
    then, at most ``max_calls`` times. 429 / 503 (a shedding container, a quota) are retried with
    exponential backoff, at most ``max_retries`` in a row."""

    instances: list
    forbidden: list[frozenset]
    catalog: frozenset
    deployed_model_id: str | None = None
    answers: int = 3
    max_calls: int = 200
    max_latency_seconds: float = 2.0
    max_retries: int = 6
    backoff_seconds: float = 0.25


class SmokeTestFailed(Exception):
    """The endpoint answered wrongly, slowly, with an error, or the new model never answered."""


def smoke_test(prediction_hook, project: str, region: str, endpoint_id: str, check: SmokeCheck, dedicated_dns=None):
    """Call the endpoint until the new deployed model has answered ``check.answers`` times, checking
    each of its answers (schema, catalog items, no forbidden item, latency). Raises
    :class:`SmokeTestFailed` with the reason; returns what was observed."""
    from google.api_core.exceptions import GoogleAPICallError, ServiceUnavailable, TooManyRequests

    served: dict[str, int] = {}
    answered, retried, in_a_row, slowest = 0, 0, 0, 0.0
    for _ in range(check.max_calls):
        started = time.perf_counter()
        try:
            response = predict(prediction_hook, project, region, endpoint_id, check.instances, {"k": 10}, dedicated_dns)
        except (ServiceUnavailable, TooManyRequests) as exc:
            retried, in_a_row = retried + 1, in_a_row + 1
            if in_a_row > check.max_retries:
                raise SmokeTestFailed(f"the endpoint kept refusing ({exc.code}): {_message(exc)}") from exc
            time.sleep(check.backoff_seconds * 2 ** (in_a_row - 1))
            continue
        except GoogleAPICallError as exc:
            raise SmokeTestFailed(f"the endpoint answered {exc.code}: {_message(exc)}") from exc
        seconds, in_a_row = time.perf_counter() - started, 0
        served_by = response.deployed_model_id
        served[served_by] = served.get(served_by, 0) + 1
        if check.deployed_model_id and served_by != check.deployed_model_id:
            continue  # the previous model answered this one: the canary is not proven yet
        _check_answer(check, response, served_by)
        if seconds > check.max_latency_seconds:
            raise SmokeTestFailed(
                f"deployed model {served_by} answered in {seconds:.2f} s; the bar is {check.max_latency_seconds} s"
            )
        answered, slowest = answered + 1, max(slowest, seconds)
        if answered >= check.answers:
            return {
                "users": len(check.instances),
                "served_by": served_by,
                "answers": answered,
                "calls_by_deployed_model": served,
                "retried": retried,
                "slowest_seconds": round(slowest, 3),
                "host": dedicated_dns or "regional",
            }
    raise SmokeTestFailed(
        f"the new deployed model {check.deployed_model_id} answered {answered} of {check.max_calls} calls, "
        f"{check.answers} wanted (answers by deployed model: {served})"
    )


def _message(exc) -> str:
    """The service's error message (Google's error JSON over REST), without the request line."""
    try:
        return exc.response.json()["error"]["message"]
    except (AttributeError, KeyError, TypeError, ValueError):
        return exc.message


def _check_answer(check: SmokeCheck, response, served_by: str) -> None:
    from google.protobuf import json_format

    predictions = [json_format.MessageToDict(p) for p in response._pb.predictions]
    if len(predictions) != len(check.instances):
        raise SmokeTestFailed(f"{served_by}: {len(predictions)} predictions for {len(check.instances)} instances")
    for instance, forbidden, prediction in zip(check.instances, check.forbidden, predictions, strict=True):
        user = instance["user_id"] if isinstance(instance, dict) else instance
        items = prediction.get("item_ids") if isinstance(prediction, dict) else None
        if not isinstance(items, list) or prediction.get("user_id") != user:
            raise SmokeTestFailed(f"{served_by}: not the prediction schema for {user}: {str(prediction)[:200]}")
        if not items:
            raise SmokeTestFailed(f"{served_by}: no items for {user}")
        if unknown := [i for i in items if i not in check.catalog]:
            raise SmokeTestFailed(f"{served_by}: items outside the model's catalog for {user}: {unknown[:5]}")
        if seen := [i for i in items if i in forbidden]:
            raise SmokeTestFailed(f"{served_by}: items {user} has seen came back: {seen[:5]}")
