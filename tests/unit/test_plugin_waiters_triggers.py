"""Unit tests of the plugins' waiters and triggers, as the Amazon provider tests its own (beside the emulator tests).

Waiters: the real Personalize client and botocore's waiter machinery, answers scripted with botocore's
``Stubber`` (no network): each waiter succeeds on its success state, fails on each failure state (with the
``failureReason`` the trigger reports), and keeps waiting through the in-progress states.
Triggers: each serializes to an importable path and arguments that rebuild an equal trigger (what the
triggerer does after a restart), waits with the waiter and arguments its job needs, and reports the ARN.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

WAITERS = json.loads((Path(__file__).resolve().parents[2] / "plugins/personalize/waiters/personalize.json").read_text())
ARN = "arn:aws:personalize:us-east-1:123456789012:thing/x"
FAST = {"Delay": 0, "MaxAttempts": 4}


@pytest.fixture
def hook(monkeypatch):
    from personalize.hooks import PersonalizeHook

    for key, value in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    return PersonalizeHook(aws_conn_id=None, region_name="us-east-1")


def _operation(name: str) -> str:
    """``DescribeDatasetImportJob`` -> ``describe_dataset_import_job``."""
    from botocore import xform_name

    return xform_name(WAITERS["waiters"][name]["operation"])


def _response(client, name: str, status: str | None) -> dict:
    """A valid Describe answer whose status (at the waiter's argument path) is ``status``."""
    waiter = WAITERS["waiters"][name]
    paths = [a["argument"] for a in waiter["acceptors"] if a["matcher"] == "path"]
    if not paths:  # a waiter that only waits for an error (a schema: deleted at once, no status)
        return {}
    keys = paths[0].split(".")[:-1]
    shape = client.meta.service_model.operation_model(waiter["operation"]).output_shape
    for key in keys:
        shape = shape.members[key]
    body: dict = {"status": status}
    if "failureReason" in shape.members:  # the answer must match the service model (Stubber checks it)
        body["failureReason"] = "the data has no USER_ID column"
    for key in reversed(keys):
        body = {key: body}
    return body


def _arn_argument(client, name: str) -> str:
    shape = client.meta.service_model.operation_model(WAITERS["waiters"][name]["operation"]).input_shape
    return next(iter(shape.required_members))


def _wait(hook, name: str, answers: list) -> None:
    from botocore.stub import Stubber

    client = hook.conn
    argument = {_arn_argument(client, name): ARN}
    with Stubber(client) as stub:
        for answer in answers:
            if isinstance(answer, Exception):
                stub.add_client_error(_operation(name), service_error_code=str(answer), expected_params=argument)
            else:
                stub.add_response(_operation(name), _response(client, name, answer), argument)
        hook.get_waiter(name, client=client).wait(**argument, WaiterConfig=FAST)
        stub.assert_no_pending_responses()


def _states(name: str, state: str) -> list[str]:
    return [a["expected"] for a in WAITERS["waiters"][name]["acceptors"] if a["state"] == state]


@pytest.mark.parametrize("name", sorted(WAITERS["waiters"]))
def test_waiter_succeeds_after_the_job_progresses(hook, name):
    success = _states(name, "success")[0]
    if success == "ResourceNotFoundException":  # a *_deleted waiter: DELETE IN_PROGRESS, then gone
        _wait(hook, name, ["DELETE IN_PROGRESS", Exception(success)])
    else:
        _wait(hook, name, ["CREATE PENDING", "CREATE IN_PROGRESS", success])


@pytest.mark.parametrize(
    ("name", "failure"), [(n, f) for n in sorted(WAITERS["waiters"]) for f in _states(n, "failure")]
)
def test_waiter_stops_on_each_failure_state(hook, name, failure):
    from botocore.exceptions import WaiterError

    with pytest.raises(WaiterError, match="terminal failure state"):
        _wait(hook, name, ["CREATE IN_PROGRESS", failure])


@pytest.mark.parametrize("name", sorted(WAITERS["waiters"]))
def test_every_path_a_waiter_reads_is_in_the_service_model(hook, name):
    """An acceptor on a field the Describe answer never has would never fire (schemas have no status)."""
    waiter = WAITERS["waiters"][name]
    for acceptor in (a for a in waiter["acceptors"] if a["matcher"] == "path"):
        shape = hook.conn.meta.service_model.operation_model(waiter["operation"]).output_shape
        for key in acceptor["argument"].split("."):
            assert key in shape.members, f"{name}: {acceptor['argument']} is not in {waiter['operation']}'s answer"
            shape = shape.members[key]


def test_waiter_gives_up_after_its_attempts(hook):
    from botocore.exceptions import WaiterError

    with pytest.raises(WaiterError, match="Max attempts exceeded"):
        _wait(hook, "dataset_import_job_active", ["CREATE IN_PROGRESS"] * FAST["MaxAttempts"])


def test_the_campaign_update_waiter_reads_the_latest_update_not_the_campaign():
    """The public Step Functions sample waited on ``campaign.status``, which stays ACTIVE during an update."""
    paths = {a["argument"] for a in WAITERS["waiters"]["campaign_update_active"]["acceptors"] if "argument" in a}
    assert paths == {"campaign.latestCampaignUpdate.status"}


def _personalize_triggers():
    from personalize import triggers

    simple = [
        triggers.DatasetImportJobTrigger,
        triggers.SolutionVersionTrigger,
        triggers.BatchInferenceJobTrigger,
        triggers.CampaignUpdateTrigger,
        triggers.DatasetExportJobTrigger,
    ]
    built = [cls(arn=ARN, waiter_delay=7, waiter_max_attempts=9, aws_conn_id="aws_x") for cls in simple]
    built += [
        triggers.ResourceTrigger(kind=kind, arn=ARN, action=action, waiter_delay=7, waiter_max_attempts=9)
        for kind in ("dataset_group", "dataset", "solution", "campaign", "event_tracker", "filter")
        for action in ("create", "delete")
    ]
    return built


def _rebuilt(trigger):
    import importlib

    path, kwargs = trigger.serialize()
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**kwargs), kwargs


