"""The Vertex AI custom job that runs the project's trainer image (``docker/trainer.Dockerfile``).

Vertex sets ``AIP_MODEL_DIR=<base_output_dir>/model/`` (and ``checkpoints/``, ``logs/`` beside it)
from ``baseOutputDirectory``; the trainer's entrypoint writes its export there, so the run's model
directory is ``<base_output_dir>/model`` (:func:`recsys.training.remote.model_dir_for`).
"""

from __future__ import annotations

from vertex.deploy import version_label

RUN_LABEL = "recsys-run"


def trainer_job_spec(
    *, version: str, image_uri: str, args: list[str], base_output_dir: str, machine_type: str, service_account: str = ""
) -> dict:
    """A ``CustomJob`` resource; its ``recsys-run`` label makes a retry reattach instead of starting twice."""
    container = {"image_uri": image_uri, "args": args, "env": [{"name": "TF_USE_LEGACY_KERAS", "value": "1"}]}
    job = {
        "display_name": f"recsys-train-{version}"[:128],
        "labels": {RUN_LABEL: version_label(version), "app": "recsys"},
        "job_spec": {
            "worker_pool_specs": [
                {"machine_spec": {"machine_type": machine_type}, "replica_count": 1, "container_spec": container}
            ],
            "base_output_directory": {"output_uri_prefix": base_output_dir},
        },
    }
    if service_account:
        job["job_spec"]["service_account"] = service_account
    return job
