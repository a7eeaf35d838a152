"""Run ``recsys_personalize`` (``dag.test``: deferred waits run their triggers inline) against the
Personalize fake (JSON 1.1) and a moto S3 server, on the session's synthetic lake."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fakes.personalize_world import running_personalize

from recsys_devtools.emulators.personalize import PersonalizeFake

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAY = {"end_day": "2026-11-09", "window_days": 8}


def provisioned(fake: PersonalizeFake) -> dict:
    """A dataset group and a campaign made earlier; their ARNs as settings."""
    arns = fake.create_dataset_group()
    fake.campaign = fake.create_campaign(arns["solution"])
    values = {"PERSONALIZE_SOLUTION_ARN": arns["solution"], "PERSONALIZE_CAMPAIGN_ARN": fake.campaign}
    return values | {f"PERSONALIZE_{d.upper()}_DATASET_ARN": arns[d] for d in ("interactions", "users", "items")}


@pytest.fixture
def personalize(airflow_db, synthetic_lake, moto_s3, s3_bucket, tmp_path, monkeypatch):
    """The fake with a dataset group and a campaign; settings and the AWS connection pointing at it."""
    with running_personalize(synthetic_lake, moto_s3, s3_bucket, tmp_path, monkeypatch, provisioned) as fake:
        yield fake


@pytest.fixture
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags["recsys_personalize"]


def states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances() if ti.map_index < 1}


def app_db_path() -> str:
    return json.loads(os.environ["AIRFLOW_CONN_RECSYS_APP"])["host"]


def app_rows(path: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT user_id, rank, item_id, score, source, model_version FROM recommendations"
        ).fetchall()


def fake_interactions(fake: PersonalizeFake) -> list[tuple[str, str]]:
    """Every (user, item) of the window the run imported, read back from the lake."""
    import pyarrow.parquet as pq

    return [
        (r["user_id"], r["item_id"])
        for path in (fake.root / "extract").glob("dt=*/v=*/interactions.parquet")
        for r in pq.read_table(path, columns=["user_id", "item_id"]).to_pylist()
    ]


def report(fake: PersonalizeFake) -> dict:
    (path,) = (fake.root / "personalize" / "runs").glob("*/report.json")
    return json.loads(path.read_text())


def test_full_retrain_imports_trains_scores_and_updates_the_campaign(dag, personalize):
    fake = personalize
    run = dag.test(run_conf={**DAY, "training_mode": "FULL"})
    assert run.state == "success", states(run)
    imports = fake.created("import")
    assert sorted(j.fields["importMode"] for j in imports) == ["FULL", "FULL", "FULL"]
    interactions = next(j for j in imports if j.fields["datasetArn"].endswith("/INTERACTIONS"))
    assert fake.datasets[interactions.fields["datasetArn"]]["rows"] > 1000  # the whole 8-day window
    (version,) = [v for v in fake.created("solution_version") if v.name != "initial-full"]
    assert version.fields["trainingMode"] == "FULL" and fake.status(version) == "ACTIVE"
    assert fake.campaigns[fake.campaign]["solutionVersionArn"] == version.arn
    (batch,) = fake.created("batch")
    out = batch.fields["jobOutput"]["s3DataDestination"]["path"]
    key = out.removeprefix(f"s3://{fake.bucket}/") + "users.jsonl.out"
    lines = fake._s3().get_object(Bucket=fake.bucket, Key=key)["Body"].read().decode().splitlines()
    assert lines and json.loads(lines[0])["output"]["recommendedItems"]
    written = report(fake)
    assert written["solution_version"] == version.arn and written["training"]["mode"] == "FULL"
    assert written["task_states"]["update_campaign"] == "success" and len(written["imports"]) == 3
    assert written["smoke_test"]["ok"] and written["task_states"]["rollback_campaign"] == "skipped"
    # delivered: the personalize rows of the application table, without items the user interacted with
    delivered = written["delivery"]
    assert delivered["rows"] > 0 and delivered["users"] == len(lines)
    assert delivered["postprocessing"]["dropped_interacted"] > 0
    rows = app_rows(app_db_path())
    assert {r[4] for r in rows} == {"personalize"} and {r[5] for r in rows} == {version.arn}
    interacted = {(u, i) for u, i in fake_interactions(fake)}
    assert not [r for r in rows if (r[0], r[2]) in interacted]


def test_a_campaign_failing_its_smoke_test_is_rolled_back(dag, personalize):
    fake = personalize
    serving = fake.campaigns[fake.campaign]["solutionVersionArn"]
    fake.break_version()  # the next version answers items that are not in the catalog
    run = dag.test(run_conf={**DAY, "training_mode": "FULL", "run_batch_inference": False})
    assert run.state == "failed"
    assert states(run)["rollback_campaign"] == "success" and states(run)["rolled_back"] == "failed"
    assert fake.campaigns[fake.campaign]["solutionVersionArn"] == serving  # the previous version serves again
    updates = [p["solutionVersionArn"] for op, p in fake.calls if op == "UpdateCampaign"]
    assert len(updates) == 2 and updates[1] == serving
    verdict = report(fake)["smoke_test"]
    assert not verdict["ok"] and "not in the catalog" in verdict["problems"][0]


def test_incremental_update_then_a_rerun_reattaches_to_every_job(dag, personalize):
    fake = personalize
    logical = datetime(2026, 11, 10, 4, tzinfo=UTC)
    conf = {**DAY, "training_mode": "UPDATE", "datasets": ["interactions"]}
    run = dag.test(run_after=logical, logical_date=logical, run_conf=conf)
    assert run.state == "success", states(run)
    (imported,) = fake.created("import")
    assert imported.fields["importMode"] == "INCREMENTAL"
    folder = imported.fields["dataSource"]["dataLocation"]
    assert [key.rsplit("/", 1)[-1] for key, _ in fake._read_objects(folder)] == ["2026-11-09.csv"]  # the day only
    new_versions = [v for v in fake.created("solution_version") if v.name != "initial-full"]
    assert [v.fields["trainingMode"] for v in new_versions] == ["UPDATE"]
    created = {kind: len(fake.created(kind)) for kind in ("import", "solution_version", "batch")}

    again = dag.test(run_after=logical, logical_date=logical, run_conf=conf)  # the same run, run again
    assert again.state == "success", states(again)
    assert {kind: len(fake.created(kind)) for kind in created} == created  # same names: nothing duplicated
    assert [op for op, _ in fake.calls].count("UpdateCampaign") == 1


def test_update_falls_back_to_full_without_an_active_full_version(dag, personalize):
    fake = personalize
    for job in fake.created("solution_version"):  # no trained version at all (a fresh solution)
        del fake.jobs[job.arn]
    monkey = {**DAY, "training_mode": "UPDATE", "update_campaign": False}
    run = dag.test(run_conf=monkey)
    assert run.state == "success", states(run)
    (version,) = fake.created("solution_version")
    assert version.fields["trainingMode"] == "FULL"
    assert report(fake)["training"]["reason"] == "no ACTIVE FULL solution version yet"


def test_a_regression_stops_before_publishing(dag, personalize):
    fake = personalize
    fake.metrics = [{"normalized_discounted_cumulative_gain_at_10": 0.05, "coverage": 0.3}]  # initial: 0.1
    serving = fake.campaigns[fake.campaign]["solutionVersionArn"]
    run = dag.test(run_conf={**DAY, "training_mode": "FULL"})
    assert run.state == "success"
    assert states(run)["compare_metrics"] == "success"
    assert states(run)["batch_inference"] == "skipped" and states(run)["update_campaign"] == "skipped"
    assert fake.campaigns[fake.campaign]["solutionVersionArn"] == serving and not fake.created("batch")
    assert report(fake)["metrics"]["regressed"] is True


def test_an_outage_day_fails_without_starting_anything(dag, personalize):
    run = dag.test(run_conf={"end_day": "2026-11-05", "window_days": 1, "training_mode": "FULL"})  # no data that day
    assert run.state == "failed" and states(run)["upload"] == "failed"
    assert not personalize.created("import")


def test_dry_run_starts_nothing(dag, personalize):
    run = dag.test(run_conf={**DAY, "dry_run": True})
    assert run.state == "success" and states(run)["upload"] == "skipped"
    assert not personalize.created("import") and not personalize.calls


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"training_mode": "PARTIAL"}, "is not one of"),
        ({"datasets": ["clicks"]}, "is not one of"),
        ({"window_days": 0}, "less than the minimum of 1"),
    ],
)
def test_invalid_params_are_rejected(dag, conf, message):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=message):
        dag.test(run_conf=conf)


def test_schedules_daily_update_and_weekly_full(dag):
    from airflow.sdk.definitions.timetables.trigger import MultipleCronTriggerTimetable

    assert isinstance(dag.timetable, MultipleCronTriggerTimetable)
    assert sorted(t.expression for t in dag.timetable.timetables) == ["0 4 * * 0", "0 4 * * 1-6"]
    assert {t.interval.days for t in dag.timetable.timetables} == {1}  # each run covers the previous day
    assert dag.max_active_runs == 1 and dag.catchup is False


def test_events_dag_puts_changed_records_and_merges_the_put_events(airflow_db, personalize):
    """``recsys_personalize_events`` for one day: users/items sent once, PUT events merged into its partition."""
    import boto3
    from airflow.dag_processing.dagbag import DagBag
    from personalize.hooks import PersonalizeEventsHook

    from recsys.data.partitions import PartitionStore

    fake = personalize
    client = boto3.client(
        "personalize", endpoint_url=fake.url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    group = client.list_dataset_groups()["datasetGroups"][0]["datasetGroupArn"]
    tracker = client.create_event_tracker(name="events", datasetGroupArn=group)
    fake._ready(tracker["eventTrackerArn"])
    day = datetime(2026, 11, 9, 15, tzinfo=UTC).timestamp()
    PersonalizeEventsHook(aws_conn_id="aws_default").put_events(
        tracker["trackingId"],
        "app-user-1",
        "s1",
        [
            {"eventType": "purchase", "itemId": "item-0001", "sentAt": day},
            {"eventType": "view", "itemId": "item-0002", "sentAt": day + 60},
        ],
    )
    dag = DagBag(dag_folder=str(DAGS)).dags["recsys_personalize_events"]
    run = dag.test(run_conf={"day": "2026-11-09"})
    assert run.state == "success", states(run)
    store = PartitionStore((fake.root / "extract").as_uri())
    manifest = store.read_manifest(datetime(2026, 11, 9).date())
    (merged,) = manifest["merged_events"]
    assert merged["added"] == 2 and merged["events_of_day"] == 2
    sent = run.get_task_instance("put_records").xcom_pull(task_ids="put_records")
    assert [(s["kind"], s["sent"] == s["changed"]) for s in sent] == [("users", True), ("items", True)]
    put = sum(len(p.get("users", p.get("items", []))) for op, p in fake.calls if op in ("PutUsers", "PutItems"))
    assert put == sum(s["sent"] for s in sent)

    calls = len(fake.calls)
    again = dag.test(run_conf={"day": "2026-11-09"})
    assert again.state == "success"
    assert not [op for op, _ in fake.calls[calls:] if op in ("PutUsers", "PutItems")]  # sent once per day
    assert store.read_manifest(datetime(2026, 11, 9).date())["version"] == manifest["version"]  # merged once
