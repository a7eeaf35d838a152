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

The provisioning API (dataset groups, schemas, datasets, solutions, campaigns, event trackers,
filters) is in :mod:`recsys_devtools.emulators.personalize_resources`; the real-time services (personalize-events,
personalize-runtime, REST-JSON on ``/events``, ``/users``, ``/items``, ``/recommendations`` of the same
server) and dataset export jobs in :mod:`recsys_devtools.emulators.personalize_realtime`.

Faults: ``fail_next(op, code, status)`` answers the next call of ``op`` with that error;
``fail_job(kind, reason)`` makes the next job of ``kind`` end ``CREATE FAILED`` with that
``failureReason``; ``stick(kind)`` keeps the next job of ``kind`` in progress until ``finish_now(arn)``; ``hold(op)``
carries out the next call of ``op`` but holds its answer until released. Kinds:
``import``, ``solution_version``, ``batch``, ``campaign_update``, ``export`` and the resource kinds.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from recsys_devtools.emulators.aws_errors import ApiError
from recsys_devtools.emulators.personalize_realtime import RealtimeOperations
from recsys_devtools.emulators.personalize_resources import RECIPE_PREFIX, ResourceOperations
from recsys_devtools.emulators.running import Hold, released

NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9\-_]*$")
HEADERS = {"interactions": ["USER_ID", "ITEM_ID", "TIMESTAMP"], "users": ["USER_ID"], "items": ["ITEM_ID"]}
MIN_INTERACTIONS = 1000
SERVICES = ("personalize", "personalize-events", "personalize-runtime")  # all answered by this one server
REST_ROUTES = {
    "/events": "PutEvents",
    "/users": "PutUsers",
    "/items": "PutItems",
    "/recommendations": "GetRecommendations",
}
DEFAULT_METRICS = {"coverage": 0.3, "precision_at_25": 0.05, "normalized_discounted_cumulative_gain_at_10": 0.1}


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
    deleted_at: float | None = None


