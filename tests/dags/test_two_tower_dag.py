"""Run ``recsys_two_tower`` itself (``dag.test``) on extracted partitions."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recsys.training.gate import read_champion
from recsys_devtools.emulators.ports import free_port
from recsys_devtools.emulators.vertex import RunningFake, VertexFake, airflow_connection

DAGS = Path(__file__).resolve().parents[2] / "dags"
# these tests are about orchestration: the bar is popularity (the baselines' bar: test_training, test_tuning)
FAST = {"window_days": 8, "batch_size": 512, "epochs": 2, "end_day": "2026-11-09", "gate_baseline": "popularity"}


@pytest.fixture
def two_tower(airflow_db, synthetic_lake, tmp_path, monkeypatch):
    """The DAG, reading the session's lake and writing models under a fresh storage root."""
    import shutil

    from airflow.dag_processing.dagbag import DagBag

    root = tmp_path / "storage"
    shutil.copytree(Path(synthetic_lake.removeprefix("file://")) / "extract", root / "extract")
    monkeypatch.setenv("RECSYS_STORAGE_ROOT", root.as_uri())
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags["recsys_two_tower"], root


def app_db_path() -> str:
    return json.loads(os.environ["AIRFLOW_CONN_RECSYS_APP"])["host"]


def states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def blessed_events() -> list[dict]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        return [e.extra for e in session.query(AssetEvent).filter(AssetEvent.source_dag_id == "recsys_two_tower")]


def test_first_run_blesses_and_announces(two_tower):
    dag, root = two_tower
    before = len(blessed_events())
    run = dag.test(run_conf=FAST)
    assert run.state == "success" and states(run)["publish"] == "success"
    champion = read_champion((root / "models").as_uri())
    model_dir = Path(champion["model_dir"].removeprefix("file://"))
    assert (model_dir / "index_brute_force").is_dir() and (model_dir / "model_card.md").exists()
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["gate"]["blessed"] and metrics["window"]["outage_days"] == ["2026-11-05"]
    events = blessed_events()[before:]
    assert len(events) == 1 and events[0]["model_dir"] == champion["model_dir"]
    # delivered: the served top-k of every user in the model's history snapshot, in the application table
    delivered = run.get_task_instance("deliver").xcom_pull(task_ids="deliver")
    snapshot_users = pq.read_table(model_dir / "history.parquet", columns=["user_id"]).column("user_id").unique()
    assert delivered["users"] == len(snapshot_users) and delivered["rows"] == delivered["users"] * 25
    with sqlite3.connect(app_db_path()) as conn:
        user, version, served = conn.execute(
            "SELECT user_id, model_version, COUNT(*) FROM recommendations WHERE source = 'two_tower' "
            "GROUP BY user_id, model_version ORDER BY user_id LIMIT 1"
        ).fetchone()
        items = [
            r[0] for r in conn.execute("SELECT item_id FROM recommendations WHERE user_id = ? ORDER BY rank", (user,))
        ]
    assert version == champion["version"] and served == 25
    history = set(pq.read_table(model_dir / "history.parquet").to_pandas().query("user_id == @user")["item_id"])
    assert not history & set(items)  # seen items excluded, as served


def test_a_worse_model_is_not_announced(two_tower):
    dag, root = two_tower
    # the synthetic users repeat items: a champion that recommends seen items scores far higher on the holdout
    assert dag.test(run_conf={**FAST, "exclude_seen": False}).state == "success"
    champion = read_champion((root / "models").as_uri())
    before = len(blessed_events())
    run = dag.test(run_conf={**FAST, "exclude_seen": True})  # seen items excluded: worse on the same rows
    assert run.state == "success"
    assert states(run)["gate"] == "success" and states(run)["publish"] == "skipped"
    assert read_champion((root / "models").as_uri()) == champion
    assert len(blessed_events()) == before


def test_empty_window_skips_with_a_reason(two_tower):
    dag, _ = two_tower
    run = dag.test(run_conf={**FAST, "end_day": "2026-10-01"})
    assert run.state == "success"
    assert {states(run)[t] for t in ("train", "model_exported", "gate", "publish")} == {"skipped"}


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"window_days": 1}, "less than the minimum of 2"),
        ({"learning_rate": 0}, "less than or equal to the minimum"),
        ({"end_day": "yesterday"}, "is not a 'date'"),
        ({"force": "please"}, "is not of type 'boolean'"),
        ({"training_backend": "sagemaker"}, "is not one of"),
    ],
)
def test_invalid_params_are_rejected(two_tower, conf, message):
    from airflow.sdk.exceptions import ParamValidationError

    dag, _ = two_tower
    with pytest.raises(ParamValidationError, match=message):
        dag.test(run_conf=conf)


