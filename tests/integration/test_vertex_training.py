"""The Vertex training backend's pieces against the fakes: custom jobs through the real JobService
client (REST) and the window staged to GCS (fake-gcs-server, real gcsfs)."""

from __future__ import annotations

import json
import sys
from datetime import date

import pytest
from fakes.deferral import deferred, run_trigger

from recsys_devtools.emulators.ports import free_port
from recsys_devtools.emulators.vertex import RunningFake, VertexFake, airflow_connection

PROJECT, REGION = "test-project", "us-central1"
EXIT_WITH = "import sys; sys.exit(int(sys.argv[1]))"  # a "trainer image" whose exit status is its first arg
# a "trainer image" whose replicas print their CLUSTER_SPEC and mark it in a folder (its first arg); once every
# replica has, the workerpool1 ones die and the chief waits (without the barrier, a chief slow to start on a
# loaded machine was stopped before it printed anything)
WORKER_DIES = (
    "import json, os, pathlib, sys, time; spec = os.environ['CLUSTER_SPEC']; print(spec, flush=True); "
    "s = json.loads(spec); marks = pathlib.Path(sys.argv[1]); "
    "(marks / f\"{s['task']['type']}-{s['task']['index']}\").touch(); "
    "total = sum(len(hosts) for hosts in s['cluster'].values()); "
    "[time.sleep(0.05) for _ in iter(lambda: len(list(marks.iterdir())) < total, False)]; "
    "sys.exit(3) if s['task']['type'] == 'workerpool1' else time.sleep(120)"
)


@pytest.fixture
def vertex(monkeypatch, tmp_path):
    marks = tmp_path / "replicas"
    marks.mkdir()
    images = {
        "trainer:exit": [sys.executable, "-c", EXIT_WITH],
        "trainer:worker-dies": [sys.executable, "-c", WORKER_DIES, str(marks)],
    }
    fake = VertexFake(project=PROJECT, location=REGION, job_pending_seconds=0.1, images=images)
    with RunningFake(fake, free_port()) as running:
        monkeypatch.setenv("AIRFLOW_CONN_VERTEX_LOCAL", airflow_connection(running.url, PROJECT))
        yield fake


def job_operator(task_id: str, status: int, run: str = "run-1", **kwargs):
    from vertex.operators import DeferrableCustomJobOperator

    job = {"display_name": f"recsys-train-{run}", "labels": {"recsys-run": run},
           "job_spec": {"worker_pool_specs": [{"machine_spec": {"machine_type": "n1-standard-4"}, "replica_count": 1,
                                               "container_spec": {"image_uri": "trainer:exit",
                                                                  "args": [str(status)]}}]}}  # fmt: skip
    return DeferrableCustomJobOperator(task_id=task_id, custom_job=job, project_id=PROJECT, region=REGION,
                                       gcp_conn_id="vertex_local", poll_interval=0.1, **kwargs)  # fmt: skip


def test_job_runs_and_a_retry_reattaches_instead_of_starting_another(vertex):
    first = job_operator("train", 0)
    trigger = deferred(first)
    retry = job_operator("train", 0)  # the task's next try, while the job still runs
    assert deferred(retry).resource == trigger.resource
    assert len(vertex.jobs) == 1

    path, kwargs = trigger.serialize()
    assert path == "vertex.triggers.VertexCustomJobTrigger"
    event = run_trigger(type(trigger)(**kwargs))  # rebuilt as the triggerer does after a restart
    assert first.execute_complete({}, event) == {"job": trigger.resource, "state": "JOB_STATE_SUCCEEDED"}
    # once the job succeeded, a re-run returns it at once without deferring or creating anything
    assert job_operator("train", 0).execute({}) == {"job": trigger.resource, "state": "JOB_STATE_SUCCEEDED"}
    assert len(vertex.jobs) == 1


def test_failed_job_fails_the_task_with_vertex_reason_and_a_new_try_starts_a_new_job(vertex):
    from vertex.operators import VertexOperationFailed

    failing = job_operator("train", 2)
    with pytest.raises(VertexOperationFailed, match="JOB_STATE_FAILED: The replica workerpool0-0 exited with a "
                                                    "non-zero status of 2"):  # fmt: skip
        failing.execute_complete({}, run_trigger(deferred(failing)))
    again = job_operator("train", 0)
    assert deferred(again).resource != failing.job_name  # a failed job is not reattached to
    assert len(vertex.jobs) == 2


