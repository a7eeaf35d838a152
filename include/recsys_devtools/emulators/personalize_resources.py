"""The Personalize fake's provisioning API: Create / Describe / List / Delete for dataset groups, schemas,
datasets, solutions, campaigns, event trackers and filters, as the service answers them.

Every resource is a :class:`~recsys_devtools.emulators.personalize.Job` of its kind: ``CREATE PENDING`` ->
``CREATE IN_PROGRESS`` -> ``ACTIVE`` on the fake's clock (a schema is ACTIVE at once and has no status).
``Delete*`` moves it to ``DELETE PENDING``; once that time passed, ``Describe*`` answers
``ResourceNotFoundException`` and the name is free again. What the service refuses, the fake refuses:
deleting a dataset group that still holds datasets, solutions, event trackers or filters, a solution a
campaign serves, a schema a dataset uses (``ResourceInUseException``); a second dataset of one type in a
group or a second event tracker in a group (``ResourceAlreadyExistsException`` / ``LimitExceededException``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

# kind -> (ARN resource type, ARN key, response key, List* key, parent key of List*, summary fields)
RESOURCES = {
    "dataset_group": (
        "dataset-group",
        "datasetGroupArn",
        "datasetGroup",
        "datasetGroups",
        None,
        ("name", "status", "creationDateTime", "lastUpdatedDateTime", "failureReason", "domain"),
    ),
    "schema": (
        "schema",
        "schemaArn",
        "schema",
        "schemas",
        None,
        ("name", "creationDateTime", "lastUpdatedDateTime", "domain"),
    ),
    "dataset": (
        "dataset",
        "datasetArn",
        "dataset",
        "datasets",
        "datasetGroupArn",
        ("name", "datasetType", "status", "creationDateTime", "lastUpdatedDateTime"),
    ),
    "solution": (
        "solution",
        "solutionArn",
        "solution",
        "solutions",
        "datasetGroupArn",
        ("name", "status", "recipeArn", "creationDateTime", "lastUpdatedDateTime"),
    ),
    "campaign": (
        "campaign",
        "campaignArn",
        "campaign",
        "campaigns",
        "solutionArn",
        ("name", "status", "creationDateTime", "lastUpdatedDateTime", "failureReason"),
    ),
    "event_tracker": (
        "event-tracker",
        "eventTrackerArn",
        "eventTracker",
        "eventTrackers",
        "datasetGroupArn",
        ("name", "status", "creationDateTime", "lastUpdatedDateTime"),
    ),
    "filter": (
        "filter",
        "filterArn",
        "filter",
        "Filters",
        "datasetGroupArn",
        ("name", "status", "datasetGroupArn", "creationDateTime", "lastUpdatedDateTime", "failureReason"),
    ),
}
DATASET_TYPES = {"Interactions": "interactions", "Users": "users", "Items": "items"}
RECIPE_PREFIX = "arn:aws:personalize:::recipe/"


class ResourceOperations:
    """Mixed into ``PersonalizeFake``: the Create/Describe/List/Delete operations of its resources."""

    # ---- the generic machinery -------------------------------------------------------------------
    def _create_resource(self, kind: str, name: str, fields: dict, arn: str | None = None):
        arn = arn or self.arn(RESOURCES[kind][0], name)
        return self._new_job(kind, name, arn, {"name": name, **fields})

    def _resource(self, arn: str, kind: str, active: bool = False):
        job = self.jobs.get(arn)
        if job is not None and job.deleted_at is not None and self._gone(job):
            job = None
        if job is None or job.kind != kind:
            raise self.error("ResourceNotFoundException", f"{arn} not found")
        if active and self.status(job) != "ACTIVE":
            raise self.error("ResourceInUseException", f"{arn} is {self.status(job)}, not ACTIVE")
        return job

    def _gone(self, job) -> bool:
        if time.time() - job.deleted_at < job.pending + job.running:
            return False
        self.jobs.pop(job.arn, None)
        self.datasets.pop(job.arn, None)
        self.campaigns.pop(job.arn, None)
        return True

    def _live(self, kind: str, **match) -> list:
        jobs = [j for j in list(self.jobs.values()) if j.kind == kind]
        jobs = [j for j in jobs if j.deleted_at is None or not self._gone(j)]
        return [j for j in jobs if all(j.fields.get(k) == v for k, v in match.items())]

    def _resource_body(self, job) -> dict:
        _, arn_key, *_ = RESOURCES[job.kind]
        body = {k: v for k, v in job.fields.items() if not k.startswith("_")}
        body |= {arn_key: job.arn, "creationDateTime": job.started, "lastUpdatedDateTime": time.time()}
        if job.kind != "schema":
            body["status"] = self.status(job)
        if body.get("status") == "CREATE FAILED":
            body["failureReason"] = job.failure
        return body

    def _describe_resource(self, kind: str, p: dict) -> dict:
        _, arn_key, key, *_ = RESOURCES[kind]
        return {key: self._resource_body(self._resource(p[arn_key], kind))}

    def _list_resources(self, kind: str, p: dict) -> dict:
        _, arn_key, _, list_key, parent, keep = RESOURCES[kind]
        wanted = {parent: p[parent]} if parent and p.get(parent) else {}
        bodies = [self._resource_body(j) for j in self._live(kind, **wanted)]
        return {list_key: [{k: b[k] for k in (arn_key, *keep) if k in b} for b in bodies]}

    def _delete_resource(self, kind: str, p: dict, blockers: list) -> dict:
        job = self._resource(p[RESOURCES[kind][1]], kind)
        if job.deleted_at is not None:
            raise self.error("ResourceInUseException", f"{job.arn} is already being deleted")
        if blockers:
            raise self.error("ResourceInUseException", f"{job.arn} is in use by {', '.join(b.arn for b in blockers)}")
        job.deleted_at = time.time()
        return {}

    # ---- dataset groups ----------------------------------------------------------------------------
    def CreateDatasetGroup(self, p: dict) -> dict:  # noqa: N802 - the API's operation names
        fields = {k: p[k] for k in ("roleArn", "kmsKeyArn", "domain") if k in p}
        return {"datasetGroupArn": self._create_resource("dataset_group", p["name"], fields).arn}

    def DescribeDatasetGroup(self, p: dict) -> dict:  # noqa: N802
        return self._describe_resource("dataset_group", p)

    def ListDatasetGroups(self, p: dict) -> dict:  # noqa: N802
        return self._list_resources("dataset_group", p)

    def DeleteDatasetGroup(self, p: dict) -> dict:  # noqa: N802
        group = p["datasetGroupArn"]
        blockers = [
            j
            for kind in ("dataset", "solution", "event_tracker", "filter")
            for j in self._live(kind, datasetGroupArn=group)
        ]
        return self._delete_resource("dataset_group", p, blockers)

    # ---- schemas -----------------------------------------------------------------------------------
    def CreateSchema(self, p: dict) -> dict:  # noqa: N802
        try:
            schema = json.loads(p["schema"])
            fields = [f["name"] for f in schema["fields"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise self.error("InvalidInputException", f"the schema is not a valid Avro record schema: {exc}") from exc
        if schema.get("type") != "record" or not fields:
            raise self.error("InvalidInputException", "the schema must be an Avro record with fields")
        job = self._create_resource(
            "schema", p["name"], {"schema": p["schema"], **({"domain": p["domain"]} if "domain" in p else {})}
        )
        job.started -= job.pending + job.running  # a schema exists at once
        return {"schemaArn": job.arn}

    def DescribeSchema(self, p: dict) -> dict:  # noqa: N802
        return self._describe_resource("schema", p)

    def ListSchemas(self, p: dict) -> dict:  # noqa: N802
        return self._list_resources("schema", p)

    def DeleteSchema(self, p: dict) -> dict:  # noqa: N802
        return self._delete_resource("schema", p, self._live("dataset", schemaArn=p["schemaArn"]))

    # ---- datasets ----------------------------------------------------------------------------------
    def CreateDataset(self, p: dict) -> dict:  # noqa: N802
        group = self._resource(p["datasetGroupArn"], "dataset_group", active=True)
        self._resource(p["schemaArn"], "schema")
        kind = DATASET_TYPES.get(p["datasetType"].capitalize())
        if kind is None:
            raise self.error(
                "InvalidInputException", f"datasetType {p['datasetType']!r} is not one of {sorted(DATASET_TYPES)}"
            )
        if self._live("dataset", datasetGroupArn=group.arn, datasetType=p["datasetType"].upper()):
            raise self.error("ResourceAlreadyExistsException", f"{group.arn} already has a {kind} dataset")
        arn = f"{group.arn.replace(':dataset-group/', ':dataset/')}/{kind.upper()}"
        job = self._create_resource(
            "dataset",
            p["name"],
            {"datasetGroupArn": group.arn, "schemaArn": p["schemaArn"], "datasetType": p["datasetType"].upper()},
            arn,
        )
        self.datasets[arn] = self._empty_dataset(kind)
        return {"datasetArn": job.arn}

    def DescribeDataset(self, p: dict) -> dict:  # noqa: N802
        found = self._describe_resource("dataset", p)
        dataset = self.datasets[p["datasetArn"]]
        if dataset["type"] == "interactions" and dataset.get("tracking_id"):
            found["dataset"]["trackingId"] = dataset["tracking_id"]
        return found

    def ListDatasets(self, p: dict) -> dict:  # noqa: N802
        return self._list_resources("dataset", p)

    def DeleteDataset(self, p: dict) -> dict:  # noqa: N802
        imports = [
            j for j in self.created("import") if j.fields["datasetArn"] == p["datasetArn"] and self._in_progress(j)
        ]
        return self._delete_resource("dataset", p, imports)

    @staticmethod
    def _empty_dataset(kind: str) -> dict:
        return {"type": kind, "rows": 0, "items": Counter(), "seen": {}, "records": {}, "events": [], "imported": []}

    # ---- solutions ---------------------------------------------------------------------------------
    def CreateSolution(self, p: dict) -> dict:  # noqa: N802
        group = self._resource(p["datasetGroupArn"], "dataset_group", active=True)
        recipe = p.get("recipeArn") or f"{RECIPE_PREFIX}aws-user-personalization"
        fields = {
            "datasetGroupArn": group.arn,
            "recipeArn": recipe,
            "performHPO": p.get("performHPO", False),
            "performAutoTraining": p.get("performAutoTraining", True),  # the service's default
            "solutionConfig": p.get("solutionConfig", {}),
        }
        return {"solutionArn": self._create_resource("solution", p["name"], fields).arn}

    def DescribeSolution(self, p: dict) -> dict:  # noqa: N802
        return self._describe_resource("solution", p)

    def ListSolutions(self, p: dict) -> dict:  # noqa: N802
        return self._list_resources("solution", p)

    def DeleteSolution(self, p: dict) -> dict:  # noqa: N802
        serving = [
            j
            for j in self._live("campaign")
            if self.campaigns[j.arn]["solutionVersionArn"].startswith(p["solutionArn"] + "/")
        ]
        return self._delete_resource("solution", p, serving)

    # ---- campaigns ---------------------------------------------------------------------------------
    def CreateCampaign(self, p: dict) -> dict:  # noqa: N802
        version = self._serving_version(p["solutionVersionArn"])
        solution = version.fields["solutionArn"]
        config = p.get("campaignConfig", {})
        if config.get("syncWithLatestSolutionVersion") and not p["solutionVersionArn"].endswith("/$LATEST"):
            raise self.error("InvalidInputException", "syncWithLatestSolutionVersion needs <solutionArn>/$LATEST")
        job = self._create_resource("campaign", p["name"], {"solutionArn": solution, "campaignConfig": config})
        self.campaigns[job.arn] = {
            "solutionVersionArn": version.arn,
            "requested": p["solutionVersionArn"],
            "minProvisionedTPS": p.get("minProvisionedTPS", 1),
            "campaignConfig": config,
        }
        return {"campaignArn": job.arn}

    def _serving_version(self, requested: str):
        """The ACTIVE solution version ``requested`` names (``<solution>/$LATEST``: the newest ACTIVE one)."""
        if requested.endswith("/$LATEST"):
            solution = requested.removesuffix("/$LATEST")
            versions = [
                v
                for v in self.created("solution_version")
                if v.fields["solutionArn"] == solution and self.status(v) == "ACTIVE"
            ]
            if not versions:
                raise self.error("InvalidInputException", f"{solution} has no ACTIVE solution version")
            return max(versions, key=lambda v: v.started)
        version = self._job(requested, "solution_version")
        if self.status(version) != "ACTIVE":
            raise self.error("InvalidInputException", f"{version.arn} is {self.status(version)}, not ACTIVE")
        return version

    def DescribeCampaign(self, p: dict) -> dict:  # noqa: N802
        job = self._resource(p["campaignArn"], "campaign")
        campaign = self.campaigns[job.arn]
        body = self._resource_body(job)
        body.pop("solutionArn", None)
        body |= {
            "solutionVersionArn": self._campaign_version(job.arn),
            "minProvisionedTPS": campaign["minProvisionedTPS"],
            "campaignConfig": campaign["campaignConfig"],
        }
        if update := campaign.get("_update"):
            described = self._describe(update, "campaignArn")
            keep = (
                "solutionVersionArn",
                "minProvisionedTPS",
                "campaignConfig",
                "status",
                "failureReason",
                "creationDateTime",
                "lastUpdatedDateTime",
            )
            body["latestCampaignUpdate"] = {k: v for k, v in described.items() if k in keep}
            body["solutionVersionArn"] = self._campaign_version(job.arn)  # switched once the update is ACTIVE
        return {"campaign": body}

    def _campaign_version(self, campaign_arn: str) -> str:
        campaign = self.campaigns[campaign_arn]
        if campaign["campaignConfig"].get("syncWithLatestSolutionVersion"):
            campaign["solutionVersionArn"] = self._serving_version(campaign["requested"]).arn
        return campaign["solutionVersionArn"]

    def ListCampaigns(self, p: dict) -> dict:  # noqa: N802
        return self._list_resources("campaign", p)

    def DeleteCampaign(self, p: dict) -> dict:  # noqa: N802
        return self._delete_resource("campaign", p, [])

    # ---- event trackers ----------------------------------------------------------------------------
    def CreateEventTracker(self, p: dict) -> dict:  # noqa: N802
        group = self._resource(p["datasetGroupArn"], "dataset_group", active=True)
        if self._live("event_tracker", datasetGroupArn=group.arn):
            raise self.error("LimitExceededException", f"{group.arn} already has an event tracker (limit 1)")
        tracking_id = str(uuid.uuid4())
        job = self._create_resource(
            "event_tracker",
            p["name"],
            {"datasetGroupArn": group.arn, "accountId": self.account, "trackingId": tracking_id},
        )
        return {"eventTrackerArn": job.arn, "trackingId": tracking_id}

    def DescribeEventTracker(self, p: dict) -> dict:  # noqa: N802
        return self._describe_resource("event_tracker", p)

    def ListEventTrackers(self, p: dict) -> dict:  # noqa: N802
        return self._list_resources("event_tracker", p)

    def DeleteEventTracker(self, p: dict) -> dict:  # noqa: N802
        return self._delete_resource("event_tracker", p, [])

    # ---- filters -----------------------------------------------------------------------------------
    def CreateFilter(self, p: dict) -> dict:  # noqa: N802
        group = self._resource(p["datasetGroupArn"], "dataset_group", active=True)
        expression = p["filterExpression"].strip()
        if not expression.upper().startswith(("INCLUDE ", "EXCLUDE ")):
            raise self.error(
                "InvalidInputException", f"filterExpression must start with INCLUDE or EXCLUDE: {expression!r}"
            )
        fields = {"datasetGroupArn": group.arn, "filterExpression": expression}
        return {"filterArn": self._create_resource("filter", p["name"], fields).arn}

    def DescribeFilter(self, p: dict) -> dict:  # noqa: N802
        return self._describe_resource("filter", p)

    def ListFilters(self, p: dict) -> dict:  # noqa: N802
        return self._list_resources("filter", p)

    def DeleteFilter(self, p: dict) -> dict:  # noqa: N802
        return self._delete_resource("filter", p, [])
