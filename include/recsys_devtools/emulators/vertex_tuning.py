"""Vertex AI hyperparameter tuning jobs in the local Vertex fake, with real trial processes.

``hyperparameterTuningJobs`` create / get / list (label filter) / cancel, as the v1 REST API. Each
trial runs the trial job spec's container (the image's command from ``VertexFake.images``) as a local
process, with the job's args plus one ``--<parameterId>=<value>`` per parameter, and the variables
Vertex sets for a trial: ``CLOUD_ML_TRIAL_ID``, ``CLOUD_ML_HP_METRIC_FILE`` (where ``cloudml-hypertune``
writes the reported metric) and ``AIP_MODEL_DIR`` = ``<baseOutputDirectory>/<trial id>/model/``.
The trial's final measurement is the last value the process reported for the study's metric; a trial
whose process fails, or that reports nothing, is INFEASIBLE. Parameters are sampled at random (seeded
by the job id): the service's own default search is Bayesian, and this fake does not pretend to be.
Trials run ``parallelTrialCount`` at a time. The job SUCCEEDS when all trials ran and no more than
``maxFailedTrialCount`` failed (0 = any number may fail as long as one succeeds, as the service
documents); ``:cancel`` stops the running trials and ends the job CANCELLED.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

FINAL = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")


def sample(parameter: dict, rng: random.Random):
    """One value of a ``StudySpec.ParameterSpec`` (REST JSON, camelCase; proto3 JSON omits zeros)."""
    if spec := parameter.get("doubleValueSpec"):
        low, high = float(spec.get("minValue", 0.0)), float(spec.get("maxValue", 0.0))
        if parameter.get("scaleType") == "UNIT_LOG_SCALE":
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        return rng.uniform(low, high)
    if spec := parameter.get("integerValueSpec"):
        return rng.randint(int(spec.get("minValue", 0)), int(spec.get("maxValue", 0)))
    if spec := parameter.get("discreteValueSpec"):
        return rng.choice([float(v) for v in spec["values"]])
    if spec := parameter.get("categoricalValueSpec"):
        return rng.choice(list(spec["values"]))
    raise ValueError(f"parameter {parameter.get('parameterId')!r}: unsupported value spec")


def _arg(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # discrete values travel as doubles; 32.0 is the integer 32
    return str(value)


class TuningJobs:
    """The hyperparameter tuning jobs of one :class:`~recsys_devtools.emulators.vertex.VertexFake`."""

    def __init__(self, fake):
        self.fake = fake
        self.jobs: dict[str, dict] = {}
        self.logs: dict[str, str] = {}  # "<job id>/<trial id>" -> the trial process's output
        self._processes: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def create(self, body: dict) -> dict:
        spec, trial_spec = body.get("studySpec") or {}, body.get("trialJobSpec") or {}
        pools = trial_spec.get("workerPoolSpecs") or []
        if not body.get("displayName") or not pools or not body.get("maxTrialCount"):
            raise ValueError("displayName, maxTrialCount and trialJobSpec.workerPoolSpecs are required")
        if len(spec.get("metrics") or []) != 1 or not spec.get("parameters"):
            raise ValueError("studySpec needs one metric and at least one parameter")
        image = pools[0].get("containerSpec", {}).get("imageUri")
        if image not in self.fake.images:
            raise ValueError(f"image {image!r} not found (or no permission to pull it)")
        job_id = str(next(self.fake._ids))
        job = {
            **body,
            "name": f"{self.fake.parent}/hyperparameterTuningJobs/{job_id}",
            "state": "JOB_STATE_PENDING",
            "trials": [],
            "createTime": _now(),
            "updateTime": _now(),
        }
        self.jobs[job_id] = job
        threading.Thread(target=self._run_or_fail, args=(job_id,), daemon=True).start()
        return job

    def _run_or_fail(self, job_id: str) -> None:
        """A bug in the fake ends the job FAILED with the error, never RUNNING forever."""
        try:
            self._run(job_id)
        except Exception as exc:  # noqa: BLE001 - reported on the job, as the service reports internal errors
            self._set(job_id, state="JOB_STATE_FAILED", endTime=_now(), error={"code": 13, "message": repr(exc)})

    def cancel(self, job_id: str) -> None:
        job = self.jobs[job_id]
        if job["state"] in FINAL:
            raise ValueError(f"job {job_id} is already {job['state']}")
        job["state"] = "JOB_STATE_CANCELLING"
        for key, process in list(self._processes.items()):
            if key.startswith(f"{job_id}/"):
                process.terminate()

    # ---- running trials ---------------------------------------------------------------------------
    def _run(self, job_id: str) -> None:
        job = self.jobs[job_id]
        time.sleep(self.fake.job_pending_seconds)
        if job["state"] != "JOB_STATE_PENDING":
            job.update(state="JOB_STATE_CANCELLED", endTime=_now())
            return
        self._set(job_id, state="JOB_STATE_RUNNING", startTime=_now())
        rng = random.Random(int(job_id))
        count, parallel = int(job["maxTrialCount"]), max(1, int(job.get("parallelTrialCount") or 1))
        parameters = job["studySpec"]["parameters"]
        with ThreadPoolExecutor(parallel) as pool:
            running = [
                pool.submit(self._trial, job_id, str(n), {p["parameterId"]: sample(p, rng) for p in parameters})
                for n in range(1, count + 1)
            ]
        for future in running:
            future.result()  # a trial that raised fails the job
        trials = job["trials"]
        failed = sum(t["state"] == "INFEASIBLE" for t in trials)
        allowed = int(job.get("maxFailedTrialCount") or 0)
        if job["state"] == "JOB_STATE_CANCELLING":
            self._set(job_id, state="JOB_STATE_CANCELLED", endTime=_now(), error={"code": 1, "message": "CANCELED"})
        elif (allowed and failed > allowed) or failed == len(trials):
            message = f"{failed} of {len(trials)} trials failed (maxFailedTrialCount {allowed})"
            self._set(job_id, state="JOB_STATE_FAILED", endTime=_now(), error={"code": 9, "message": message})
        else:
            self._set(job_id, state="JOB_STATE_SUCCEEDED", endTime=_now())

    def _trial(self, job_id: str, trial_id: str, values: dict) -> None:
        job = self.jobs[job_id]
        if job["state"] != "JOB_STATE_RUNNING":
            return
        metric = job["studySpec"]["metrics"][0]["metricId"]
        trial = {
            "id": trial_id,
            "state": "ACTIVE",
            "parameters": [{"parameterId": k, "value": v} for k, v in values.items()],
            "startTime": _now(),
        }
        with self._lock:
            job["trials"].append(trial)
        spec = job["trialJobSpec"]
        container = spec["workerPoolSpecs"][0]["containerSpec"]
        with tempfile.TemporaryDirectory(prefix="hypertune-") as tmp:
            metric_file = Path(tmp) / "output.metrics"
            env = {
                **os.environ,
                **{e["name"]: e["value"] for e in container.get("env", [])},
                "CLOUD_ML_TRIAL_ID": trial_id,
                "CLOUD_ML_HP_METRIC_FILE": str(metric_file),
            }
            if base := spec.get("baseOutputDirectory", {}).get("outputUriPrefix"):
                env["AIP_MODEL_DIR"] = f"{base.rstrip('/')}/{trial_id}/model/"
            args = [*container.get("args", []), *(f"--{k}={_arg(v)}" for k, v in values.items())]
            command = container.get("command") or self.fake.images[container["imageUri"]]
            with tempfile.TemporaryFile() as output:
                process = subprocess.Popen([*command, *args], env=env, stdout=output, stderr=subprocess.STDOUT)
                self._processes[f"{job_id}/{trial_id}"] = process
                status = process.wait()
                output.seek(0)
                self.logs[f"{job_id}/{trial_id}"] = output.read().decode(errors="replace")
            reported = _reported(metric_file, metric)
        trial["endTime"] = _now()
        if status == 0 and reported is not None:
            trial.update(state="SUCCEEDED", finalMeasurement={"metrics": [{"metricId": metric, "value": reported}]})
        else:
            why = f"exit status {status}" if status else f"no {metric!r} reported through cloudml-hypertune"
            trial.update(state="INFEASIBLE", infeasibleReason=why)
        self._set(job_id)

    def _set(self, job_id: str, **fields) -> None:
        with self._lock:
            self.jobs[job_id].update(fields, updateTime=_now())


def _reported(metric_file: Path, metric: str) -> float | None:
    """The last value of ``metric`` in cloudml-hypertune's metric file (JSON lines)."""
    if not metric_file.exists():
        return None
    values = [json.loads(line).get(metric) for line in metric_file.read_text().splitlines() if line.strip()]
    values = [float(v) for v in values if v is not None]
    return values[-1] if values else None


def _now() -> str:
    from recsys_devtools.emulators.vertex import _now as now

    return now()