@pytest.mark.parametrize("trigger", _personalize_triggers(), ids=lambda t: f"{type(t).__name__}-{t.waiter_name}")
def test_personalize_trigger_round_trips_and_names_a_waiter_that_exists(trigger):
    rebuilt, kwargs = _rebuilt(trigger)
    assert rebuilt.serialize() == trigger.serialize()
    assert kwargs["arn"] == ARN and kwargs["waiter_delay"] == 7 and kwargs["waiter_max_attempts"] == 9
    assert rebuilt.waiter_name in WAITERS["waiters"]
    assert rebuilt.waiter_args == {rebuilt.arn_argument: ARN}
    assert (rebuilt.return_key, rebuilt.return_value) == ("arn", ARN)
    # the failure message carries the job's own failureReason
    assert any(q.endswith("failureReason") for q in rebuilt.status_queries)


def test_a_trigger_event_becomes_the_arn_or_the_failure_reason():
    from airflow.providers.common.compat.sdk import AirflowException
    from personalize.triggers import arn_from_event

    assert arn_from_event({"status": "success", "arn": ARN}) == ARN
    failure = {"status": "error", "message": "job failed: the data has no USER_ID column\nWaiter x failed"}
    with pytest.raises(AirflowException, match="no USER_ID column$"):
        arn_from_event(failure)


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("vertex.triggers.VertexOperationTrigger", "projects/p/locations/r/operations/1"),
        ("vertex.triggers.VertexCustomJobTrigger", "projects/p/locations/r/customJobs/2"),
        ("cloud_run.triggers.CloudRunExecutionTrigger", "projects/p/locations/r/jobs/j/executions/e"),
    ],
)
def test_google_triggers_round_trip_with_their_start_time(path, resource):
    """``started_at`` survives serialization, so the overall timeout survives a triggerer restart."""
    import importlib

    module, name = path.rsplit(".", 1)
    trigger = getattr(importlib.import_module(module), name)(resource, "r", "gcp_x", 3.0, 60.0, started_at=123.0)
    rebuilt, kwargs = _rebuilt(trigger)
    assert kwargs == {
        "resource": resource,
        "region": "r",
        "gcp_conn_id": "gcp_x",
        "poll_interval": 3.0,
        "timeout": 60.0,
        "started_at": 123.0,
    }
    assert rebuilt.serialize() == trigger.serialize()


def test_a_google_trigger_reports_a_timeout_naming_its_resource():
    """``run`` with a check that never finishes and a start time past the timeout: one timeout event."""
    import asyncio

    from vertex.triggers import _VertexPollingTrigger

    class NeverDone(_VertexPollingTrigger):
        def check(self):
            return None

    trigger = NeverDone("projects/p/locations/r/operations/9", "r", timeout=5.0, started_at=0.0)

    async def first_event():
        async for event in trigger.run():
            return event.payload

    payload = asyncio.run(first_event())
    assert payload["status"] == "timeout" and payload["resource"] == "projects/p/locations/r/operations/9"


def test_vertex_console_links_render_the_providers_pages():
    """The links carry the Google provider's console URLs; the deploy and upload operators declare them."""
    from vertex.links import VertexCustomJobLink, VertexEndpointLink, VertexModelLink
    from vertex.operators import (
        DeferrableCustomJobOperator,
        DeferrableDeployModelOperator,
        IdempotentUploadModelOperator,
    )

    ids = {"region": "europe-west4", "project_id": "p1"}
    assert VertexEndpointLink.format_str.format(endpoint_id="42", **ids) == (
        "https://console.cloud.google.com/vertex-ai/locations/europe-west4/endpoints/42?project=p1"
    )
    assert "/models/locations/europe-west4/models/7/" in VertexModelLink.format_str.format(model_id="7", **ids)
    assert "/training/9/cpu?project=p1" in VertexCustomJobLink.format_str.format(custom_job_id="9", **ids)
    assert [type(link) for link in DeferrableDeployModelOperator.operator_extra_links] == [VertexEndpointLink]
    assert [type(link) for link in IdempotentUploadModelOperator.operator_extra_links] == [VertexModelLink]
    assert [type(link) for link in DeferrableCustomJobOperator.operator_extra_links] == [VertexCustomJobLink]

    pushed = {}

    class TaskInstance:
        def xcom_push(self, key, value):
            pushed[key] = value

    VertexEndpointLink.persist({"ti": TaskInstance()}, endpoint_id="42", **ids)
    assert pushed == {"endpoint_conf": {"endpoint_id": "42", **ids}}
