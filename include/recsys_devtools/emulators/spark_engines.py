"""Local stand-ins for AWS Glue and EMR Serverless that really run the submitted PySpark job.

The wire protocols are the services' own, so the providers' operators and triggers talk to them with
real boto3 / aiobotocore clients (``endpoint_url``): Glue over JSON 1.1 (``X-Amz-Target: AWSGlue.<Op>``:
GetJob, CreateJob, UpdateJob, StartJobRun, GetJobRun, GetJobRuns, BatchStopJobRun) and EMR Serverless
over REST-JSON (GetApplication, StartApplication, StartJobRun, GetJobRun, CancelJobRun). A job run is a
``spark-submit --master local[2]`` process of the script the request names (``file://`` URIs), with the
engine's own way of passing dependencies translated: Glue's ``--extra-py-files`` / ``--extra-jars`` /
``--conf`` job arguments, EMR Serverless's ``sparkSubmitParameters``. Code the engines fetch from S3
(script, ``--py-files``, jars: both services require ``s3://``) is downloaded from the S3 endpoint given
(moto in the tests); the data URIs in the job spec are read by the local Spark as they are. Like the
Vertex emulator's custom jobs, the run's state follows the process: RUNNING, then SUCCEEDED or FAILED
with the log's last error.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from recsys_devtools.emulators.aws_errors import ApiError

GLUE_ARGUMENTS = ("--extra-py-files", "--extra-jars", "--conf")  # consumed by Glue, not passed to the script


class SparkRun:
    """One job run: a local spark-submit process and its log."""

    def __init__(self, command: list[str], log_path: Path):
        self.started = datetime.now(UTC)
        self.log_path = log_path
        self.cancelled = False
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        with open(log_path, "wb") as log:  # spark-submit finds its launcher scripts on PATH
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def state(self) -> tuple[str, str]:
        """(state, error message) in the engine-neutral words RUNNING / SUCCEEDED / FAILED / CANCELLED."""
        code = self.process.poll()
        if self.cancelled:
            return "CANCELLED", "cancelled by request"
        if code is None:
            return "RUNNING", ""
        if code == 0:
            return "SUCCEEDED", ""
        errors = [line for line in self.log_path.read_text(errors="replace").splitlines() if "Error" in line]
        return "FAILED", (errors[-1] if errors else f"spark-submit exited with {code}")[-900:]

    def cancel(self) -> None:
        self.cancelled = True
        self.process.terminate()


# one machine stands in for the service's cluster: no web UI, and the shuffle sized for two cores (as run_local)
LOCAL_CONF = ("spark.ui.enabled=false", "spark.sql.shuffle.partitions=8")


def spark_submit(script: str, args: list[str], options: list[str]) -> list[str]:
    """The local spark-submit command line for a job the engines were asked to run."""
    binary = str(Path(sys.executable).parent / "spark-submit")
    local = [f"spark.pyspark.python={sys.executable}", *LOCAL_CONF]
    return [binary, "--master", "local[2]", *(a for c in local for a in ("--conf", c)), *options, script, *args]


class SparkEnginesFake:
    """Glue and EMR Serverless, one server; ``calls`` records ``(service, operation, params)``."""

    def __init__(self, work_dir: Path, s3_endpoint: str | None = None, emr_application_id: str = "00recsys-app"):
        self.work_dir = Path(work_dir)
        self.s3_endpoint = s3_endpoint
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.calls: list[tuple[str, str, dict]] = []
        self.glue_jobs: dict[str, dict] = {}
        self.glue_runs: dict[str, dict] = {}
        self.emr_application = {"applicationId": emr_application_id, "state": "STARTED", "type": "Spark"}
        self.emr_runs: dict[str, dict] = {}
        self._lock = threading.Lock()

    def _start(self, command: list[str]) -> SparkRun:
        return SparkRun([self._fetched(part) for part in command], self.work_dir / f"run-{uuid.uuid4().hex[:8]}.log")

    def _fetched(self, value: str) -> str:
        """``s3://`` code URIs (comma-separated lists too) replaced by local copies, as the engines fetch them."""
        if "s3://" not in value:
            return value
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="emulated",
            aws_secret_access_key="emulated",
        )
        local = []
        for uri in value.split(","):
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            target = self.work_dir / "code" / bucket / key
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(target))
            local.append(str(target))
        return ",".join(local)

    # ---- Glue ------------------------------------------------------------------------------------
    def GetJob(self, p: dict) -> dict:  # noqa: N802 - the API's operation names
        if p["JobName"] not in self.glue_jobs:
            raise ApiError("EntityNotFoundException", f"Job {p['JobName']} not found")
        return {"Job": self.glue_jobs[p["JobName"]]}

    def CreateJob(self, p: dict) -> dict:  # noqa: N802
        if p["Name"] in self.glue_jobs:
            raise ApiError("IdempotentParameterMismatchException", f"Job {p['Name']} already exists")
        for key in ("Role", "Command"):
            if key not in p:
                raise ApiError("InvalidInputException", f"{key} is required")
        self.glue_jobs[p["Name"]] = {**p, "CreatedOn": datetime.now(UTC).timestamp()}
        return {"Name": p["Name"]}

    def UpdateJob(self, p: dict) -> dict:  # noqa: N802
        self.GetJob(p)
        self.glue_jobs[p["JobName"]] = {**p["JobUpdate"], "Name": p["JobName"]}
        return {"JobName": p["JobName"]}

    def StartJobRun(self, p: dict) -> dict:  # noqa: N802
        job = self.GetJob(p)["Job"]
        arguments = {**job.get("DefaultArguments", {}), **p.get("Arguments", {})}
        options = []
        if arguments.get("--extra-py-files"):
            options += ["--py-files", arguments["--extra-py-files"]]
        if arguments.get("--extra-jars"):
            options += ["--jars", arguments["--extra-jars"]]
        for setting in (arguments.get("--conf") or "").split(" --conf "):
            options += ["--conf", setting] if setting else []
        run_id = f"jr_{uuid.uuid4().hex}"
        script_args = [x for k, v in arguments.items() if k not in GLUE_ARGUMENTS for x in (k, v)]
        script_args += ["--JOB_NAME", job["Name"], "--JOB_RUN_ID", run_id]
        run = self._start(spark_submit(job["Command"]["ScriptLocation"], script_args, options))
        self.glue_runs[run_id] = {
            "Id": run_id,
            "JobName": job["Name"],
            "Arguments": p.get("Arguments", {}),
            "_run": run,
        }
        return {"JobRunId": run_id}

    def _glue_run(self, record: dict) -> dict:
        state, error = record["_run"].state()
        glue_state = {"CANCELLED": "STOPPED"}.get(state, state)
        shown = {k: v for k, v in record.items() if not k.startswith("_")}
        return {
            **shown,
            "JobRunState": glue_state,
            "StartedOn": record["_run"].started.timestamp(),
            **({"ErrorMessage": error} if error else {}),
        }

    def GetJobRun(self, p: dict) -> dict:  # noqa: N802
        record = self.glue_runs.get(p["RunId"])
        if record is None or record["JobName"] != p["JobName"]:
            raise ApiError("EntityNotFoundException", f"Job run {p['RunId']} not found")
        return {"JobRun": self._glue_run(record)}

    def GetJobRuns(self, p: dict) -> dict:  # noqa: N802
        runs = [self._glue_run(r) for r in self.glue_runs.values() if r["JobName"] == p["JobName"]]
        return {"JobRuns": sorted(runs, key=lambda r: r["StartedOn"], reverse=True)}

    def BatchStopJobRun(self, p: dict) -> dict:  # noqa: N802
        for run_id in p["JobRunIds"]:
            self.glue_runs[run_id]["_run"].cancel()
        return {"SuccessfulSubmissions": [{"JobName": p["JobName"], "JobRunId": r} for r in p["JobRunIds"]]}

    # ---- EMR Serverless --------------------------------------------------------------------------
    def _application(self, application_id: str) -> dict:
        if application_id != self.emr_application["applicationId"]:
            raise ApiError("ResourceNotFoundException", f"Application {application_id} not found", 404)
        return self.emr_application

    def emr_get_application(self, path: dict, p: dict) -> dict:
        return {"application": self._application(path["application_id"])}

    def emr_start_application(self, path: dict, p: dict) -> dict:
        self._application(path["application_id"])
        return {}

    def emr_start_job_run(self, path: dict, p: dict) -> dict:
        application_id = path["application_id"]
        self._application(application_id)
        for previous in self.emr_runs.values():  # the API is idempotent on clientToken
            if previous["_token"] == p["clientToken"]:
                return {"applicationId": application_id, "jobRunId": previous["jobRunId"], "arn": previous["arn"]}
        driver = p["jobDriver"]["sparkSubmit"]
        options = shlex.split(driver.get("sparkSubmitParameters", ""))
        run_id = uuid.uuid4().hex[:16]
        arn = f"arn:aws:emr-serverless:us-east-1:000000000000:/applications/{application_id}/jobruns/{run_id}"
        run = self._start(spark_submit(driver["entryPoint"], driver.get("entryPointArguments", []), options))
        self.emr_runs[run_id] = {
            "jobRunId": run_id,
            "applicationId": application_id,
            "arn": arn,
            "name": p.get("name"),
            "executionRoleArn": p["executionRoleArn"],
            "jobDriver": p["jobDriver"],
            "_token": p["clientToken"],
            "_run": run,
        }
        return {"applicationId": application_id, "jobRunId": run_id, "arn": arn}

    def emr_get_job_run(self, path: dict, p: dict) -> dict:
        application_id, run_id = path["application_id"], path["run_id"]
        self._application(application_id)
        if run_id not in self.emr_runs:
            raise ApiError("ResourceNotFoundException", f"Job run {run_id} not found", 404)
        record = self.emr_runs[run_id]
        state, error = record["_run"].state()
        shown = {k: v for k, v in record.items() if not k.startswith("_")}
        state = {"SUCCEEDED": "SUCCESS"}.get(state, state)  # EMR Serverless says SUCCESS
        return {
            "jobRun": {**shown, "state": state, "stateDetails": error, "createdAt": record["_run"].started.timestamp()}
        }

    # ---- HTTP ------------------------------------------------------------------------------------
    def app(self) -> Starlette:
        base = "/applications/{application_id}"
        return Starlette(
            routes=[
                Route("/", self._glue, methods=["POST"]),
                Route(base, self._emr(self.emr_get_application), methods=["GET"]),
                Route(base + "/start", self._emr(self.emr_start_application), methods=["POST"]),
                Route(base + "/jobruns", self._emr(self.emr_start_job_run), methods=["POST"]),
                Route(base + "/jobruns/{run_id}", self._emr(self.emr_get_job_run), methods=["GET"]),
                Route(base + "/jobruns/{run_id}", self._emr(self.emr_cancel_job_run), methods=["DELETE"]),
            ]
        )

    def emr_cancel_job_run(self, path: dict, p: dict) -> dict:
        self.emr_get_job_run(path, p)
        self.emr_runs[path["run_id"]]["_run"].cancel()
        return {"applicationId": path["application_id"], "jobRunId": path["run_id"]}

    async def _glue(self, request: Request) -> JSONResponse:
        service, _, operation = request.headers.get("x-amz-target", "").partition(".")
        params = json.loads(await request.body() or b"{}")
        if service != "AWSGlue" or not operation[:1].isupper() or not hasattr(self, operation):
            return ApiError("UnknownOperationException", f"unknown operation {operation!r}").response()
        return self._answer("glue", operation, lambda: getattr(self, operation)(params), params, True)

    def _emr(self, handler):
        async def handle(request: Request) -> JSONResponse:
            params = json.loads(await request.body() or b"{}") if request.method == "POST" else {}
            path = dict(request.path_params)
            operation = handler.__name__.removeprefix("emr_")
            return self._answer("emr-serverless", operation, lambda: handler(path, params), params, False)

        return handle

    def _answer(self, service: str, operation: str, call, params: dict, json11: bool) -> JSONResponse:
        with self._lock:
            self.calls.append((service, operation, params))
            try:
                return JSONResponse(call(), media_type="application/x-amz-json-1.1" if json11 else "application/json")
            except ApiError as error:
                return error.response("application/x-amz-json-1.1" if json11 else "application/json")

    def close(self) -> None:
        for record in [*self.glue_runs.values(), *self.emr_runs.values()]:
            if record["_run"].process.poll() is None:
                record["_run"].process.kill()


def airflow_connection(url: str, s3_endpoint: str | None = None, region: str = "us-east-1") -> str:
    """An Airflow AWS connection whose Glue and EMR Serverless clients reach the fake."""
    extra: dict = {
        "region_name": region,
        "service_config": {s: {"endpoint_url": url} for s in ("glue", "emr-serverless")},
    }
    if s3_endpoint:
        extra["endpoint_url"] = s3_endpoint
    return json.dumps({"conn_type": "aws", "login": "emulated", "password": "emulated", "extra": extra})
