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
            if backend == "vertex":
                remote = vertex_plan(settings, version, _machine(params))
            else:
                remote = cloud_run_plan(settings, version)
        except ValueError as exc:  # a missing setting or machines that do not fit: retrying cannot help
            raise AirflowFailException(str(exc)) from exc
        if remote.get("replica_count", 1) > 1 and params["tuning_trials"]:
            raise AirflowFailException("tuning trials run on one replica: set tuning_trials=0 with vertex_replicas > 1")
    model_dir = remote["model_dir"] if remote else f"{settings.storage.models_root}/{version}"
    return TrainingPlan(end_day.isoformat(), version, backend, model_dir, remote).as_xcom()


def _machine(params: dict) -> dict:
    """The run's Vertex AI machine Params (None: the setting)."""
    return {
        "machine_type": params.get("vertex_machine_type"),
        "replica_count": params.get("vertex_replicas"),
        "accelerator_type": params.get("vertex_accelerator_type"),
        "accelerator_count": params.get("vertex_accelerator_count"),
    }


def train(settings: Settings, planned: TrainingPlan, params: dict) -> dict:
    """Train, evaluate and export in the worker; skipped with the reason when the window is too small."""
    from airflow.sdk.exceptions import AirflowSkipException

    from recsys.training.data import NotEnoughDataError
    from recsys.training.fit import TrainParams
    from recsys.training.pipeline import train_and_export
    from recsys.training.rank import RankingConfig
    from recsys.training.tuning import TuningConfig

    try:
        result = train_and_export(
            settings.storage.extract_root,
            date.fromisoformat(planned.end_day),
            params["window_days"],
            params["holdout_days"],
            planned.model_dir,
            TrainParams.from_params(params),
            tuning=TuningConfig.from_params(params),
            ranking=RankingConfig(candidates_per_retriever=int(params.get("candidates_per_retriever", 100))),
            serve=params.get("served_policy", "best"),
        )
    except NotEnoughDataError as exc:
        raise AirflowSkipException(str(exc)) from exc
    metrics = result["metrics"]
    return {
        "served": result["served"]["policy"],
        "model": metrics["model"],
        "popularity": metrics["popularity"],
        "chosen": result["params"],
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
    train_params = TrainParams.from_params(params).as_dict() | {
        name: params[name]
        for name in ("tuning_trials", "tuning_budget_minutes", "candidates_per_retriever", "served_policy")
        if name in params
    }
    args = trainer_args(
        remote["extract_root"], planned.end_day, params["window_days"], params["holdout_days"], train_params
    )
    if planned.backend == "vertex" and params.get("tuning_trials", 0) > 0:
        tuning_job = _vertex_tuning_job(planned, args, params["tuning_trials"])
        return {"staged": staged, "custom_job": None, "tuning_job": tuning_job, "job": None, "overrides": None}
    if planned.backend == "vertex":
        return {
            "staged": staged,
            "custom_job": _vertex_job(planned, args),
            "tuning_job": None,
            "job": None,
            "overrides": None,
        }
    from cloud_run.training import trainer_job, trainer_overrides

    job = trainer_job(
        image_uri=remote["image"],
        cpu=remote["cpu"],
        memory=remote["memory"],
        timeout_seconds=remote["timeout_seconds"],
        service_account=remote["service_account"],
    )
    overrides = trainer_overrides(args, remote["model_dir"])
    return {"staged": staged, "custom_job": None, "tuning_job": None, "job": job, "overrides": overrides}


def _trainer(planned: TrainingPlan, args: list[str]) -> dict:
    """What every Vertex AI job of the run's trainer image is given: version, image, args, output, machine."""
    remote = planned.remote
    return {
        "version": planned.version,
        "image_uri": remote["image"],
        "args": args,
        "base_output_dir": remote["base_output_dir"],
        "machine_type": remote["machine_type"],
        "service_account": remote["service_account"],
        "replica_count": remote["replica_count"],
        "accelerator_type": remote["accelerator_type"],
        "accelerator_count": remote["accelerator_count"],
    }


def _vertex_job(planned: TrainingPlan, args: list[str]) -> dict:
    from vertex.training import trainer_job_spec

    return trainer_job_spec(**_trainer(planned, args))


def _vertex_tuning_job(planned: TrainingPlan, args: list[str], trials: int) -> dict:
    """Each trial is the trainer measuring its own values on validation (``--tuning-trials 1``)."""
    from vertex.training import tuning_job_spec

    from recsys.training.train import VERTEX_METRIC
    from recsys.training.tuning import VERTEX_PARAMETERS

    trial_args = _without(args, ("--tuning-trials", "--tuning-budget-minutes")) + ["--tuning-trials", "1"]
    return tuning_job_spec(
        **_trainer(planned, trial_args),
        metric=VERTEX_METRIC,
        parameters=VERTEX_PARAMETERS,
        trials=trials,
        parallel_trials=max(1, min(5, trials // 4)),
    )


def _without(args: list[str], flags: tuple[str, ...]) -> list[str]:
    """``args`` less the given ``--flag value`` pairs."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        else:
            out.append(arg)
    return out


def remote_backend(staged: dict) -> str:
    """The remote training task that runs: a tuning job, a custom job, or a Cloud Run execution."""
    if staged.get("tuning_job"):
        return "tune_on_vertex"
    return "train_on_vertex" if staged.get("custom_job") else "train_on_cloud_run"


def adopt_best_trial(planned: TrainingPlan, tuned: dict) -> dict:
    """The best Vertex tuning trial's model becomes the run's candidate: copied to the run's model dir,
    its ``metrics.json`` extended with every trial of the tuning job."""
    import json
    import tempfile
    from pathlib import Path

    from recsys.storage import download_dir, upload_dir

    with tempfile.TemporaryDirectory(prefix="recsys-best-trial-") as tmp:
        local = download_dir(tuned["model_dir"], Path(tmp) / "model")
        metrics = json.loads((local / "metrics.json").read_text())
        metrics["vertex_tuning"] = {k: tuned[k] for k in ("job", "metric", "trials", "best_trial")}
        (local / "metrics.json").write_text(json.dumps(metrics, indent=2))
        upload_dir(local, planned.model_dir)
    return {"model_dir": planned.model_dir, "best_trial": tuned["best_trial"], "trials": len(tuned["trials"])}


def gate(settings: Settings, planned: TrainingPlan, params: dict, dag_settings=None) -> dict:
    """Compare the served policy with the champion on the same rows, write the model card, promote if blessed;
    alert (the configured notifiers) when a baseline is served or no new champion came for too many runs."""
    from recsys import alerts
    from recsys.config import load_dag_settings
    from recsys.training.gate import GatePolicy, run_gate

    policy = GatePolicy(
        tolerance=float(params["tolerance"]), force=bool(params["force"]), baseline=params["gate_baseline"]
    )
    decision = run_gate(planned.model_dir, settings.storage.models_root, planned.version, policy)
    dag_settings = dag_settings or load_dag_settings()
    raised = []
    if decision["served_is_baseline"]:
        raised.append(
            (
                "baseline_served",
                f"recsys_two_tower {planned.version} serves the {decision['served']} baseline: the two-tower model and "
                "the two-stage policy did not beat it on validation",
            )
        )
    streak, limit = decision["runs_without_new_champion"], dag_settings.alert_after_runs_without_champion
    if limit and streak >= limit:
        raised.append(("no_new_champion", f"recsys_two_tower: {streak} runs in a row without a new champion"))
    decision["alerts"] = []
    for event, text in raised:
        channels = alerts.send(
            dag_settings, event, text, dag_id="recsys_two_tower", version=planned.version, served=decision["served"]
        )
        decision["alerts"].append({"event": event, "text": text, "channels": channels})
    return decision


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
