"""The project's Vertex hooks drive the real google-cloud-aiplatform clients (REST) against the fake."""

from __future__ import annotations

import json

import pytest
from fakes.deferral import deferred, run_trigger

from recsys_devtools.emulators.ports import free_port
from recsys_devtools.emulators.vertex import RunningFake, VertexFake, airflow_connection

PROJECT, REGION = "test-project", "us-central1"


@pytest.fixture
def vertex(monkeypatch):
    fake = VertexFake(project=PROJECT, location=REGION, operation_seconds=0.3)
    with RunningFake(fake, free_port()) as running:
        monkeypatch.setenv("AIRFLOW_CONN_VERTEX_LOCAL", airflow_connection(running.url, PROJECT))
        yield fake


def hooks():
    from vertex.hooks import VertexEndpointServiceHook, VertexModelServiceHook

    return VertexModelServiceHook(gcp_conn_id="vertex_local"), VertexEndpointServiceHook(gcp_conn_id="vertex_local")


MODEL = {"display_name": "recsys-two-tower", "artifact_uri": "gs://bucket/models/v1",
         "container_spec": {"image_uri": "europe-docker.pkg.dev/p/recsys/serving:1", "predict_route": "/predict",
                            "health_route": "/health", "ports": [{"container_port": 8080}]},
         "labels": {"recsys-version": "v1"}}  # fmt: skip


def test_upload_versions_and_aliases_through_the_hooks(vertex):
    models, _ = hooks()
    operation = models.upload_model(project_id=PROJECT, region=REGION, model=MODEL)
    first = operation.result(timeout=30)
    model_id = first.model.rsplit("/", 1)[-1]
    assert first.model_version_id == "1"
    second = models.upload_model(project_id=PROJECT, region=REGION, parent_model=model_id,
                                 model={**MODEL, "version_aliases": ["default"]}).result(timeout=30)  # fmt: skip
    assert second.model_version_id == "2"
    versions = list(models.list_model_versions(project_id=PROJECT, region=REGION, model_id=model_id))
    assert [(v.version_id, list(v.version_aliases)) for v in versions] == [("1", []), ("2", ["default"])]
    merged = models.add_version_aliases(project_id=PROJECT, region=REGION, model_id=f"{model_id}@1",
                                        version_aliases=["champion"])  # fmt: skip
    assert list(merged.version_aliases) == ["champion"]
    assert any("/operations/" in path for _, path, _ in vertex.calls)


def test_endpoint_create_find_deploy_and_failure(vertex):
    models, endpoints = hooks()
    model = models.upload_model(project_id=PROJECT, region=REGION, model=MODEL).result(timeout=30).model
    created = endpoints.create_endpoint(project_id=PROJECT, region=REGION,
                                        endpoint={"display_name": "recsys", "labels": {"app": "recsys"}}
                                        ).result(timeout=30)  # fmt: skip
    found = list(endpoints.list_endpoints(project_id=PROJECT, region=REGION,
                                          filter='display_name="recsys" AND labels.app="recsys"'))  # fmt: skip
    assert [e.name for e in found] == [created.name]
    endpoint_id = created.name.rsplit("/", 1)[-1]
    deployed = endpoints.deploy_model(project_id=PROJECT, region=REGION, endpoint=endpoint_id,
                                      deployed_model={"model": model, "dedicated_resources": {
                                          "machine_spec": {"machine_type": "n1-standard-2"},
                                          "min_replica_count": 1, "max_replica_count": 1}},
                                      traffic_split={"0": 100}).result(timeout=30)  # fmt: skip
    state = endpoints.get_endpoint(project_id=PROJECT, region=REGION, endpoint=endpoint_id)
    assert dict(state.traffic_split) == {deployed.deployed_model.id: 100}

    vertex.fail_operation("deployModel", "Model server never became ready")
    failing = endpoints.deploy_model(project_id=PROJECT, region=REGION, endpoint=endpoint_id,
                                     deployed_model={"model": model}, traffic_split={"0": 10})  # fmt: skip
    with pytest.raises(Exception, match="Model server never became ready"):
        failing.result(timeout=30)


def test_transport_is_validated(monkeypatch):
    from vertex.hooks import VertexModelServiceHook

    monkeypatch.setenv("AIRFLOW_CONN_VERTEX_BAD", json.dumps({"conn_type": "google_cloud_platform",
                       "extra": {"api_transport": "carrier-pigeon", "is_anonymous": True}}))  # fmt: skip
    with pytest.raises(ValueError, match="api_transport must be one of"):
        VertexModelServiceHook(gcp_conn_id="vertex_bad").get_model_service_client(REGION)


