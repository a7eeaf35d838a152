"""
### recsys_personalize_setup — provision Amazon Personalize from nothing, idempotently

Triggered from the UI (no schedule). Every step describes-or-creates by name (derived from `prefix`)
and waits in the triggerer until the resource is ACTIVE, so **re-running changes nothing**:

1. `dataset_group` → `schema` (interactions / users / items, Avro generated from the source schema)
   → `dataset` (three).
2. `initial_import` — only while the interactions dataset holds no data: the newest
   `initial_import_days` of extracted partitions (needs `personalize_s3_uri` / `personalize_role_arn`).
3. `solution` — `recipe`, optional HPO / `solution_config`; `performAutoTraining` is always sent
   (the service defaults it to on: a 7-day retraining of its own next to `recsys_personalize`'s
   FULL/UPDATE schedule). `first_solution_version` — a FULL version, only when none is ACTIVE.
4. `campaign` — `min_provisioned_tps`, `campaign_config`; with `sync_campaign_with_latest` it serves
   `<solution>/$LATEST` and follows every new ACTIVE version on its own.
5. `event_tracker` (the `trackingId` for PutEvents) and `filter` (e.g. excluding interacted items).
6. `record` — the ARNs and the tracking id become the Variables the other DAGs read
   (`recsys_personalize_*_arn`, `recsys_personalize_tracking_id`, `recsys_personalize_filter_arn`);
   a report goes to `<storage_root>/personalize/setup/<prefix>.json`.

`recsys_personalize_teardown` deletes all of it (campaigns bill by the hour).
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Param, dag, get_current_context, task

from recsys.alerts import task_defaults  # notifiers built from settings at parse time
from recsys.config import load_dag_settings, load_settings
from recsys.steps.personalize_resources import DEFAULT_FILTERS, RECIPES, materialize  # light: stdlib only
from recsys.steps.xcom import pulled

PREFIX = r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,39}$"
PARAMS = {
    "prefix": Param(
        "recsys",
        type="string",
        pattern=PREFIX,
        title="Name prefix of every resource",
        description="Names every resource (<prefix>-interactions, <prefix>-solution, ...); found by it on re-runs.",
    ),
    "recipe": Param(
        "aws-user-personalization",
        enum=list(RECIPES),
        title="Recipe",
        description="The Personalize recipe of the solution.",
    ),
    "perform_hpo": Param(
        False,
        type="boolean",
        title="Hyperparameter optimisation",
        description="Hyperparameter optimisation when the solution is created (slower, costlier).",
    ),
    "perform_auto_training": Param(
        False,
        type="boolean",
        title="Automatic training (every 7 days, by the service)",
        description="Off: recsys_personalize trains FULL weekly and UPDATE daily.",
    ),
    "solution_config": Param(
        {},
        type="object",
        title="solutionConfig (JSON)",
        description='e.g. {"hpoConfig": {...}, "eventValueThreshold": "0.5"}',
    ),
    "initial_import_days": Param(
        30,
        type="integer",
        minimum=0,
        maximum=365,
        title="Days to import when the dataset is empty (0 = none)",
        description="Days of extracted interactions imported once, while nothing has been imported yet.",
    ),
    "create_campaign": Param(
        True,
        type="boolean",
        title="Create a campaign",
        description="A campaign on the first solution version (real-time recommendations).",
    ),
    "min_provisioned_tps": Param(
        1,
        type="integer",
        minimum=1,
        maximum=10000,
        title="Campaign minProvisionedTPS",
        description="The campaign's minimum provisioned transactions per second (billed).",
    ),
    "sync_campaign_with_latest": Param(
        False,
        type="boolean",
        title="Campaign follows <solution>/$LATEST",
        description="Let Personalize move the campaign to each new solution version by itself.",
    ),
    "campaign_config": Param(
        {},
        type="object",
        title="campaignConfig (JSON)",
        description='e.g. {"itemExplorationConfig": {"explorationWeight": "0.3"}}',
    ),
    "create_event_tracker": Param(
        True,
        type="boolean",
        title="Create an event tracker",
        description="For PutEvents from the application; its tracking id is recorded as a Variable.",
    ),
    "filters": Param(
        DEFAULT_FILTERS,
        type="object",
        title="Filters: name -> filter expression",
        additionalProperties={"type": "string", "minLength": 8},
        description="Filter expressions to create, by name.",
    ),
    "batch_filter": Param(
        "exclude-interacted",
        type=["null", "string"],
        title="Filter batch inference uses (a name above; empty = none)",
        description="The filter batch inference uses (one of the filters; empty = none).",
    ),
}


_SETTINGS = load_dag_settings()  # parse time: the environment only (retries, notifiers, deadlines)


# Every resource is found by name or created (then waited for in the triggerer), with the planned connection.
AWS = {"aws_conn_id": pulled("plan", "aws_conn_id"), "waiter_delay": pulled("plan", "poll_seconds"), "deferrable": True}
# a task mapped over [] (nothing to do) is skipped; "none_failed" lets what follows run anyway
OPTIONAL = {"trigger_rule": "none_failed"}


def _create(kind: str, **request):
    from personalize.provisioning import PersonalizeCreateResourceOperator

    return PersonalizeCreateResourceOperator(task_id=kind, kind=kind, **request, **AWS)


def _create_each(kind: str, requests, **extra):
    from personalize.provisioning import PersonalizeCreateResourceOperator

    return PersonalizeCreateResourceOperator.partial(task_id=kind, kind=kind, **extra, **AWS).expand_kwargs(requests)


def _initial_imports(jobs):
    from personalize.operators import PersonalizeCreateDatasetImportJobOperator

    return PersonalizeCreateDatasetImportJobOperator.partial(
        task_id="initial_import", role_arn=pulled("plan", "role_arn"), **AWS
    ).expand_kwargs(jobs)


def _first_version(requests):
    from personalize.operators import PersonalizeCreateSolutionVersionOperator

    return PersonalizeCreateSolutionVersionOperator.partial(
        task_id="first_solution_version", training_mode="FULL", **OPTIONAL, **AWS
    ).expand_kwargs(requests)


@dag(
    dag_id="recsys_personalize_setup",
    schedule=None,
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=task_defaults(_SETTINGS),
    tags=["recsys", "personalize", "aws", "setup"],
    params=PARAMS,
    doc_md=__doc__,
)
def recsys_personalize_setup():
    @task(multiple_outputs=False)
    def plan() -> dict:
        from recsys.steps import personalize_setup

        return personalize_setup.plan(load_settings(use_airflow_variables=True), get_current_context()["params"])

    @task
    def schema_requests() -> list[dict]:
        from recsys.steps.personalize_resources import schema_requests

        return schema_requests(get_current_context()["params"]["prefix"])

    @task
    def dataset_requests(group_arn: str, schema_arns: list[str]) -> list[dict]:
        from recsys.steps.personalize_resources import dataset_requests

        return dataset_requests(get_current_context()["params"]["prefix"], group_arn, materialize(schema_arns))

    @task
    def initial_imports(planned: dict, dataset_arns: list[str], solution_arn: str) -> list[dict]:
        """Import jobs for the newest extracted days, while nothing was ever trained or imported."""
        from recsys.steps.personalize_setup import initial_imports

        context = get_current_context()
        return initial_imports(
            load_settings(use_airflow_variables=True),
            planned,
            dict(zip(("interactions", "users", "items"), materialize(dataset_arns), strict=True)),
            solution_arn,
            context["params"],
            context["dag_run"].run_id,
        )

    @task(multiple_outputs=False)
    def solution_config(group_arn: str) -> dict:
        from recsys.steps.personalize_resources import solution_config

        return solution_config(get_current_context()["params"], group_arn)

    @task
    def first_version(planned: dict, solution_arn: str) -> list[dict]:
        """A FULL solution version when the solution has no ACTIVE one (else nothing: mapped over [])."""
        from recsys.steps import personalize_setup

        return personalize_setup.first_version(planned, solution_arn)

    @task
    def campaign_request(planned: dict, solution_arn: str) -> list[dict]:
        from recsys.steps import personalize_setup

        return personalize_setup.campaign_request(planned, get_current_context()["params"], solution_arn)

    @task
    def tracker_request(planned: dict, group_arn: str) -> list[dict]:
        from recsys.steps import personalize_setup

        return personalize_setup.tracker_request(planned, get_current_context()["params"], group_arn)

    @task
    def filter_requests(group_arn: str) -> list[dict]:
        from recsys.steps.personalize_resources import filter_requests

        params = get_current_context()["params"]
        return filter_requests(params["prefix"], params["filters"], group_arn)

    @task(multiple_outputs=False)
    def record(
        planned: dict, group: str, datasets: list, solution: str, campaigns: list, trackers: list, filters: list
    ):
        """Set the Variables the other DAGs read; write the setup report."""
        from recsys.steps.personalize_setup import record_setup

        created = [materialize(found) for found in (datasets, campaigns, trackers, filters)]
        settings = load_settings(use_airflow_variables=True)
        return record_setup(settings, planned, get_current_context()["params"], group, solution, *created)

    planned = plan()
    group = _create("dataset_group", config={}, name=pulled("plan", "names", "dataset_group"))
    schemas = _create_each("schema", schema_requests())
    datasets = _create_each("dataset", dataset_requests(group.output, schemas.output))
    solution = _create("solution", config=solution_config(group.output), name=pulled("plan", "names", "solution"))
    imports = _initial_imports(initial_imports(planned, datasets.output, solution.output))
    version = _first_version(first_version(planned, solution.output))
    wanted_campaign = campaign_request.override(trigger_rule="none_failed")(planned, solution.output)
    campaigns = _create_each("campaign", wanted_campaign, trigger_rule="none_failed")
    trackers = _create_each("event_tracker", tracker_request(planned, group.output))
    filters = _create_each("filter", filter_requests(group.output))

    planned >> group
    imports >> version >> wanted_campaign
    datasets >> [trackers, filters]
    record.override(trigger_rule="none_failed")(
        planned, group.output, datasets.output, solution.output, campaigns.output, trackers.output, filters.output
    )


recsys_personalize_setup()
