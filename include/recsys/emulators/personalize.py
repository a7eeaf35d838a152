"""A local Amazon Personalize fake speaking the real JSON 1.1 protocol (``X-Amz-Target: AmazonPersonalize.<Op>``).

Real boto3 / aiobotocore clients reach it through the Airflow AWS connection
(``service_config.personalize.endpoint_url``). Data lives in S3 (a moto server): imports read the
CSV files at ``dataLocation``; batch inference reads the JSON-lines input and writes
``<output>/<input file>.out`` with the fake's "recommendations" (the most imported items).

Jobs follow time-based state machines (``CREATE PENDING`` -> ``CREATE IN_PROGRESS`` -> ``ACTIVE`` |
``CREATE FAILED``; batch inference ``PENDING`` -> ``IN PROGRESS`` -> ...; stopped solution versions
``CREATE STOPPING`` -> ``CREATE STOPPED``) and the API's validation: name pattern and length
(``InvalidInputException``), duplicate names (``ResourceAlreadyExistsException``), more than 5
imports in progress (``LimitExceededException``), a second solution version or campaign update
while one is in progress (``ResourceInUseException``), UPDATE without an ACTIVE FULL version or
with a recipe other than User-Personalization, fewer than 1000 interactions.

Faults: ``fail_next(op, code, status)`` answers the next call of ``op`` with that error;
``fail_job(kind, reason)`` makes the next job of ``kind`` end ``CREATE FAILED`` with that
``failureReason``; ``stick(kind)`` keeps the next job of ``kind`` in progress forever. Kinds:
``import``, ``solution_version``, ``batch``, ``campaign_update``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9\-_]*$")
HEADERS = {"interactions": ["USER_ID", "ITEM_ID", "TIMESTAMP"], "users": ["USER_ID"], "items": ["ITEM_ID"]}
MIN_INTERACTIONS = 1000
DEFAULT_METRICS = {"coverage": 0.3, "precision_at_25": 0.05, "normalized_discounted_cumulative_gain_at_10": 0.1}


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class Job:
    kind: str
    name: str
    arn: str
    started: float
    fields: dict
    pending: float = 0.0  # seconds in (CREATE) PENDING, then...
    running: float = 0.0  # ...seconds in progress; fixed when the job is created
    failure: str | None = None
    stuck: bool = False
    stopped_at: float | None = None
    finished: bool = False
    on_active: object = None


@dataclass
class PersonalizeFake:
    region: str = "us-east-1"
    account: str = "123456789012"
    s3_endpoint: str | None = None
    pending_seconds: float = 0.1
    job_seconds: float = 0.4
    job_seconds_by_kind: dict = field(default_factory=dict)  # e.g. {"solution_version": 30}: overrides job_seconds
    recipe: str = "aws-user-personalization-v2"
    jobs: dict = field(default_factory=dict)  # arn -> Job
    datasets: dict = field(default_factory=dict)  # arn -> {"type", "rows", "items": Counter}
    solutions: dict = field(default_factory=dict)
    campaigns: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)  # (operation, params)
    metrics: list = field(default_factory=list)  # metrics for the next solution versions, in order
    _faults: dict = field(default_factory=dict)
    _job_faults: dict = field(default_factory=dict)
    _stuck: list = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # ---- set-up ----------------------------------------------------------------------------------
    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:personalize:{self.region}:{self.account}:{kind}/{name}"

    def create_dataset_group(self, name: str = "recsys") -> dict:
        """A dataset group with interactions/users/items datasets and one solution; returns their ARNs."""
        group = self.arn("dataset-group", name)
        arns = {"dataset_group": group}
        for kind in HEADERS:
            arns[kind] = f"{group}/{kind.upper()}"
            self.datasets[arns[kind]] = {"type": kind, "rows": 0, "items": Counter()}
        arns["solution"] = self.arn("solution", f"{name}-solution")
        self.solutions[arns["solution"]] = {"name": f"{name}-solution", "solutionArn": arns["solution"],
                                            "recipeArn": f"arn:aws:personalize:::recipe/{self.recipe}",
                                            "datasetGroupArn": group, "status": "ACTIVE"}  # fmt: skip
        return arns

    def create_campaign(self, solution_arn: str, name: str = "recsys-campaign") -> str:
        """A campaign serving a FULL version trained at once (as after the first full retrain)."""
        version = self._new_job("solution_version", "initial-full", f"{solution_arn}/initial",
                                {"name": "initial-full", "solutionArn": solution_arn, "trainingMode": "FULL",
                                 "_metrics": dict(DEFAULT_METRICS)})  # fmt: skip
        version.started -= 3600
        arn = self.arn("campaign", name)
        self.campaigns[arn] = {"name": name, "campaignArn": arn, "solutionVersionArn": version.arn,
                               "minProvisionedTPS": 1, "status": "ACTIVE", "creationDateTime": time.time()}  # fmt: skip
        return arn

    # ---- fault injection -------------------------------------------------------------------------
    def fail_next(self, operation: str, code: str = "ThrottlingException", status: int = 400,
                  message: str = "injected") -> None:  # fmt: skip
        self._faults.setdefault(operation, []).append(ApiError(code, message, status))

    def fail_job(self, kind: str, reason: str) -> None:
        self._job_faults.setdefault(kind, []).append(reason)

    def stick(self, kind: str) -> None:
        self._stuck.append(kind)

    def created(self, kind: str) -> list[Job]:
        return [j for j in self.jobs.values() if j.kind == kind]

    # ---- state machine ---------------------------------------------------------------------------
    def _new_job(self, kind: str, name: str, arn: str, fields: dict, failure: str | None = None) -> Job:
        if not (1 <= len(name) <= 63 and NAME.match(name)):
            raise ApiError("InvalidInputException", f"name {name!r} must match {NAME.pattern} (1-63 characters)")
        if any(j.kind == kind and j.name == name for j in self.jobs.values()):
            raise ApiError("ResourceAlreadyExistsException", f"{kind} {name} already exists")
        if self._job_faults.get(kind):
            failure = self._job_faults[kind].pop(0)
        stuck = kind in self._stuck
        if stuck:
            self._stuck.remove(kind)
        running = self.job_seconds_by_kind.get(kind, self.job_seconds)
        job = Job(kind, name, arn, time.time(), fields, self.pending_seconds, running, failure, stuck)
        self.jobs[arn] = job
        return job

    def status(self, job: Job) -> str:
        batch = job.kind == "batch"
        age = time.time() - job.started
        if job.stopped_at is not None:
            return "CREATE STOPPED" if time.time() - job.stopped_at >= job.pending else "CREATE STOPPING"
        if age < job.pending:
            return "PENDING" if batch else "CREATE PENDING"
        if job.stuck or age < job.pending + job.running:
            return "IN PROGRESS" if batch else "CREATE IN_PROGRESS"
        if job.failure:
            return "CREATE FAILED"
        if not job.finished and job.on_active:
            job.on_active()
        job.finished = True
        return "ACTIVE"

    def _in_progress(self, job: Job) -> bool:
        return self.status(job) in ("CREATE PENDING", "CREATE IN_PROGRESS", "PENDING", "IN PROGRESS", "CREATE STOPPING")

    def _describe(self, job: Job, arn_key: str) -> dict:
        body = {**job.fields, arn_key: job.arn, "status": self.status(job), "creationDateTime": job.started,
                "lastUpdatedDateTime": time.time()}  # fmt: skip
        if body["status"] == "CREATE FAILED":
            body["failureReason"] = job.failure
        return body

    def _summaries(self, kind: str, arn_key: str, parent_key: str, params: dict, keep: tuple[str, ...]) -> list[dict]:
        """A List* answer: the summary fields of the jobs of ``kind`` under the requested parent (or all)."""
        wanted = params.get(parent_key)
        described = [self._describe(j, arn_key) for j in self.created(kind) if wanted in (None, j.fields[parent_key])]
        return [{k: d[k] for k in (arn_key, *keep) if k in d} for d in described]

    def _job(self, arn: str, kind: str) -> Job:
        job = self.jobs.get(arn)
        if job is None or job.kind != kind:
            raise ApiError("ResourceNotFoundException", f"{arn} not found")
        return job

    # ---- S3 --------------------------------------------------------------------------------------
    def _s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name=self.region, aws_access_key_id="fake",
                            aws_secret_access_key="fake")  # fmt: skip

    def _read_objects(self, location: str) -> list[tuple[str, str]]:
        bucket, _, key = location.removeprefix("s3://").partition("/")
        s3 = self._s3()
        keys = ([o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])]
                if key.endswith("/") or not key else [key])  # fmt: skip
        return [(k, s3.get_object(Bucket=bucket, Key=k)["Body"].read().decode()) for k in keys if not k.endswith("/")]

    # ---- operations ------------------------------------------------------------------------------
    def CreateDatasetImportJob(self, p: dict) -> dict:  # noqa: N802 - the API's operation names
        dataset = self.datasets.get(p["datasetArn"])
        if dataset is None:
            raise ApiError("ResourceNotFoundException", f"dataset {p['datasetArn']} not found")
        active = sum(1 for j in self.created("import") if self._in_progress(j))
        if active >= 5:
            raise ApiError("LimitExceededException", f"{active} dataset import jobs are in progress (limit 5)")
        mode = p.get("importMode", "FULL")
        failure, rows, items = self._check_import(dataset["type"], p["dataSource"]["dataLocation"], mode, dataset)
        job = self._new_job("import", p["jobName"], self.arn("dataset-import-job", p["jobName"]),
                            {"jobName": p["jobName"], "datasetArn": p["datasetArn"], "dataSource": p["dataSource"],
                             "roleArn": p["roleArn"], "importMode": mode}, failure)  # fmt: skip

        def load():
            dataset["rows"] = rows + (dataset["rows"] if mode == "INCREMENTAL" else 0)
            dataset["items"] = items + (dataset["items"] if mode == "INCREMENTAL" else Counter())

        job.on_active = load
        return {"datasetImportJobArn": job.arn}

    def _check_import(self, kind: str, location: str, mode: str, dataset: dict) -> tuple[str | None, int, Counter]:
        try:
            files = self._read_objects(location)
        except Exception as exc:  # noqa: BLE001 - becomes the job's failureReason, as in the service
            return f"Failed to read {location}: {exc}", 0, Counter()
        if not files:
            return f"Input file not found: {location}", 0, Counter()
        rows, items = 0, Counter()
        for key, text in files:
            reader = csv.reader(io.StringIO(text))
            header = next(reader, [])
            if header[: len(HEADERS[kind])] != HEADERS[kind]:
                return f"{key}: the header {header} does not match the {kind} dataset schema", 0, Counter()
            for record in reader:
                rows += 1
                if kind == "interactions":
                    items[record[1]] += 1
        total = rows + (dataset["rows"] if mode == "INCREMENTAL" else 0)
        if kind == "interactions" and total < MIN_INTERACTIONS:
            return (
                f"The interactions dataset must have at least {MIN_INTERACTIONS} records; it would have {total}",
                0,
                items,
            )
        return None, rows, items

    def DescribeDatasetImportJob(self, p: dict) -> dict:  # noqa: N802
        return {
            "datasetImportJob": self._describe(self._job(p["datasetImportJobArn"], "import"), "datasetImportJobArn")
        }

    def ListDatasetImportJobs(self, p: dict) -> dict:  # noqa: N802
        keep = ("jobName", "status", "creationDateTime", "lastUpdatedDateTime", "failureReason", "importMode")
        return {"datasetImportJobs": self._summaries("import", "datasetImportJobArn", "datasetArn", p, keep)}

    def CreateSolutionVersion(self, p: dict) -> dict:  # noqa: N802
        solution = self.solutions.get(p["solutionArn"])
        if solution is None:
            raise ApiError("ResourceNotFoundException", f"solution {p['solutionArn']} not found")
        versions = [j for j in self.created("solution_version") if j.fields["solutionArn"] == p["solutionArn"]]
        if any(self._in_progress(v) for v in versions):
            raise ApiError("ResourceInUseException", f"a solution version of {p['solutionArn']} is being created")
        mode = p.get("trainingMode", "FULL")
        if mode == "UPDATE":
            if "user-personalization" not in solution["recipeArn"]:
                raise ApiError("InvalidInputException", "trainingMode UPDATE needs a User-Personalization recipe")
            if not any(self.status(v) == "ACTIVE" and v.fields["trainingMode"] == "FULL" for v in versions):
                raise ApiError("InvalidInputException", "trainingMode UPDATE needs an ACTIVE solution version "
                                                        "trained with FULL")  # fmt: skip
        interactions = next(d for d in self.datasets.values() if d["type"] == "interactions")
        failure = None
        if interactions["rows"] < MIN_INTERACTIONS:
            failure = f"The interactions dataset has {interactions['rows']} records; {MIN_INTERACTIONS} are needed"
        name = p.get("name") or f"sv-{next(self._ids)}"
        arn = f"{p['solutionArn']}/{next(self._ids):08x}"
        job = self._new_job("solution_version", name, arn, {"name": name, "solutionArn": p["solutionArn"],
                                                            "trainingMode": mode}, failure)  # fmt: skip
        job.fields["_metrics"] = self.metrics.pop(0) if self.metrics else dict(DEFAULT_METRICS)
        return {"solutionVersionArn": arn}

    def DescribeSolutionVersion(self, p: dict) -> dict:  # noqa: N802
        body = self._describe(self._job(p["solutionVersionArn"], "solution_version"), "solutionVersionArn")
        body.pop("_metrics")
        return {"solutionVersion": body}

    def ListSolutionVersions(self, p: dict) -> dict:  # noqa: N802
        keep = ("status", "trainingMode", "creationDateTime", "lastUpdatedDateTime", "failureReason")
        return {"solutionVersions": self._summaries("solution_version", "solutionVersionArn", "solutionArn", p, keep)}

    def StopSolutionVersionCreation(self, p: dict) -> dict:  # noqa: N802
        job = self._job(p["solutionVersionArn"], "solution_version")
        if self.status(job) not in ("CREATE PENDING", "CREATE IN_PROGRESS"):
            raise ApiError("InvalidInputException", f"{job.arn} is {self.status(job)}: it cannot be stopped")
        job.stopped_at = time.time()
        return {}

    def DescribeSolution(self, p: dict) -> dict:  # noqa: N802
        if p["solutionArn"] not in self.solutions:
            raise ApiError("ResourceNotFoundException", f"{p['solutionArn']} not found")
        return {"solution": self.solutions[p["solutionArn"]]}

    def GetSolutionMetrics(self, p: dict) -> dict:  # noqa: N802
        job = self._job(p["solutionVersionArn"], "solution_version")
        if self.status(job) != "ACTIVE":
            raise ApiError("ResourceInUseException", f"{job.arn} is {self.status(job)}")
        return {"solutionVersionArn": job.arn, "metrics": job.fields["_metrics"]}

    def CreateBatchInferenceJob(self, p: dict) -> dict:  # noqa: N802
        version = self._job(p["solutionVersionArn"], "solution_version")
        if self.status(version) != "ACTIVE":
            raise ApiError("InvalidInputException", f"{version.arn} is {self.status(version)}, not ACTIVE")
        job = self._new_job("batch", p["jobName"], self.arn("batch-inference-job", p["jobName"]),
                            {k: p[k] for k in ("jobName", "solutionVersionArn", "jobInput", "jobOutput", "roleArn")
                             if k in p} | {"numResults": p.get("numResults", 25)})  # fmt: skip
        job.on_active = lambda: self._write_batch_output(job)
        return {"batchInferenceJobArn": job.arn}

    def _write_batch_output(self, job: Job) -> None:
        interactions = next(d for d in self.datasets.values() if d["type"] == "interactions")
        popular = [item for item, _ in interactions["items"].most_common(job.fields["numResults"])]
        output = job.fields["jobOutput"]["s3DataDestination"]["path"]
        bucket, _, prefix = output.removeprefix("s3://").partition("/")
        for key, text in self._read_objects(job.fields["jobInput"]["s3DataSource"]["path"]):
            lines = []
            for line in filter(None, text.splitlines()):
                record = json.loads(line)
                lines.append(json.dumps({"input": record, "output": {
                    "recommendedItems": popular, "scores": [round(1 / (r + 1), 4) for r in range(len(popular))]},
                    "error": None}))  # fmt: skip
            target = f"{prefix.rstrip('/')}/{key.rsplit('/', 1)[-1]}.out".lstrip("/")
            self._s3().put_object(Bucket=bucket, Key=target, Body="\n".join(lines).encode())

    def DescribeBatchInferenceJob(self, p: dict) -> dict:  # noqa: N802
        return {"batchInferenceJob": self._describe(self._job(p["batchInferenceJobArn"], "batch"),
                                                    "batchInferenceJobArn")}  # fmt: skip

    def ListBatchInferenceJobs(self, p: dict) -> dict:  # noqa: N802
        keep = ("jobName", "status", "creationDateTime", "lastUpdatedDateTime", "failureReason", "solutionVersionArn")
        return {"batchInferenceJobs": self._summaries("batch", "batchInferenceJobArn", "solutionVersionArn", p, keep)}

    def UpdateCampaign(self, p: dict) -> dict:  # noqa: N802
        campaign = self.campaigns.get(p["campaignArn"])
        if campaign is None:
            raise ApiError("ResourceNotFoundException", f"{p['campaignArn']} not found")
        latest = campaign.get("_update")
        if latest is not None and self._in_progress(latest):
            raise ApiError("ResourceInUseException", f"{p['campaignArn']} is being updated")
        version = self._job(p["solutionVersionArn"], "solution_version")
        if self.status(version) != "ACTIVE":
            raise ApiError("InvalidInputException", f"{version.arn} is not ACTIVE")
        update = self._new_job(
            "campaign_update",
            f"update-{next(self._ids)}",
            f"{p['campaignArn']}#update",
            {
                "solutionVersionArn": version.arn,
                "minProvisionedTPS": p.get("minProvisionedTPS", campaign["minProvisionedTPS"]),
            },
        )
        del self.jobs[update.arn]  # an update is not a separate resource

        def switch():
            campaign["solutionVersionArn"] = version.arn
            campaign["minProvisionedTPS"] = update.fields["minProvisionedTPS"]

        update.on_active = switch
        campaign["_update"] = update
        return {"campaignArn": p["campaignArn"]}

    def DescribeCampaign(self, p: dict) -> dict:  # noqa: N802
        campaign = self.campaigns.get(p["campaignArn"])
        if campaign is None:
            raise ApiError("ResourceNotFoundException", f"{p['campaignArn']} not found")
        body = {k: v for k, v in campaign.items() if not k.startswith("_")}
        if update := campaign.get("_update"):
            body["latestCampaignUpdate"] = {
                k: v
                for k, v in self._describe(update, "campaignArn").items()
                if k
                in (
                    "solutionVersionArn",
                    "minProvisionedTPS",
                    "status",
                    "failureReason",
                    "creationDateTime",
                    "lastUpdatedDateTime",
                )
            }
            body = {**body, "solutionVersionArn": campaign["solutionVersionArn"]}  # switched once ACTIVE
        return {"campaign": body}

    # ---- HTTP ------------------------------------------------------------------------------------
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/", self._dispatch, methods=["POST"])])

    async def _dispatch(self, request: Request) -> JSONResponse:
        target = request.headers.get("x-amz-target", "")
        service, _, operation = target.partition(".")
        params = json.loads(await request.body() or b"{}")
        with self._lock:
            self.calls.append((operation, params))
            try:
                if service != "AmazonPersonalize" or not hasattr(self, operation) or not operation[0].isupper():
                    raise ApiError("UnknownOperationException", f"unknown operation {target!r}")
                if self._faults.get(operation):
                    raise self._faults[operation].pop(0)
                return JSONResponse(getattr(self, operation)(params), media_type="application/x-amz-json-1.1")
            except ApiError as error:
                return JSONResponse({"__type": error.code, "message": error.message}, status_code=error.status,
                                    headers={"x-amzn-ErrorType": error.code},
                                    media_type="application/x-amz-json-1.1")  # fmt: skip


def airflow_connection(personalize_url: str | None, s3_endpoint: str | None, region: str = "us-east-1") -> str:
    """The Airflow AWS connection (``AIRFLOW_CONN_<ID>`` JSON): S3 on ``s3_endpoint`` (moto), Personalize here."""
    extra: dict = {"region_name": region}
    if s3_endpoint:
        extra["endpoint_url"] = s3_endpoint
    if personalize_url:
        extra["service_config"] = {"personalize": {"endpoint_url": personalize_url}}
    return json.dumps({"conn_type": "aws", "login": "emulated", "password": "emulated", "extra": extra})
