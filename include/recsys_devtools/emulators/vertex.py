"""A local Vertex AI v1 REST fake for the calls this project makes.

Served over real HTTP (uvicorn on loopback) so the real ``google-cloud-aiplatform`` GAPIC clients
reach it with ``transport="rest"``. Long-running operations finish ``operation_seconds`` (per method:
``seconds_by_method``) after they start, polled or not. Faults are injected per method:
``fake.fail_next("deployModel", status=429)`` answers the next call with that HTTP error;
``fake.fail_operation("deployModel", "message")`` makes the next such operation end with an error;
``fake.stall("deployModel")`` makes the next such operation never finish; ``fake.hold("deployModel")``
carries out the next such call but holds its answer until released.
``traffic_history`` records every traffic split an endpoint had, in order.
``:predict`` is forwarded to the deployed model's container: when the model's serving image is in
``images``, ``deployModel`` starts it as a local process under Vertex's custom-container contract
(``AIP_HTTP_PORT``, ``AIP_HEALTH_ROUTE``, ``AIP_PREDICT_ROUTE``, ``AIP_STORAGE_URI`` = artifact URI)
and the operation finishes only once its health route answers 200 (it fails if the process dies);
``undeployModel`` stops it. Otherwise predictions go to ``predict_url`` (a server the test started).
Each prediction goes to one deployed model drawn by the traffic split's weights (seeded:
``traffic_seed``), and the response names it (``deployedModelId``), as the service does;
``served_by`` records them in order. Errors are Google's error JSON (``{"error": {"code", "message",
"status"}}``), a serving container's error too (its status and message, relayed).

Custom jobs run for real: ``images`` maps an image URI to the command its container would run
(its ENTRYPOINT), started as a local process with the job's args and env plus the ``AIP_*``
variables Vertex derives from ``baseOutputDirectory``. States: PENDING -> RUNNING -> SUCCEEDED |
FAILED (with Vertex's "exited with a non-zero status" error), ``:cancel`` -> CANCELLED;
``fake.stall("customJobs")`` keeps the next job RUNNING forever without starting it.

Dedicated endpoints (``dedicatedEndpointEnabled``) get a ``dedicatedEndpointDns`` of
``localhost:<port>``: predictions are served there and refused (FAILED_PRECONDITION) at the shared
host (127.0.0.1), as the service does; the DNS answers nothing but that endpoint's ``:predict``.

Implemented: models:upload, models list (display_name filter) / get / listVersions /
mergeVersionAliases, endpoints create / get / list / patch (traffic split), deployModel,
undeployModel, :predict, customJobs create / get / list (label filter) / cancel, operations get,
an endpoint's operations list; hyperparameterTuningJobs create / get / list / cancel with real trial
processes (:mod:`recsys_devtools.emulators.vertex_tuning`, ``fake.tuning``).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from recsys_devtools.emulators.ports import free_port
from recsys_devtools.emulators.running import Hold, RunningFake, released  # noqa: F401 - RunningFake re-exported for the tests

TYPE = "type.googleapis.com/google.cloud.aiplatform.v1."
METADATA_TYPES = {
    "upload": "UploadModelOperationMetadata",
    "createEndpoint": "CreateEndpointOperationMetadata",
    "deployModel": "DeployModelOperationMetadata",
    "undeployModel": "UndeployModelOperationMetadata",
}


@dataclass
class _Operation:
    name: str
    started: float
    response: dict | None = None
    error: dict | None = None
    on_done: object = None
    ready: object = None  # () -> None while starting, "" when ready, or an error message
    stalled: bool = False
    finished: bool = False
    metadata_type: str = "UploadModelOperationMetadata"
    seconds: float = 0.2


@dataclass
class VertexFake:
    project: str = "test-project"
    location: str = "us-central1"
    operation_seconds: float = 0.2
    seconds_by_method: dict = field(default_factory=dict)  # e.g. {"deployModel": 20.0}
    predict_url: str | None = None
    images: dict = field(default_factory=dict)  # image URI -> the container's entrypoint command
    job_pending_seconds: float = 0.2
    jobs: dict = field(default_factory=dict)  # job id -> CustomJob dict
    containers: dict = field(default_factory=dict)  # deployed model id -> (process, url, predict route)
    job_logs: dict = field(default_factory=dict)  # job id -> combined stdout/stderr of its process
    models: dict = field(default_factory=dict)  # model id -> list of version dicts
    endpoints: dict = field(default_factory=dict)  # endpoint id -> endpoint dict
    operations: dict = field(default_factory=dict)
    calls: list = field(default_factory=list)
    deploy_requests: list = field(default_factory=list)  # every deployModel's deployedModel, in order
    predict_hosts: list = field(default_factory=list)  # the Host of every :predict call, in order
    served_by: list = field(default_factory=list)  # the deployed model that answered each :predict
    traffic_seed: int = 0
    _faults: dict = field(default_factory=dict)
    _op_faults: dict = field(default_factory=dict)
    _stalls: list = field(default_factory=list)
    holds: dict = field(default_factory=dict)  # method -> event that releases its held answer
    traffic_history: list = field(default_factory=list)  # (endpoint id, split) after every change
    _processes: dict = field(default_factory=dict)  # job id -> its replicas' processes
    replica_logs: dict = field(default_factory=dict)  # job id -> {"workerpool1-0": its output}
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1000))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    tuning: object = None  # TuningJobs: the hyperparameter tuning jobs

    def __post_init__(self) -> None:
        from recsys_devtools.emulators.vertex_tuning import TuningJobs

        self.tuning = TuningJobs(self)
        self._traffic = random.Random(self.traffic_seed)

    # ---- fault injection -------------------------------------------------------------------------
    def fail_next(self, method: str, status: int = 503, message: str = "injected failure") -> None:
        self._faults.setdefault(method, []).append((status, message))

    def fail_operation(self, method: str, message: str) -> None:
        self._op_faults.setdefault(method, []).append(message)

    def stall(self, method: str) -> None:
        self._stalls.append(method)

    def hold(self, method: str) -> Hold:
        """The next ``method`` call is carried out but its answer is held until the returned event is set:
        the call landed, the client is still waiting (then killed, in chaos tests)."""
        release = Hold()
        self.holds[method] = release
        return release

    def _take_stall(self, method: str) -> bool:
        if method in self._stalls:
            self._stalls.remove(method)
            return True
        return False

    def _set_split(self, endpoint: dict, split: dict) -> None:
        endpoint["trafficSplit"] = {k: v for k, v in split.items() if v}
        self.traffic_history.append((endpoint["name"].rsplit("/", 1)[-1], dict(endpoint["trafficSplit"])))

    # ---- helpers ---------------------------------------------------------------------------------
    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def _operation(self, method: str, resource: str, response: dict | None, on_done=None) -> dict:
        name = f"{resource}/operations/{next(self._ids)}"
        op = _Operation(
            name,
            time.monotonic(),
            response=response,
            on_done=on_done,
            stalled=self._take_stall(method),
            metadata_type=METADATA_TYPES[method],
            seconds=self.seconds_by_method.get(method, self.operation_seconds),
        )
        if not op.stalled and self._op_faults.get(method):
            op.error = {"code": 9, "message": self._op_faults[method].pop(0)}
        self.operations[name] = op
        return {"name": name, "done": False, "metadata": {"@type": TYPE + op.metadata_type, "genericMetadata": {}}}

    def _operation_state(self, name: str) -> dict:
        op = self.operations[name]
        done = not op.stalled and time.monotonic() - op.started >= op.seconds
        if done and op.ready and not op.finished and not op.error:
            state = op.ready()
            done = state is not None
            if state:
                op.error = {"code": 3, "message": state}
        body = {"name": name, "done": done, "metadata": {"@type": TYPE + op.metadata_type, "genericMetadata": {}}}
        if done:
            if op.error:
                body["error"] = op.error
            else:
                if not op.finished and op.on_done:
                    op.on_done()
                body["response"] = op.response
            op.finished = True
        return body

    def _settle(self) -> None:
        """Operations finish on time whether or not anyone polls them (the service does not wait for clients)."""
        for name, op in list(self.operations.items()):
            if not op.finished and not op.stalled and time.monotonic() - op.started >= op.seconds:
                self._operation_state(name)

    def _model_name(self, model_id: str) -> str:
        return f"{self.parent}/models/{model_id}"

    def _endpoint(self, endpoint_id: str) -> dict:
        return self.endpoints[endpoint_id]

    # ---- handlers --------------------------------------------------------------------------------
    def upload(self, body: dict) -> dict:
        model = dict(body["model"])
        parent_model = body.get("parentModel")
        model_id = parent_model.rsplit("/", 1)[-1] if parent_model else body.get("modelId") or str(next(self._ids))
        versions = self.models.setdefault(model_id, [])
        version_id = str(len(versions) + 1)
        aliases = list(model.get("versionAliases", []))
        if not versions and "default" not in aliases:
            aliases.append("default")
        version = {
            **model,
            "name": self._model_name(model_id),
            "versionId": version_id,
            "versionAliases": aliases,
            "createTime": "2026-11-23T00:00:00Z",
        }
        response = {
            "@type": TYPE + "UploadModelResponse",
            "model": self._model_name(model_id),
            "modelVersionId": version_id,
        }

        def commit():
            if "default" in aliases:
                for other in versions:
                    other["versionAliases"] = [a for a in other["versionAliases"] if a != "default"]
            versions.append(version)

        return self._operation("upload", self._model_name(model_id), response, commit)

    def get_model(self, model_ref: str) -> dict | None:
        model_id, _, version = model_ref.partition("@")
        versions = self.models.get(model_id)
        if not versions:
            return None
        if not version:
            return next((v for v in versions if "default" in v["versionAliases"]), versions[-1])
        return next((v for v in versions if version in (v["versionId"], *v["versionAliases"])), None)

    def merge_aliases(self, model_ref: str, aliases: list[str]) -> dict | None:
        target = self.get_model(model_ref)
        if target is None:
            return None
        model_id = model_ref.partition("@")[0]
        for alias in aliases:
            if alias.startswith("-"):
                target["versionAliases"] = [a for a in target["versionAliases"] if a != alias[1:]]
                continue
            for other in self.models[model_id]:
                other["versionAliases"] = [a for a in other["versionAliases"] if a != alias]
            target["versionAliases"].append(alias)
        return target

    def create_endpoint(self, body: dict, endpoint_id: str | None, port: int | None = None) -> dict:
        endpoint_id = endpoint_id or str(next(self._ids))
        endpoint = {
            **body,
            "name": f"{self.parent}/endpoints/{endpoint_id}",
            "deployedModels": [],
            "trafficSplit": {},
            "createTime": "2026-11-23T00:00:00Z",
        }
        if body.get("dedicatedEndpointEnabled"):
            # Vertex: "<id>.<region>-<project number>.prediction.vertexai.goog"; here a name that reaches this
            # server but is not the host the shared API is called at (127.0.0.1)
            endpoint["dedicatedEndpointDns"] = f"localhost:{port}"

        def commit():
            self.endpoints[endpoint_id] = endpoint

        return self._operation("createEndpoint", endpoint["name"], {"@type": TYPE + "Endpoint", **endpoint}, commit)

    def deploy(self, endpoint_id: str, body: dict) -> dict:
        endpoint = self._endpoint(endpoint_id)
        self.deploy_requests.append(body["deployedModel"])
        deployed = {**body["deployedModel"], "id": str(next(self._ids)), "createTime": "2026-11-23T00:00:00Z"}
        split = body.get("trafficSplit") or {"0": 100}

        def commit():
            endpoint["deployedModels"].append(deployed)
            self._set_split(endpoint, {(deployed["id"] if k == "0" else k): v for k, v in split.items()})

        response = {"@type": TYPE + "DeployModelResponse", "deployedModel": deployed}
        operation = self._operation("deployModel", endpoint["name"], response, commit)
        op, model = self.operations[operation["name"]], self.get_model(deployed["model"].rsplit("/", 1)[-1])
        if model and model.get("containerSpec", {}).get("imageUri") in self.images and not (op.error or op.stalled):
            op.ready = self._start_container(deployed["id"], model)
        return operation

    def _start_container(self, deployed_id: str, model: dict):
        """Run the model's serving image like Vertex does; return the deploy operation's readiness check."""
        spec = model["containerSpec"]
        port = free_port()
        health, predict = spec.get("healthRoute", "/health"), spec.get("predictRoute", "/predict")
        env = {
            **os.environ,
            **{e["name"]: e["value"] for e in spec.get("env", [])},
            "AIP_HTTP_PORT": str(port),
            "AIP_HEALTH_ROUTE": health,
            "AIP_PREDICT_ROUTE": predict,
            "AIP_STORAGE_URI": model["artifactUri"],
            "RECSYS_SERVING_HOST": "127.0.0.1",
        }
        log = tempfile.NamedTemporaryFile(prefix=f"vertex-fake-serving-{deployed_id}-", suffix=".log", delete=False)
        process = subprocess.Popen(self.images[spec["imageUri"]], env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        self.containers[deployed_id] = (process, url, predict, log.name)

        def ready():
            if process.poll() is not None:
                return f"Model server exited with status {process.returncode} (log: {log.name})"
            try:
                return "" if httpx.get(url + health, timeout=1).status_code == 200 else None
            except httpx.HTTPError:
                return None

        return ready

    def close(self) -> None:
        """Stop every serving container still running."""
        for process, *_ in self.containers.values():
            process.terminate()
        for process, *_ in self.containers.values():
            process.wait(timeout=30)

    def undeploy(self, endpoint_id: str, body: dict) -> dict:
        endpoint = self._endpoint(endpoint_id)
        deployed_id = body["deployedModelId"]
        if not any(d["id"] == deployed_id for d in endpoint["deployedModels"]):
            raise KeyError(deployed_id)
        split = body.get("trafficSplit")

        def commit():
            if deployed_id in self.containers:
                self.containers[deployed_id][0].terminate()
            endpoint["deployedModels"] = [d for d in endpoint["deployedModels"] if d["id"] != deployed_id]
            remaining = split or {k: v for k, v in endpoint["trafficSplit"].items() if k != deployed_id}
            self._set_split(endpoint, remaining)

        return self._operation("undeployModel", endpoint["name"], {"@type": TYPE + "UndeployModelResponse"}, commit)

    def create_custom_job(self, body: dict) -> dict:
        specs = body.get("jobSpec", {}).get("workerPoolSpecs") or []
        if not body.get("displayName") or not specs:
            raise ValueError("displayName and jobSpec.workerPoolSpecs are required")
        if int(specs[0].get("replicaCount", 1)) != 1:
            raise ValueError("workerPoolSpecs[0] (the primary replica) must have a replicaCount of 1")
        for spec in specs:
            image = spec.get("containerSpec", {}).get("imageUri")
            if image not in self.images:
                raise ValueError(f"image {image!r} not found (or no permission to pull it)")
        job_id = str(next(self._ids))
        job = {
            **body,
            "name": f"{self.parent}/customJobs/{job_id}",
            "state": "JOB_STATE_PENDING",
            "createTime": _now(),
            "updateTime": _now(),
        }
        self.jobs[job_id] = job
        stalled = self._take_stall("customJobs")
        threading.Thread(target=self._run_job, args=(job_id, specs, stalled), daemon=True).start()
        return job

    def _set_job(self, job_id: str, **fields) -> None:
        with self._lock:
            self.jobs[job_id].update(fields, updateTime=_now())

    def _run_job(self, job_id: str, specs: list[dict], stalled: bool) -> None:
        """Every replica of every pool as a process with the ``CLUSTER_SPEC`` Vertex sets (pool name,
        index, every replica's host:port); the job fails with the first replica that exits non-zero."""
        time.sleep(self.job_pending_seconds)
        if self.jobs[job_id]["state"] != "JOB_STATE_PENDING":
            return  # cancelled before it started
        self._set_job(job_id, state="JOB_STATE_RUNNING", startTime=_now())
        if stalled:
            return
        replicas = [
            (f"workerpool{pool}", index, spec)
            for pool, spec in enumerate(specs)
            for index in range(int(spec.get("replicaCount", 1)))
        ]
        cluster: dict[str, list[str]] = {}
        for pool, _, _ in replicas:
            cluster.setdefault(pool, []).append(f"127.0.0.1:{free_port()}")
        started = []
        with tempfile.TemporaryDirectory(prefix="vertex-job-") as logs:
            for pool, index, spec in replicas:
                env = self._job_env(job_id, spec["containerSpec"])
                if len(replicas) > 1:
                    task = {"type": pool, "index": index}
                    env["CLUSTER_SPEC"] = json.dumps(
                        {"cluster": cluster, "task": task, "job": {"workerPoolSpecs": specs}}
                    )
                container = spec["containerSpec"]
                command = [
                    *(container.get("command") or self.images[container["imageUri"]]),
                    *container.get("args", []),
                ]
                log = open(os.path.join(logs, f"{pool}-{index}.log"), "w+b")  # noqa: SIM115 - closed below
                process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
                started.append((f"{pool}-{index}", process, log))
            self._processes[job_id] = [process for _, process, _ in started]
            failed = self._wait_all(started)
            texts = []
            for name, _, log in started:
                log.seek(0)
                texts.append((name, log.read().decode(errors="replace")))
                log.close()
        self.job_logs[job_id] = "\n".join(t for _, t in texts) if len(texts) > 1 else texts[0][1]
        self.replica_logs[job_id] = dict(texts)
        if self.jobs[job_id]["state"] == "JOB_STATE_CANCELLING":
            self._set_job(job_id, state="JOB_STATE_CANCELLED", endTime=_now(), error={"code": 1, "message": "CANCELED"})
        elif failed is None:
            self._set_job(job_id, state="JOB_STATE_SUCCEEDED", endTime=_now())
        else:
            name, status = failed
            message = (
                f"The replica {name} exited with a non-zero status of {status}. Termination reason: "
                f"Error. To find out more about why your job exited please check the logs."
            )
            self._set_job(job_id, state="JOB_STATE_FAILED", endTime=_now(), error={"code": 3, "message": message})

    def _job_env(self, job_id: str, container: dict) -> dict[str, str]:
        env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env", [])}}
        if base := self.jobs[job_id]["jobSpec"].get("baseOutputDirectory", {}).get("outputUriPrefix"):
            base = base.rstrip("/")
            env.update(
                AIP_MODEL_DIR=f"{base}/model/",
                AIP_CHECKPOINT_DIR=f"{base}/checkpoints/",
                AIP_TENSORBOARD_LOG_DIR=f"{base}/logs/",
            )
        return env

    @staticmethod
    def _wait_all(started: list) -> tuple[str, int] | None:
        """Wait for every replica; the first to fail stops the others (as a failed replica ends the job)."""
        while True:
            codes = [(name, process.poll()) for name, process, _ in started]
            failed = [(name, code) for name, code in codes if code not in (None, 0)]
            if failed:
                for _, process, _ in started:
                    if process.poll() is None:
                        process.terminate()
                for _, process, _ in started:
                    process.wait()
                return failed[0]
            if all(code == 0 for _, code in codes):
                return None
            time.sleep(0.2)

    def cancel_custom_job(self, job_id: str) -> None:
        job = self.jobs[job_id]
        if job["state"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            raise ValueError(f"job {job_id} is already {job['state']}")
        processes = self._processes.get(job_id)
        if not processes:  # not started, or stalled: nothing runs
            job.update(state="JOB_STATE_CANCELLED", endTime=_now(), error={"code": 1, "message": "CANCELED"})
            return
        job["state"] = "JOB_STATE_CANCELLING"
        for process in processes:
            process.terminate()

    # ---- HTTP ------------------------------------------------------------------------------------
    def app(self) -> Starlette:
        # The REST operations client polls the /ui/... binding of operations.get; serve both prefixes.
        methods = ["GET", "POST", "PATCH"]
        return Starlette(
            routes=[
                Route("/v1/{path:path}", self._dispatch, methods=methods),
                Route("/ui/{path:path}", self._dispatch, methods=methods),
            ]
        )

    async def _dispatch(self, request: Request) -> JSONResponse:
        path, method = request.path_params["path"], request.method
        body = await request.json() if method in ("POST", "PATCH") and await request.body() else {}
        verb = path.rsplit(":", 1)[1] if ":" in path.rsplit("/", 1)[-1] else method
        self.calls.append((method, path, verb))
        if self._faults.get(verb):
            status, message = self._faults[verb].pop(0)
            return _error(status, message)
        prefix = f"projects/{self.project}/locations/{self.location}/"
        if not path.startswith(prefix):
            return _not_found(path)
        rest = path[len(prefix) :]
        if verb == "predict":
            self.predict_hosts.append(request.headers.get("host", ""))
        if refused := self._wrong_host(rest, verb, request.headers.get("host", "")):
            return refused
        with self._lock:
            self._settle()
            answer = await self._route(rest, method, verb, body, request)
        if release := self.holds.pop(verb, None):
            await released(release)
        return answer

    def _wrong_host(self, rest: str, verb: str, host: str) -> JSONResponse | None:
        """A dedicated endpoint answers predictions only at its own DNS, and that DNS answers nothing else."""
        dedicated = {e.get("dedicatedEndpointDns"): e for e in self.endpoints.values() if e.get("dedicatedEndpointDns")}
        target = self.endpoints.get(rest.split("/")[1].split(":")[0]) if rest.startswith("endpoints/") else None
        if host in dedicated:
            if verb != "predict" or target is not dedicated[host]:
                return _not_found(rest)
            return None
        if verb == "predict" and target and target.get("dedicatedEndpointDns"):
            return _error(
                400,
                "This endpoint is a dedicated endpoint and cannot be accessed through the shared Vertex AI API "
                f"host. Please send requests to its dedicated DNS name: {target['dedicatedEndpointDns']}",
                "FAILED_PRECONDITION",
            )
        return None

    async def _route(self, rest: str, method: str, verb: str, body: dict, request: Request) -> JSONResponse:
        if m := re.fullmatch(r"endpoints/([^/:]+)/operations", rest):  # ListOperations on the endpoint
            prefix = f"{self.parent}/endpoints/{m.group(1)}/operations/"
            found = [self._operation_state(name) for name in self.operations if name.startswith(prefix)]
            return JSONResponse({"operations": found})
        if "/operations/" in rest and method == "GET":
            name = f"{self.parent}/{rest}"
            return JSONResponse(self._operation_state(name)) if name in self.operations else _not_found(rest)
        if rest == "models" and method == "GET":
            wanted = request.query_params.get("filter", "")
            latest = [next((v for v in vs if "default" in v["versionAliases"]), vs[-1]) for vs in self.models.values()]
            return JSONResponse({"models": [m for m in latest if _matches(m, wanted)]})
        if rest == "models:upload":
            return JSONResponse(self.upload(body))
        if m := re.fullmatch(r"models/([^/:]+)", rest):
            model = self.get_model(m.group(1))
            return JSONResponse(model) if model else _not_found(rest)
        if m := re.fullmatch(r"models/([^/:]+):listVersions", rest):
            versions = self.models.get(m.group(1))
            return JSONResponse({"models": versions}) if versions else _not_found(rest)
        if m := re.fullmatch(r"models/([^/:]+):mergeVersionAliases", rest):
            model = self.merge_aliases(m.group(1), body.get("versionAliases", []))
            return JSONResponse(model) if model else _not_found(rest)
        if rest == "endpoints" and method == "POST":
            return JSONResponse(self.create_endpoint(body, request.query_params.get("endpointId"), request.url.port))
        if rest == "endpoints" and method == "GET":
            wanted = request.query_params.get("filter", "")
            found = [e for e in self.endpoints.values() if _matches(e, wanted)]
            return JSONResponse({"endpoints": found})
        if m := re.fullmatch(r"endpoints/([^/:]+)", rest):
            if m.group(1) not in self.endpoints:
                return _not_found(rest)
            endpoint = self._endpoint(m.group(1))
            if method == "PATCH":
                for key in request.query_params.get("updateMask", "").split(","):
                    camel = re.sub(r"_(\w)", lambda g: g.group(1).upper(), key.strip())
                    if camel == "trafficSplit":
                        self._set_split(endpoint, body.get(camel, {}))
                    elif camel in body:
                        endpoint[camel] = body[camel]
            return JSONResponse(endpoint)
        if m := re.fullmatch(r"endpoints/([^/:]+):(deployModel|undeployModel|predict)", rest):
            endpoint_id, action = m.groups()
            if endpoint_id not in self.endpoints:
                return _not_found(rest)
            if action == "deployModel":
                return JSONResponse(self.deploy(endpoint_id, body))
            if action == "undeployModel":
                try:
                    return JSONResponse(self.undeploy(endpoint_id, body))
                except KeyError:
                    return _error(400, f"deployed model {body.get('deployedModelId')} is not on the endpoint")
            return await self._predict(endpoint_id, body)
        collections = {
            "customJobs": (self.jobs, self.create_custom_job, self.cancel_custom_job),
            "hyperparameterTuningJobs": (self.tuning.jobs, self.tuning.create, self.tuning.cancel),
        }
        if (collection := rest.split("/", 1)[0].split(":", 1)[0]) in collections:
            return self._job_route(collection, rest, method, body, request, *collections[collection])
        return _not_found(rest)

    @staticmethod
    def _job_route(collection, rest, method, body, request, jobs, create, cancel) -> JSONResponse:
        """create (POST), list (GET, label filter), get and :cancel of custom jobs and tuning jobs alike."""
        if rest == collection and method == "POST":
            try:
                return JSONResponse(create(body))
            except ValueError as exc:
                return _error(400, str(exc))
        if rest == collection and method == "GET":
            wanted = request.query_params.get("filter", "")
            return JSONResponse({collection: [j for j in jobs.values() if _matches(j, wanted)]})
        m = re.fullmatch(rf"{collection}/([^/:]+)(:cancel)?", rest)
        if not m or m.group(1) not in jobs:
            return _not_found(rest)
        if not m.group(2):
            return JSONResponse(jobs[m.group(1)])
        try:
            cancel(m.group(1))
        except ValueError as exc:
            return _error(400, str(exc), "FAILED_PRECONDITION")
        return JSONResponse({})

    async def _predict(self, endpoint_id: str, body: dict) -> JSONResponse:
        endpoint = self._endpoint(endpoint_id)
        split = endpoint["trafficSplit"]
        if not endpoint["deployedModels"] or not split:
            return _error(400, "the endpoint has no deployed model", "FAILED_PRECONDITION")
        served_by = self._traffic.choices(list(split), weights=list(split.values()))[0]
        if served_by in self.containers:
            _, url, route, _ = self.containers[served_by]
            target = url + route
        elif self.predict_url:
            target = self.predict_url
        else:
            return _error(400, "the endpoint has no deployed model", "FAILED_PRECONDITION")
        self.served_by.append(served_by)
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.post(target, json=body)
        except httpx.HTTPError as exc:
            return _error(503, f"the model server of deployed model {served_by} did not answer: {exc!r}")
        if answer.status_code != 200:
            return _error(answer.status_code, _container_message(answer))
        return JSONResponse({**answer.json(), "deployedModelId": served_by})


def _container_message(answer: httpx.Response) -> str:
    """A serving container's error, as the service relays it: its message, else its body."""
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:1000] or f"the model server answered {answer.status_code}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return str(error if error is not None else body)[:1000]


def _matches(endpoint: dict, wanted: str) -> bool:
    """Supports the filters this project sends: display_name="..." and labels.KEY="..." (AND)."""
    for clause in filter(None, (c.strip() for c in wanted.split(" AND "))):
        key, _, value = clause.partition("=")
        value = value.strip().strip('"')
        if key.strip() == "display_name" and endpoint.get("displayName") != value:
            return False
        if key.strip().startswith("labels.") and endpoint.get("labels", {}).get(key.strip()[7:]) != value:
            return False
    return True


GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _error(status: int, message: str, reason: str | None = None) -> JSONResponse:
    """Google's error JSON (google.rpc.Status over HTTP), which google-api-core parses into its exceptions."""
    body = {"error": {"code": status, "message": message, "status": reason or GOOGLE_STATUS.get(status, "UNKNOWN")}}
    return JSONResponse(body, status_code=status)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _not_found(what: str) -> JSONResponse:
    return _error(404, f"{what} not found")


def airflow_connection(url: str, project: str) -> str:
    """The Airflow connection (``AIRFLOW_CONN_<ID>`` JSON) that points the project's Vertex hooks here."""
    import json

    extra = {"api_endpoint": url, "api_transport": "rest", "is_anonymous": True, "project": project}
    return json.dumps({"conn_type": "google_cloud_platform", "extra": extra})
