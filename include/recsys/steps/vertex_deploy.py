"""The steps of ``recsys_vertex_deploy``: the plan, the endpoint, the canary deployment's spec, the smoke test,
promotion and rollback."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from recsys.config import Settings
from recsys.steps.xcom import XComRecord


@dataclass(frozen=True)
class DeployPlan(XComRecord):
    """The model to deploy and where; the operators read these keys from the ``plan`` XCom."""

    model_dir: str
    version: str
    project: str
    region: str
    gcp_conn_id: str
    image: str
    model_name: str
    endpoint_name: str
    dry_run: bool
    dedicated: bool
    poll_seconds: float
    operation_timeout: float


def plan(settings: Settings, params: dict, announced_model_dirs: list[str]) -> dict:
    """The model (the Param, else the newest announced by ``recsys_two_tower``, else the champion) and the
    Vertex AI names; fails without retries on a setting or Param that a retry cannot fix."""
    from airflow.sdk.exceptions import AirflowFailException

    from recsys.training.gate import read_champion

    if params["min_replicas"] > params["max_replicas"]:
        raise AirflowFailException("min_replicas must not exceed max_replicas")
    if not settings.vertex.project or not settings.vertex.serving_image_uri:
        raise AirflowFailException("set RECSYS_VERTEX_PROJECT and RECSYS_SERVING_IMAGE_URI (or the Variables)")
    model_dir = params["model_dir"] or next((d for d in announced_model_dirs if d), None)
    model_dir = model_dir or (read_champion(settings.storage.models_root) or {}).get("model_dir")
    if not model_dir:
        raise AirflowFailException("no model_dir given, announced or blessed yet")
    dedicated = params["dedicated_endpoint"]
    return DeployPlan(
        model_dir=model_dir,
        version=model_dir.rstrip("/").rsplit("/", 1)[-1],
        project=settings.vertex.project,
        region=settings.vertex.region,
        gcp_conn_id=settings.connections.gcp,
        image=settings.vertex.serving_image_uri,
        model_name=settings.vertex.model_display_name,
        endpoint_name=settings.vertex.endpoint_display_name,
        dry_run=params["dry_run"],
        dedicated=settings.vertex.dedicated_endpoint if dedicated is None else dedicated,
        poll_seconds=settings.vertex.poll_seconds,
        operation_timeout=settings.vertex.operation_timeout_seconds,
    ).as_xcom()


def upload_spec(planned: DeployPlan) -> dict:
    """The Model Registry request: a new version of the parent model, served by the project's image."""
    from vertex.deploy import model_spec

    return model_spec(planned.model_name, planned.model_dir, planned.image, planned.version)


def endpoint(planned: DeployPlan) -> dict:
    """Find or create the endpoint; the model it serves now (``previous_deployed_model_id``)."""
    from airflow.sdk.exceptions import AirflowFailException
    from vertex.deploy import ensure_endpoint
    from vertex.hooks import VertexEndpointServiceHook

    hook = VertexEndpointServiceHook(gcp_conn_id=planned.gcp_conn_id)
    try:
        return ensure_endpoint(hook, planned.project, planned.region, planned.endpoint_name, planned.dedicated)
    except ValueError as exc:  # the existing endpoint is of the other kind: a retry cannot help
        raise AirflowFailException(str(exc)) from exc


def deployment(planned: DeployPlan, uploaded: dict, target: dict, params: dict, run_id: str) -> dict:
    """The deployed-model spec and the canary traffic split. The display name is unique to this run,
    so a retried deploy finds its own deployment and a new run never mistakes the live one for it."""
    run_key = hashlib.sha1(run_id.encode()).hexdigest()[:8]
    previous = target["previous_deployed_model_id"]
    canary = 100 if params["skip_canary"] or previous is None else params["canary_percent"]
    split = {"0": canary, **({previous: 100 - canary} if canary < 100 else {})}
    return {
        "endpoint_id": target["endpoint_id"],
        "traffic_split": split,
        "deployed_model": {
            "model": uploaded["model"],
            "display_name": f"recsys-{planned.version}"[:119] + f"-{run_key}",
            "dedicated_resources": {
                "machine_spec": {"machine_type": params["machine_type"]},
                "min_replica_count": params["min_replicas"],
                "max_replica_count": params["max_replicas"],
            },
        },
    }