def test_deferrable_upload_and_deploy(vertex):
    from vertex.operators import DeferrableDeployModelOperator, DeferrableUploadModelOperator
    from vertex.triggers import VertexOperationTrigger

    common = {"project_id": PROJECT, "region": REGION, "gcp_conn_id": "vertex_local", "poll_interval": 0.1}
    upload = DeferrableUploadModelOperator(task_id="upload", model=MODEL, **common)
    trigger = deferred(upload)
    path, kwargs = trigger.serialize()
    assert path == "vertex.triggers.VertexOperationTrigger"
    rebuilt = VertexOperationTrigger(**kwargs)  # what the triggerer does after a restart
    uploaded = upload.execute_complete({}, run_trigger(rebuilt))
    assert uploaded["version_id"] == "1"

    _, endpoints = hooks()
    endpoint = endpoints.create_endpoint(project_id=PROJECT, region=REGION, endpoint={"display_name": "e"})
    endpoint_id = endpoint.result(timeout=30).name.rsplit("/", 1)[-1]
    deploy = DeferrableDeployModelOperator(task_id="deploy", endpoint_id=endpoint_id, traffic_split={"0": 100},
                                           deployed_model={"model": uploaded["model"]}, **common)  # fmt: skip
    result = deploy.execute_complete({}, run_trigger(deferred(deploy)))
    assert dict(endpoints.get_endpoint(project_id=PROJECT, region=REGION, endpoint=endpoint_id).traffic_split) == {
        result["deployed_model_id"]: 100}  # fmt: skip


def test_deferrable_failure_and_timeout_surface_the_reason(vertex):
    from vertex.operators import DeferrableDeployModelOperator, VertexOperationFailed

    _, endpoints = hooks()
    endpoint_id = endpoints.create_endpoint(project_id=PROJECT, region=REGION, endpoint={"display_name": "e"}
                                            ).result(timeout=30).name.rsplit("/", 1)[-1]  # fmt: skip
    common = {"project_id": PROJECT, "region": REGION, "gcp_conn_id": "vertex_local", "poll_interval": 0.1,
              "endpoint_id": endpoint_id, "deployed_model": {"model": "projects/p/locations/l/models/1"}}  # fmt: skip
    vertex.fail_operation("deployModel", "Model server exited: Op type not registered 'Scann>ScannSearchBatched'")
    failing = DeferrableDeployModelOperator(task_id="deploy", **common)
    with pytest.raises(VertexOperationFailed, match="Op type not registered"):
        failing.execute_complete({}, run_trigger(deferred(failing)))

    vertex.stall("deployModel")
    stuck = DeferrableDeployModelOperator(task_id="stuck", operation_timeout=1.0, **common)
    event = run_trigger(deferred(stuck))
    assert event["status"] == "timeout"
    with pytest.raises(VertexOperationFailed, match="not done after"):
        stuck.execute_complete({}, event)


def test_throttled_start_is_retried_by_the_client(vertex):
    """A 503 on the start call is retried by the GAPIC client's default retry policy."""
    models, _ = hooks()
    vertex.fail_next("GET", status=503)
    uploaded = models.upload_model(project_id=PROJECT, region=REGION, model=MODEL).result(timeout=30)
    assert uploaded.model_version_id == "1"


DEPLOY = {
    "project_id": PROJECT,
    "region": REGION,
    "gcp_conn_id": "vertex_local",
    "poll_interval": 0.1,
    "deployed_model": {"model": "projects/p/locations/l/models/1", "display_name": "recsys-v1-run"},
}


def new_endpoint(endpoints) -> str:
    operation = endpoints.create_endpoint(project_id=PROJECT, region=REGION, endpoint={"display_name": "e"})
    return operation.result(timeout=30).name.rsplit("/", 1)[-1]


def test_a_retry_waits_for_the_deployment_a_killed_try_started_instead_of_deploying_twice(vertex):
    """The first try's deployModel landed, then its process died: the retry finds the operation in flight
    on the endpoint, waits for it, and reuses its deployed model."""
    from vertex.operators import DeferrableDeployModelOperator

    _, endpoints = hooks()
    endpoint_id = new_endpoint(endpoints)
    common = {**DEPLOY, "endpoint_id": endpoint_id, "traffic_split": {"0": 100}}
    first_try = DeferrableDeployModelOperator(task_id="deploy", **common)
    first_try.start()  # ... and the worker is killed before it defers
    retry = DeferrableDeployModelOperator(task_id="deploy", **common)
    trigger = deferred(retry, method="execute_after_wait")
    assert trigger.resource.startswith(f"projects/{PROJECT}/locations/{REGION}/endpoints/{endpoint_id}/operations/")
    result = retry.execute_after_wait({}, run_trigger(trigger))
    assert result["reused"] is True
    deployed = endpoints.get_endpoint(project_id=PROJECT, region=REGION, endpoint=endpoint_id).deployed_models
    assert [d.id for d in deployed] == [result["deployed_model_id"]]
    assert [verb for _, _, verb in vertex.calls].count("deployModel") == 1


def test_a_deployment_stuck_in_flight_fails_the_wait_instead_of_deploying_beside_it(vertex):
    from vertex.operators import DeferrableDeployModelOperator, VertexOperationFailed

    _, endpoints = hooks()
    endpoint_id = new_endpoint(endpoints)
    common = {**DEPLOY, "endpoint_id": endpoint_id, "operation_timeout": 1.0}
    vertex.stall("deployModel")
    DeferrableDeployModelOperator(task_id="deploy", **common).start()
    retry = DeferrableDeployModelOperator(task_id="deploy", **common)
    with pytest.raises(VertexOperationFailed, match="not done after"):
        retry.execute_after_wait({}, run_trigger(deferred(retry, method="execute_after_wait")))
    assert [verb for _, _, verb in vertex.calls].count("deployModel") == 1
