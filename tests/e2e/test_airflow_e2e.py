"""The DAGs under a real Airflow 3 (api-server, scheduler, dag-processor, triggerer; LocalExecutor;
PostgreSQL metadata DB), driven only through REST API v2 — no ``dag.test()``.

One stack for the module; the tests run in order and build on each other like a week of operations:
catch-up of the nightly extraction with a data outage, UI-style triggering, a backfill once the late
rows arrive, the nightly chain extraction -> training -> Vertex deploy, two trainings triggered at
once, a Personalize retrain whose deferred wait survives a triggerer restart, and the Personalize
lifecycle: setup from nothing -> the nightly retrain on the ARNs it recorded (Variables, nothing copied
by hand) -> smoke test -> recommendations delivered to the application database. The Vertex AI and
Personalize fakes, moto (S3) and the serving containers the Vertex fake starts are real HTTP servers.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta

import pytest
from fakes.airflow_stack import AirflowStack

from recsys_devtools.emulators.personalize import PersonalizeFake
from recsys_devtools.emulators.personalize import airflow_connection as personalize_connection
from recsys_devtools.emulators.ports import free_port
from recsys_devtools.emulators.running import RunningFake
from recsys_devtools.emulators.vertex import VertexFake
from recsys_devtools.emulators.vertex import airflow_connection as vertex_connection

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
TODAY = datetime.now(UTC).date()
FIRST_DAY = TODAY - timedelta(days=16)  # recsys_extract's start date (a setting): catch-up begins here
OUTAGE = [TODAY - timedelta(days=5), TODAY - timedelta(days=4)]
SERVING_IMAGE = "europe-docker.pkg.dev/p/recsys/serving:e2e"
DAGS = {"recsys_extract", "recsys_two_tower", "recsys_vertex_deploy", "recsys_personalize", "recsys_personalize_setup"}


def day_bounds(day: date) -> tuple[str, str]:
    return f"{day} 00:00:00", f"{day + timedelta(days=1)} 00:00:00"


@pytest.fixture(scope="module")
def world(tmp_path_factory, moto_s3):
    """Fakes + a seeded source + a running Airflow; yields a namespace of all of them."""
    import boto3

    home = tmp_path_factory.mktemp("airflow-e2e")
    source = home / "data" / "source.db"
    source.parent.mkdir(parents=True)
    days = (TODAY - FIRST_DAY).days
    subprocess.run(
        [
            sys.executable,
            "-m",
            "recsys_devtools.seed",
            "--url",
            f"sqlite:///{source}",
            "--end",
            TODAY.isoformat(),
            "synthetic",
            "--days",
            str(days),
            "--users",
            "400",
            "--items",
            "300",
            "--interactions",
            str(1500 * days),
        ],
        check=True,
        capture_output=True,
    )
    with sqlite3.connect(source) as db:  # the outage: these days' rows arrive late
        db.execute("CREATE TABLE late_interactions AS SELECT * FROM interactions WHERE 0")
        for day in OUTAGE:
            start, end = day_bounds(day)
            db.execute(
                "INSERT INTO late_interactions SELECT * FROM interactions WHERE occurred_at >= ? AND occurred_at < ?",
                (start, end),
            )
            db.execute("DELETE FROM interactions WHERE occurred_at >= ? AND occurred_at < ?", (start, end))

    bucket = "recsys-e2e"
    boto3.client(
        "s3", endpoint_url=moto_s3, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    ).create_bucket(Bucket=bucket)
    personalize = PersonalizeFake(s3_endpoint=moto_s3, pending_seconds=0.5, job_seconds=1.0)
    arns = personalize.create_dataset_group()
    campaign = personalize.create_campaign(arns["solution"])
    vertex = VertexFake(operation_seconds=1.0, images={SERVING_IMAGE: [sys.executable, "-m", "recsys.serving"]})
    with RunningFake(personalize, free_port()) as p_running, RunningFake(vertex, free_port()) as v_running:
        env = {
            "AIRFLOW_CONN_AWS_DEFAULT": personalize_connection(p_running.url, moto_s3),
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": vertex_connection(v_running.url, vertex.project),
            "RECSYS_STORAGE_ROOT": (home / "recsys-data").as_uri(),
            "RECSYS_EXTRACT_START_DATE": FIRST_DAY.isoformat(),  # the same catch-up whatever today is
            "RECSYS_VERTEX_PROJECT": vertex.project,
            "RECSYS_VERTEX_REGION": vertex.location,
            "RECSYS_SERVING_IMAGE_URI": SERVING_IMAGE,
            "RECSYS_VERTEX_POLL_SECONDS": "2",
            "RECSYS_PERSONALIZE_S3_URI": f"s3://{bucket}/personalize",
            "RECSYS_PERSONALIZE_ROLE_ARN": "arn:aws:iam::123456789012:role/PersonalizeS3",
            "RECSYS_PERSONALIZE_POLL_SECONDS": "2",
        }
        # the resources someone made earlier, as Variables: recsys_personalize_setup overwrites them later
        variables = {"recsys_personalize_solution_arn": arns["solution"], "recsys_personalize_campaign_arn": campaign}
        variables |= {f"recsys_personalize_{d}_dataset_arn": arns[d] for d in ("interactions", "users", "items")}
        stack = AirflowStack(home, env)
        try:
            stack.start()
            subprocess.run(
                [sys.executable, "-m", "recsys_devtools.demo", "setup"], env=stack.env, check=True, capture_output=True
            )  # fmt: skip  (the source connection + the Personalize pool)
            stack.wait_for_dags(DAGS)
            for key, value in variables.items():
                answer = stack.api("POST", "/variables", json={"key": key, "value": value})
                assert answer.status_code in (200, 201), answer.text
            yield type(
                "World",
                (),
                {
                    "stack": stack,
                    "source": source,
                    "personalize": personalize,
                    "vertex": vertex,
                    "home": home,
                    "campaign": campaign,
                },
            )
        finally:
            stack.stop()


def partitions(world) -> dict[str, dict]:
    root = world.home / "recsys-data" / "extract"
    return {p.parent.name[3:]: json.loads(p.read_text()) for p in sorted(root.glob("dt=*/_manifest.json"))}


def source_count(world, day: date) -> int:
    start, end = day_bounds(day)
    with sqlite3.connect(world.source) as db:
        return db.execute(
            "SELECT COUNT(*) FROM interactions WHERE occurred_at >= ? AND occurred_at < ? AND "
            "user_id IS NOT NULL AND item_id IS NOT NULL",
            (start, end),
        ).fetchone()[0]


def wait_all(stack, dag_id: str, expected: int, timeout: float = 900) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = stack.runs(dag_id)
        if len(runs) >= expected and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        time.sleep(3)
    raise TimeoutError(f"{dag_id}: {[(r['dag_run_id'], r['state']) for r in stack.runs(dag_id)]}")


def wait_consumed(
    stack, dag_id: str, source_dag_id: str, since: datetime, timeout: float = 900
) -> tuple[list[dict], int]:
    """Every run of ``dag_id`` finished and, together, they consumed every asset event ``source_dag_id``
    emitted since ``since``: no asset-triggered run is still to come (a state, not a quiet period).
    Returns the runs, each with ``consumed`` (how many of those events it consumed), and how many were emitted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        params = {"source_dag_id": source_dag_id, "timestamp_gte": since.isoformat()}
        emitted = stack.api("GET", "/assets/events", params=params).json()["total_entries"]
        runs = stack.runs(dag_id)
        if all(r["state"] in ("success", "failed") for r in runs):
            for r in runs:  # a run's upstream events include those emitted before: while the DAG was paused
                path = f"/dags/{dag_id}/dagRuns/{r['dag_run_id']}/upstreamAssetEvents"
                events = stack.api("GET", path).json()["asset_events"]
                r["consumed"] = sum(datetime.fromisoformat(e["timestamp"]) >= since for e in events)
            if emitted and sum(r["consumed"] for r in runs) >= emitted:
                return runs, emitted
        time.sleep(2)
    raise TimeoutError(f"{dag_id}: {[(r['dag_run_id'], r['state']) for r in stack.runs(dag_id)]}")


