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
5. `smoke_test` — proves the *new* model answers right: holdout users (with recent items) are sent
   through the endpoint until the new deployed model has answered `smoke_answers` times (Vertex splits
   traffic per request; each response names its `deployedModelId`), each answer checked: schema, items
   from the model's catalog, no seen item, under `smoke_max_latency_ms`. 429 / 503 are retried with
   backoff; any other error, a wrong answer, or a new model that never answers fails the task. A dedicated
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
from recsys.config import load_dag_settings, load_settings  # stdlib only: cheap at parse time
from recsys.steps.vertex_deploy import DeployPlan
from recsys.steps.xcom import pulled

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
    "smoke_answers": Param(
        3,
        type="integer",
        minimum=1,
        maximum=20,
        title="Smoke test: answers from the new model",
        description="Correct answers the newly deployed model must give before promotion; the endpoint is "
        "called until it has (traffic is split per request), at most 200 times.",
    ),
    "smoke_max_latency_ms": Param(
        2000,
        type="integer",
        minimum=10,
        maximum=60000,
        title="Smoke test: latency bar (ms)",
        description="The slowest answer of the new model the smoke test accepts (5 users per call).",
    ),
    "dry_run": Param(
        False,
        type="boolean",
        title="Plan only: change nothing",
        description="Resolve the model and names, log the plan, change nothing.",
    ),
}


_plan = DeployPlan.from_xcom  # the plan task's XCom dict, as the typed plan
_SETTINGS = load_dag_settings()  # parse time: the environment only (retries, notifiers, deadlines)


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
        from recsys.steps import vertex_deploy

        context = get_current_context()
        events = context.get("triggering_asset_events") or {}
        announced = [(group[-1].extra or {}).get("model_dir") for group in events.values() if group]
        return vertex_deploy.plan(load_settings(use_airflow_variables=True), context["params"], announced)

    @task.short_circuit
    def changes_allowed(planned: dict) -> bool:
        return not planned["dry_run"]

    @task(multiple_outputs=False)
    def upload_spec(planned: dict) -> dict:
        from recsys.steps import vertex_deploy

        return vertex_deploy.upload_spec(_plan(planned))

    @task(multiple_outputs=True)  # downstream operators read its keys
    def endpoint(planned: dict) -> dict:
        from recsys.steps import vertex_deploy

        return vertex_deploy.endpoint(_plan(planned))

    @task(multiple_outputs=True)  # downstream operators read its keys
    def deployment(planned: dict, uploaded: dict, target: dict) -> dict:
        """The deployed-model spec (named after this run) and the canary traffic split."""
        from recsys.steps import vertex_deploy

        context = get_current_context()
        return vertex_deploy.deployment(_plan(planned), uploaded, target, context["params"], context["run_id"])

    @task(multiple_outputs=False)
    def smoke_test(planned: dict, deployed: dict, target: dict) -> dict:
        from recsys.steps import vertex_deploy

        context = get_current_context()
        return vertex_deploy.smoke_test(_plan(planned), deployed, target, context["params"], context["ti"])

    @task(multiple_outputs=False)
    def promote(planned: dict, uploaded: dict, deployed: dict) -> dict:
        from recsys.steps import vertex_deploy

        return vertex_deploy.promote(_plan(planned), uploaded, deployed)

    @task(trigger_rule="one_failed", retries=3)
    def rollback(planned: dict, target: dict) -> None:
        """Traffic back to the previous model, the new one undeployed; the run still fails. Nothing to undo
        when the run failed before the endpoint was known (e.g. in ``plan``)."""
        from recsys.steps import vertex_deploy

        if planned and target:
            vertex_deploy.rollback(_plan(planned), target)

    from vertex.operators import (
        DeferrableDeployModelOperator,
        DeferrableUndeployModelOperator,
        IdempotentUploadModelOperator,
    )

    conn = {
        "project_id": pulled("plan", "project"),
        "region": pulled("plan", "region"),
        "gcp_conn_id": pulled("plan", "gcp_conn_id"),
        "poll_interval": pulled("plan", "poll_seconds"),
        "operation_timeout": pulled("plan", "operation_timeout"),
    }
    planned = plan()
    upload = IdempotentUploadModelOperator(
        task_id="upload", model=upload_spec(planned), version=pulled("plan", "version"), **conn
    )
    target = endpoint(planned)
    spec = deployment(planned, upload.output, target)
    canary = DeferrableDeployModelOperator(
        task_id="deploy_canary",
        endpoint_id=spec["endpoint_id"],
        deployed_model=spec["deployed_model"],
        traffic_split=spec["traffic_split"],
        **conn,
    )
    checked = smoke_test(planned, canary.output, target)
    promoted = promote(planned, upload.output, canary.output)
    undeploy = DeferrableUndeployModelOperator(
        task_id="undeploy_previous",
        endpoint_id=target["endpoint_id"],
        deployed_model_id=target["previous_deployed_model_id"],
        **conn,
    )
    changes_allowed(planned) >> [upload, target]
    checked >> promoted >> undeploy
    [canary, checked, promoted] >> rollback(planned, target)


recsys_vertex_deploy()
