"""Run ``recsys_extract`` itself (``dag.test``) against real source databases."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from recsys.data.partitions import PartitionStore

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAY1 = date(2026, 11, 10)
USERS = [{"user_id": f"u{i}"} for i in range(3)]
ITEMS = [{"item_id": f"i{i}", "title": f"T{i}", "genres": "Drama"} for i in range(3)]


@pytest.fixture
def extract_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags["recsys_extract"]


@pytest.fixture
def connect(monkeypatch):
    def _connect(source, conn_id="recsys_source"):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", source.conn_env())

    return _connect


def day_rows(row, day: date, count: int, user="u0"):
    start = datetime.combine(day, datetime.min.time())
    return [row(user, f"i{n % 3}", start + timedelta(minutes=7 * n + 1)) for n in range(count)]


def run_for_day(dag, day: date, **conf):
    """A run like the scheduler's for ``day``: logical date day+1 gives the interval [day, day+1)."""
    return dag.test(
        logical_date=datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC), run_conf=conf or None
    )


def failed_task(run) -> tuple[str, str, int]:
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = [
            ti
            for ti in run.get_task_instances(session=session)
            if ti.state not in ("success", "upstream_failed", "skipped")
        ]
        assert len(tis) == 1, [(ti.task_id, ti.state) for ti in tis]
        return tis[0].task_id, tis[0].state, tis[0].try_number


def asset_events(dag_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        return [e.extra for e in session.query(AssetEvent).filter(AssetEvent.source_dag_id == dag_id)]


def test_scheduled_run_publishes_the_interval(extract_dag, source_db, connect, storage_root, insert, row):
    insert(
        source_db.engine,
        users=USERS,
        items=ITEMS,
        interactions=day_rows(row, DAY1, 12) + day_rows(row, DAY1 + timedelta(days=1), 4),
    )
    connect(source_db)
    before = len(asset_events("recsys_extract"))
    run = run_for_day(extract_dag, DAY1)
    assert run.state == "success"
    assert (run.data_interval_start, run.data_interval_end) == (
        datetime(2026, 11, 10, tzinfo=UTC),
        datetime(2026, 11, 11, tzinfo=UTC),
    )
    manifest = PartitionStore(storage_root + "/extract").read_manifest(DAY1)
    assert manifest["counts"]["valid"] == 12 and manifest["status"] == "ok"
    assert manifest["run"]["run_id"] == run.run_id and manifest["run"]["source_conn_id"] == "recsys_source"
    expected = "arrow" if source_db.kind == "postgres" else "rows"  # auto: Arrow where it applies
    assert manifest["run"]["extraction_backend"] == expected
    events = asset_events("recsys_extract")[before:]
    assert events[-1]["partition"] == "2026-11-10" and events[-1]["rows"] == 12


def test_backfill_like_sequence_with_late_rows(extract_dag, sqlite_source, connect, storage_root, insert, row):
    days = [DAY1 + timedelta(days=d) for d in range(3)]
    insert(
        sqlite_source.engine,
        users=USERS,
        items=ITEMS,
        interactions=day_rows(row, days[0], 10) + day_rows(row, days[2], 8),
    )
    connect(sqlite_source)
    for day in days:
        assert run_for_day(extract_dag, day).state == "success"
    store = PartitionStore(storage_root + "/extract")
    assert [(m["partition"], m["status"], m["counts"]["valid"]) for m in store.manifests()] == [
        ("2026-11-10", "ok", 10),
        ("2026-11-11", "empty", 0),
        ("2026-11-12", "ok", 8),
    ]

    insert(sqlite_source.engine, interactions=day_rows(row, days[1], 6, user="u1"))  # the outage's rows arrive
    assert run_for_day(extract_dag, days[1]).state == "success"
    assert [(m["status"], m["counts"]["valid"]) for m in store.manifests()] == [("ok", 10), ("ok", 6), ("ok", 8)]
    assert all(len([p for p in store.partition_dir(d).iterdir() if p.name.startswith("v=")]) == 1 for d in days)


def test_manual_run_with_params(extract_dag, sqlite_source, connect, storage_root, insert, row):
    insert(sqlite_source.engine, users=USERS, items=ITEMS, interactions=day_rows(row, DAY1, 5))
    connect(sqlite_source, conn_id="other_source")
    run = extract_dag.test(run_conf={"extract_date": "2026-11-10", "source_conn_id": "other_source"})
    assert run.state == "success"
    manifest = PartitionStore(storage_root + "/extract").read_manifest(DAY1)
    assert manifest["counts"]["valid"] == 5 and manifest["run"]["source_conn_id"] == "other_source"


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"max_bad_fraction": 5}, "greater than the maximum of 1"),
        ({"anomaly_action": "ignore"}, "is not one of"),
        ({"extract_date": "2026-13-01"}, "is not a 'date'"),
        ({"source_conn_id": "x; DROP TABLE interactions"}, "does not match"),
        ({"fail_on_empty": "yes"}, "is not of type 'boolean'"),
    ],
)
def test_invalid_params_are_rejected_before_anything_runs(extract_dag, storage_root, conf, message):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=message):
        extract_dag.test(run_conf=conf)
    assert PartitionStore(storage_root + "/extract").manifests() == []