def test_stuck_job_times_out_and_is_cancelled(vertex):
    from vertex.operators import VertexOperationFailed

    vertex.stall("customJobs")
    stuck = job_operator("train", 0, operation_timeout=1.0)
    event = run_trigger(deferred(stuck))
    assert event["status"] == "timeout"
    with pytest.raises(VertexOperationFailed, match="not done after"):
        stuck.execute_complete({}, event)
    (job,) = vertex.jobs.values()
    assert job["state"] == "JOB_STATE_CANCELLED"
    assert any(verb == "cancel" for _, _, verb in vertex.calls)


def test_killing_the_deferred_task_cancels_the_job(vertex):
    import asyncio
    import time

    vertex.stall("customJobs")
    trigger = deferred(job_operator("train", 0))
    asyncio.run(trigger.on_kill())  # what the triggerer calls when a user marks the deferred task failed
    (job,) = vertex.jobs.values()
    for _ in range(50):
        if job["state"] == "JOB_STATE_CANCELLED":
            break
        time.sleep(0.1)
    assert job["state"] == "JOB_STATE_CANCELLED"


def test_unknown_image_is_rejected_with_the_api_message(vertex):
    from google.api_core.exceptions import BadRequest
    from vertex.operators import DeferrableCustomJobOperator

    operator = DeferrableCustomJobOperator(
        task_id="train", project_id=PROJECT, region=REGION, gcp_conn_id="vertex_local",
        custom_job={"display_name": "x", "job_spec": {"worker_pool_specs": [
            {"machine_spec": {"machine_type": "n1-standard-4"}, "replica_count": 1,
             "container_spec": {"image_uri": "europe-docker.pkg.dev/p/r/missing:1"}}]}})  # fmt: skip
    with pytest.raises(BadRequest, match="not found"):
        operator.execute({})


def test_stage_window_copies_what_training_reads_to_gcs(synthetic_lake, gcs_bucket):
    from airflow.sdk import ObjectStoragePath

    from recsys.training.data import load_window
    from recsys.training.staging import stage_window, window_manifests

    extract_root = synthetic_lake + "/extract"
    target = f"gs://{gcs_bucket}/windows/v1/extract"
    report = stage_window(extract_root, window_manifests(extract_root, date(2026, 11, 9), 8), target)
    assert report["days"] == 8 and report["days_with_data"] == 7 and report["bytes"] > 0
    original, staged = load_window(extract_root, date(2026, 11, 9), 8), load_window(target, date(2026, 11, 9), 8)
    assert staged.days == original.days and staged.outage_days == ["2026-11-05"]
    assert staged.interactions.equals(original.interactions) and staged.items.equals(original.items)
    copied = {p.name for p in ObjectStoragePath(target).rglob("*") if p.is_file()}
    assert copied == {"_manifest.json", "interactions.parquet", "users.parquet", "items.parquet"}


def test_a_dying_worker_replica_fails_the_job_with_its_reason_and_stops_the_others(vertex):
    from vertex.operators import DeferrableCustomJobOperator, VertexOperationFailed
    from vertex.training import trainer_job_spec

    job = trainer_job_spec(
        version="20261109-1",
        image_uri="trainer:worker-dies",
        args=[],
        base_output_dir="gs://b/m",
        machine_type="n1-standard-4",
        replica_count=3,
    )
    operator = DeferrableCustomJobOperator(
        task_id="train",
        custom_job=job,
        project_id=PROJECT,
        region=REGION,
        gcp_conn_id="vertex_local",
        poll_interval=0.1,
    )
    with pytest.raises(VertexOperationFailed, match="The replica workerpool1-[01] exited with a non-zero status of 3"):
        operator.execute_complete({}, run_trigger(deferred(operator)))
    (job_id,) = vertex.jobs
    logs = vertex.replica_logs[job_id]
    assert set(logs) == {"workerpool0-0", "workerpool1-0", "workerpool1-1"}  # every replica ran...
    specs = {name: json.loads(text.splitlines()[0]) for name, text in logs.items()}
    assert {(s["task"]["type"], s["task"]["index"]) for s in specs.values()} == {
        ("workerpool0", 0),
        ("workerpool1", 0),
        ("workerpool1", 1),
    }
    cluster = specs["workerpool0-0"]["cluster"]
    assert len(cluster["workerpool0"]) == 1 and len(cluster["workerpool1"]) == 2  # ...knowing every other
    assert all(p.poll() is not None for p in vertex._processes[job_id])  # the chief was stopped, not left waiting
