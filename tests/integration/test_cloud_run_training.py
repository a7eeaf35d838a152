"""The Cloud Run Jobs training backend's operator against the Cloud Run fake, through the real
``google-cloud-run`` clients (REST): the job is created once, one execution per run, a retry reattaches,
a failure carries Cloud Run's reason, a timeout or a kill cancels the execution."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from fakes.deferral import deferred, run_trigger

from recsys_devtools.emulators.cloud_run import CloudRunFake, airflow_connection
from recsys_devtools.emulators.ports import free_port
from recsys_devtools.emulators.running import RunningFake

PROJECT, REGION = "test-project", "us-central1"
EXIT_WITH = "import os, sys; print(os.environ['AIP_MODEL_DIR']); sys.exit(int(sys.argv[1]))"
# the same container, held until the test creates the file named by its first argument (a retry must find the
# execution still running however slowly the test's own steps go)
EXIT_WHEN_RELEASED = (
    "import os, sys, time\n"
    "while not os.path.exists(sys.argv[1]):\n    time.sleep(0.01)\n"
    "print(os.environ['AIP_MODEL_DIR']); sys.exit(int(sys.argv[2]))"
)


@pytest.fixture
def release(tmp_path):
    """The file whose creation lets a ``trainer:held`` execution exit."""
    return tmp_path / "release"


@pytest.fixture
def cloud_run(monkeypatch, release):
    images = {
        "trainer:exit": [sys.executable, "-c", EXIT_WITH],
        "trainer:held": [sys.executable, "-c", EXIT_WHEN_RELEASED, str(release)],
    }
    fake = CloudRunFake(project=PROJECT, location=REGION, images=images)
    with RunningFake(fake, free_port()) as running:
        monkeypatch.setenv("AIRFLOW_CONN_RUN_LOCAL", airflow_connection(running.url, PROJECT))
        yield fake


def operator(status: int, run_key: str = "v1", image: str = "trainer:exit", **kwargs):
    from cloud_run.operators import CloudRunJobExecutionOperator
    from cloud_run.training import trainer_job, trainer_overrides

    job = trainer_job(image_uri=image, cpu="2", memory="4Gi", timeout_seconds=600)
    return CloudRunJobExecutionOperator(
        task_id="train_on_cloud_run",
        project_id=PROJECT,
        region=REGION,
        job_id="recsys-trainer",
        job=job,
        overrides=trainer_overrides([str(status)], f"gs://bucket/models/{run_key}/model"),
        run_key=run_key,
        gcp_conn_id="run_local",
        poll_interval=0.1,
        **kwargs,
    )


def test_execution_runs_with_the_overrides_and_a_retry_reattaches(cloud_run, release):
    first = operator(0, image="trainer:held")
    trigger = deferred(first)
    retry = operator(0, image="trainer:held")  # the task's next try, while the execution still runs
    assert deferred(retry).resource == trigger.resource
    assert len(cloud_run.executions) == 1 and list(cloud_run.jobs) == ["recsys-trainer"]
    (execution,) = cloud_run.executions.values()
    assert not execution.get("completionTime")  # it was still running when the retry reattached
    release.touch()

    path, kwargs = trigger.serialize()
    assert path == "cloud_run.triggers.CloudRunExecutionTrigger"
    event = run_trigger(type(trigger)(**kwargs))  # rebuilt, as the triggerer does after a restart
    assert first.execute_complete({}, event)["execution"] == trigger.resource
    assert cloud_run.logs[trigger.resource].strip() == "gs://bucket/models/v1/model"  # AIP_MODEL_DIR override
    (execution,) = cloud_run.executions.values()
    env = {e["name"]: e["value"] for e in execution["template"]["containers"][0]["env"]}
    assert env["TF_USE_LEGACY_KERAS"] == "1" and env["RECSYS_RUN_KEY"] == "v1"  # template env merged
    # a re-run after success returns at once; the next run (new key) gets its own execution, same job
    assert operator(0, image="trainer:held").execute({})["execution"] == trigger.resource
    assert deferred(operator(0, run_key="v2", image="trainer:held")).resource != trigger.resource
    assert len(cloud_run.executions) == 2 and len(cloud_run.jobs) == 1
    assert sum(1 for method, path in cloud_run.calls if method == "POST" and path.endswith("/jobs")) == 1


def test_failed_execution_fails_with_the_reason_and_is_not_reattached(cloud_run):
    from cloud_run.operators import CloudRunExecutionFailed

    failing = operator(3)
    with pytest.raises(CloudRunExecutionFailed, match=r"failed with message: .*exit code 3"):
        failing.execute_complete({}, run_trigger(deferred(failing)))
    assert deferred(operator(0)).resource != failing.execution_name
    assert len(cloud_run.executions) == 2


def test_stuck_execution_times_out_and_is_cancelled(cloud_run):
    from cloud_run.operators import CloudRunExecutionFailed

    cloud_run.stall("run")
    stuck = operator(0, timeout_seconds=1.0)
    event = run_trigger(deferred(stuck))
    assert event["status"] == "timeout"
    with pytest.raises(CloudRunExecutionFailed, match="not done after"):
        stuck.execute_complete({}, event)
    (execution,) = cloud_run.executions.values()
    assert execution["cancelledCount"] == 1 and any(path.endswith(":cancel") for _, path in cloud_run.calls)


def test_killing_the_deferred_task_cancels_the_execution(cloud_run):
    cloud_run.stall("run")
    trigger = deferred(operator(0))
    asyncio.run(trigger.on_kill())  # what the triggerer calls when a user marks the deferred task failed
    (execution,) = cloud_run.executions.values()
    for _ in range(50):
        if execution["cancelledCount"]:
            break
        time.sleep(0.1)
    assert execution["cancelledCount"] == 1


def test_unknown_image_is_rejected_with_the_api_message(cloud_run):
    from google.api_core.exceptions import BadRequest

    with pytest.raises(BadRequest, match="not found"):
        operator(0, image="europe-docker.pkg.dev/p/r/missing:1").execute({})
    assert cloud_run.executions == {}
