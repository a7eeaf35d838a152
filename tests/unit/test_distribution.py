"""Choosing the distribution strategy from the environment, and the Vertex AI machines it runs on."""

from __future__ import annotations

import json

import pytest

from recsys.training.distribution import topology
from recsys.training.remote import machine

TWO_WORKERS = {"cluster": {"chief": ["h0:2222"], "worker": ["h1:2222"]}, "task": {"type": "worker", "index": 0}}


def test_one_process_without_a_cluster_or_gpus_and_mirrored_over_several_gpus():
    assert topology({}, gpus=0).strategy == "default" and topology({}, gpus=1).strategy == "default"
    mirrored = topology({}, gpus=4)
    assert (mirrored.strategy, mirrored.workers, mirrored.replicas, mirrored.chief) == ("mirrored", 1, 4, True)


def test_several_workers_in_tf_config_train_multi_worker_and_only_the_chief_writes():
    worker = topology({"TF_CONFIG": json.dumps(TWO_WORKERS)}, gpus=0)
    assert (worker.strategy, worker.workers, worker.task_type, worker.chief) == (
        "multi_worker_mirrored",
        2,
        "worker",
        False,
    )
    chief = topology({"TF_CONFIG": json.dumps(TWO_WORKERS | {"task": {"type": "chief", "index": 0}})}, gpus=0)
    assert chief.chief and chief.describe()["replicas"] == 2 and "tf_config" not in chief.describe()
    no_chief = {"cluster": {"worker": ["h0:1", "h1:1"]}, "task": {"type": "worker", "index": 0}}
    assert topology({"TF_CONFIG": json.dumps(no_chief)}, gpus=0).chief  # worker 0 is the chief then
    alone = {"cluster": {"chief": ["h0:1"]}, "task": {"type": "chief", "index": 0}}
    assert topology({"TF_CONFIG": json.dumps(alone)}, gpus=0).strategy == "default"  # one worker: one process


def test_vertex_cluster_spec_becomes_tf_config():
    cluster = {"workerpool0": ["c:1"], "workerpool1": ["w0:1", "w1:1"]}
    spec = {"cluster": cluster, "task": {"type": "workerpool1", "index": 1}}
    place = topology({"CLUSTER_SPEC": json.dumps(spec)}, gpus=0)
    assert (place.strategy, place.workers, place.task_type, place.task_index) == (
        "multi_worker_mirrored",
        3,
        "worker",
        1,
    )
    assert json.loads(place.tf_config)["cluster"] == {"chief": ["c:1"], "worker": ["w0:1", "w1:1"]}
    spec["cluster"]["workerpool2"] = ["ps:1"]
    with pytest.raises(ValueError, match="workerpool2"):
        topology({"CLUSTER_SPEC": json.dumps(spec)}, gpus=0)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("n1-standard-8", 1, "", 0), {"machine_type": "n1-standard-8", "replica_count": 1}),
        (("n1-standard-8", 3, "NVIDIA_TESLA_T4", 2), {"accelerator_type": "NVIDIA_TESLA_T4", "accelerator_count": 2}),
        (("g2-standard-8", 2, "NVIDIA_L4", 1), {"replica_count": 2, "accelerator_count": 1}),
        (("a2-highgpu-2g", 1, "NVIDIA_TESLA_A100", 2), {"accelerator_type": "NVIDIA_TESLA_A100"}),
    ],
)
def test_machines_that_fit(args, expected):
    assert machine(*args).items() >= expected.items()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("n1-standard-8", 0, "", 0), "replica count must be 1 to 16"),
        (("n1-standard-8", 17, "", 0), "replica count must be 1 to 16"),
        (("n1-standard-8", 1, "NVIDIA_L4", 1), "NVIDIA_L4 attaches to g2-standard-"),
        (("n1-standard-8", 1, "NVIDIA_TESLA_T4", 3), "comes 1 / 2 / 4 per machine, not 3"),
        (("n1-standard-8", 1, "", 2), "is not one of"),
        (("n1-standard-8", 1, "TPU_V5", 1), "is not one of"),
        (("a2-highgpu-2g", 1, "NVIDIA_TESLA_A100", 4), "a2-highgpu-2g has 2 GPUs, not 4"),
        (("g2-standard-8", 1, "", 0), "comes with GPUs"),
    ],
)
def test_machines_that_do_not_fit_say_why(args, message):
    with pytest.raises(ValueError, match=message):
        machine(*args)


def test_the_job_runs_the_chief_in_pool_0_and_the_other_replicas_in_pool_1():
    from vertex.training import trainer_job_spec

    common = {"version": "v1", "image_uri": "img", "args": ["--x"], "base_output_dir": "gs://b/m"}
    common["machine_type"] = "g2-standard-8"
    one = trainer_job_spec(**common)["job_spec"]["worker_pool_specs"]
    assert [p["replica_count"] for p in one] == [1] and "accelerator_type" not in one[0]["machine_spec"]
    pools = trainer_job_spec(**common, replica_count=3, accelerator_type="NVIDIA_L4", accelerator_count=1)
    pools = pools["job_spec"]["worker_pool_specs"]
    assert [p["replica_count"] for p in pools] == [1, 2]
    assert (
        pools[0]["machine_spec"]
        == pools[1]["machine_spec"]
        == {
            "machine_type": "g2-standard-8",
            "accelerator_type": "NVIDIA_L4",
            "accelerator_count": 1,
        }
    )
    assert pools[0]["container_spec"] == pools[1]["container_spec"]


def test_tuning_trials_run_on_the_same_accelerated_machine():
    from vertex.training import tuning_job_spec

    spec = tuning_job_spec(
        version="v1",
        image_uri="img",
        args=[],
        base_output_dir="gs://b/m",
        machine_type="g2-standard-8",
        metric="validation_objective",
        parameters=[],
        trials=4,
        parallel_trials=1,
        accelerator_type="NVIDIA_L4",
        accelerator_count=1,
    )
    (pool,) = spec["trial_job_spec"]["worker_pool_specs"]  # one replica per trial
    assert pool["machine_spec"] == {
        "machine_type": "g2-standard-8",
        "accelerator_type": "NVIDIA_L4",
        "accelerator_count": 1,
    }
