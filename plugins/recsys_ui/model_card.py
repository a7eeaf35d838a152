"""``GET /model-card?dag_id=&run_id=``: the model card of the model a training run produced, as HTML."""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

app = FastAPI(title="recsys model cards")


def planned_model_dir(dag_id: str, run_id: str) -> str | None:
    """The ``model_dir`` the run's ``plan`` task decided (``None`` for a run that trains nothing)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == "plan",
                XComModel.key == "return_value",
            )
        ).first()
        plan = XComModel.deserialize_value(row) if row is not None else None
    return plan.get("model_dir") if isinstance(plan, dict) else None


@app.get(
    "/model-card", response_class=HTMLResponse, dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.XCOM))]
)
def model_card(dag_id: str, run_id: str) -> HTMLResponse:
    from recsys_ui.card_page import card_page, read_card

    model_dir = planned_model_dir(dag_id, run_id)
    card = read_card(model_dir) if model_dir else None
    missing = (
        f"The run's model ({model_dir}) has no card yet: the gate writes it once the model is evaluated."
        if model_dir
        else "This run trains no model, so it has no model card."
    )
    return HTMLResponse(card_page(f"Model card: {dag_id} {run_id}", card, missing))
