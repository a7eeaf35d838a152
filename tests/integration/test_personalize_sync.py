"""Between FULL imports: PutUsers / PutItems of what changed (once per day), and the events the application
PUT through the event tracker exported (dataset export job, deferred) and merged into the lake exactly once.
Real boto3 clients (personalize, personalize-events) against the fake; S3 on a moto server."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow.parquet as pq
import pytest
from fakes.deferral import deferred, run_trigger

from recsys.data import writers as w
from recsys.data.partitions import PartitionStore
from recsys_devtools.emulators.personalize import PersonalizeFake, airflow_connection
from recsys_devtools.emulators.ports import free_port
from recsys_devtools.emulators.running import RunningFake

ROLE = "arn:aws:iam::123456789012:role/PersonalizeS3Access"
DAY1, DAY2 = date(2026, 11, 20), date(2026, 11, 21)


def at(day: date, hour: int) -> int:
    return int(datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp())


def write_partition(root: str, day: date, interactions: list[tuple], users: list[tuple], items: list[tuple]) -> None:
    """A committed partition as extraction writes it (interactions: user, item, event type, epoch seconds)."""
    store = PartitionStore(root)
    version, folder = store.new_version(day)
    rows = [
        {
            "user_id": u,
            "item_id": i,
            "event_type": e,
            "event_value": None,
            "timestamp": t,
            "occurred_at": datetime.fromtimestamp(t, UTC),
        }
        for u, i, e, t in interactions
    ]
    with w.VersionWriter(folder, version) as vw:
        vw.parquet("interactions", "interactions.parquet", w.INTERACTIONS_SCHEMA).write_columns(
            {n: [r[n] for r in rows] for n in w.INTERACTIONS_SCHEMA.names}
        )
        vw.parquet("users", "users.parquet", w.USERS_SCHEMA).write_columns(
            {n: [u[k] for u in users] for k, n in enumerate(w.USERS_SCHEMA.names)}
        )
        vw.parquet("items", "items.parquet", w.ITEMS_SCHEMA).write_columns(
            {n: [i[k] for i in items] for k, n in enumerate(w.ITEMS_SCHEMA.names)}
        )
        vw.csv(
            "personalize_interactions", "personalize/interactions.csv", w.PERSONALIZE_INTERACTIONS_HEADER
        ).write_rows([(u, i, t, e) for u, i, e, t in interactions])
        vw.csv("quarantine", "quarantine.csv", w.QUARANTINE_HEADER)
    store.commit(
        day,
        {
            "partition": day.isoformat(),
            "version": version,
            "status": "ok",
            "files": vw.entries(),
            "counts": {"valid": len(rows), "read": len(rows), "quarantined": 0},
        },
    )


@pytest.fixture
def personalize(moto_s3, s3_bucket, monkeypatch):
    fake = PersonalizeFake(s3_endpoint=moto_s3, pending_seconds=0.05, job_seconds=0.2)
    fake.resources = fake.create_dataset_group()
    with RunningFake(fake, free_port()) as running:
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", airflow_connection(running.url, moto_s3))
        fake.bucket, fake.url = s3_bucket, running.url
        yield fake


def test_changed_users_and_items_are_put_in_batches_of_ten_once_per_day(personalize, tmp_path):
    from personalize.hooks import PersonalizeEventsHook

    from recsys.personalize.records import send_changed

    fake, lake = personalize, (tmp_path / "lake").as_uri()
    users = [(f"u{n}", 20 + n, "F", "writer") for n in range(30)]
    write_partition(f"{lake}/extract", DAY1, [("u1", "i1", "view", at(DAY1, 9))], users, [("i1", "One", "Drama", 1999)])
    changed = [(u, age + 1 if n < 12 else age, g, o) for n, (u, age, g, o) in enumerate(users)]  # 12 changed
    changed += [(f"new{n}", None, None, "") for n in range(11)]  # 11 new, nulls left out of the properties
    write_partition(
        f"{lake}/extract",
        DAY2,
        [("u2", "i2", "view", at(DAY2, 9))],
        changed,
        [("i1", "One", "Drama", 1999), ("i2", "Two", "Comedy|Drama", 2001)],
    )
    fake.fail_next("PutUsers", "ThrottlingException", 400)  # retried by botocore, not by the caller
    fake.fail_next("PutUsers", "InternalServerError", 503)
    hook = PersonalizeEventsHook(aws_conn_id="aws_default")

    sent = send_changed(hook, lake, f"{lake}/extract", DAY2, "users", fake.resources["users"])
    assert (sent["changed"], sent["sent"], sent["calls"]) == (23, 23, 3)
    records = fake.datasets[fake.resources["users"]]["records"]
    assert records["u0"] == {"age": 21, "gender": "F", "occupation": "writer"} and records["new3"] == {}
    assert "u20" not in records  # unchanged since the previous partition: not sent
    puts = [p for op, p in fake.calls if op == "PutUsers"]
    assert len(puts) == 5 and max(len(p["users"]) for p in puts) == 10  # 3 calls + 2 retried answers

    again = send_changed(hook, lake, f"{lake}/extract", DAY2, "users", fake.resources["users"])
    assert (again["sent"], again["already_sent"], again["calls"]) == (0, 23, 0)  # a re-run sends nothing twice

    items = send_changed(hook, lake, f"{lake}/extract", DAY2, "items", fake.resources["items"])
    assert (items["sent"], items["calls"]) == (1, 1)
    assert fake.datasets[fake.resources["items"]]["records"]["i2"] == {
        "genres": "Comedy|Drama",
        "releaseYear": 2001,
        "title": "Two",
    }


def test_put_events_are_exported_and_merged_into_the_lake_exactly_once(personalize, tmp_path, monkeypatch):
    import boto3
    from personalize.hooks import PersonalizeEventsHook
    from personalize.operators import PersonalizeCreateDatasetExportJobOperator

    from recsys.config import load_settings
    from recsys.steps.personalize_events import merge_exported

    fake, lake = personalize, (tmp_path / "lake").as_uri()
    monkeypatch.setenv("RECSYS_STORAGE_ROOT", lake)
    source_row = ("u1", "i1", "view", at(DAY2, 9))
    write_partition(
        f"{lake}/extract",
        DAY2,
        [source_row, ("u1", "i2", "click", at(DAY2, 10))],
        [("u1", 30, "M", "")],
        [("i1", "One", "Drama", 1999), ("i2", "Two", "Drama", 2000)],
    )
    client = boto3.client(
        "personalize", endpoint_url=fake.url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    tracker = client.create_event_tracker(name="events", datasetGroupArn=fake.resources["dataset_group"])
    fake._ready(tracker["eventTrackerArn"])
    events = PersonalizeEventsHook(aws_conn_id="aws_default")
    events.put_events(
        tracker["trackingId"],
        "u1",
        "s1",
        [
            {"eventType": "view", "itemId": "i1", "sentAt": at(DAY2, 9)},  # the source database has it too
            {"eventType": "click", "itemId": "i3", "sentAt": at(DAY2, 11) + 0.25},
            {"eventType": "hover", "itemId": "i1", "sentAt": at(DAY2, 12)},  # not a known event type
            {"eventType": "view", "itemId": "i9", "sentAt": at(DAY1, 23)},  # another day
        ],
    )
    events.put_events(
        tracker["trackingId"], "u2", "s2", [{"eventType": "purchase", "itemId": "i2", "sentAt": at(DAY2, 13)}]
    )
    events.conn.put_events(
        trackingId=tracker["trackingId"],
        sessionId="anon",
        eventList=[{"eventType": "view", "itemId": "i2", "sentAt": at(DAY2, 14)}],
    )

    output = f"s3://{fake.bucket}/personalize/events-export/job1/"
    export = PersonalizeCreateDatasetExportJobOperator(
        task_id="export",
        job_name="recsys-events-abc",
        dataset_arn=fake.resources["interactions"],
        output_path=output,
        role_arn=ROLE,
        waiter_delay=0.1,
        waiter_max_attempts=50,
        deferrable=True,
    )
    trigger = deferred(export)  # no worker slot held while the export runs
    job_arn = export.execute_complete({}, run_trigger(type(trigger)(**trigger.serialize()[1])))
    keys = [
        o["Key"]
        for o in fake._s3().list_objects_v2(Bucket=fake.bucket, Prefix="personalize/events-export/")["Contents"]
    ]
    assert keys == ["personalize/events-export/job1/recsys-events-abc/AMZN_Personalize/INTERACTIONS/part-00000.csv"]

    planned = {"days": [DAY2.isoformat()], "export": {"output_path": output}, "aws_conn_id": "aws_default"}
    (merged,) = merge_exported(load_settings(), planned, job_arn)
    assert (merged["events_in_export"], merged["events_of_day"], merged["duplicates"], merged["added"]) == (6, 3, 1, 2)
    assert merged["dropped"] == {"other_days": 1, "anonymous": 1, "no_item": 0, "unknown_event_type": 1}

    store = PartitionStore(f"{lake}/extract")
    manifest = store.read_manifest(DAY2)
    table = pq.read_table(store.file_path(manifest, "interactions").path).to_pylist()
    assert sorted((r["user_id"], r["item_id"], r["origin"]) for r in table) == [
        ("u1", "i1", "source"),
        ("u1", "i2", "source"),
        ("u1", "i3", "event_tracker"),
        ("u2", "i2", "event_tracker"),
    ]
    assert manifest["counts"]["valid"] == 4 and manifest["merged_events"][0]["export_job"] == job_arn
    assert store.file_path(manifest, "personalize_interactions").read_text().count("\n") == 5  # header + 4

    (again,) = merge_exported(load_settings(), planned, job_arn)  # the same export merged again: nothing added
    assert again["added"] == 0 and again["duplicates"] == 3
    assert store.read_manifest(DAY2)["version"] == manifest["version"]
