"""The TensorFlow distribution strategy of a training process, chosen from its environment.

* Several workers named by ``TF_CONFIG``, or by Vertex AI's ``CLUSTER_SPEC`` (converted: ``workerpool0``
  is the chief, ``workerpool1`` the workers) -> ``MultiWorkerMirroredStrategy``: synchronous data
  parallelism, gradients all-reduced between the workers (collective ops over gRPC).
* Otherwise more than one visible GPU -> ``MirroredStrategy`` (one replica per GPU of this process).
* Otherwise the default strategy: one process, one device (the CPU, or the one GPU).

The same code path trains in every case (:func:`recsys.training.fit.fit` builds the model in the
strategy's scope). The global batch stays ``batch_size`` whatever the number of replicas: each replica
takes an equal share of every batch, its in-batch softmax sees its own share as negatives (the loss is
summed, the TFRS default, and the replicas' gradients are summed), so a run differs from the one-process
run by float rounding and by which examples meet as negatives. Only the chief writes the export,
metrics and checkpoints; every other worker trains and saves beside it (saving may need collectives) into a
private temporary folder (deleted), and skips the baselines' tuning, whose figures only the chief reports.
Tuning trials run in one process: a several-worker job trains given values.

``MultiWorkerMirroredStrategy`` must be created before any other TensorFlow operation of the process:
:func:`strategy_for` is the trainer's first TensorFlow call. Its coordination service fails the job when a
worker sends no heartbeat for ``HEARTBEAT_TIMEOUT_SECONDS`` (TensorFlow's default, 10 s, failed a job here
when a busy 2-core machine stalled a process for longer; a dead replica still fails the job at once, through
its exit status).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass

CHIEF_POOL, WORKER_POOL = "workerpool0", "workerpool1"  # Vertex AI's worker pool names
HEARTBEAT_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class Topology:
    """Where this process trains: ``strategy`` (multi_worker_mirrored | mirrored | default), the
    number of workers and of replicas in all, and this process's role."""

    strategy: str
    workers: int
    replicas: int
    task_type: str
    task_index: int
    chief: bool  # this process writes the export, metrics and checkpoints
    tf_config: str = ""  # the TF_CONFIG the strategy reads (CLUSTER_SPEC converted), "" when none

    def describe(self) -> dict:
        """What metrics.json and the model card record."""
        return {k: v for k, v in asdict(self).items() if k != "tf_config"}


ONE_DEVICE = Topology("default", 1, 1, "chief", 0, True)


def tf_config_from(env: Mapping[str, str]) -> dict | None:
    """The cluster as ``TF_CONFIG`` states it: ``TF_CONFIG`` itself, or Vertex AI's ``CLUSTER_SPEC``."""
    if raw := env.get("TF_CONFIG"):
        return json.loads(raw)
    if not (raw := env.get("CLUSTER_SPEC")):
        return None
    spec = json.loads(raw)
    names = {CHIEF_POOL: "chief", WORKER_POOL: "worker"}
    unknown = set(spec.get("cluster", {})) - set(names)
    if unknown:
        raise ValueError(f"CLUSTER_SPEC has pools {sorted(unknown)}: the trainer uses workerpool0 (chief) and 1")
    cluster = {names[pool]: hosts for pool, hosts in spec["cluster"].items() if hosts}
    task = spec.get("task", {})
    return {"cluster": cluster, "task": {"type": names[task["type"]], "index": int(task.get("index", 0))}}


def topology(env: Mapping[str, str] | None = None, gpus: int | None = None) -> Topology:
    """The strategy this process's environment calls for (``gpus``: visible GPUs; asked of TF if None)."""
    env = os.environ if env is None else env
    config = tf_config_from(env)
    if config:
        workers = sum(len(hosts) for pool, hosts in config["cluster"].items() if pool in ("chief", "worker"))
        if workers > 1:
            kind, index = config["task"]["type"], int(config["task"].get("index", 0))
            chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in config["cluster"])
            return Topology("multi_worker_mirrored", workers, workers, kind, index, chief, json.dumps(config))
    if gpus is None:
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
    if gpus > 1:
        return Topology("mirrored", 1, gpus, "chief", 0, True)
    return ONE_DEVICE


def strategy_for(place: Topology):
    """The ``tf.distribute.Strategy`` for ``place`` (sets ``TF_CONFIG`` for a converted CLUSTER_SPEC)."""
    import tensorflow as tf

    if place.strategy == "multi_worker_mirrored":
        os.environ["TF_CONFIG"] = place.tf_config
        _configure_coordination(json.loads(place.tf_config)["cluster"])
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING  # NCCL needs GPUs
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if place.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _configure_coordination(cluster: dict) -> None:
    """The coordination service ``MultiWorkerMirroredStrategy`` would configure (same leader and jobs), with
    ``HEARTBEAT_TIMEOUT_SECONDS``; the strategy keeps a service configured before it."""
    import tensorflow as tf
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    jobs = [
        coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(cluster[job]))
        for job in ("chief", "worker")
        if job in cluster
    ]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(tf.train.ClusterSpec(cluster)),
        coordinated_jobs=jobs,
        heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_SECONDS * 1000,
    )
