"""
### recsys_vertex_deploy — roll a blessed model out to a Vertex AI endpoint, safely

Triggered by `recsys_blessed_model` (from `recsys_two_tower`) and from the UI.

1. `plan` — which model directory (Param `model_dir`, else the newest blessed-model event, else the
   champion pointer), the project/region/names from settings. `dry_run` stops here.
2. `upload` — a new version of the parent model in the Model Registry (artifact URI = the model
   directory; image = the project's serving container), labelled `recsys-version`; a retry or a
   re-run finds that version instead of uploading twice. Deferrable.
3. `endpoint` — find the endpoint by display name + label, or create it; note the live model.
4. `deploy_canary` — deploy the new version with `canary_percent` of the traffic (100 with
   `skip_canary` or on a fresh endpoint). Deferrable.
5. `smoke_test` — real predictions through the endpoint: schema and non-empty results. A dedicated
   endpoint (Param `dedicated_endpoint` / setting `vertex_dedicated_endpoint`: its own DNS, created
   with `dedicatedEndpointEnabled`) is called at its `dedicatedEndpointDns`, as its clients must.
6. `promote` — 100% traffic to the new version, aliases `default` and `champion`.
7. `undeploy_previous` — remove the previous model from the endpoint. Deferrable.

**Rollback**: if the canary, smoke test or promotion fails, `rollback` sends all traffic back to the
previous model and undeploys the new one; the run fails with the reason. The previous model serves
throughout. `max_active_runs=1`: two deploys never overlap.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Param, dag, get_current_context, task

from recsys.alerts import task_defaults  # notifiers built from settings at parse time
from recsys.assets import BLESSED_MODEL
from recsys.config import load_settings  # stdlib only: cheap at parse time

PARAMS = {
    "model_dir": Param(
        None,
        type=["null", "string"],
        title="Exported model directory",
        description="Empty = the model announced by recsys_two_tower (or the champion).",
    ),
    "canary_percent": Param(
        10,
        type="integer",
        minimum=1,
        maximum=99,
        title="Canary traffic (%)",
        description="Share of traffic the new model gets before the smoke test and promotion.",
    ),
    "machine_type": Param(
        "n1-standard-2",
        type="string",
        pattern=r"^[a-z0-9]+(-[a-z0-9]+)+$",
        title="Machine type",
        description="Compute Engine machine type of the endpoint's replicas, e.g. n1-standard-2.",
    ),
    "min_replicas": Param(
        1,
        type="integer",
        minimum=1,
        maximum=100,
        title="Minimum replicas",
        description="Replicas always running (autoscaling floor).",
    ),
    "max_replicas": Param(
        2, type="integer", minimum=1, maximum=100, title="Maximum replicas", description="Autoscaling ceiling."
    ),
    "skip_canary": Param(
        False, type="boolean", title="Skip the canary", description="Send 100% of the traffic to the new model at once."
    ),
    "dedicated_endpoint": Param(
        None,
        type=["null", "boolean"],
        title="Dedicated endpoint",
        description="Create the endpoint with its own DNS (dedicatedEndpointEnabled); "
        "empty = the vertex_dedicated_endpoint setting. Fixed once the endpoint exists.",
    ),
    "dry_run": Param(
        False,
        type="boolean",
        title="Plan only: change nothing",
        description="Resolve the model and names, log the plan, change nothing.",
    ),
}


_SETTINGS = load_settings()  # the environment only: retries, notifiers, deadlines


@dag(
    dag_id="recsys_vertex_deploy",
    schedule=[BLESSED_MODEL],
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=task_defaults(_SETTINGS),
    tags=["recsys", "deploy", "vertex"],
    params=PARAMS,
    doc_md=__doc__,
)
def recsys_vertex_deploy():
    @task(multiple_outputs=False)
    def plan() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from recsys.training.gate import read_champion

        context = get_current_context()
        params, settings = context["params"], load_settings(use_airflow_variables=True)
        if params["min_replicas"] > params["max_replicas"]:
            raise AirflowFailException("min_replicas must not exceed max_replicas")
        if not settings.vertex_project or not settings.serving_image_uri:
            raise AirflowFailException("set RECSYS_VERTEX_PROJECT and RECSYS_SERVING_IMAGE_URI (or the Variables)")
        model_dir = params["model_dir"]
        events = context.get("triggering_asset_events") or {}
        for asset_events in events.values():
            model_dir = model_dir or (asset_events[-1].extra or {}).get("model_dir")
        champion = read_champion(settings.models_root)
        model_dir = model_dir or (champion or {}).get("model_dir")
        if not model_dir:
            raise AirflowFailException("no model_dir given, announced or blessed yet")
        return {
            "model_dir": model_dir,
            "version": model_dir.rstrip("/").rsplit("/", 1)[-1],
            "project": settings.vertex_project,
            "region": settings.vertex_region,
            "gcp_conn_id": settings.gcp_conn_id,
            "image": settings.serving_image_uri,
            "model_name": settings.vertex_model_display_name,
            "endpoint_name": settings.vertex_endpoint_display_name,
            "dry_run": params["dry_run"],
            "dedicated": settings.vertex_dedicated_endpoint
            if params["dedicated_endpoint"] is None
            else params["dedicated_endpoint"],
            "poll_seconds": settings.vertex_poll_seconds,
            "operation_timeout": settings.vertex_operation_timeout_seconds,
        }

    @task.short_circuit
    def changes_allowed(planned: dict) -> bool:
        return not planned["dry_run"]

    @task(multiple_outputs=False)
    def upload_spec(planned: dict) -> dict:
        from vertex.deploy import model_spec

        return model_spec(planned["model_name"], planned["model_dir"], planned["image"], planned["version"])

    @task(multiple_outputs=True)  # downstream operators read its keys
    def endpoint(planned: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException
        from vertex.deploy import ensure_endpoint
        from vertex.hooks import VertexEndpointServiceHook

        hook = VertexEndpointServiceHook(gcp_conn_id=planned["gcp_conn_id"])
        try:
            return ensure_endpoint(
                hook, planned["project"], planned["region"], planned["endpoint_name"], planned["dedicated"]
            )
        except ValueError as exc:  # the existing endpoint is of the other kind: a retry cannot help
            raise AirflowFailException(str(exc)) from exc

    @task(multiple_outputs=True)  # downstream operators read its keys
    def deployment(planned: dict, uploaded: dict, target: dict) -> dict:
        """The deployed-model spec and the canary traffic split. The display name is unique to this run,
        so a retried deploy finds its own deployment and a new run never mistakes the live one for it."""
        import hashlib

        context = get_current_context()
        params, run_key = context["params"], hashlib.sha1(context["run_id"].encode()).hexdigest()[:8]
        previous = target["previous_deployed_model_id"]
        canary = 100 if params["skip_canary"] or previous is None else params["canary_percent"]
        split = {"0": canary, **({previous: 100 - canary} if canary < 100 else {})}
        return {
            "endpoint_id": target["endpoint_id"],
            "traffic_split": split,
            "deployed_model": {
                "model": uploaded["model"],
                "display_name": f"recsys-{planned['version']}"[:119] + f"-{run_key}",
                "dedicated_resources": {
                    "machine_spec": {"machine_type": params["machine_type"]},
                    "min_replica_count": params["min_replicas"],
                    "max_replica_count": params["max_replicas"],
                },
            },
        }

    @task(multiple_outputs=False)
    def smoke_test(planned: dict, deployed: dict, target: dict) -> dict:
        import pandas as pd
        from airflow.sdk import ObjectStoragePath
        from vertex.deploy import smoke_test as check
        from vertex.hooks import VertexPredictionServiceHook

        with (ObjectStoragePath(planned["model_dir"]) / "holdout.parquet").open("rb") as handle:
            users = pd.read_parquet(handle)["user_id"].astype(str).drop_duplicates().head(5).tolist()
        hook = VertexPredictionServiceHook(gcp_conn_id=planned["gcp_conn_id"])
        dns = target["dedicated_endpoint_dns"]
        return check(hook, planned["project"], planned["region"], deployed["endpoint_id"], users, dns)

    @task(multiple_outputs=False)
    def promote(planned: dict, uploaded: dict, deployed: dict) -> dict:
        from vertex.deploy import set_traffic
        from vertex.hooks import VertexEndpointServiceHook, VertexModelServiceHook

        endpoints = VertexEndpointServiceHook(gcp_conn_id=planned["gcp_conn_id"])
        set_traffic(endpoints, planned["project"], planned["region"], deployed["endpoint_id"],
                    {deployed["deployed_model_id"]: 100})  # fmt: skip
        VertexModelServiceHook(gcp_conn_id=planned["gcp_conn_id"]).add_version_aliases(
            project_id=planned["project"],
            region=planned["region"],
            model_id=f"{uploaded['model_id']}@{uploaded['version_id']}",
            version_aliases=["default", "champion"],
        )
        return {"endpoint_id": deployed["endpoint_id"], "deployed_model_id": deployed["deployed_model_id"]}

    @task(trigger_rule="one_failed", retries=3)
    def rollback(planned: dict, target: dict) -> None:
        """Traffic back to the previous model, the new one undeployed; the run still fails. Nothing to undo
        when the run failed before the endpoint was known (e.g. in ``plan``)."""
        from vertex.deploy import set_traffic
        from vertex.hooks import VertexEndpointServiceHook

        if not planned or not target:
            return
        hook = VertexEndpointServiceHook(gcp_conn_id=planned["gcp_conn_id"])
        project, region, endpoint_id = planned["project"], planned["region"], target["endpoint_id"]
        state = hook.get_endpoint(project_id=project, region=region, endpoint=endpoint_id)
        previous = target["previous_deployed_model_id"]
        if previous:
            set_traffic(hook, project, region, endpoint_id, {previous: 100})
        for deployed in state.deployed_models:
            if deployed.id != previous:
                split = {previous: 100} if previous else None
                operation = hook.undeploy_model(project_id=project, region=region, endpoint=endpoint_id,
                                                deployed_model_id=deployed.id, traffic_split=split)  # fmt: skip
                operation.result(timeout=1800)

    from vertex.operators import (
        DeferrableDeployModelOperator,
        DeferrableUndeployModelOperator,
        IdempotentUploadModelOperator,
    )

    planned = plan()
    gate = changes_allowed(planned)
    conn = {
        "project_id": "{{ ti.xcom_pull('plan')['project'] }}",
        "region": "{{ ti.xcom_pull('plan')['region'] }}",
        "gcp_conn_id": "{{ ti.xcom_pull('plan')['gcp_conn_id'] }}",
        "poll_interval": "{{ ti.xcom_pull('plan')['poll_seconds'] }}",
        "operation_timeout": "{{ ti.xcom_pull('plan')['operation_timeout'] }}",
    }
    upload = IdempotentUploadModelOperator(task_id="upload", model=upload_spec(planned),
                                           version="{{ ti.xcom_pull('plan')['version'] }}", **conn)  # fmt: skip
    target = endpoint(planned)
    spec = deployment(planned, upload.output, target)
    canary = DeferrableDeployModelOperator(task_id="deploy_canary", endpoint_id=spec["endpoint_id"],
                                           deployed_model=spec["deployed_model"],
                                           traffic_split=spec["traffic_split"], **conn)  # fmt: skip
    checked = smoke_test(planned, canary.output, target)
    promoted = promote(planned, upload.output, canary.output)
    undeploy = DeferrableUndeployModelOperator(task_id="undeploy_previous", endpoint_id=target["endpoint_id"],
                                               deployed_model_id=target["previous_deployed_model_id"],
                                               **conn)  # fmt: skip
    gate >> [upload, target]
    checked >> promoted >> undeploy
    [canary, checked, promoted] >> rollback(planned, target)


recsys_vertex_deploy()
