"""Run ``recsys_two_tower`` itself (``dag.test``) on extracted partitions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.training.gate import read_champion

DAGS = Path(__file__).resolve().parents[2] / "dags"
FAST = {"window_days": 8, "batch_size": 512, "end_day": "2026-11-09"}


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


def test_a_worse_model_is_not_announced(two_tower):
    dag, root = two_tower
    assert dag.test(run_conf=FAST).state == "success"
    champion = read_champion((root / "models").as_uri())
    before = len(blessed_events())
    run = dag.test(run_conf={**FAST, "learning_rate": 0.0001, "epochs": 1})  # barely trained
    assert run.state == "success"
    assert states(run)["gate"] == "success" and states(run)["publish"] == "skipped"
    assert read_champion((root / "models").as_uri()) == champion
    assert len(blessed_events()) == before


def test_empty_window_skips_with_a_reason(two_tower):
    dag, _ = two_tower
    run = dag.test(run_conf={**FAST, "end_day": "2026-10-01"})
    assert states(run)["train"] == "skipped" and states(run)["publish"] == "skipped"


@pytest.mark.parametrize(
    ("conf", "message"),
    [({"window_days": 1}, "less than the minimum of 2"), ({"learning_rate": 0}, "less than or equal to the minimum"),
     ({"end_day": "yesterday"}, "is not a 'date'"), ({"force": "please"}, "is not of type 'boolean'")],
)  # fmt: skip
def test_invalid_params_are_rejected(two_tower, conf, message):
    from airflow.sdk.exceptions import ParamValidationError

    dag, _ = two_tower
    with pytest.raises(ParamValidationError, match=message):
        dag.test(run_conf=conf)


def test_training_never_runs_twice_at_once(two_tower):
    dag, _ = two_tower
    assert dag.max_active_runs == 1
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["recsys_extract_partitions"]
