"""The Vertex AI custom job that runs the project's trainer image (``docker/trainer.Dockerfile``).

Vertex sets ``AIP_MODEL_DIR=<base_output_dir>/model/`` (and ``checkpoints/``, ``logs/`` beside it)
from ``baseOutputDirectory``; the trainer's entrypoint writes its export there, so the run's model
directory is ``<base_output_dir>/model`` (:func:`recsys.training.remote.model_dir_for`).
"""

from __future__ import annotations

from vertex.deploy import version_label

RUN_LABEL = "recsys-run"


def trainer_job_spec(
    *,
    version: str,
    image_uri: str,
    args: list[str],
    base_output_dir: str,
    machine_type: str,
    service_account: str = "",
    replica_count: int = 1,
    accelerator_type: str = "",
    accelerator_count: int = 0,
) -> dict:
    """A ``CustomJob`` resource; its ``recsys-run`` label makes a retry reattach instead of starting twice.

    One replica runs in ``workerpool0`` (the chief); ``replica_count`` > 1 adds ``replica_count - 1`` in
    ``workerpool1``, on the same machines with the same container: Vertex sets ``CLUSTER_SPEC`` on each and
    the trainer trains with ``MultiWorkerMirroredStrategy``."""
    container = {"image_uri": image_uri, "args": args, "env": [{"name": "TF_USE_LEGACY_KERAS", "value": "1"}]}
    machine = {"machine_type": machine_type}
    if accelerator_type:
        machine |= {"accelerator_type": accelerator_type, "accelerator_count": accelerator_count}
    pools = [{"machine_spec": machine, "replica_count": 1, "container_spec": container}]
    if replica_count > 1:
        pools.append({"machine_spec": machine, "replica_count": replica_count - 1, "container_spec": container})
    job = {
        "display_name": f"recsys-train-{version}"[:128],
        "labels": {RUN_LABEL: version_label(version), "app": "recsys"},
        "job_spec": {
            "worker_pool_specs": pools,
            "base_output_directory": {"output_uri_prefix": base_output_dir},
        },
    }
    if service_account:
        job["job_spec"]["service_account"] = service_account
    return job


def tuning_job_spec(*, metric: str, parameters: list[dict], trials: int, parallel_trials: int, **trainer) -> dict:
    """A ``HyperparameterTuningJob`` whose trials run the trainer image (``trainer``: the arguments of
    :func:`trainer_job_spec`): each trial gets the ``args`` plus ``--<parameter>=<value>``, reports ``metric``
    through cloudml-hypertune and writes its model to ``<base_output_dir>/<trial id>/model``. Labelled like
    the custom job, so a retry reattaches."""
    trial = trainer_job_spec(**trainer)
    return {
        "display_name": f"recsys-tune-{trainer['version']}"[:128],
        "labels": trial["labels"],
        "study_spec": {"metrics": [{"metric_id": metric, "goal": "MAXIMIZE"}], "parameters": parameters},
        "max_trial_count": trials,
        "parallel_trial_count": parallel_trials,
        "max_failed_trial_count": trials - 1,  # one trial that reports is enough to choose
        "trial_job_spec": trial["job_spec"],
    }