def smoke_test(planned: DeployPlan, deployed: dict, target: dict, params: dict, ti=None, users: int = 5) -> dict:
    """Prove that the new deployment answers right: the first ``users`` users of the model's holdout, each
    with their first holdout items as ``recent_item_ids``, through the endpoint until the new deployed
    model has answered ``smoke_answers`` times (schema, catalog items, no seen item, latency bar). Fails
    without retries on a wrong answer: a retry cannot fix the container (429 / 503 are retried inside).
    The reason also goes to the ``failure`` XCom (for the report and the rollback's log)."""
    from airflow.sdk.exceptions import AirflowFailException
    from vertex.deploy import SmokeTestFailed
    from vertex.deploy import smoke_test as check
    from vertex.hooks import VertexPredictionServiceHook

    smoke = smoke_check(planned.model_dir, users, deployed["deployed_model_id"], params)
    hook = VertexPredictionServiceHook(gcp_conn_id=planned.gcp_conn_id)
    where = (planned.project, planned.region, deployed["endpoint_id"])
    try:
        return check(hook, *where, smoke, target["dedicated_endpoint_dns"])
    except SmokeTestFailed as exc:
        if ti is not None:
            ti.xcom_push(key="failure", value=str(exc))
        raise AirflowFailException(f"smoke test failed, rolling back: {exc}") from exc


def smoke_check(model_dir: str, users: int, deployed_model_id: str, params: dict):
    """The smoke test's questions, from the exported model: holdout users, their seen items (when the
    exported policy excludes them), the catalog."""
    import json

    import pandas as pd
    from airflow.sdk import ObjectStoragePath
    from vertex.deploy import SmokeCheck

    root = ObjectStoragePath(model_dir)
    frames = {}
    for name in ("holdout", "history", "candidates"):
        with (root / f"{name}.parquet").open("rb") as handle:
            frames[name] = pd.read_parquet(handle)
    holdout = frames["holdout"].astype({"user_id": str, "item_id": str})
    history = frames["history"].astype({"user_id": str, "item_id": str})
    exclude_seen = json.loads((root / "metadata.json").read_text())["policy"]["exclude_seen"]
    instances, forbidden = [], []
    for user, events in list(holdout.groupby("user_id", sort=False))[:users]:
        recent = events["item_id"].head(2).tolist()
        seen = frozenset(history.loc[history["user_id"] == user, "item_id"]) | frozenset(recent)
        instances.append({"user_id": user, "recent_item_ids": recent})
        forbidden.append(seen if exclude_seen else frozenset())
    return SmokeCheck(
        instances=instances,
        forbidden=forbidden,
        catalog=frozenset(frames["candidates"]["item_id"].astype(str)),
        deployed_model_id=deployed_model_id,
        answers=params["smoke_answers"],
        max_latency_seconds=params["smoke_max_latency_ms"] / 1000,
    )


def promote(planned: DeployPlan, uploaded: dict, deployed: dict) -> dict:
    """All traffic to the new model; its registry version gets the ``default`` and ``champion`` aliases."""
    from vertex.deploy import set_traffic
    from vertex.hooks import VertexEndpointServiceHook, VertexModelServiceHook

    endpoints = VertexEndpointServiceHook(gcp_conn_id=planned.gcp_conn_id)
    traffic = {deployed["deployed_model_id"]: 100}
    set_traffic(endpoints, planned.project, planned.region, deployed["endpoint_id"], traffic)
    VertexModelServiceHook(gcp_conn_id=planned.gcp_conn_id).add_version_aliases(
        project_id=planned.project,
        region=planned.region,
        model_id=f"{uploaded['model_id']}@{uploaded['version_id']}",
        version_aliases=["default", "champion"],
    )
    return {"endpoint_id": deployed["endpoint_id"], "deployed_model_id": deployed["deployed_model_id"]}


def rollback(planned: DeployPlan, target: dict, timeout_seconds: float = 1800) -> None:
    """Traffic back to the previous model and every other deployed model undeployed."""
    from vertex.deploy import set_traffic
    from vertex.hooks import VertexEndpointServiceHook

    hook = VertexEndpointServiceHook(gcp_conn_id=planned.gcp_conn_id)
    project, region, endpoint_id = planned.project, planned.region, target["endpoint_id"]
    state = hook.get_endpoint(project_id=project, region=region, endpoint=endpoint_id)
    previous = target["previous_deployed_model_id"]
    if previous:
        set_traffic(hook, project, region, endpoint_id, {previous: 100})
    for deployed in state.deployed_models:
        if deployed.id != previous:
            operation = hook.undeploy_model(
                project_id=project,
                region=region,
                endpoint=endpoint_id,
                deployed_model_id=deployed.id,
                traffic_split={previous: 100} if previous else None,
            )
            operation.result(timeout=timeout_seconds)
