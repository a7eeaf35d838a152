"""The generated docs match what they are generated from: each DAG's doc_md and Params, the settings."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_dag_reference_is_rendered_from_the_dags(airflow_db):
    from recsys_devtools.docs import dag_reference

    assert (DOCS / "dags.md").read_text() == dag_reference(), "run: python -m recsys_devtools.docs"


def test_settings_table_is_rendered_from_the_config():
    from recsys_devtools.docs import settings_reference

    assert (DOCS / "settings.md").read_text() == settings_reference(), "run: python -m recsys_devtools.docs"


def test_the_reference_shows_every_param_of_every_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    text = (DOCS / "dags.md").read_text()
    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    for dag in bag.dags.values():
        assert f'<a id="{dag.dag_id}"></a>' in text
        section = text.split(f'<a id="{dag.dag_id}"></a>', 1)[1].split("<a id=", 1)[0]
        for name in dag.params:
            assert f"| `{name}` |" in section, f"{dag.dag_id}: Param {name} missing from docs/dags.md"
