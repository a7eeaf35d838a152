"""
### recsys_personalize_teardown — delete what recsys_personalize_setup created

Campaigns bill by the hour: this removes the dataset group `prefix` and everything in it, in
dependency order, each deletion waited on in the triggerer until `Describe*` says it is gone —
campaigns → event tracker → filters → solution → datasets → schemas (`<prefix>-<dataset>`) →
dataset group. Then the `recsys_personalize_*` Variables are cleared.

**Safety**: nothing happens unless `confirm` repeats `prefix` exactly. Re-running after a partial
teardown deletes what is left; with nothing left it does nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Param, dag, get_current_context, task

from recsys.alerts import task_defaults  # notifiers built from settings at parse time
from recsys.config import load_dag_settings, load_settings
from recsys.steps.xcom import pulled

PARAMS = {
    "prefix": Param(
        "recsys",
        type="string",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,39}$",
        title="Prefix to delete",
        description="Deletes the resources the setup DAG created with this prefix, in dependency order.",
    ),
    "confirm": Param(
        "",
        type="string",
        title="Type the prefix again to confirm",
        description="Everything in the dataset group is deleted; campaigns stop answering.",
    ),
}


_SETTINGS = load_dag_settings()  # parse time: the environment only (retries, notifiers, deadlines)


@dag(
    dag_id="recsys_personalize_teardown",
    schedule=None,
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=task_defaults(_SETTINGS),
    tags=["recsys", "personalize", "aws", "setup"],
    params=PARAMS,
    doc_md=__doc__,
)
def recsys_personalize_teardown():
    @task(multiple_outputs=False)
    def plan() -> dict:
        """Refuse without confirmation; list what exists, by kind."""
        from recsys.steps import personalize_setup

        settings = load_settings(use_airflow_variables=True)
        return personalize_setup.teardown_plan(settings, get_current_context()["params"])

    @task
    def of_kind(planned: dict, kind: str) -> list[dict]:
        return planned[kind]

    @task
    def clear_variables() -> list[str]:
        from recsys.steps import personalize_setup

        return personalize_setup.clear_variables()

    from personalize.provisioning import PersonalizeDeleteResourceOperator
    from personalize.resources import TEARDOWN_ORDER

    planned = plan()
    aws = {
        "aws_conn_id": pulled("plan", "aws_conn_id"),
        "waiter_delay": pulled("plan", "poll_seconds"),
        "deferrable": True,
    }
    previous = planned
    for kind in TEARDOWN_ORDER:
        deleted = PersonalizeDeleteResourceOperator.partial(
            task_id=f"delete_{kind}", kind=kind, trigger_rule="none_failed", **aws
        ).expand_kwargs(of_kind.override(task_id=f"find_{kind}")(planned, kind))
        previous >> deleted
        previous = deleted
    previous >> clear_variables.override(trigger_rule="none_failed")()


recsys_personalize_teardown()
