"""The Cloud Run job that runs the project's trainer image, and one run's overrides.

The job holds what stays the same between runs (image, resources, identity, timeout, no task
retries: Airflow retries the task, which reattaches or starts a new execution); each execution gets
the window as container args and ``AIP_MODEL_DIR`` as an env override, so one job serves every run.
"""

from __future__ import annotations


def trainer_job(*, image_uri: str, cpu: str, memory: str, timeout_seconds: float, service_account: str = "") -> dict:
    """A ``google.cloud.run.v2.Job`` (one task, no in-job retries)."""
    task = {
        "containers": [
            {
                "image": image_uri,
                "env": [{"name": "TF_USE_LEGACY_KERAS", "value": "1"}],
                "resources": {"limits": {"cpu": cpu, "memory": memory}},
            }
        ],
        "max_retries": 0,
        "timeout": f"{int(timeout_seconds)}s",
    }
    if service_account:
        task["service_account"] = service_account
    return {"labels": {"app": "recsys"}, "template": {"task_count": 1, "template": task}}


def trainer_overrides(args: list[str], model_dir: str) -> dict:
    """``RunJobRequest.overrides``: the window's trainer arguments and ``AIP_MODEL_DIR``."""
    return {"container_overrides": [{"args": args, "env": [{"name": "AIP_MODEL_DIR", "value": model_dir}]}]}