@dataclass
class PersonalizeFake(ResourceOperations, RealtimeOperations):
    region: str = "us-east-1"
    account: str = "123456789012"
    s3_endpoint: str | None = None
    pending_seconds: float = 0.1
    job_seconds: float = 0.4
    job_seconds_by_kind: dict = field(default_factory=dict)  # e.g. {"solution_version": 30}: overrides job_seconds
    recipe: str = "aws-user-personalization-v2"
    jobs: dict = field(default_factory=dict)  # arn -> Job
    datasets: dict = field(default_factory=dict)  # arn -> {"type", "rows", "items": Counter, "seen", "records", ...}
    campaigns: dict = field(default_factory=dict)  # arn -> what it serves (the resource itself is a Job)
    calls: list = field(default_factory=list)  # (operation, params)
    metrics: list = field(default_factory=list)  # metrics for the next solution versions, in order
    _faults: dict = field(default_factory=dict)
    _job_faults: dict = field(default_factory=dict)
    holds: dict = field(default_factory=dict)  # operation -> event that releases its held answer
    _stuck: list = field(default_factory=list)
    _broken: set = field(default_factory=set)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.RLock = field(default_factory=threading.RLock)

    error = ApiError

    # ---- set-up (what a platform team created earlier, ACTIVE at once) --------------------------------
    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:personalize:{self.region}:{self.account}:{kind}/{name}"

    def create_dataset_group(self, name: str = "recsys") -> dict:
        """A dataset group with interactions/users/items datasets and one solution; returns their ARNs."""
        schema = json.dumps({"type": "record", "name": "Any", "fields": [{"name": "ID", "type": "string"}]})
        arns = {"dataset_group": self._ready(self.CreateDatasetGroup({"name": name})["datasetGroupArn"])}
        arns["schema"] = self.CreateSchema({"name": f"{name}-schema", "schema": schema})["schemaArn"]
        for kind in HEADERS:
            arns[kind] = self._ready(
                self.CreateDataset(
                    {
                        "name": f"{name}-{kind}",
                        "schemaArn": arns["schema"],
                        "datasetGroupArn": arns["dataset_group"],
                        "datasetType": kind.upper(),
                    }
                )["datasetArn"]
            )
        arns["solution"] = self._ready(
            self.CreateSolution(
                {
                    "name": f"{name}-solution",
                    "performAutoTraining": False,
                    "datasetGroupArn": arns["dataset_group"],
                    "recipeArn": RECIPE_PREFIX + self.recipe,
                }
            )["solutionArn"]
        )
        return arns

    def create_campaign(self, solution_arn: str, name: str = "recsys-campaign") -> str:
        """A campaign serving a FULL version trained at once (as after the first full retrain)."""
        version = self._new_job(
            "solution_version",
            "initial-full",
            f"{solution_arn}/initial",
            {
                "name": "initial-full",
                "solutionArn": solution_arn,
                "trainingMode": "FULL",
                "_metrics": dict(DEFAULT_METRICS),
            },
        )
        self._ready(version.arn)
        return self._ready(self.CreateCampaign({"name": name, "solutionVersionArn": version.arn})["campaignArn"])

    def _ready(self, arn: str) -> str:
        self.jobs[arn].started -= 3600
        return arn

    # ---- fault injection -------------------------------------------------------------------------
    def fail_next(
        self, operation: str, code: str = "ThrottlingException", status: int = 400, message: str = "injected"
    ) -> None:
        self._faults.setdefault(operation, []).append(ApiError(code, message, status))

    def fail_job(self, kind: str, reason: str) -> None:
        self._job_faults.setdefault(kind, []).append(reason)

    def stick(self, kind: str) -> None:
        self._stuck.append(kind)

    def finish_now(self, arn: str) -> None:
        """A stuck or running job ends now (ACTIVE, or its injected failure) at its next describe."""
        self.jobs[arn].stuck = False
        self._ready(arn)

    def hold(self, operation: str) -> Hold:
        """The next ``operation`` call is carried out but its answer is held until the returned event is set:
        the call landed, the client is still waiting (then killed, in chaos tests)."""
        release = Hold()
        self.holds[operation] = release
        return release

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
        if job.deleted_at is not None:
            return "DELETE PENDING"
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
        body = {
            **job.fields,
            arn_key: job.arn,
            "status": self.status(job),
            "creationDateTime": job.started,
            "lastUpdatedDateTime": time.time(),
        }
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

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name=self.region,
            aws_access_key_id="fake",
            aws_secret_access_key="fake",
        )

    def _read_objects(self, location: str) -> list[tuple[str, str]]:
        bucket, _, key = location.removeprefix("s3://").partition("/")
        s3 = self._s3()
        keys = (
            [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])]
            if key.endswith("/") or not key
            else [key]
        )
        return [(k, s3.get_object(Bucket=bucket, Key=k)["Body"].read().decode()) for k in keys if not k.endswith("/")]

    # ---- operations ------------------------------------------------------------------------------
    def CreateDatasetImportJob(self, p: dict) -> dict:  # noqa: N802 - the API's operation names
        dataset = self.datasets[self._resource(p["datasetArn"], "dataset", active=True).arn]
        active = sum(1 for j in self.created("import") if self._in_progress(j))
        if active >= 5:
            raise ApiError("LimitExceededException", f"{active} dataset import jobs are in progress (limit 5)")
        mode = p.get("importMode", "FULL")
        failure, records = self._check_import(dataset["type"], p["dataSource"]["dataLocation"], mode, dataset)
        job = self._new_job(
            "import",
            p["jobName"],
            self.arn("dataset-import-job", p["jobName"]),
            {
                "jobName": p["jobName"],
                "datasetArn": p["datasetArn"],
                "dataSource": p["dataSource"],
                "roleArn": p["roleArn"],
                "importMode": mode,
            },
            failure,
        )

        def load():
            if mode == "FULL":
                dataset.update({k: v for k, v in self._empty_dataset(dataset["type"]).items() if k != "events"})
            dataset["rows"] += len(records)
            for record in records:
                if dataset["type"] == "interactions":
                    dataset["imported"].append(record)
                    self._interacted(dataset, record["user_id"], record["item_id"])
                else:
                    dataset["records"][record.pop("id")] = record

        job.on_active = load
        return {"datasetImportJobArn": job.arn}

    def _check_import(self, kind: str, location: str, mode: str, dataset: dict) -> tuple[str | None, list[dict]]:
        """The failure reason (or ``None``) and the records: export columns for interactions, else id + fields."""
        try:
            files = self._read_objects(location)
        except Exception as exc:  # noqa: BLE001 - becomes the job's failureReason, as in the service
            return f"Failed to read {location}: {exc}", []
        if not files:
            return f"Input file not found: {location}", []
        records = []
        for key, text in files:
            reader = csv.reader(io.StringIO(text))
            header = next(reader, [])
            if header[: len(HEADERS[kind])] != HEADERS[kind]:
                return f"{key}: the header {header} does not match the {kind} dataset schema", []
            for row in reader:
                if kind == "interactions":
                    event = row[3] if len(row) > 3 else ""
                    records.append(
                        {
                            "timestamp": int(row[2]) * 1000,
                            "session_id": "",
                            "event_type": event,
                            "user_id": row[0],
                            "item_id": row[1],
                            "impression": "",
                            "recommendation_id": "",
                        }
                    )
                else:
                    records.append({"id": row[0], **{h.lower(): v for h, v in zip(header[1:], row[1:], strict=False)}})
        total = len(records) + (dataset["rows"] if mode == "INCREMENTAL" else 0)
        if kind == "interactions" and total < MIN_INTERACTIONS:
            return f"The interactions dataset must have at least {MIN_INTERACTIONS} records; it would have {total}", []
        return None, records

    def DescribeDatasetImportJob(self, p: dict) -> dict:  # noqa: N802
        return {
            "datasetImportJob": self._describe(self._job(p["datasetImportJobArn"], "import"), "datasetImportJobArn")
        }

    def ListDatasetImportJobs(self, p: dict) -> dict:  # noqa: N802
        keep = ("jobName", "status", "creationDateTime", "lastUpdatedDateTime", "failureReason", "importMode")
        return {"datasetImportJobs": self._summaries("import", "datasetImportJobArn", "datasetArn", p, keep)}

    def CreateSolutionVersion(self, p: dict) -> dict:  # noqa: N802
        solution = self._resource(p["solutionArn"], "solution", active=True).fields
        versions = [j for j in self.created("solution_version") if j.fields["solutionArn"] == p["solutionArn"]]
        if any(self._in_progress(v) for v in versions):
            raise ApiError("ResourceInUseException", f"a solution version of {p['solutionArn']} is being created")
        mode = p.get("trainingMode", "FULL")
        if mode == "UPDATE":
            if "user-personalization" not in solution["recipeArn"]:
                raise ApiError("InvalidInputException", "trainingMode UPDATE needs a User-Personalization recipe")
            if not any(self.status(v) == "ACTIVE" and v.fields["trainingMode"] == "FULL" for v in versions):
                raise ApiError(
                    "InvalidInputException", "trainingMode UPDATE needs an ACTIVE solution version trained with FULL"
                )
        interactions = self._group_dataset(solution["datasetGroupArn"], "interactions")
        records = interactions["rows"] + len(interactions["events"])
        failure = None
        if records < MIN_INTERACTIONS:
            failure = f"The interactions dataset has {records} records; {MIN_INTERACTIONS} are needed"
        name = p.get("name") or f"sv-{next(self._ids)}"
        arn = f"{p['solutionArn']}/{next(self._ids):08x}"
        job = self._new_job(
            "solution_version",
            name,
            arn,
            {"name": name, "solutionArn": p["solutionArn"], "trainingMode": mode},
            failure,
        )
        job.fields["_metrics"] = self.metrics.pop(0) if self.metrics else dict(DEFAULT_METRICS)
        if "next" in self._broken:
            self._broken.discard("next")
            self._broken.add(arn)
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

    def GetSolutionMetrics(self, p: dict) -> dict:  # noqa: N802
        job = self._job(p["solutionVersionArn"], "solution_version")
        if self.status(job) != "ACTIVE":
            raise ApiError("ResourceInUseException", f"{job.arn} is {self.status(job)}")
        return {"solutionVersionArn": job.arn, "metrics": job.fields["_metrics"]}

    def CreateBatchInferenceJob(self, p: dict) -> dict:  # noqa: N802
        version = self._job(p["solutionVersionArn"], "solution_version")
        if self.status(version) != "ACTIVE":
            raise ApiError("InvalidInputException", f"{version.arn} is {self.status(version)}, not ACTIVE")
        job = self._new_job(
            "batch",
            p["jobName"],
            self.arn("batch-inference-job", p["jobName"]),
            {
                k: p[k]
                for k in ("jobName", "solutionVersionArn", "jobInput", "jobOutput", "roleArn", "filterArn")
                if k in p
            }
            | {"numResults": p.get("numResults", 25)},
        )
        job.on_active = lambda: self._write_batch_output(job)
        return {"batchInferenceJobArn": job.arn}

    def _write_batch_output(self, job: Job) -> None:
        solution = self.jobs[job.fields["solutionVersionArn"]].fields["solutionArn"]
        output = job.fields["jobOutput"]["s3DataDestination"]["path"]
        bucket, _, prefix = output.removeprefix("s3://").partition("/")
        for key, text in self._read_objects(job.fields["jobInput"]["s3DataSource"]["path"]):
            lines = []
            for line in filter(None, text.splitlines()):
                record = json.loads(line)
                popular = self.recommend(
                    solution, record.get("userId", ""), job.fields["numResults"], job.fields.get("filterArn")
                )
                lines.append(
                    json.dumps(
                        {
                            "input": record,
                            "output": {
                                "recommendedItems": popular,
                                "scores": [round(1 / (r + 1), 4) for r in range(len(popular))],
                            },
                            "error": None,
                        }
                    )
                )
            target = f"{prefix.rstrip('/')}/{key.rsplit('/', 1)[-1]}.out".lstrip("/")
            self._s3().put_object(Bucket=bucket, Key=target, Body="\n".join(lines).encode())

    def DescribeBatchInferenceJob(self, p: dict) -> dict:  # noqa: N802
        return {
            "batchInferenceJob": self._describe(self._job(p["batchInferenceJobArn"], "batch"), "batchInferenceJobArn")
        }

    def ListBatchInferenceJobs(self, p: dict) -> dict:  # noqa: N802
        keep = ("jobName", "status", "creationDateTime", "lastUpdatedDateTime", "failureReason", "solutionVersionArn")
        return {"batchInferenceJobs": self._summaries("batch", "batchInferenceJobArn", "solutionVersionArn", p, keep)}

    def UpdateCampaign(self, p: dict) -> dict:  # noqa: N802
        job = self._resource(p["campaignArn"], "campaign")
        campaign = self.campaigns[job.arn]
        latest = campaign.get("_update")
        if self._in_progress(job) or (latest is not None and self._in_progress(latest)):
            raise ApiError("ResourceInUseException", f"{p['campaignArn']} is being created or updated")
        requested = p.get("solutionVersionArn", campaign["requested"])
        version = self._serving_version(requested)
        config = {**campaign["campaignConfig"], **p.get("campaignConfig", {})}
        update = self._new_job(
            "campaign_update",
            f"update-{next(self._ids)}",
            f"{job.arn}#update",
            {
                "solutionVersionArn": requested,
                "campaignConfig": config,
                "minProvisionedTPS": p.get("minProvisionedTPS", campaign["minProvisionedTPS"]),
            },
        )
        del self.jobs[update.arn]  # an update is not a separate resource

        def switch():
            campaign.update(
                solutionVersionArn=version.arn,
                requested=requested,
                campaignConfig=config,
                minProvisionedTPS=update.fields["minProvisionedTPS"],
            )

        update.on_active = switch
        campaign["_update"] = update
        return {"campaignArn": job.arn}

    # ---- HTTP ------------------------------------------------------------------------------------
    def app(self) -> Starlette:
        rest = [Route(path, self._rest(operation), methods=["POST"]) for path, operation in REST_ROUTES.items()]
        return Starlette(routes=[Route("/", self._dispatch, methods=["POST"]), *rest])

    async def _dispatch(self, request: Request) -> JSONResponse:
        """JSON 1.1: the operation is named by ``X-Amz-Target: AmazonPersonalize.<Op>``."""
        service, _, operation = request.headers.get("x-amz-target", "").partition(".")
        if service != "AmazonPersonalize" or operation in REST_ROUTES.values():
            operation = ""
        answer = self._answer(operation, await request.body(), "application/x-amz-json-1.1")
        if release := self.holds.pop(operation, None):
            await released(release)
        return answer

    def _rest(self, operation: str):
        """REST-JSON (personalize-events, personalize-runtime): the operation is named by the path."""

        async def handle(request: Request) -> JSONResponse:
            return self._answer(operation, await request.body(), "application/json")

        return handle

    def _answer(self, operation: str, body: bytes, media_type: str) -> JSONResponse:
        params = json.loads(body or b"{}")
        with self._lock:
            self.calls.append((operation, params))
            try:
                if not operation or not hasattr(self, operation) or not operation[0].isupper():
                    raise ApiError("UnknownOperationException", f"unknown operation {operation!r}")
                if self._faults.get(operation):
                    raise self._faults[operation].pop(0)
                return JSONResponse(getattr(self, operation)(params), media_type=media_type)
            except ApiError as error:
                return error.response(media_type)


def airflow_connection(personalize_url: str | None, s3_endpoint: str | None, region: str = "us-east-1") -> str:
    """The Airflow AWS connection (``AIRFLOW_CONN_<ID>`` JSON): S3 on ``s3_endpoint`` (moto), the three
    Personalize services here."""
    extra: dict = {"region_name": region}
    if s3_endpoint:
        extra["endpoint_url"] = s3_endpoint
    if personalize_url:
        extra["service_config"] = {service: {"endpoint_url": personalize_url} for service in SERVICES}
    return json.dumps({"conn_type": "aws", "login": "emulated", "password": "emulated", "extra": extra})