def assert_one_at_a_time(runs: list[dict]) -> None:
    spans = sorted((r["start_date"], r["end_date"]) for r in runs)
    overlapping = [(a, b) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
    assert not overlapping, overlapping


def test_catch_up_records_the_outage_days_as_empty(world):
    stack = world.stack
    stack.set_paused("recsys_extract", False)  # catch-up from the start date, one run per day
    runs = wait_all(stack, "recsys_extract", (TODAY - FIRST_DAY).days)
    assert {r["state"] for r in runs} == {"success"}, [(r["dag_run_id"], r["state"]) for r in runs]
    found = partitions(world)
    days = sorted(found)  # one more when the clock passed midnight meanwhile: the nightly run's
    assert len(days) >= (TODAY - FIRST_DAY).days
    assert days == [str(FIRST_DAY + timedelta(days=n)) for n in range(len(days))]
    for day in OUTAGE:
        assert found[day.isoformat()]["status"] == "empty"


def test_backfill_after_the_late_rows_arrive_re_extracts_exactly_those_days(world):
    stack, before = world.stack, partitions(world)
    with sqlite3.connect(world.source) as db:
        db.execute("INSERT INTO interactions SELECT * FROM late_interactions")
    stack.wait_for_backfill(stack.backfill("recsys_extract", OUTAGE[0], OUTAGE[-1]))
    runs = [r for r in stack.runs("recsys_extract") if r["run_type"] == "backfill"]
    assert len(runs) == len(OUTAGE) and {r["state"] for r in runs} == {"success"}
    after = partitions(world)
    newer = set(after) - set(before)  # the nightly run's, when the clock passed midnight meanwhile
    assert set(before) <= set(after) and all(day > max(before) for day in newer)
    for day, manifest in after.items():
        versions = list((world.home / "recsys-data" / "extract" / f"dt={day}").glob("v=*"))
        assert len(versions) == 1, (day, versions)  # no duplicate data left behind
        if date.fromisoformat(day) in OUTAGE:
            assert manifest["status"] == "ok" and manifest["counts"]["valid"] > 0
            assert manifest["counts"]["valid"] + manifest["counts"]["quarantined"] == source_count(
                world, date.fromisoformat(day)
            )
        elif day in before:
            assert manifest["version"] == before[day]["version"]  # untouched


def test_nightly_chain_extract_train_deploy_and_trainings_never_overlap(world):
    stack, unpaused = world.stack, datetime.now(UTC)
    for dag_id in ("recsys_two_tower", "recsys_vertex_deploy"):
        stack.set_paused(dag_id, False)
    # a UI-style manual extraction of yesterday -> asset event -> training -> blessed -> deploy
    extraction = stack.trigger("recsys_extract", {"extract_date": str(TODAY - timedelta(days=1))})
    assert stack.wait_for_run("recsys_extract", extraction)["state"] == "success"
    # plus two trainings triggered at once from the UI
    for _ in range(2):
        stack.trigger("recsys_two_tower", {"window_days": 14, "epochs": 2})
    # one asset-triggered training per extraction event since the unpause: the one above, and the nightly
    # run's too when the clock passes midnight meanwhile; no training without an event, no event twice
    trainings, emitted = wait_consumed(stack, "recsys_two_tower", "recsys_extract", since=unpaused)
    by_type = {kind: [r for r in trainings if r["run_type"] == kind] for kind in ("manual", "asset_triggered")}
    assert len(by_type["manual"]) == 2 and by_type["asset_triggered"], [r["dag_run_id"] for r in trainings]
    assert len(trainings) == 2 + len(by_type["asset_triggered"]), [r["dag_run_id"] for r in trainings]
    assert all(r["consumed"] >= 1 for r in by_type["asset_triggered"])
    assert sum(r["consumed"] for r in trainings) == emitted
    assert {r["state"] for r in trainings} == {"success"}, [(r["dag_run_id"], r["state"]) for r in trainings]
    assert_one_at_a_time(trainings)
    deploys, _ = wait_consumed(stack, "recsys_vertex_deploy", "recsys_two_tower", since=unpaused)
    assert {r["state"] for r in deploys} == {"success"}, [
        stack.task_states("recsys_vertex_deploy", r["dag_run_id"]) for r in deploys
    ]
    assert_one_at_a_time(deploys)
    (endpoint,) = world.vertex.endpoints.values()
    assert len(endpoint["deployedModels"]) == 1 and list(endpoint["trafficSplit"].values()) == [100]


def test_personalize_wait_survives_a_triggerer_restart(world):
    stack, fake = world.stack, world.personalize
    fake.stick("solution_version")  # the first training at "AWS" runs until the test lets it finish
    stack.trigger("recsys_personalize", {"training_mode": "FULL", "window_days": 7})
    stack.set_paused("recsys_personalize", False)  # its scheduled run comes too: whichever trains first is held
    deadline = time.monotonic() + 900  # a bound, not a wait: on a loaded machine the imports before it take minutes

    def deferred() -> list[str]:
        runs = [r["dag_run_id"] for r in stack.runs("recsys_personalize")]
        return [r for r in runs if stack.task_states("recsys_personalize", r).get("solution_version") == "deferred"]

    while not (waiting := deferred()):
        assert time.monotonic() < deadline, "no run's solution_version was ever deferred"
        time.sleep(1)
    (run_id,) = waiting
    stack.stop_component("triggerer")  # the training ends at "AWS" while no triggerer runs
    (running,) = [v for v in fake.created("solution_version") if v.stuck]
    fake.finish_now(running.arn)
    assert stack.task_states("recsys_personalize", run_id)["solution_version"] == "deferred"
    stack.start_component("triggerer")
    run = stack.wait_for_run("recsys_personalize", run_id, timeout=600)
    assert run["state"] == "success", stack.task_states("recsys_personalize", run_id)
    xcom = stack.api(
        "GET", f"/dags/recsys_personalize/dagRuns/{run_id}/taskInstances/solution_version/xcomEntries/return_value"
    ).json()
    arn = xcom["value"].strip('"')
    (version,) = [v for v in fake.created("solution_version") if v.arn == arn]
    assert fake.status(version) == "ACTIVE"
    assert [v.name for v in fake.created("solution_version")].count(version.name) == 1  # not started twice
    reports = list((world.home / "recsys-data" / "personalize" / "runs").glob("*/report.json"))
    mine = [json.loads(r.read_text()) for r in reports if json.loads(r.read_text())["run_id"] == run_id]
    assert len(mine) == 1 and mine[0]["solution_version"] == arn and mine[0]["batch_output"]


def variable(stack, key: str) -> str | None:
    answer = stack.api("GET", f"/variables/{key}")
    return answer.json()["value"] if answer.status_code == 200 else None


def test_personalize_setup_then_nightly_retrain_then_delivery(world):
    """From nothing: provision, record the ARNs; the nightly DAG retrains on them, smoke-tests the campaign
    and publishes the recommendations to the application database."""
    stack, fake = world.stack, world.personalize
    setup_id = stack.trigger("recsys_personalize_setup", {"prefix": "shop", "initial_import_days": 14})
    stack.set_paused("recsys_personalize_setup", False)
    setup = stack.wait_for_run("recsys_personalize_setup", setup_id, timeout=600)
    assert setup["state"] == "success", stack.task_states("recsys_personalize_setup", setup_id)
    campaign = variable(stack, "recsys_personalize_campaign_arn")
    assert campaign.endswith(":campaign/shop-campaign") and variable(stack, "recsys_personalize_tracking_id")
    assert variable(stack, "recsys_personalize_solution_arn").endswith(":solution/shop-solution")

    run_id = stack.trigger("recsys_personalize", {"training_mode": "FULL", "window_days": 14})
    run = stack.wait_for_run("recsys_personalize", run_id, timeout=600)
    assert run["state"] == "success", stack.task_states("recsys_personalize", run_id)
    reports = [
        json.loads(r.read_text()) for r in (world.home / "recsys-data" / "personalize" / "runs").glob("*/report.json")
    ]
    (report,) = [r for r in reports if r["run_id"] == run_id]
    assert report["plan"]["campaign_arn"] == campaign and report["smoke_test"]["ok"]
    assert report["plan"]["filter_arn"].endswith(":filter/shop-exclude-interacted")
    (batch,) = [j for j in fake.created("batch") if j.fields["solutionVersionArn"] == report["solution_version"]]
    assert batch.fields["filterArn"] == report["plan"]["filter_arn"]
    with sqlite3.connect(world.home / "data" / "app.db") as db:
        published = dict(db.execute("SELECT source, model_version FROM recommendations GROUP BY source").fetchall())
    assert published["personalize"] == report["solution_version"]
    assert "two_tower" in published  # the blessed two-tower model of the nightly chain delivered too