def test_training_never_runs_twice_at_once(two_tower):
    dag, _ = two_tower
    assert dag.max_active_runs == 1
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["recsys_extract_partitions"]


TRAINER = "europe-docker.pkg.dev/p/recsys/trainer:1"


@pytest.fixture
def vertex_training(two_tower, gcs_bucket, monkeypatch):
    """The Vertex fake runs the trainer image's entrypoint as a local process; GCS is fake-gcs-server."""
    fake = VertexFake(job_pending_seconds=0.1, images={TRAINER: [sys.executable, "-m", "recsys.training.train"]})
    with RunningFake(fake, free_port()) as running:
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", airflow_connection(running.url, fake.project))
        monkeypatch.setenv("RECSYS_VERTEX_PROJECT", fake.project)
        monkeypatch.setenv("RECSYS_VERTEX_REGION", fake.location)
        monkeypatch.setenv("RECSYS_TRAINER_IMAGE_URI", TRAINER)
        monkeypatch.setenv("RECSYS_VERTEX_STAGING_URI", f"gs://{gcs_bucket}/recsys")
        monkeypatch.setenv("RECSYS_VERTEX_POLL_SECONDS", "0.5")
        yield fake


def test_vertex_backend_trains_in_a_custom_job_then_gates_locally(two_tower, vertex_training, gcs_bucket):
    from airflow.sdk import ObjectStoragePath

    dag, root = two_tower
    run = dag.test(run_conf={**FAST, "training_backend": "vertex"})
    assert run.state == "success", states(run)
    assert states(run) | {
        "train": "skipped",
        "stage_window": "success",
        "train_on_vertex": "success",
        "gate": "success",
        "publish": "success",
    } == states(run)
    (job,) = vertex_training.jobs.values()
    assert job["state"] == "JOB_STATE_SUCCEEDED", vertex_training.job_logs
    args = job["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
    assert args[args.index("--extract-root") + 1].startswith(f"gs://{gcs_bucket}/recsys/windows/")
    base = job["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
    champion = read_champion((root / "models").as_uri())
    assert champion["model_dir"] == base + "/model"  # AIP_MODEL_DIR, written by the job
    model_dir = ObjectStoragePath(champion["model_dir"])
    assert (model_dir / "index_brute_force" / "saved_model.pb").exists()
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["gate"]["blessed"] and metrics["window"]["outage_days"] == ["2026-11-05"]
    assert (model_dir / "model_card.md").exists()  # the gate ran in Airflow on the job's output
    checkpoints = {p.name for p in ObjectStoragePath(base + "/checkpoints").iterdir()}
    assert checkpoints == {"epoch-001.weights.h5", "epoch-002.weights.h5"}


def test_two_vertex_replicas_train_together_and_match_one_process(two_tower, vertex_training):
    """vertex_replicas=2: a custom job with a chief (workerpool0) and a worker (workerpool1), each a trainer
    process given its CLUSTER_SPEC, training together with MultiWorkerMirroredStrategy over localhost; the
    chief's model passes the gate and its holdout metrics match the one-process run within noise."""
    from airflow.sdk import ObjectStoragePath

    dag, root = two_tower
    two = dag.test(run_conf={**FAST, "training_backend": "vertex", "vertex_replicas": 2})
    assert two.state == "success", states(two)
    (job_id, job), *_ = vertex_training.jobs.items()
    assert [int(p["replicaCount"]) for p in job["jobSpec"]["workerPoolSpecs"]] == [1, 1]
    logs = vertex_training.replica_logs[job_id]
    assert set(logs) == {"workerpool0-0", "workerpool1-0"}
    printed = {  # each trainer's summary line
        name: next(json.loads(line) for line in reversed(text.splitlines()) if line.startswith('{"model_dir"'))
        for name, text in logs.items()
    }
    assert {name: (p["distribution"]["strategy"], p["distribution"]["chief"]) for name, p in printed.items()} == {
        "workerpool0-0": ("multi_worker_mirrored", True),
        "workerpool1-0": ("multi_worker_mirrored", False),  # trained beside the chief, wrote nothing shared
    }
    assert printed["workerpool0-0"]["baselines_tuned"] and not printed["workerpool1-0"]["baselines_tuned"]
    model_dir = two.get_task_instance("plan").xcom_pull(task_ids="plan")["model_dir"]
    metrics = json.loads((ObjectStoragePath(model_dir) / "metrics.json").read_text())
    assert metrics["distribution"] == {
        "strategy": "multi_worker_mirrored",
        "workers": 2,
        "replicas": 2,
        "task_type": "chief",
        "task_index": 0,
        "chief": True,
    }
    assert metrics["gate"]["blessed"], metrics["gate"]
    assert (
        "multi_worker_mirrored strategy: 2 replicas on 2 worker(s)"
        in (ObjectStoragePath(model_dir) / "model_card.md").read_text()
    )

    # the same window and parameters, in one process (named: dag.test keeps the last run's Params as defaults)
    one = dag.test(run_conf={**FAST, "training_backend": "local", "vertex_replicas": None})
    assert one.state == "success", states(one)
    alone_dir = one.get_task_instance("plan").xcom_pull(task_ids="plan")["model_dir"]
    alone = json.loads((ObjectStoragePath(alone_dir) / "metrics.json").read_text())
    assert alone["distribution"]["strategy"] == "default", alone_dir
    for k in ("top_10_accuracy", "top_100_accuracy"):
        assert metrics["metrics"]["model"][k] == pytest.approx(alone["metrics"]["model"][k], abs=0.02), k


def test_vertex_tuning_job_runs_real_trials_and_its_best_trial_is_the_candidate(two_tower, vertex_training):
    """tuning_trials on Vertex: a HyperparameterTuningJob whose trials are trainer processes reporting the
    validation objective through cloudml-hypertune; the best trial's model is gated; a retry reattaches."""
    from airflow.sdk import ObjectStoragePath

    dag, root = two_tower
    conf = {**FAST, "training_backend": "vertex", "tuning_trials": 2}
    run = dag.test(run_conf=conf)
    assert run.state == "success", states(run)
    assert states(run) | {"train_on_vertex": "skipped", "tune_on_vertex": "success", "adopt_best_trial": "success"} == (
        states(run)
    )
    assert not vertex_training.jobs  # no custom job: the trials are the tuning job's
    (job,) = vertex_training.tuning.jobs.values()
    assert job["state"] == "JOB_STATE_SUCCEEDED" and len(job["trials"]) == 2, vertex_training.tuning.logs
    reported = {t["id"]: t["finalMeasurement"]["metrics"][0]["value"] for t in job["trials"]}
    for trial in job["trials"]:  # each trial ran with its own values, appended to the trainer's args
        log = vertex_training.tuning.logs[f"{job['name'].rsplit('/', 1)[-1]}/{trial['id']}"]
        assert trial["state"] == "SUCCEEDED", log
    best = max(reported, key=reported.get)
    base = job["trialJobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
    model_dir = run.get_task_instance("plan").xcom_pull(task_ids="plan")["model_dir"]
    assert model_dir == base + "/model"  # the run's model dir: where the best trial's model was copied
    metrics = json.loads((ObjectStoragePath(model_dir) / "metrics.json").read_text())
    assert metrics["vertex_tuning"]["best_trial"]["id"] == best and "gate" in metrics  # gated in Airflow
    best_trial = json.loads((ObjectStoragePath(f"{base}/{best}/model") / "metrics.json").read_text())
    assert best_trial["tuning"]["validation"] == pytest.approx(reported[best])  # what the trial reported
    assert metrics["params"] == best_trial["params"]  # the candidate is the best trial's model
    values = {p["parameterId"]: p["value"] for p in next(t for t in job["trials"] if t["id"] == best)["parameters"]}
    assert metrics["params"]["query_tower"] == values["query-tower"]
    assert metrics["params"]["learning_rate"] == pytest.approx(values["learning-rate"])
    # a retry of the tuning task finds the run's job by its label instead of starting another
    from vertex.operators import DeferrableHyperparameterTuningJobOperator

    retry = DeferrableHyperparameterTuningJobOperator(
        task_id="retry",
        hyperparameter_tuning_job={"labels": job["labels"]},
        project_id=vertex_training.project,
        region=vertex_training.location,
    )
    assert retry.find_existing(retry._client()).name == job["name"]
    assert retry.find_existing(retry._client()).name == job["name"]
    other = DeferrableHyperparameterTuningJobOperator(
        task_id="other",
        hyperparameter_tuning_job={"labels": {"recsys-run": "another-run"}},
        project_id=vertex_training.project,
        region=vertex_training.location,
    )
    assert other.find_existing(other._client()) is None


@pytest.fixture
def cloud_run_training(two_tower, gcs_bucket, monkeypatch):
    """The Cloud Run fake runs the trainer image's entrypoint as a local process; GCS is fake-gcs-server."""
    from recsys_devtools.emulators.cloud_run import CloudRunFake
    from recsys_devtools.emulators.cloud_run import airflow_connection as run_connection

    fake = CloudRunFake(images={TRAINER: [sys.executable, "-m", "recsys.training.train"]})
    with RunningFake(fake, free_port()) as running:
        monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", run_connection(running.url, fake.project))
        monkeypatch.setenv("RECSYS_CLOUD_RUN_PROJECT", fake.project)
        monkeypatch.setenv("RECSYS_CLOUD_RUN_REGION", fake.location)
        monkeypatch.setenv("RECSYS_TRAINER_IMAGE_URI", TRAINER)
        monkeypatch.setenv("RECSYS_VERTEX_STAGING_URI", f"gs://{gcs_bucket}/recsys")
        monkeypatch.setenv("RECSYS_VERTEX_POLL_SECONDS", "0.5")
        yield fake


def test_cloud_run_backend_trains_in_a_job_execution_then_gates_locally(two_tower, cloud_run_training, gcs_bucket):
    from airflow.sdk import ObjectStoragePath

    dag, root = two_tower
    run = dag.test(run_conf={**FAST, "training_backend": "cloud_run"})
    assert run.state == "success", states(run)
    assert states(run) | {
        "train": "skipped",
        "stage_window": "success",
        "train_on_vertex": "skipped",
        "train_on_cloud_run": "success",
        "gate": "success",
        "publish": "success",
    } == states(run)
    (execution,) = cloud_run_training.executions.values()
    assert execution["succeededCount"] == 1, cloud_run_training.logs
    container = execution["template"]["containers"][0]
    assert container["args"][container["args"].index("--extract-root") + 1].startswith(f"gs://{gcs_bucket}/recsys/")
    env = {e["name"]: e["value"] for e in container["env"]}
    champion = read_champion((root / "models").as_uri())
    assert champion["model_dir"] == env["AIP_MODEL_DIR"]  # the override the job wrote to
    model_dir = ObjectStoragePath(champion["model_dir"])
    assert (model_dir / "index_brute_force" / "saved_model.pb").exists() and (model_dir / "model_card.md").exists()
    assert cloud_run_training.jobs["recsys-trainer"]["template"]["template"]["containers"][0]["image"] == TRAINER


@pytest.mark.parametrize("backend", ["vertex", "cloud_run"])
def test_remote_backend_without_its_settings_fails_clearly(two_tower, backend):
    dag, _ = two_tower
    run = dag.test(run_conf={**FAST, "training_backend": backend})
    assert run.state == "failed" and states(run)["plan"] == "failed"


ML100K = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "movielens-100k"


@pytest.mark.skipif(not (ML100K / "u.data").exists(), reason="MovieLens 100K is not available on this machine")
def test_gate_blesses_on_time_ordered_movielens(airflow_db, tmp_path, monkeypatch):
    """Real ratings re-timed onto 30 days and extracted day by day, as the nightly DAG sees them: the
    served policy beats popularity on the newest day (mostly users new since training), so with the
    popularity bar it is blessed; every baseline is evaluated beside it (whether the model beats the best
    of them is measured by bench/bench_quality.py, not asserted here)."""
    from datetime import date, datetime, timedelta

    from airflow.dag_processing.dagbag import DagBag
    from sqlalchemy import create_engine

    from recsys.config import load_settings
    from recsys.data.dataset import write_dataset
    from recsys.data.extract import QualityPolicy, publish_partition, stage_partition
    from recsys.data.validate import Interval
    from recsys_devtools.movielens import load_ml100k, retime

    end = date(2026, 11, 23)
    engine = create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    write_dataset(engine, retime(load_ml100k(ML100K), 30, datetime(2026, 11, 23)))
    settings = load_settings({"storage_root": (tmp_path / "storage").as_uri()})
    for offset in range(30, 0, -1):
        interval = Interval.for_day(end - timedelta(days=offset))
        publish_partition(stage_partition(engine, interval, settings), settings, QualityPolicy())
    monkeypatch.setenv("RECSYS_STORAGE_ROOT", settings.storage.root)
    dag = DagBag(dag_folder=str(DAGS)).dags["recsys_two_tower"]
    run = dag.test(run_conf={"end_day": "2026-11-22", "window_days": 30, "epochs": 8, "gate_baseline": "popularity"})
    assert run.state == "success" and states(run)["publish"] == "success"
    champion = read_champion(settings.storage.models_root)
    metrics = json.loads((Path(champion["model_dir"].removeprefix("file://")) / "metrics.json").read_text())
    model, popularity = metrics["metrics"]["model"], metrics["metrics"]["popularity"]
    assert metrics["gate"]["blessed"] and not metrics["gate"]["forced"]
    assert model["top_10_accuracy"] > 1.5 * popularity["top_10_accuracy"]
    assert model["top_100_accuracy"] > popularity["top_100_accuracy"]
    new = model["segments"]["new_users_with_history"]
    assert new["pairs"] > model["segments"]["seen_users"]["pairs"]  # most holdout users are new
    assert new["top_10_accuracy"] > popularity["segments"]["new_users_with_history"]["top_10_accuracy"]
    card = (Path(champion["model_dir"].removeprefix("file://")) / "model_card.md").read_text()
    assert "Metrics per user segment" in card and "new users with history" in card
    assert {"first_event_prior", "item_knn", "rp3beta", "ease"} <= set(metrics["metrics"])
    assert "| ease |" in card and "Choices made on the validation split" in card
