"""Run ``recsys_vertex_deploy`` (``dag.test``, triggers inline) against the Vertex fake, which runs the
project's prediction server for each deployment (Vertex's custom-container contract) and forwards
``:predict`` to it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from recsys_devtools.emulators.ports import free_port
from recsys_devtools.emulators.vertex import RunningFake, VertexFake, airflow_connection

DAGS = Path(__file__).resolve().parents[2] / "dags"
PROJECT, REGION = "test-project", "us-central1"


SERVING_IMAGE = "europe-docker.pkg.dev/p/recsys/serving:1"
FAULTS = ("error", "schema", "empty", "slow:4", "shed:3")  # recsys_devtools.emulators.faulty_serving


def faulty_image(fault: str) -> str:
    return f"europe-docker.pkg.dev/p/recsys/serving:broken-{fault.replace(':', '-')}"


@pytest.fixture
def vertex(monkeypatch, tmp_path):
    """The fake runs the serving image's entrypoint (the project's server) for every deployment; the
    ``faulty_image`` ones run the same server with one fault on its predictions."""
    images = {SERVING_IMAGE: [sys.executable, "-m", "recsys.serving"]}
    faulty = [sys.executable, "-m", "recsys_devtools.emulators.faulty_serving"]
    images |= {faulty_image(fault): [*faulty, fault] for fault in FAULTS}
    fake = VertexFake(project=PROJECT, location=REGION, operation_seconds=0.2, images=images)
    with RunningFake(fake, free_port()) as running:
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", airflow_connection(running.url, PROJECT))
        monkeypatch.setenv("RECSYS_VERTEX_PROJECT", PROJECT)
        monkeypatch.setenv("RECSYS_VERTEX_REGION", REGION)
        monkeypatch.setenv("RECSYS_SERVING_IMAGE_URI", SERVING_IMAGE)
        monkeypatch.setenv("RECSYS_VERTEX_POLL_SECONDS", "0.2")
        monkeypatch.setenv("RECSYS_STORAGE_ROOT", (tmp_path / "storage").as_uri())
        yield fake


@pytest.fixture
def deploy_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags["recsys_vertex_deploy"]


def states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def endpoint_state(fake: VertexFake) -> dict:
    (endpoint,) = fake.endpoints.values()
    return endpoint


def test_first_rollout_then_canary_promotion(deploy_dag, vertex, trained_model):
    model_dir = trained_model[0]
    first = deploy_dag.test(run_conf={"model_dir": model_dir})
    assert first.state == "success", states(first)
    endpoint = endpoint_state(vertex)
    assert len(endpoint["deployedModels"]) == 1 and list(endpoint["trafficSplit"].values()) == [100]
    (versions,) = vertex.models.values()
    assert versions[0]["versionAliases"][-2:] == ["default", "champion"]
    assert versions[0]["containerSpec"]["imageUri"].endswith("serving:1")
    assert states(first)["rollback"] == "skipped"

    # the same model again, with a quota error on the first deploy call: the upload is reused, not
    # repeated; the 429 is retried inside the task; the canary gets 20% before the promotion
    live = endpoint["deployedModels"][0]["id"]
    uploads = sum(1 for _, path, _ in vertex.calls if path.endswith("models:upload"))
    vertex.fail_next("deployModel", status=429, message="Quota exceeded for aiplatform.googleapis.com/...")
    history_before = len(vertex.traffic_history)
    again = deploy_dag.test(run_conf={"model_dir": model_dir, "canary_percent": 20})
    assert again.state == "success", states(again)
    assert sum(1 for _, path, _ in vertex.calls if path.endswith("models:upload")) == uploads
    assert {ti.task_id: ti.try_number for ti in again.get_task_instances()}["deploy_canary"] == 1
    assert sum(1 for c in vertex.calls if c[2] == "deployModel") == 3  # first run, the 429, its retry
    endpoint = endpoint_state(vertex)
    (new,) = [d["id"] for d in endpoint["deployedModels"]]  # the previous deployment was undeployed
    splits = [split for _, split in vertex.traffic_history[history_before:]]
    assert splits == [{new: 20, live: 80}, {new: 100}, {new: 100}], splits  # canary, promote, undeploy old
    assert new != live and endpoint["trafficSplit"] == {new: 100}
    # the smoke test went on until the new deployment had answered (traffic is split per request)
    smoke = {ti.task_id: ti for ti in again.get_task_instances()}["smoke_test"].xcom_pull(task_ids="smoke_test")
    assert smoke["served_by"] == new and smoke["answers"] == 3 and smoke["calls_by_deployed_model"][new] == 3
    assert vertex.served_by.count(new) >= 3
    # the new model's server answers; the previous one was stopped when it was undeployed
    assert vertex.containers[new][0].poll() is None and vertex.containers[live][0].wait(timeout=30) is not None


def test_failed_canary_rolls_back_and_the_old_model_keeps_serving(deploy_dag, vertex, trained_model, monkeypatch):
    model_dir = trained_model[0]
    assert deploy_dag.test(run_conf={"model_dir": model_dir}).state == "success"
    live = endpoint_state(vertex)["deployedModels"][0]["id"]

    monkeypatch.setenv("RECSYS_VERTEX_OPERATION_TIMEOUT_SECONDS", "2")
    vertex.stall("deployModel")  # the deployment never finishes: every try times out waiting for it
    failed = deploy_dag.test(run_conf={"model_dir": model_dir})
    assert failed.state == "failed"
    deploys = [op for op in vertex.operations.values() if op.metadata_type == "DeployModelOperationMetadata"]
    assert [op.stalled for op in deploys[1:]] == [True]  # the retries waited for it, none deployed beside it
    assert states(failed)["deploy_canary"] == "failed" and states(failed)["rollback"] == "success"
    endpoint = endpoint_state(vertex)
    assert [d["id"] for d in endpoint["deployedModels"]] == [live]
    assert endpoint["trafficSplit"] == {live: 100}


def test_dedicated_endpoint_is_served_at_its_own_dns(deploy_dag, vertex, trained_model):
    from google.api_core.exceptions import BadRequest
    from vertex.deploy import predict
    from vertex.hooks import VertexPredictionServiceHook

    run = deploy_dag.test(run_conf={"model_dir": trained_model[0], "dedicated_endpoint": True})
    assert run.state == "success", states(run)
    endpoint = endpoint_state(vertex)
    dns = endpoint["dedicatedEndpointDns"]
    assert endpoint["dedicatedEndpointEnabled"] is True and dns.startswith("localhost:")
    smoke = {ti.task_id: ti for ti in run.get_task_instances()}["smoke_test"].xcom_pull(task_ids="smoke_test")
    assert smoke["host"] == dns and set(vertex.predict_hosts) == {dns}  # the smoke test called the dedicated DNS

    endpoint_id = endpoint["name"].rsplit("/", 1)[-1]
    hook = VertexPredictionServiceHook()
    with pytest.raises(BadRequest, match="dedicated DNS"):  # the shared host refuses, as the provider's hook meets
        predict(hook, PROJECT, REGION, endpoint_id, ["u1"], {"k": 3})
    answer = predict(hook, PROJECT, REGION, endpoint_id, ["u1"], {"k": 3}, dedicated_dns=dns)
    assert len(answer.predictions) == 1 and answer.deployed_model_id == endpoint["deployedModels"][0]["id"]

    # the kind of an endpoint is fixed: asking for a shared one under the same name fails at once, clearly
    shared = deploy_dag.test(run_conf={"model_dir": trained_model[0], "dedicated_endpoint": False})
    assert shared.state == "failed" and states(shared)["endpoint"] == "failed"
    assert {ti.task_id: ti.try_number for ti in shared.get_task_instances()}["endpoint"] == 1  # no retry
    assert len(vertex.endpoints) == 1


def new_version(model_dir: str, name: str) -> str:
    """A copy of the exported model as another version (a new registry upload)."""
    import shutil
    from urllib.parse import urlparse

    source = Path(urlparse(model_dir).path)
    shutil.copytree(source, source.parent / name)
    return (source.parent / name).as_uri()


BROKEN_CANARIES = {  # fault of the new container -> the reason the smoke test gives
    "error": "answered 500: internal error: RuntimeError",
    "schema": "not the prediction schema",
    "empty": "no items for",
    "slow:4": "the bar is 1.5 s",
}


def test_broken_canaries_are_caught_and_rolled_back(deploy_dag, vertex, trained_model, monkeypatch):
    """New models that answer wrongly at 10% of the traffic, one after the other behind one live model:
    each time the smoke test hears it, the run fails with the reason, the previous model keeps all the
    traffic and the broken one is undeployed."""
    assert deploy_dag.test(run_conf={"model_dir": trained_model[0]}).state == "success"
    live = endpoint_state(vertex)["deployedModels"][0]["id"]
    for fault, reason in BROKEN_CANARIES.items():
        monkeypatch.setenv("RECSYS_SERVING_IMAGE_URI", faulty_image(fault))
        broken_dir = new_version(trained_model[0], f"v-{fault.replace(':', '-')}")
        conf = {"model_dir": broken_dir, "canary_percent": 10, "smoke_max_latency_ms": 1500}
        served_before = len(vertex.served_by)
        failed = deploy_dag.test(run_conf=conf)
        assert failed.state == "failed", fault
        assert states(failed)["smoke_test"] == "failed", (fault, states(failed))
        assert states(failed)["rollback"] == "success" and states(failed)["promote"] == "upstream_failed", fault
        smoke = {ti.task_id: ti for ti in failed.get_task_instances()}["smoke_test"]
        assert smoke.try_number == 1, fault  # a wrong answer is not retried
        failure = smoke.xcom_pull(task_ids="smoke_test", key="failure")
        assert reason in failure, (fault, failure)
        (broken,) = {d for d in vertex.served_by[served_before:] if d != live}  # the broken model did answer
        assert broken in failure or fault == "error", failure  # an error response does not name the model
        endpoint = endpoint_state(vertex)
        assert [d["id"] for d in endpoint["deployedModels"]] == [live], fault
        assert endpoint["trafficSplit"] == {live: 100}, fault


def test_a_shedding_canary_is_retried_and_promoted(deploy_dag, vertex, trained_model, monkeypatch):
    """503s with Retry-After from a new container (it sheds its first 3 requests) are retried with backoff."""
    assert deploy_dag.test(run_conf={"model_dir": trained_model[0]}).state == "success"
    monkeypatch.setenv("RECSYS_SERVING_IMAGE_URI", faulty_image("shed:3"))
    run = deploy_dag.test(run_conf={"model_dir": new_version(trained_model[0], "v-shed"), "canary_percent": 50})
    assert run.state == "success", states(run)
    smoke = {ti.task_id: ti for ti in run.get_task_instances()}["smoke_test"].xcom_pull(task_ids="smoke_test")
    (new,) = [d["id"] for d in endpoint_state(vertex)["deployedModels"]]
    assert smoke["retried"] == 3 and smoke["served_by"] == new and smoke["answers"] == 3


def test_dry_run_changes_nothing(deploy_dag, vertex, trained_model):
    run = deploy_dag.test(run_conf={"model_dir": trained_model[0], "dry_run": True})
    assert run.state == "success"
    assert states(run)["upload"] == "skipped" and vertex.endpoints == {} and vertex.models == {}


@pytest.mark.parametrize(("conf", "message"), [({"canary_percent": 0}, "less than the minimum of 1"),
                                               ({"machine_type": "big box"}, "does not match")])  # fmt: skip
def test_invalid_params(deploy_dag, conf, message):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=message):
        deploy_dag.test(run_conf=conf)


def test_the_two_stage_policy_end_to_end(deploy_dag, vertex, synthetic_lake, tmp_path, monkeypatch):
    """recsys_two_tower serving the two-stage policy (pinned: on this synthetic data validation may choose
    another): train -> gate -> export -> batch delivery, then recsys_vertex_deploy, whose smoke test and a
    predict through the endpoint are answered by the retrieval -> ranking policy, as offline."""
    import json
    import shutil
    import sqlite3

    from airflow.dag_processing.dagbag import DagBag
    from google.protobuf import json_format
    from vertex.deploy import predict
    from vertex.hooks import VertexPredictionServiceHook

    from recsys.policy import TwoStagePolicy
    from recsys.serving.predictor import Predictor
    from recsys.serving.request import Instance, PredictRequest
    from recsys.training.gate import read_champion

    storage = tmp_path / "storage"
    shutil.copytree(Path(synthetic_lake.removeprefix("file://")) / "extract", storage / "extract")
    two_tower = DagBag(dag_folder=str(DAGS)).dags["recsys_two_tower"]
    conf = {"window_days": 8, "batch_size": 512, "epochs": 2, "end_day": "2026-11-09", "served_policy": "two_stage"}
    trained = two_tower.test(run_conf=conf)
    assert trained.state == "success", states(trained)
    champion = read_champion((storage / "models").as_uri())
    model_dir = Path(champion["model_dir"].removeprefix("file://"))
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert champion["served"] == "two_stage" and metrics["served"]["pinned"] == "two_stage"
    assert metrics["gate"]["blessed"] and (model_dir / "served" / "policy_ranker.txt").is_file()

    predictor = Predictor(model_dir)
    assert isinstance(predictor.policy, TwoStagePolicy)
    delivered = trained.get_task_instance("deliver").xcom_pull(task_ids="deliver")
    assert delivered["rows"] == delivered["users"] * 25
    app_db = json.loads(__import__("os").environ["AIRFLOW_CONN_RECSYS_APP"])["host"]
    with sqlite3.connect(app_db) as conn:
        (user,) = conn.execute("SELECT MIN(user_id) FROM recommendations WHERE source = 'two_tower'").fetchone()
        table = [
            r[0] for r in conn.execute("SELECT item_id FROM recommendations WHERE user_id = ? ORDER BY rank", (user,))
        ]
    assert table == predictor.recommend_users([user], 25)[0]["item_ids"]  # batch delivery = the served policy

    deployed = deploy_dag.test(run_conf={"model_dir": champion["model_dir"]})
    assert deployed.state == "success", states(deployed)
    endpoint_id = endpoint_state(vertex)["name"].rsplit("/", 1)[-1]
    response = predict(VertexPredictionServiceHook(), PROJECT, REGION, endpoint_id, [{"user_id": user}], {"k": 10})
    (answer,) = [json_format.MessageToDict(p) for p in response._pb.predictions]
    local = predictor.predict(PredictRequest([Instance(user)], k=10))[0]
    assert answer["item_ids"] == local["item_ids"] and len(answer["item_ids"]) == 10
    recent = {"user_id": user, "recent_item_ids": local["item_ids"][:3]}
    response = predict(VertexPredictionServiceHook(), PROJECT, REGION, endpoint_id, [recent], {"k": 10})
    assert json_format.MessageToDict(response._pb.predictions[0])["item_ids"] != local["item_ids"]
