"""``recsys_personalize_setup`` and ``recsys_personalize_teardown`` (``dag.test``) against the Personalize fake:
provisioning from nothing, a re-run that creates nothing, the Variables the other DAGs read, a refused and a
confirmed teardown."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import boto3
import pytest
from fakes.personalize_world import running_personalize

from recsys_devtools.emulators.personalize import PersonalizeFake

DAGS = Path(__file__).resolve().parents[2] / "dags"
CONF = {"prefix": "shop", "min_provisioned_tps": 2, "initial_import_days": 8}


@pytest.fixture
def personalize(airflow_db, synthetic_lake, moto_s3, s3_bucket, tmp_path, monkeypatch):
    """An empty Personalize (the fake), a lake with extracted days, settings pointing at both."""
    from recsys.steps.personalize_resources import RECORDED

    with running_personalize(synthetic_lake, moto_s3, s3_bucket, tmp_path, monkeypatch) as fake:
        yield fake
    _delete_variables([f"recsys_{setting}" for setting in RECORDED])


def _delete_variables(keys):
    from airflow.models.variable import Variable

    for key in keys:
        Variable.delete(key)


def _variable(key: str) -> str | None:
    from airflow.models.variable import Variable

    return Variable.get(key, default_var=None)


@pytest.fixture
def dags(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags


def creates(fake: PersonalizeFake) -> Counter:
    return Counter(op for op, _ in fake.calls if op.startswith(("Create", "Delete", "Update")))


def test_setup_provisions_once_records_variables_and_teardown_removes_everything(personalize, dags):
    fake = personalize
    run = dags["recsys_personalize_setup"].test(run_conf=CONF)
    assert run.state == "success", {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert creates(fake) == Counter(
        {
            "CreateDatasetGroup": 1,
            "CreateSchema": 3,
            "CreateDataset": 3,
            "CreateDatasetImportJob": 3,
            "CreateSolution": 1,
            "CreateSolutionVersion": 1,
            "CreateCampaign": 1,
            "CreateEventTracker": 1,
            "CreateFilter": 1,
        }
    )
    report = json.loads((fake.root / "personalize" / "setup" / "shop.json").read_text())["resources"]

    client = boto3.client(
        "personalize", endpoint_url=fake.url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    solution = client.describe_solution(solutionArn=report["solution"])["solution"]
    assert solution["performAutoTraining"] is False  # sent explicitly: the service's default is True
    assert solution["recipeArn"].endswith("/aws-user-personalization")
    campaign = client.describe_campaign(campaignArn=report["campaign"])["campaign"]
    assert campaign["status"] == "ACTIVE" and campaign["minProvisionedTPS"] == 2
    assert campaign["solutionVersionArn"] in report["solution_versions"]
    schema = json.loads(
        client.describe_schema(schemaArn=client.list_schemas()["schemas"][0]["schemaArn"])["schema"]["schema"]
    )
    assert schema["type"] == "record" and schema["fields"][0]["name"] in ("USER_ID", "ITEM_ID")
    tracker = client.describe_event_tracker(eventTrackerArn=report["event_tracker"])["eventTracker"]
    # the other DAGs read these: no ARN copied by hand
    assert _variable("recsys_personalize_campaign_arn") == report["campaign"]
    assert _variable("recsys_personalize_tracking_id") == tracker["trackingId"]
    assert _variable("recsys_personalize_interactions_dataset_arn") == report["interactions"]
    assert _variable("recsys_personalize_filter_arn") == report["filters"]["shop-exclude-interacted"]

    fake.calls.clear()
    again = dags["recsys_personalize_setup"].test(run_conf=CONF)
    assert again.state == "success"
    assert creates(fake) == Counter()  # re-running changes nothing

    refused = dags["recsys_personalize_teardown"].test(run_conf={"prefix": "shop", "confirm": "yes"})
    assert refused.state == "failed" and creates(fake) == Counter()

    gone = dags["recsys_personalize_teardown"].test(run_conf={"prefix": "shop", "confirm": "shop"})
    assert gone.state == "success", {ti.task_id: ti.state for ti in gone.get_task_instances()}
    deletes = creates(fake)
    assert deletes == Counter(
        {
            "DeleteCampaign": 1,
            "DeleteEventTracker": 1,
            "DeleteFilter": 1,
            "DeleteSolution": 1,
            "DeleteDataset": 3,
            "DeleteSchema": 3,
            "DeleteDatasetGroup": 1,
        }
    )
    assert client.list_dataset_groups()["datasetGroups"] == [] and client.list_schemas()["schemas"] == []
    assert _variable("recsys_personalize_campaign_arn") is None

    fake.calls.clear()
    nothing_left = dags["recsys_personalize_teardown"].test(run_conf={"prefix": "shop", "confirm": "shop"})
    assert nothing_left.state == "success" and creates(fake) == Counter()
