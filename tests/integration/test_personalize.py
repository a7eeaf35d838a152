"""The Personalize hook, operators, triggers and sensors drive real boto3 / aiobotocore clients through
the Airflow AWS connection against the JSON 1.1 Personalize fake, with S3 on a moto server."""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest
from fakes.deferral import deferred, run_trigger

from recsys_devtools.emulators.personalize import PersonalizeFake, airflow_connection
from recsys_devtools.emulators.ports import free_port
from recsys_devtools.emulators.running import RunningFake

ROLE = "arn:aws:iam::123456789012:role/PersonalizeS3Access"
FAST = {"waiter_delay": 0.2, "waiter_max_attempts": 50, "deferrable": True}


@pytest.fixture
def personalize(moto_s3, s3_bucket, monkeypatch):
    fake = PersonalizeFake(s3_endpoint=moto_s3)
    fake.resources = fake.create_dataset_group()
    with RunningFake(fake, free_port()) as running:
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", airflow_connection(running.url, moto_s3))
        fake.bucket, fake.airflow_endpoint = s3_bucket, running.url
        yield fake


def put_interactions(fake: PersonalizeFake, key: str, rows: int = 1200) -> str:
    lines = ["USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE"] + [
        f"u{i % 50},i{i % 7},{1763856000 + i},view" for i in range(rows)
    ]
    s3 = boto3.client(
        "s3", endpoint_url=fake.s3_endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    s3.put_object(Bucket=fake.bucket, Key=key, Body="\n".join(lines).encode())
    return f"s3://{fake.bucket}/{key}"


def import_operator(fake, location: str, name: str = "recsys-interactions-abc", **kwargs):
    from personalize.operators import PersonalizeCreateDatasetImportJobOperator

    return PersonalizeCreateDatasetImportJobOperator(
        task_id="import",
        job_name=name,
        dataset_arn=fake.resources["interactions"],
        data_location=location,
        role_arn=ROLE,
        **{**FAST, **kwargs},
    )


def finish(operator) -> str:
    """Defer, rebuild the trigger from its serialized form (as the triggerer does), run it, complete."""
    trigger = deferred(operator)
    path, kwargs = trigger.serialize()
    assert path.startswith("personalize.triggers.")
    return operator.execute_complete({}, run_trigger(type(trigger)(**kwargs)))


def test_the_whole_retraining_chain(personalize):
    from personalize.operators import (
        PersonalizeCreateBatchInferenceJobOperator,
        PersonalizeCreateSolutionVersionOperator,
        PersonalizeUpdateCampaignOperator,
    )

    fake, arns = personalize, personalize.resources
    campaign = fake.create_campaign(arns["solution"])
    imported = finish(import_operator(fake, put_interactions(fake, "runs/r1/interactions/day1.csv")))
    assert fake.DescribeDatasetImportJob({"datasetImportJobArn": imported})["datasetImportJob"]["status"] == "ACTIVE"

    version = finish(
        PersonalizeCreateSolutionVersionOperator(
            task_id="sv", solution_arn=arns["solution"], name="recsys-sv-abc", training_mode="UPDATE", **FAST
        )
    )
    boto3.client(
        "s3", endpoint_url=fake.s3_endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    ).put_object(Bucket=fake.bucket, Key="runs/r1/batch-in/users.json", Body=b'{"userId": "u1"}\n{"userId": "u2"}\n')
    finish(
        PersonalizeCreateBatchInferenceJobOperator(
            task_id="batch",
            job_name="recsys-batch-abc",
            solution_version_arn=version,
            role_arn=ROLE,
            input_path=f"s3://{fake.bucket}/runs/r1/batch-in/users.json",
            output_path=f"s3://{fake.bucket}/runs/r1/batch-out/",
            num_results=3,
            **FAST,
        )
    )
    body = fake._s3().get_object(Bucket=fake.bucket, Key="runs/r1/batch-out/users.json.out")["Body"].read()
    first = json.loads(body.decode().splitlines()[0])
    assert first["input"] == {"userId": "u1"} and len(first["output"]["recommendedItems"]) == 3

    assert (
        finish(
            PersonalizeUpdateCampaignOperator(
                task_id="campaign", campaign_arn=campaign, solution_version_arn=version, **FAST
            )
        )
        == campaign
    )
    assert fake.campaigns[campaign]["solutionVersionArn"] == version


def test_a_retry_reattaches_and_a_failed_job_gets_a_new_name(personalize):
    from airflow.providers.common.compat.sdk import AirflowException

    fake = personalize
    location = put_interactions(fake, "runs/r2/interactions/day1.csv").rsplit("/", 1)[0] + "/"  # a folder
    first = deferred(import_operator(fake, location))
    again = deferred(import_operator(fake, location))  # the task's retry
    assert again.return_value == first.return_value and len(fake.created("import")) == 1

    fake.fail_job("import", "Input CSV line 17: TIMESTAMP is not a number")
    failing = import_operator(fake, location, name="recsys-users-abc")
    with pytest.raises(AirflowException, match="CREATE FAILED - Input CSV line 17: TIMESTAMP is not a number"):
        finish(failing)
    assert finish(import_operator(fake, location, name="recsys-users-abc"))  # the next try
    assert sorted(j.name for j in fake.created("import"))[-2:] == ["recsys-users-abc", "recsys-users-abc-2"]


def test_limit_exceeded_is_waited_out_without_a_task_retry(personalize):
    from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

    fake = personalize
    location = put_interactions(fake, "runs/r3/interactions.csv")
    others = []
    for n in range(5):  # the account's 5 import slots, held until a test frees one
        fake.stick("import")
        others.append(import_operator(fake, location, name=f"other-{n}", wait_for_completion=False).execute({}))
    busy = import_operator(fake, location, busy_retry_seconds=5)
    trigger = deferred(busy, method="execute")  # deferrable: waits in the triggerer, then tries again
    assert isinstance(trigger, TimeDeltaTrigger)

    def creates() -> int:
        return [op for op, _ in fake.calls].count("CreateDatasetImportJob")

    def free_a_slot_once_refused():  # after the synchronous operator's first try was refused too
        deadline = time.monotonic() + 120
        while creates() < 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        fake.finish_now(others[0])

    threading.Thread(target=free_a_slot_once_refused, daemon=True).start()
    synchronous = import_operator(fake, location, deferrable=False, busy_retry_seconds=0.5)
    assert synchronous.execute({}).endswith("/recsys-interactions-abc")
    assert creates() >= 8  # 5 others, busy refused, >= 1 synchronous try refused, 1 accepted
    assert len(fake.created("import")) == 6


def test_busy_timeout_fails_with_the_service_message(personalize):
    from airflow.providers.common.compat.sdk import AirflowException

    fake = personalize
    fake.stick("import")
    location = put_interactions(fake, "runs/r4/interactions.csv")
    for n in range(5):
        fake.stick("import")
        import_operator(fake, location, name=f"stuck-{n}", wait_for_completion=False).execute({})
    with pytest.raises(AirflowException, match="still LimitExceededException after .*limit 5"):
        import_operator(fake, location, deferrable=False, busy_retry_seconds=0.2, busy_timeout_seconds=0.5).execute({})


def test_throttling_and_5xx_on_create_are_retried_by_the_client(personalize):
    fake = personalize
    fake.fail_next("CreateDatasetImportJob", "ThrottlingException", 400, "Rate exceeded")
    fake.fail_next("CreateDatasetImportJob", "InternalServerError", 500, "try again")
    arn = import_operator(fake, put_interactions(fake, "runs/r5/i.csv"), wait_for_completion=False).execute({})
    assert arn and [op for op, _ in fake.calls].count("CreateDatasetImportJob") == 3


def test_update_without_an_active_full_version_is_refused(personalize):
    from botocore.exceptions import ClientError
    from personalize.operators import PersonalizeCreateSolutionVersionOperator

    operator = PersonalizeCreateSolutionVersionOperator(
        task_id="sv", solution_arn=personalize.resources["solution"], name="recsys-sv-x", training_mode="UPDATE", **FAST
    )
    with pytest.raises(ClientError, match="InvalidInputException.*ACTIVE solution version trained with FULL"):
        operator.execute({})


def test_stuck_job_times_out_and_killing_a_training_stops_it(personalize):
    import asyncio

    from airflow.providers.common.compat.sdk import AirflowException
    from personalize.operators import PersonalizeCreateSolutionVersionOperator

    fake = personalize
    finish(import_operator(fake, put_interactions(fake, "runs/r6/i.csv")))
    fake.stick("solution_version")
    operator = PersonalizeCreateSolutionVersionOperator(
        task_id="sv",
        solution_arn=fake.resources["solution"],
        name="recsys-sv-stuck",
        waiter_delay=0.1,
        waiter_max_attempts=5,
        deferrable=True,
    )
    trigger = deferred(operator)
    with pytest.raises(AirflowException, match="max attempts reached"):
        operator.execute_complete({}, run_trigger(trigger))
    asyncio.run(trigger.on_kill())  # what the triggerer calls when a user marks the deferred task failed
    (version,) = [j for j in fake.created("solution_version")]
    assert fake.status(version) in ("CREATE STOPPING", "CREATE STOPPED")


def test_sensors_poke_and_defer(personalize):
    from airflow.providers.common.compat.sdk import AirflowException
    from personalize.sensors import PersonalizeDatasetImportJobSensor

    fake = personalize
    location = put_interactions(fake, "runs/r7/i.csv")
    fake.stick("import")  # held until finish_now: still running at the first poke however loaded the machine
    arn = import_operator(fake, location, wait_for_completion=False).execute({})
    sensor = PersonalizeDatasetImportJobSensor(task_id="s", arn=arn, poke_interval=0.1, timeout=30)
    assert sensor.poke({}) is False  # still pending
    fake.finish_now(arn)
    sensor.execute({})  # pokes until ACTIVE
    fake.fail_job("import", "Access denied to s3://bucket/key")
    failed = import_operator(fake, location, name="recsys-failing", wait_for_completion=False).execute({})
    with pytest.raises(AirflowException, match="CREATE FAILED: Access denied"):
        PersonalizeDatasetImportJobSensor(task_id="s", arn=failed, poke_interval=0.1, timeout=10).execute({})
    deferring = PersonalizeDatasetImportJobSensor(task_id="s", arn=arn, deferrable=True, poke_interval=0.1, timeout=5)
    assert deferring.execute_complete({}, run_trigger(deferred(deferring))) == arn


def test_names_are_valid_and_deterministic():
    from personalize.names import VALID, attempt_name, attempt_of, run_name

    name = run_name("recsys", "scheduled__2026-11-22T03:00:00+00:00", "interactions", "2026-11-22")
    assert VALID.match(name) and len(name) <= 59
    assert name == run_name("recsys", "scheduled__2026-11-22T03:00:00+00:00", "interactions", "2026-11-22")
    assert name != run_name("recsys", "manual__2026-11-22T03:00:00+00:00", "interactions", "2026-11-22")
    assert attempt_of(name, attempt_name(name, 3)) == 3 and attempt_of(name, name + "-x") is None


def test_the_fake_refuses_what_the_service_refuses(personalize):
    """Validation of the provisioning and real-time APIs, through the real boto3 clients."""
    from botocore.exceptions import ClientError

    fake, arns = personalize, personalize.resources
    endpoint = fake.airflow_endpoint
    clients = {
        name: boto3.client(
            name, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
        )
        for name in ("personalize", "personalize-events", "personalize-runtime")
    }
    client, events, runtime = clients["personalize"], clients["personalize-events"], clients["personalize-runtime"]

    def code(call, **kwargs) -> str:
        with pytest.raises(ClientError) as raised:
            call(**kwargs)
        return raised.value.response["Error"]["Code"]

    assert code(client.create_dataset_group, name="bad name!") == "InvalidInputException"
    assert code(client.create_dataset_group, name="recsys") == "ResourceAlreadyExistsException"
    assert code(client.delete_dataset_group, datasetGroupArn=arns["dataset_group"]) == "ResourceInUseException"
    assert (
        code(client.create_filter, name="f", datasetGroupArn=arns["dataset_group"], filterExpression="ItemID = 1")
        == "InvalidInputException"
    )
    tracker = client.create_event_tracker(name="events", datasetGroupArn=arns["dataset_group"])
    assert (
        code(client.create_event_tracker, name="events-2", datasetGroupArn=arns["dataset_group"])
        == "LimitExceededException"
    )
    event = {"eventType": "view", "itemId": "i1", "sentAt": 1763856000}
    assert (
        code(events.put_events, trackingId=tracker["trackingId"], sessionId="s", eventList=[event])
        == "ResourceNotFoundException"
    )  # the tracker is not ACTIVE yet
    fake._ready(tracker["eventTrackerArn"])
    assert (
        code(events.put_events, trackingId=tracker["trackingId"], sessionId="s", eventList=[event] * 11)
        == "InvalidInputException"
    )
    events.put_events(trackingId=tracker["trackingId"], userId="u1", sessionId="s", eventList=[event] * 10)
    assert code(events.put_users, datasetArn=arns["items"], users=[{"userId": "u1"}]) == "InvalidInputException"
    assert (
        code(events.put_items, datasetArn=arns["items"], items=[{"itemId": "i1", "properties": "not json"}])
        == "InvalidInputException"
    )
    campaign = fake.create_campaign(arns["solution"])
    assert (
        code(
            client.create_campaign,
            name="c2",
            solutionVersionArn=client.describe_campaign(campaignArn=campaign)["campaign"]["solutionVersionArn"],
            campaignConfig={"syncWithLatestSolutionVersion": True},
        )
        == "InvalidInputException"
    )
    assert (
        code(client.delete_solution, solutionArn=arns["solution"]) == "ResourceInUseException"
    )  # a campaign serves it
    assert (
        code(runtime.get_recommendations, campaignArn=campaign, userId="u1", numResults=501) == "InvalidInputException"
    )
    assert runtime.get_recommendations(campaignArn=campaign, userId="u1", numResults=3)["itemList"][0]["itemId"] == "i1"
    client.delete_campaign(campaignArn=campaign)
    assert client.describe_campaign(campaignArn=campaign)["campaign"]["status"] == "DELETE PENDING"