def test_quality_failure_fails_the_run_and_publishes_nothing(
    extract_dag, sqlite_source, connect, storage_root, insert, row
):
    bad = [row(None, "i0", datetime(2026, 11, 10, 3)), row("u0", "i0", datetime(2026, 11, 10, 4), "teleport")]
    insert(sqlite_source.engine, users=USERS, items=ITEMS, interactions=day_rows(row, DAY1, 5) + bad)
    connect(sqlite_source)
    run = run_for_day(extract_dag, DAY1)
    assert run.state == "failed"
    assert failed_task(run) == ("publish", "failed", 1)  # bad data is not retried
    assert PartitionStore(storage_root + "/extract").read_manifest(DAY1) is None
    assert run_for_day(extract_dag, DAY1, max_bad_fraction=0.5).state == "success"


def test_unknown_source_connection_fails_clearly(extract_dag, storage_root, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_RECSYS_SOURCE", '{"conn_type": "http", "host": "example.invalid"}')
    run = run_for_day(extract_dag, DAY1)
    assert run.state == "failed"
    assert failed_task(run) == ("extract", "failed", 1)
    assert PartitionStore(storage_root + "/extract").manifests() == []


@pytest.mark.parametrize(
    ("backend", "failing_task"),
    [("arrow", "extract"), ("spark-local", "prepare_spark"), ("glue", "route")],  # glue: not deployed here
)
def test_a_backend_the_source_or_deployment_lacks_fails_clearly(
    extract_dag, sqlite_source, connect, storage_root, backend, failing_task
):
    connect(sqlite_source)
    run = run_for_day(extract_dag, DAY1, extraction_backend=backend)
    assert run.state == "failed"
    assert failed_task(run) == (failing_task, "failed", 1)  # a configuration error: no retry
    assert PartitionStore(storage_root + "/extract").manifests() == []


def task_states(run) -> dict[str, str]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.task_id: ti.state for ti in run.get_task_instances(session=session)}


@pytest.fixture
def postgres_source(tmp_path):
    from conftest import server_source

    yield from server_source("postgres", tmp_path)


