"""Plans for training outside the worker: a Vertex AI custom job or a Cloud Run job execution.

Both run the trainer image (``docker/trainer.Dockerfile``: ``python -m recsys.training.train``) on a
window staged to ``gs://`` and write the export to ``AIP_MODEL_DIR`` = ``<base_output_dir>/model``
(Vertex derives it from ``baseOutputDirectory``; for Cloud Run it is passed as an env override).
A plan names everything the DAG's tasks need; a missing setting raises ``ValueError`` saying which.
"""

from __future__ import annotations

from typing import Any

from recsys.config import ACCELERATORS, Settings


def model_dir_for(base_output_dir: str) -> str:
    return base_output_dir.rstrip("/") + "/model"


def trainer_args(
    extract_root: str, end_day: str, window_days: int, holdout_days: int, train_params: dict[str, Any]
) -> list[str]:
    """The trainer's command line (``recsys.training.train``) for one window."""
    args = ["--extract-root", extract_root, "--end-day", end_day, "--window-days", str(window_days)]
    args += ["--holdout-days", str(holdout_days)]
    for name, value in train_params.items():
        args += [f"--{name.replace('_', '-')}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def _staging(settings: Settings, version: str) -> dict[str, str]:
    if not settings.training.image_uri:
        raise ValueError("set RECSYS_TRAINER_IMAGE_URI (or the Variable) to the trainer image")
    root = settings.remote_training_root()
    staged = settings.storage.extract_root.startswith("gs://")
    base = f"{root}/models/{version}"
    return {
        "image": settings.training.image_uri,
        "extract_root": settings.storage.extract_root if staged else f"{root}/windows/{version}/extract",
        "base_output_dir": base,
        "model_dir": model_dir_for(base),
    }


MAX_REPLICAS = 16


def machine(machine_type: str, replicas: int, accelerator_type: str, accelerator_count: int) -> dict[str, Any]:
    """The training job's machines, checked against each other: ``ValueError`` says what does not fit."""
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"replica count must be 1 to {MAX_REPLICAS}, got {replicas}")
    spec = {"machine_type": machine_type, "replica_count": replicas, "accelerator_type": "", "accelerator_count": 0}
    if not accelerator_type and not accelerator_count:
        if machine_type.startswith(("a2-", "a3-", "g2-")):
            raise ValueError(f"{machine_type} comes with GPUs: name its accelerator type and count")
        return spec
    if accelerator_type not in ACCELERATORS:
        raise ValueError(f"accelerator type {accelerator_type!r} is not one of {sorted(ACCELERATORS)}")
    series, counts = ACCELERATORS[accelerator_type]
    if not machine_type.startswith(series):
        raise ValueError(f"{accelerator_type} attaches to {series}* machines, not {machine_type}")
    if accelerator_count not in counts:
        raise ValueError(
            f"{accelerator_type} comes {' / '.join(map(str, counts))} per machine, not {accelerator_count}"
        )
    built_in = machine_type.rsplit("-", 1)[-1]
    if series.startswith(("a2-", "a3-")) and built_in != f"{accelerator_count}g":
        raise ValueError(f"{machine_type} has {built_in.removesuffix('g')} GPUs, not {accelerator_count}")
    return spec | {"accelerator_type": accelerator_type, "accelerator_count": accelerator_count}


def vertex_plan(settings: Settings, version: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Vertex AI job's plan; ``overrides``: the run's machine Params (None = the setting)."""
    if not settings.vertex.project:
        raise ValueError("training_backend=vertex: set RECSYS_VERTEX_PROJECT (or the Variable)")
    chosen = {k: v for k, v in (overrides or {}).items() if v is not None}
    training = settings.training
    return {
        **_staging(settings, version),
        "project": settings.vertex.project,
        "region": settings.vertex.region,
        "gcp_conn_id": settings.connections.gcp,
        **machine(
            chosen.get("machine_type", training.machine_type),
            chosen.get("replica_count", training.replica_count),
            chosen.get("accelerator_type", training.accelerator_type),
            chosen.get("accelerator_count", training.accelerator_count),
        ),
        "service_account": settings.training.service_account,
        "poll_seconds": settings.vertex.poll_seconds,
        "timeout_seconds": settings.training.timeout_seconds,
    }


def cloud_run_plan(settings: Settings, version: str) -> dict[str, Any]:
    project = settings.cloud_run.project or settings.vertex.project
    if not project:
        raise ValueError("training_backend=cloud_run: set RECSYS_CLOUD_RUN_PROJECT or RECSYS_VERTEX_PROJECT")
    return {
        **_staging(settings, version),
        "project": project,
        "region": settings.cloud_run.region or settings.vertex.region,
        "gcp_conn_id": settings.connections.gcp,
        "job_id": settings.cloud_run.job_name,
        "cpu": settings.cloud_run.cpu,
        "memory": settings.cloud_run.memory,
        "service_account": settings.cloud_run.service_account,
        "poll_seconds": settings.vertex.poll_seconds,
        "timeout_seconds": settings.cloud_run.timeout_seconds,
    }
