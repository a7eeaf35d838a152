"""A local Cloud Run Admin API v2 fake (REST) for the job calls this project makes.

Served over real HTTP so the real ``google-cloud-run`` clients reach it with ``transport="rest"``.
An execution runs for real: ``images`` maps an image URI to the command its container would run
(its ENTRYPOINT), started as a local process with the execution's args and env (the job template's,
merged with ``RunJobRequest.overrides``) plus the variables Cloud Run sets (``CLOUD_RUN_JOB``,
``CLOUD_RUN_EXECUTION``, ``CLOUD_RUN_TASK_INDEX``, ``CLOUD_RUN_TASK_COUNT``). The ``:run`` operation's
metadata is the Execution and it completes with it; a non-zero exit fails the execution with Cloud
Run's "Task ... failed" condition; ``:cancel`` stops it (cancelledCount). ``fake.stall("run")`` keeps
the next execution running forever without starting its process.

Implemented: jobs create / get / patch / :run, executions list / get / :cancel, operations get.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from recsys_devtools.emulators.vertex import _error, _not_found, _now

TYPE = "type.googleapis.com/google.cloud.run.v2."


@dataclass
class CloudRunFake:
    project: str = "test-project"
    location: str = "us-central1"
    images: dict = field(default_factory=dict)  # image URI -> the container's entrypoint command
    jobs: dict = field(default_factory=dict)  # job id -> Job dict
    executions: dict = field(default_factory=dict)  # execution name -> Execution dict
    logs: dict = field(default_factory=dict)  # execution name -> combined stdout/stderr
    operations: dict = field(default_factory=dict)  # operation name -> callable giving its current state
    calls: list = field(default_factory=list)  # (method, path)
    _stalls: list = field(default_factory=list)
    _processes: dict = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def stall(self, what: str = "run") -> None:
        self._stalls.append(what)

    # ---- jobs ------------------------------------------------------------------------------------
    def _job(self, body: dict, job_id: str) -> dict:
        containers = body.get("template", {}).get("template", {}).get("containers") or []
        if not containers or containers[0].get("image") not in self.images:
            image = containers[0].get("image") if containers else None
            raise ValueError(f"Image '{image}' not found.")
        job = self.jobs.get(job_id, {"createTime": _now(), "executionCount": 0})
        return {**job, **body, "name": f"{self.parent}/jobs/{job_id}", "updateTime": _now()}

    def _done(self, kind: str, resource: dict) -> dict:
        name = f"{self.parent}/operations/{next(self._ids)}"
        state = {
            "name": name,
            "done": True,
            "metadata": {"@type": TYPE + kind, **resource},
            "response": {"@type": TYPE + kind, **resource},
        }
        self.operations[name] = lambda: state
        return state

    def create_job(self, body: dict, job_id: str) -> dict:
        if job_id in self.jobs:
            raise FileExistsError(f"Resource '{job_id}' already exists.")
        self.jobs[job_id] = self._job(body, job_id)
        return self._done("Job", self.jobs[job_id])

    def update_job(self, job_id: str, body: dict) -> dict:
        self.jobs[job_id] = self._job(body, job_id)
        return self._done("Job", self.jobs[job_id])

    def run_job(self, job_id: str, body: dict) -> dict:
        job = self.jobs[job_id]
        job["executionCount"] += 1
        template = job["template"]
        container = dict(template["template"]["containers"][0])
        override = ((body.get("overrides") or {}).get("containerOverrides") or [{}])[0]
        if override.get("args") or override.get("clearArgs"):
            container["args"] = override.get("args", [])
        merged = {e["name"]: e.get("value", "") for e in container.get("env", []) + override.get("env", [])}
        container["env"] = [{"name": k, "value": v} for k, v in merged.items()]
        short = f"{job_id}-{next(self._ids):05d}"
        name = f"{self.parent}/jobs/{job_id}/executions/{short}"
        execution = {
            "name": name,
            "uid": short,
            "job": job_id,
            "createTime": _now(),
            "startTime": _now(),
            "taskCount": template.get("taskCount", 1),
            "runningCount": 1,
            "succeededCount": 0,
            "failedCount": 0,
            "cancelledCount": 0,
            "template": {**template["template"], "containers": [container]},
            "conditions": [{"type": "Completed", "state": "CONDITION_PENDING"}],
            "reconciling": True,
        }
        self.executions[name] = execution
        job["latestCreatedExecution"] = {"name": name, "createTime": execution["createTime"]}
        if "run" in self._stalls:
            self._stalls.remove("run")
        else:
            threading.Thread(target=self._run, args=(name, container), daemon=True).start()
        op_name = f"{self.parent}/operations/{next(self._ids)}"

        def state() -> dict:
            current = self.executions[name]
            body = {
                "name": op_name,
                "done": bool(current.get("completionTime")),
                "metadata": {"@type": TYPE + "Execution", **current},
            }
            if body["done"]:
                failed = current["succeededCount"] < current["taskCount"]
                message = current["conditions"][0].get("message", "")
                body |= {"error": {"code": 9, "message": message}} if failed else {}
                body |= {} if failed else {"response": {"@type": TYPE + "Execution", **current}}
            return body

        self.operations[op_name] = state
        return state()

    def _set(self, name: str, **fields) -> None:
        with self._lock:
            self.executions[name].update(fields, updateTime=_now())

    def _run(self, name: str, container: dict) -> None:
        env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env", [])}}
        env |= {
            "CLOUD_RUN_JOB": name.split("/jobs/")[1].split("/")[0],
            "CLOUD_RUN_EXECUTION": name.rsplit("/", 1)[1],
            "CLOUD_RUN_TASK_INDEX": "0",
            "CLOUD_RUN_TASK_COUNT": "1",
        }
        command = container.get("command") or self.images[container["image"]]
        with tempfile.TemporaryFile() as output:
            process = subprocess.Popen(
                [*command, *container.get("args", [])], env=env, stdout=output, stderr=subprocess.STDOUT
            )
            self._processes[name] = process
            status = process.wait()
            output.seek(0)
            self.logs[name] = output.read().decode(errors="replace")
        done = {"runningCount": 0, "completionTime": _now(), "reconciling": False}
        if self.executions[name]["cancelledCount"]:
            return
        if status == 0:
            self._set(
                name, succeededCount=1, conditions=[{"type": "Completed", "state": "CONDITION_SUCCEEDED"}], **done
            )
            return
        message = (
            f"Task {name.rsplit('/', 1)[1]}-task0 failed with message: The container exited with an error. "
            f"(exit code {status})"
        )
        condition = {"type": "Completed", "state": "CONDITION_FAILED", "message": message}
        self._set(name, failedCount=1, conditions=[condition], **done)

    def cancel(self, name: str) -> dict:
        execution = self.executions[name]
        if execution.get("completionTime"):
            raise ValueError(f"Execution {name} has already completed.")
        condition = {"type": "Completed", "state": "CONDITION_FAILED", "message": "The execution was cancelled."}
        self._set(name, cancelledCount=1, runningCount=0, completionTime=_now(), conditions=[condition])
        if name in self._processes:
            self._processes[name].terminate()
        return self._done("Execution", self.executions[name])

    def close(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.kill()

    # ---- HTTP ------------------------------------------------------------------------------------
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v2/{path:path}", self._dispatch, methods=["GET", "POST", "PATCH"])])

    async def _dispatch(self, request: Request) -> JSONResponse:
        path, method = request.path_params["path"], request.method
        self.calls.append((method, path))
        body = await request.json() if method in ("POST", "PATCH") and await request.body() else {}
        prefix = self.parent + "/"
        if not path.startswith(prefix):
            return _not_found(path)
        rest = path[len(prefix) :]
        try:
            return self._route(rest, method, body, request)
        except ValueError as exc:
            status = 400 if "not found" in str(exc) else 409
            return _error(status, str(exc), "INVALID_ARGUMENT" if status == 400 else "FAILED_PRECONDITION")
        except FileExistsError as exc:
            return _error(409, str(exc), "ALREADY_EXISTS")

    def _route(self, rest: str, method: str, body: dict, request: Request) -> JSONResponse:
        if rest.startswith("operations/") and method == "GET":
            state = self.operations.get(f"{self.parent}/{rest}")
            return JSONResponse(state()) if state else _not_found(rest)
        if rest == "jobs" and method == "POST":
            return JSONResponse(self.create_job(body, request.query_params.get("jobId", "")))
        if m := re.fullmatch(r"jobs/([^/:]+)(:run)?", rest):
            job_id, run = m.groups()
            if job_id not in self.jobs:
                return _not_found(f"Resource '{job_id}'")
            if run:
                return JSONResponse(self.run_job(job_id, body))
            if method == "PATCH":
                return JSONResponse(self.update_job(job_id, body))
            return JSONResponse(self.jobs[job_id])
        if m := re.fullmatch(r"jobs/([^/:]+)/executions", rest):
            mine = [e for e in self.executions.values() if e["job"] == m.group(1)]
            return JSONResponse({"executions": sorted(mine, key=lambda e: e["createTime"], reverse=True)})
        if m := re.fullmatch(r"jobs/[^/:]+/executions/([^/:]+)(:cancel)?", rest):
            name = f"{self.parent}/{rest.removesuffix(':cancel')}"
            if name not in self.executions:
                return _not_found(rest)
            return JSONResponse(self.cancel(name) if m.group(2) else self.executions[name])
        return _not_found(rest)


def airflow_connection(url: str, project: str) -> str:
    """The Airflow connection that points the project's Google hooks (Vertex and Cloud Run) here."""
    from recsys_devtools.emulators.vertex import airflow_connection as vertex_connection

    return vertex_connection(url, project)
