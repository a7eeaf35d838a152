"""A 2-worker MultiWorkerMirroredStrategy job (two real TensorFlow processes over localhost, with the
``CLUSTER_SPEC`` Vertex AI sets) outlives a replica that stops answering for longer than TensorFlow's
default heartbeat timeout (10 s): a busy machine can stall a process that long."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import recsys
from recsys_devtools.emulators.ports import free_port

# a replica: one all-reduce, then (when told, on stdin) another; prints each sum
REPLICA = """
import sys
from recsys.training import distribution
strategy = distribution.strategy_for(distribution.topology())
import tensorflow as tf
def total():
    return float(strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None))
print("sum", total(), flush=True)
sys.stdin.readline()
print("sum", total(), flush=True)
"""
STALL_SECONDS = 15  # > TensorFlow's 10 s default, < distribution.HEARTBEAT_TIMEOUT_SECONDS


def _replica(pool: str, cluster: dict) -> subprocess.Popen:
    spec = json.dumps({"cluster": cluster, "task": {"type": pool, "index": 0}})
    include = str(Path(recsys.__file__).resolve().parents[1])
    env = {**os.environ, "CLUSTER_SPEC": spec, "PYTHONPATH": include, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, "-c", REPLICA],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stopped(process: subprocess.Popen, within: float = 10.0) -> bool:
    """Whether the process reaches the stopped state (``T`` in /proc) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
            return True
        time.sleep(0.01)
    return False


def test_a_replica_stalled_past_tensorflows_default_heartbeat_timeout_does_not_fail_the_job():
    cluster = {"workerpool0": [f"127.0.0.1:{free_port()}"], "workerpool1": [f"127.0.0.1:{free_port()}"]}
    chief, worker = _replica("workerpool0", cluster), _replica("workerpool1", cluster)
    try:
        assert chief.stdout.readline() == worker.stdout.readline() == "sum 2.0\n"  # both joined the cluster
        worker.send_signal(signal.SIGSTOP)
        assert _stopped(worker)  # the fault fired: the worker is stopped, sending no heartbeats
        time.sleep(STALL_SECONDS)
        worker.send_signal(signal.SIGCONT)
        for replica in (chief, worker):
            replica.stdin.write("\n")
            replica.stdin.flush()
        outputs = [replica.communicate(timeout=120) for replica in (chief, worker)]
        assert [out for out, _ in outputs] == ["sum 2.0\n", "sum 2.0\n"], [err[-2000:] for _, err in outputs]
        assert chief.returncode == worker.returncode == 0
    finally:
        for replica in (chief, worker):
            if replica.poll() is None:
                replica.send_signal(signal.SIGCONT)
                replica.kill()