@pytest.mark.spark
@pytest.mark.postgres
def test_the_spark_local_backend_runs_the_job_and_publishes(
    extract_dag, postgres_source, connect, storage_root, insert, row, monkeypatch
):
    import os
    import sys

    bad = [row("u1", "i0", datetime(2026, 11, 10, 3), "teleport")]
    insert(postgres_source.engine, users=USERS, items=ITEMS, interactions=day_rows(row, DAY1, 40) + bad)
    connect(postgres_source)
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_LOCAL", '{"conn_type": "spark", "host": "local[2]"}')
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    run = run_for_day(extract_dag, DAY1, extraction_backend="spark-local", max_bad_fraction=0.5)
    assert run.state == "success"
    states = task_states(run)
    assert states["extract"] == "skipped" and states["spark_local"] == "success"
    assert states["collect_spark"] == "success" and states["publish"] == "success"
    manifest = PartitionStore(storage_root + "/extract").read_manifest(DAY1)
    assert manifest["run"]["extraction_backend"] == "spark-local" and manifest["run"]["run_id"] == run.run_id
    assert manifest["counts"]["valid"] == 40 and manifest["quarantine_reasons"]["interactions"] == {
        "unknown event_type 'teleport'": 1
    }
    assert manifest["counts"]["users"] == 3 and manifest["counts"]["items"] == 3


@pytest.fixture
def cloud_engines(tmp_path, monkeypatch, airflow_db, moto_s3, s3_bucket):
    """Glue and EMR Serverless emulated (they run the job with a local spark-submit), every engine deployed;
    the job's code goes to S3 (moto), as both services require, the data stays on file://."""
    import os
    import sys

    from airflow.dag_processing.dagbag import DagBag

    from recsys_devtools.emulators.ports import free_port
    from recsys_devtools.emulators.running import RunningFake
    from recsys_devtools.emulators.spark_engines import SparkEnginesFake, airflow_connection

    fake = SparkEnginesFake(tmp_path / "engines", s3_endpoint=moto_s3)
    with RunningFake(fake, free_port()) as running:
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", airflow_connection(running.url, moto_s3))
        monkeypatch.setenv("RECSYS_SPARK_CODE_URI", f"s3://aws_default@{s3_bucket}/code/spark")
        monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        monkeypatch.setenv("RECSYS_SPARK_BACKENDS", "spark-local,glue,emr-serverless,dataproc")
        monkeypatch.setenv("RECSYS_SPARK_POLL_SECONDS", "2")
        monkeypatch.setenv("RECSYS_GLUE_ROLE_ARN", "arn:aws:iam::000000000000:role/recsys-glue")
        monkeypatch.setenv("RECSYS_EMR_SERVERLESS_APPLICATION_ID", fake.emr_application["applicationId"])
        monkeypatch.setenv("RECSYS_EMR_SERVERLESS_ROLE_ARN", "arn:aws:iam::000000000000:role/recsys-emr")
        bag = DagBag(dag_folder=str(DAGS))  # parsed with every engine deployed
        assert bag.import_errors == {}
        yield fake, bag.dags["recsys_extract"]


@pytest.mark.spark
@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["glue", "emr-serverless"])
def test_cloud_engines_run_the_same_job_deferrably(
    cloud_engines, backend, postgres_source, connect, storage_root, insert, row
):
    import os

    fake, dag = cloud_engines
    bad = [row(" ", "i0", datetime(2026, 11, 10, 3))]
    insert(postgres_source.engine, users=USERS, items=ITEMS, interactions=day_rows(row, DAY1, 30) + bad)
    connect(postgres_source)
    run = run_for_day(dag, DAY1, extraction_backend=backend, max_bad_fraction=0.5)
    assert run.state == "success"
    task_id = backend.replace("-", "_")
    states = task_states(run)
    assert states[task_id] == "success" and states["spark_local"] == "skipped" and states["extract"] == "skipped"
    manifest = PartitionStore(storage_root + "/extract").read_manifest(DAY1)
    assert manifest["run"]["extraction_backend"] == backend
    assert manifest["counts"]["valid"] == 30 and manifest["quarantine_reasons"]["interactions"] == {
        "user_id is empty": 1
    }
    code = os.environ["RECSYS_SPARK_CODE_URI"].replace("aws_default@", "") + "/"
    if backend == "glue":
        created = [p for s, op, p in fake.calls if op == "CreateJob"]
        assert len(created) == 1 and created[0]["Role"].endswith("role/recsys-glue")
        assert created[0]["Command"]["ScriptLocation"].startswith(code)
        started = [p for s, op, p in fake.calls if op == "StartJobRun"]
        assert len(started) == 1 and started[0]["Arguments"]["--spec"].endswith("/_spark/spec.json")
        assert started[0]["Arguments"]["--extra-py-files"].startswith(code)
    else:
        started = [p for s, op, p in fake.calls if op == "start_job_run"]
        assert len(started) == 1 and started[0]["name"].startswith("recsys-extract-")
        assert started[0]["clientToken"] == started[0]["name"]  # fixed per plan: a task retry reattaches
        assert started[0]["jobDriver"]["sparkSubmit"]["entryPoint"].startswith(code)


