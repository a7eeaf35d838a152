"""The Airflow UI's "Model card" tab on every DAG run (an external view, shown in an iframe).

A FastAPI app mounted in the api-server at ``/recsys`` serves ``/recsys/model-card?dag_id=&run_id=``: the
card of the model the run trained (``recsys_two_tower``'s ``plan`` XCom names its ``model_dir``; the gate
writes ``model_card.md`` there), rendered as HTML. The viewer must be allowed to read the DAG's XComs; the
UI's session cookie authenticates the iframe's request as it does the UI's own.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from recsys_ui.model_card import app


class RecsysUiPlugin(AirflowPlugin):
    name = "recsys_ui"
    fastapi_apps = [{"app": app, "url_prefix": "/recsys", "name": "recsys model cards"}]
    external_views = [
        {
            "name": "Model card",
            "href": "recsys/model-card?dag_id={DAG_ID}&run_id={RUN_ID}",
            "destination": "dag_run",
            "url_route": "model-card",
        }
    ]
