"""Plans for training outside the worker: a Vertex AI custom job or a Cloud Run job execution.

Both run the trainer image (``docker/trainer.Dockerfile``: ``python -m recsys.training.train``) on a
window staged to ``gs://`` and write the export to ``AIP_MODEL_DIR`` = ``<base_output_dir>/model``
(Vertex derives it from ``baseOutputDirectory``; for Cloud Run it is passed as an env override).
A plan names everything the DAG's tasks need; a missing setting raises ``ValueError`` saying which.
"""

from __future__ import annotations

from typing import Any

from recsys.config import Settings


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
    if not settings.trainer_image_uri:
        raise ValueError("set RECSYS_TRAINER_IMAGE_URI (or the Variable) to the trainer image")
    root = settings.vertex_training_root()
    staged = settings.extract_root.startswith("gs://")
    base = f"{root}/models/{version}"
    return {
        "image": settings.trainer_image_uri,
        "extract_root": settings.extract_root if staged else f"{root}/windows/{version}/extract",
        "base_output_dir": base,
        "model_dir": model_dir_for(base),
    }


def vertex_plan(settings: Settings, version: str) -> dict[str, Any]:
    if not settings.vertex_project:
        raise ValueError("training_backend=vertex: set RECSYS_VERTEX_PROJECT (or the Variable)")
    return {
        **_staging(settings, version),
        "project": settings.vertex_project,
        "region": settings.vertex_region,
        "gcp_conn_id": settings.gcp_conn_id,
        "machine_type": settings.vertex_training_machine_type,
        "service_account": settings.vertex_service_account,
        "poll_seconds": settings.vertex_poll_seconds,
        "timeout_seconds": settings.vertex_training_timeout_seconds,
    }


def cloud_run_plan(settings: Settings, version: str) -> dict[str, Any]:
    project = settings.cloud_run_project or settings.vertex_project
    if not project:
        raise ValueError("training_backend=cloud_run: set RECSYS_CLOUD_RUN_PROJECT or RECSYS_VERTEX_PROJECT")
    return {
        **_staging(settings, version),
        "project": project,
        "region": settings.cloud_run_region or settings.vertex_region,
        "gcp_conn_id": settings.gcp_conn_id,
        "job_id": settings.cloud_run_job_name,
        "cpu": settings.cloud_run_cpu,
        "memory": settings.cloud_run_memory,
        "service_account": settings.cloud_run_service_account,
        "poll_seconds": settings.vertex_poll_seconds,
        "timeout_seconds": settings.cloud_run_timeout_seconds,
    }
