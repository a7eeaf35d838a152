from __future__ import annotations

import pytest

from recsys.config import Settings, load_settings


def test_defaults_follow_airflow_home(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    settings = load_settings(env={})
    assert settings.storage_root == (tmp_path / "recsys-data").as_uri()
    assert settings.extract_root == settings.storage_root + "/extract"
    assert settings.source_conn_id == "recsys_source"


def test_env_overrides_and_types():
    env = {
        "RECSYS_STORAGE_ROOT": "s3://bucket/recsys/",
        "RECSYS_EXTRACT_CHUNK_ROWS": "1000",
        "RECSYS_ANOMALY_LOW_RATIO": "0.25",
        "RECSYS_KNOWN_EVENT_TYPES": "view, buy",
    }
    settings = load_settings(env=env)
    assert settings.extract_root == "s3://bucket/recsys/extract"
    assert settings.extract_chunk_rows == 1000
    assert settings.anomaly_low_ratio == 0.25
    assert settings.known_event_types == ("view", "buy")
    assert load_settings(env={"RECSYS_KNOWN_EVENT_TYPES": '["a", "b"]'}).known_event_types == ("a", "b")


def test_explicit_override_beats_env_and_none_is_ignored():
    env = {"RECSYS_SOURCE_CONN_ID": "from_env"}
    assert load_settings({"source_conn_id": "explicit"}, env=env).source_conn_id == "explicit"
    assert load_settings({"source_conn_id": None}, env=env).source_conn_id == "from_env"


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="extract_chunk_rows"):
        load_settings(env={"RECSYS_EXTRACT_CHUNK_ROWS": "lots"})
    with pytest.raises(ValueError, match="unknown setting"):
        load_settings({"storage_rot": "x"})
    assert isinstance(load_settings(env={}), Settings)


def test_vertex_training_root_must_be_on_gcs():
    from recsys.config import load_settings

    assert load_settings({"storage_root": "gs://lake/recsys/"}).vertex_training_root() == "gs://lake/recsys"
    staged = load_settings({"storage_root": "file:///data", "vertex_staging_uri": "gs://stage/x"})
    assert staged.vertex_training_root() == "gs://stage/x"
    with pytest.raises(ValueError, match="needs storage_root or vertex_staging_uri on gs://"):
        load_settings({"storage_root": "s3://lake", "vertex_staging_uri": ""}).vertex_training_root()