@pytest.mark.spark
@pytest.mark.postgres
def test_dataproc_extracts_a_day_deferrably_and_a_retry_reattaches_to_its_batch(
    dataproc, gcs_bucket, airflow_db, postgres_source, connect, storage_root, insert, row, monkeypatch
):
    """``extraction_backend=dataproc`` through ``DataprocCreateBatchOperator`` (deferrable) against the
    Dataproc fake over gRPC: the first try's CreateBatch lands but its answer is lost, the retry's
    CreateBatch finds the batch and reattaches (one batch, one Spark run), and the partition equals the
    Arrow backend's for the same rows."""
    import os
    import sys

    from airflow.dag_processing.dagbag import DagBag
    from conftest import partition_content

    bad = [row(" ", "i0", datetime(2026, 11, 10, 3))]
    insert(postgres_source.engine, users=USERS, items=ITEMS, interactions=day_rows(row, DAY1, 30) + bad)
    connect(postgres_source)
    for key, value in dataproc.client_env().items():  # gRPC to *dataproc.googleapis.com:443 reaches the fake
        monkeypatch.setenv(key, value)
    gcp = {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": "recsys-test"}}
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", json.dumps(gcp))
    monkeypatch.setenv("RECSYS_SPARK_CODE_URI", f"gs://{gcs_bucket}/code/spark")  # Dataproc reads code from GCS
    monkeypatch.setenv("RECSYS_SPARK_BACKENDS", "dataproc")
    monkeypatch.setenv("RECSYS_SPARK_POLL_SECONDS", "2")
    monkeypatch.setenv("RECSYS_DATAPROC_PROJECT", "recsys-test")
    monkeypatch.setenv("RECSYS_DATAPROC_REGION", "europe-west4")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    dag = bag.dags["recsys_extract"]

    assert run_for_day(dag, DAY1, extraction_backend="arrow", max_bad_fraction=0.5).state == "success"
    content = lambda: {  # noqa: E731 - what the partition holds, whichever version of the day
        key: value
        for key, value in partition_content(storage_root + "/extract", DAY1).items()
        if key not in ("version", "versions")
    }
    arrow = content()
    calls_before, batches_before = len(dataproc.calls), len(dataproc.batches)
    dataproc.lose_answer("CreateBatch")
    run = run_for_day(dag, DAY1, extraction_backend="dataproc", max_bad_fraction=0.5)
    assert run.state == "success"
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["dataproc"].state == "success" and tis["dataproc"].try_number == 2  # the lost answer failed try 1
    creates = [request for method, request in dataproc.calls[calls_before:] if method == "CreateBatch"]
    assert len(creates) == 2 and len({c.batch_id for c in creates}) == 1  # the retry asked for the same batch
    (name,) = [n for n in dataproc.batches if n.endswith("/batches/" + creates[0].batch_id)]
    assert dataproc.batches[name]["batch"].state.name == "SUCCEEDED"
    assert len(dataproc.batches) == batches_before + 1  # one batch (one Spark run) for the run
    assert name.startswith("projects/recsys-test/locations/europe-west4/batches/")
    assert creates[0].batch.pyspark_batch.main_python_file_uri.startswith(f"gs://{gcs_bucket}/code/spark/")
    manifest = PartitionStore(storage_root + "/extract").read_manifest(DAY1)
    assert manifest["run"]["extraction_backend"] == "dataproc" and manifest["run"]["run_id"] == run.run_id
    assert content() == arrow
