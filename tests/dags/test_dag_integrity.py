"""Every DAG file parses, carries its metadata, and keeps heavy imports out of parse time."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
HEAVY = (
    "tensorflow",
    "tensorflow_recommenders",
    "scann",
    "pandas",
    "pyarrow",
    "boto3",
    "botocore",
    "google.cloud",
    "sqlalchemy_utils",
    "numpy",
)
# The Personalize operators extend the amazon provider's AwsBaseOperator / AwsBaseSensor, as the provider's own
# services do; those base modules import boto3 at module level (+0.1 s per parse, see bench/bench_parse.py).
AWS_BASE = ("boto3", "botocore", "s3transfer")
ALLOWED = {
    name: AWS_BASE
    for name in (
        "recsys_personalize.py",
        "recsys_personalize_setup.py",
        "recsys_personalize_teardown.py",
        "recsys_personalize_events.py",
    )
}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert len(dagbag.dags) >= 1


def test_every_dag_has_docs_tags_owner_and_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md.strip()) > 100, dag_id
        assert dag.tags, dag_id
        for task in dag.tasks:
            assert task.owner not in (None, "", "airflow"), (dag_id, task.task_id)
            assert task.retries >= 2, (dag_id, task.task_id)


def test_retries_and_the_extraction_start_come_from_the_settings(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("RECSYS_TASK_RETRIES", "4")
    monkeypatch.setenv("RECSYS_RETRY_DELAY_SECONDS", "7")
    monkeypatch.setenv("RECSYS_EXTRACT_START_DATE", "2026-11-20")
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    for dag_id, dag in bag.dags.items():
        tasks = [t for t in dag.tasks if t.task_id != "rollback"]  # rollback retries more, on purpose
        assert {(t.retries, t.retry_delay) for t in tasks} == {(4, timedelta(seconds=7))}, dag_id
    assert bag.dags["recsys_extract"].start_date == datetime(2026, 11, 20, tzinfo=UTC)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_no_heavy_module_level_imports(path):
    tree = ast.parse(path.read_text())
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            assert not name.startswith(HEAVY), f"{path.name} imports {name} at module level"


PARSE_EACH = """
import json, os, runpy, sys, traceback
import airflow.sdk
before = set(sys.modules)
added = {}
for path in sys.argv[1:]:
    read, write = os.pipe()
    if os.fork() == 0:  # one child per DAG file, each from the same state: Airflow imported, nothing else
        os.close(read)
        try:
            runpy.run_path(path)
            os.write(write, json.dumps(sorted(set(sys.modules) - before)).encode())
        except BaseException:
            traceback.print_exc()
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        added[path] = json.loads(pipe.read() or "null")
    os.wait()
print(json.dumps(added))
"""


@pytest.fixture(scope="module")
def modules_added_by_parsing() -> dict[str, list[str] | None]:
    """Per DAG file, the modules that parsing it adds to a fresh interpreter that imported Airflow first
    (one interpreter, a forked child per file: Airflow is imported once, not once per file)."""
    done = subprocess.run([sys.executable, "-c", PARSE_EACH, *map(str, DAG_FILES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parsing_loads_no_heavy_library(path, modules_added_by_parsing):
    added = modules_added_by_parsing[str(path)]
    assert added is not None, f"{path.name} failed to parse"
    added = [m for m in added if not m.startswith(ALLOWED.get(path.name, ()))]
    assert not [m for m in added if m.split(".")[0] in {h.split(".")[0] for h in HEAVY} or m.startswith(HEAVY)]


def test_every_param_has_a_title_and_a_description(dagbag):
    """What the UI's trigger form shows for each field."""
    missing = [
        f"{dag_id}.{name}"
        for dag_id, dag in dagbag.dags.items()
        for name in dag.params
        if not dag.params.get_param(name).schema.get("title") or not dag.params.get_param(name).description
    ]
    assert missing == []


def test_every_dag_serializes_for_the_scheduler(dagbag):
    from airflow.serialization.serialized_objects import DagSerialization

    for dag_id, dag in dagbag.dags.items():
        assert DagSerialization.from_dict(DagSerialization.to_dict(dag)).dag_id == dag_id


def test_extract_dag_schedule_has_one_day_intervals(dagbag):
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    dag = dagbag.dags["recsys_extract"]
    assert dag.catchup is True
    assert 1 <= dag.max_active_runs <= 4
    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable  # what the scheduler runs
    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)
    first = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    assert first.data_interval.start == datetime(2026, 11, 1, tzinfo=UTC)
    assert first.data_interval.end - first.data_interval.start == timedelta(days=1)
    assert first.run_after == datetime(2026, 11, 2, tzinfo=UTC)
    second = timetable.next_dagrun_info(last_automated_data_interval=first.data_interval, restriction=restriction)
    assert second.data_interval.start == first.data_interval.end
