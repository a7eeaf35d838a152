"""What ``recsys_personalize_setup`` creates and ``recsys_personalize_teardown`` deletes, from one prefix.

Names: the dataset group is ``<prefix>``; its schemas ``<prefix>-<dataset>``, datasets
``<prefix>-<dataset>``, solution ``<prefix>-solution``, first version ``<prefix>-initial``, campaign
``<prefix>-campaign``, event tracker ``<prefix>-events``, filters ``<prefix>-<filter name>``.
The resulting ARNs are recorded as the Airflow Variables the other DAGs read (``recsys_<setting>``).
"""

from __future__ import annotations

DATASETS = ("interactions", "users", "items")
RECIPES = (
    "aws-user-personalization",
    "aws-user-personalization-v2",
    "aws-personalized-ranking",
    "aws-personalized-ranking-v2",
    "aws-similar-items",
    "aws-popularity-count",
)
RECIPE_ARN = "arn:aws:personalize:::recipe/{}"
EXCLUDE_INTERACTED = 'EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN ("*")'
DEFAULT_FILTERS = {"exclude-interacted": EXCLUDE_INTERACTED}
# setting (Variable recsys_<setting>) -> key in the recorded resources
RECORDED = {
    "personalize_dataset_group_arn": "dataset_group",
    "personalize_interactions_dataset_arn": "interactions",
    "personalize_users_dataset_arn": "users",
    "personalize_items_dataset_arn": "items",
    "personalize_solution_arn": "solution",
    "personalize_campaign_arn": "campaign",
    "personalize_event_tracker_arn": "event_tracker",
    "personalize_tracking_id": "tracking_id",
    "personalize_filter_arn": "batch_filter",
}


def materialize(values) -> list:
    """A mapped task's results as a list (empty for a task mapped over nothing). Indexing by length: iterating
    Airflow's lazy XCom sequence asks for one entry past the end, which the task log reports as an error."""
    if values is None:
        return []
    return [values[i] for i in range(len(values))]


def names(prefix: str) -> dict:
    return {
        "dataset_group": prefix,
        **{d: f"{prefix}-{d}" for d in DATASETS},
        "solution": f"{prefix}-solution",
        "initial_version": f"{prefix}-initial",
        "campaign": f"{prefix}-campaign",
        "event_tracker": f"{prefix}-events",
    }


def schema_requests(prefix: str) -> list[dict]:
    from recsys.data.personalize_schemas import schema_json  # pyarrow: not at DAG-parse time

    return [{"name": f"{prefix}-{d}", "config": {"schema": schema_json(d)}} for d in DATASETS]


def dataset_requests(prefix: str, group_arn: str, schema_arns: list[str]) -> list[dict]:
    return [
        {
            "name": f"{prefix}-{d}",
            "config": {"datasetGroupArn": group_arn, "schemaArn": schema, "datasetType": d.upper()},
        }
        for d, schema in zip(DATASETS, schema_arns, strict=True)
    ]


def solution_config(params: dict, group_arn: str) -> dict:
    """``performAutoTraining`` is always sent: the service turns it on when it is left out."""
    config = {
        "datasetGroupArn": group_arn,
        "recipeArn": RECIPE_ARN.format(params["recipe"]),
        "performHPO": params["perform_hpo"],
        "performAutoTraining": params["perform_auto_training"],
    }
    if params["solution_config"]:
        config["solutionConfig"] = params["solution_config"]
    return config


def campaign_config(params: dict, solution_arn: str, version_arn: str | None) -> dict:
    """Serve ``version_arn``, or ``<solution>/$LATEST`` (kept in sync by the service) when asked for."""
    sync = params["sync_campaign_with_latest"]
    config = {
        "solutionVersionArn": f"{solution_arn}/$LATEST" if sync else version_arn,
        "minProvisionedTPS": params["min_provisioned_tps"],
        "campaignConfig": {**params["campaign_config"], **({"syncWithLatestSolutionVersion": True} if sync else {})},
    }
    return config


def filter_requests(prefix: str, filters: dict[str, str], group_arn: str) -> list[dict]:
    return [
        {"name": f"{prefix}-{name}", "config": {"datasetGroupArn": group_arn, "filterExpression": expression}}
        for name, expression in sorted(filters.items())
    ]


def recorded(resources: dict) -> dict[str, str]:
    """The Variables to set: ``recsys_<setting>`` -> value (empty string for what was not created)."""
    return {f"recsys_{setting}": resources.get(key) or "" for setting, key in RECORDED.items()}


def teardown_targets(hook, prefix: str) -> dict[str, list[str]]:
    """Everything in the dataset group ``prefix`` (and the schemas named after it), by kind."""
    from personalize.resources import RESOURCES, TEARDOWN_ORDER

    def listed(kind: str, **parent) -> list[dict]:
        return hook.paginate(f"list_{kind}s", RESOURCES[kind].list_key, **parent)

    def arns(kind: str, found: list[dict]) -> list[str]:
        return [r[RESOURCES[kind].arn_key] for r in found]

    targets: dict[str, list[str]] = {kind: [] for kind in TEARDOWN_ORDER}
    targets["dataset_group"] = arns("dataset_group", [g for g in listed("dataset_group") if g["name"] == prefix])
    for group in targets["dataset_group"]:
        for kind in ("event_tracker", "filter", "solution", "dataset"):
            targets[kind] += arns(kind, listed(kind, datasetGroupArn=group))
    for solution in targets["solution"]:
        targets["campaign"] += arns("campaign", listed("campaign", solutionArn=solution))
    wanted = {f"{prefix}-{d}" for d in DATASETS}
    targets["schema"] = arns("schema", [s for s in listed("schema") if s["name"] in wanted])
    return targets
