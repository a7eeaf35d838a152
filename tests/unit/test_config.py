from __future__ import annotations

import pytest

from recsys.config import Settings, load_settings


def test_defaults_follow_airflow_home(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    settings = load_settings(env={})
    assert settings.storage.root == (tmp_path / "recsys-data").as_uri()
    assert settings.storage.extract_root == settings.storage.root + "/extract"
    assert settings.connections.source == "recsys_source"


def test_env_overrides_and_types():
    env = {
        "RECSYS_STORAGE_ROOT": "s3://bucket/recsys/",
        "RECSYS_EXTRACT_CHUNK_ROWS": "1000",
        "RECSYS_ANOMALY_LOW_RATIO": "0.25",
        "RECSYS_KNOWN_EVENT_TYPES": "view, buy",
    }
    settings = load_settings(env=env)
    assert settings.storage.extract_root == "s3://bucket/recsys/extract"
    assert settings.extract.chunk_rows == 1000
    assert settings.extract.anomaly_low_ratio == 0.25
    assert settings.extract.known_event_types == ("view", "buy")
    assert load_settings(env={"RECSYS_KNOWN_EVENT_TYPES": '["a", "b"]'}).extract.known_event_types == ("a", "b")


def test_explicit_override_beats_env_and_none_is_ignored():
    env = {"RECSYS_SOURCE_CONN_ID": "from_env"}
    assert load_settings({"source_conn_id": "explicit"}, env=env).connections.source == "explicit"
    assert load_settings({"source_conn_id": None}, env=env).connections.source == "from_env"


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="extract_chunk_rows"):
        load_settings(env={"RECSYS_EXTRACT_CHUNK_ROWS": "lots"})
    with pytest.raises(ValueError, match="unknown setting"):
        load_settings({"storage_rot": "x"})
    assert isinstance(load_settings(env={}), Settings)


def test_vertex_training_root_must_be_on_gcs():
    from recsys.config import load_settings

    assert load_settings({"storage_root": "gs://lake/recsys/"}).remote_training_root() == "gs://lake/recsys"
    staged = load_settings({"storage_root": "file:///data", "vertex_staging_uri": "gs://stage/x"})
    assert staged.remote_training_root() == "gs://stage/x"
    with pytest.raises(ValueError, match="needs storage_root or vertex_staging_uri on gs://"):
        load_settings({"storage_root": "s3://lake", "vertex_staging_uri": ""}).remote_training_root()


def test_every_setting_has_one_section_and_keeps_its_flat_name():
    """Sections change the code's paths, not the names users set: RECSYS_<NAME> and Variable recsys_<name>."""
    from recsys.config import DagSettings, setting_names

    task_time, parse_time = setting_names(), setting_names(DagSettings)
    assert len(task_time) == len(set(task_time)) and not set(task_time) & set(parse_time)
    settings = load_settings(
        env={
            "RECSYS_PERSONALIZE_S3_URI": "s3://b/p",
            "RECSYS_AWS_CONN_ID": "aws_x",
            "RECSYS_VERTEX_STAGING_URI": "gs://s",
        }
    )
    assert settings.personalize.s3_uri == "s3://b/p" and settings.connections.aws == "aws_x"
    assert settings.training.staging_uri == "gs://s"


def test_a_section_reads_only_its_own_variables(monkeypatch):
    import recsys.config as config

    asked: list[str] = []
    monkeypatch.setattr(config, "_airflow_variable_getter", lambda: lambda key: asked.append(key))
    personalize = config.load_section(config.PersonalizeSettings, env={}, use_airflow_variables=True)
    assert personalize == config.PersonalizeSettings()
    assert asked == [f"recsys_{name}" for name in config.setting_names(config.PersonalizeSettings)]
    with pytest.raises(ValueError, match="unknown setting"):
        config.load_section(config.PersonalizeSettings, {"storage_root": "x"})


def test_parse_time_settings_come_from_the_environment_only(monkeypatch):
    import recsys.config as config

    monkeypatch.setattr(config, "_airflow_variable_getter", lambda: pytest.fail("a Variable was read at parse time"))
    dag = config.load_dag_settings(env={"RECSYS_TASK_RETRIES": "5", "RECSYS_EXTRACT_DEADLINE_HOURS": "1.5"})
    assert (dag.task_retries, dag.extract_deadline_hours, dag.retry_delay_seconds) == (5, 1.5, 120)
    with pytest.raises(ValueError, match="unknown setting"):  # parse-time names are not task-time settings
        load_settings({"task_retries": 3})


def test_a_variable_for_a_parse_time_setting_is_named_in_a_warning(monkeypatch, caplog):
    """Airflow's environment secrets backend serves the Variables (AIRFLOW_VAR_*), as in a deployment."""
    import logging

    import recsys.config as config

    monkeypatch.setenv("AIRFLOW_VAR_RECSYS_TASK_RETRIES", "5")
    monkeypatch.setenv("AIRFLOW_VAR_RECSYS_STORAGE_ROOT", "file:///tmp/x")  # a task-time one: no warning
    monkeypatch.setattr(config, "_WARNED", set())
    logger = logging.getLogger("recsys.config")
    logger.addHandler(caplog.handler)  # Airflow's logging set-up may stop propagation to the root logger
    try:
        with caplog.at_level("WARNING", logger="recsys.config"):
            settings = load_settings(env={}, use_airflow_variables=True)
    finally:
        logger.removeHandler(caplog.handler)
    assert settings.storage.root == "file:///tmp/x"
    (warning,) = {r.getMessage() for r in caplog.records if r.name == "recsys.config"}  # seen by 1 or 2 handlers
    assert "recsys_task_retries is set but ignored" in warning and "RECSYS_TASK_RETRIES" in warning
    assert config.load_dag_settings(env={}).task_retries == 2  # and it is ignored indeed


def test_the_settings_table_says_a_variable_is_ignored_for_parse_time_settings():
    from pathlib import Path

    table = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    rows = [line for line in table.splitlines() if "`load_dag_settings()`" in line]
    assert rows and all("a Variable is ignored, with a warning" in row for row in rows)
