"""The steps of ``recsys_two_tower``: the plan, local training, staging a remote job, the gate, delivery."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from recsys.config import Settings
from recsys.steps.xcom import XComRecord


@dataclass(frozen=True)
class TrainingPlan(XComRecord):
    """The window's last day, the new model version and where it goes; ``remote`` (the Vertex AI or Cloud Run
    job's settings) for the remote backends, which the operators read from the ``plan`` XCom."""

    end_day: str
    version: str
    backend: str
    model_dir: str
    remote: dict | None = field(default=None)


def plan(settings: Settings, params: dict, now: datetime | None = None) -> dict:
    """Pick the window (ending at the Param's day or the newest extracted one) and a fresh model version."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from recsys.data.partitions import PartitionStore
    from recsys.training.remote import cloud_run_plan, vertex_plan

    if params["end_day"]:
        end_day = date.fromisoformat(params["end_day"])
    else:
        days = PartitionStore(settings.storage.extract_root).committed_days()
        if not days:
            raise AirflowSkipException(f"no extracted partitions under {settings.storage.extract_root} yet")
        end_day = days[-1]
    if params["holdout_days"] >= params["window_days"]:
        raise AirflowFailException("holdout_days must be smaller than window_days")
    backend = params["training_backend"]
    version = f"{end_day:%Y%m%d}-{(now or datetime.now(UTC)):%Y%m%dT%H%M%S}"
    remote = None
    if backend != "local":
        try:
            remote = (vertex_plan if backend == "vertex" else cloud_run_plan)(settings, version)
        except ValueError as exc:  # a missing setting: retrying cannot help
            raise AirflowFailException(str(exc)) from exc
    model_dir = remote["model_dir"] if remote else f"{settings.storage.models_root}/{version}"
    return TrainingPlan(end_day.isoformat(), version, backend, model_dir, remote).as_xcom()


def train(settings: Settings, planned: TrainingPlan, params: dict) -> dict:
    """Train, evaluate and export in the worker; skipped with the reason when the window is too small."""
    from airflow.sdk.exceptions import AirflowSkipException

    from recsys.training.data import NotEnoughDataError
    from recsys.training.fit import TrainParams
    from recsys.training.pipeline import train_and_export

    try:
        result = train_and_export(
            settings.storage.extract_root,
            date.fromisoformat(planned.end_day),
            params["window_days"],
            params["holdout_days"],
            planned.model_dir,
            TrainParams.from_params(params),
        )
    except NotEnoughDataError as exc:
        raise AirflowSkipException(str(exc)) from exc
    metrics = result["metrics"]
    return {
        "model": metrics["model"],
        "popularity": metrics["popularity"],
        "index": result["index"]["serving"],
        "window": result["window"],
    }


def stage_window(settings: Settings, planned: TrainingPlan, params: dict) -> dict:
    """Copy the window to ``gs://`` for the remote job (unless it is there already) and build the job's
    request: ``custom_job`` for Vertex AI, ``job`` + ``overrides`` for Cloud Run."""
    from airflow.sdk.exceptions import AirflowSkipException

    from recsys.training import MIN_INTERACTIONS
    from recsys.training.fit import TrainParams
    from recsys.training.remote import trainer_args
    from recsys.training.staging import stage_window as copy_window
    from recsys.training.staging import window_manifests, window_rows

    remote, end_day, extract_root = planned.remote, date.fromisoformat(planned.end_day), settings.storage.extract_root
    manifests = window_manifests(extract_root, end_day, params["window_days"])
    rows = window_rows(manifests)
    if rows < MIN_INTERACTIONS:
        raise AirflowSkipException(
            f"only {rows} interactions in the window ending {end_day}; need at least {MIN_INTERACTIONS}"
        )
    if remote["extract_root"] != extract_root:
        staged = copy_window(extract_root, manifests, remote["extract_root"])
    else:
        staged = {"target": extract_root, "rows": rows, "note": "already on gs://, not copied"}
    train_params = TrainParams.from_params(params).as_dict()
    args = trainer_args(
        remote["extract_root"], planned.end_day, params["window_days"], params["holdout_days"], train_params
    )
    if planned.backend == "vertex":
        return {"staged": staged, "custom_job": _vertex_job(planned, args), "job": None, "overrides": None}
    from cloud_run.training import trainer_job, trainer_overrides

    job = trainer_job(
        image_uri=remote["image"],
        cpu=remote["cpu"],
        memory=remote["memory"],
        timeout_seconds=remote["timeout_seconds"],
        service_account=remote["service_account"],
    )
    overrides = trainer_overrides(args, remote["model_dir"])
    return {"staged": staged, "custom_job": None, "job": job, "overrides": overrides}


def _vertex_job(planned: TrainingPlan, args: list[str]) -> dict:
    from vertex.training import trainer_job_spec

    remote = planned.remote
    return trainer_job_spec(
        version=planned.version,
        image_uri=remote["image"],
        args=args,
        base_output_dir=remote["base_output_dir"],
        machine_type=remote["machine_type"],
        service_account=remote["service_account"],
    )


def gate(settings: Settings, planned: TrainingPlan, params: dict) -> dict:
    """Compare with the champion on the same holdout, write the model card, promote if blessed."""
    from recsys.training.gate import GatePolicy, run_gate

    policy = GatePolicy(tolerance=float(params["tolerance"]), force=bool(params["force"]))
    return run_gate(planned.model_dir, settings.storage.models_root, planned.version, policy)


def blessed_event(decision: dict) -> dict:
    """The ``recsys_blessed_model`` asset event's extra: what deployment needs to know."""
    return {
        "version": decision["version"],
        "model_dir": decision["model_dir"],
        "top_100_accuracy": decision["model"]["top_100_accuracy"],
        "forced": decision["forced"],
    }


def deliver(settings: Settings, event: dict, top_k: int) -> dict | None:
    """The blessed model's batch top-k replaces the ``two_tower`` rows of the recommendations table."""
    from recsys.delivery.two_tower import deliver as deliver_top_k

    if not top_k:
        return None
    return deliver_top_k(event["model_dir"], event["version"], settings.connections.delivery, top_k)
