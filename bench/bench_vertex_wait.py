"""Worker-slot seconds and completion-detection delay: synchronous vs deferrable Vertex deploy waits.

The local Vertex fake completes each deploy operation ``T`` seconds after it starts. Measured in one
run, for each ``T``:

* synchronous: what the provider's ``DeployModelOperator.execute`` does — ``hook.deploy_model``
  then the blocking ``hook.wait_for_operation`` (google-api-core polling) — the worker slot is held
  throughout;
* deferrable: ``DeferrableDeployModelOperator`` — the worker runs only the start call and the
  completion callback; the wait happens in the trigger (``VertexOperationTrigger``), polled every
  ``poll_interval`` seconds (2 s and the default 10 s).

Detection delay = when the caller saw completion minus when the fake finished the operation.
Writes ``bench/results/bench_vertex_wait.json``.

    .venv/bin/python bench/bench_vertex_wait.py [--seconds 5 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests"), str(ROOT / "plugins")]
PROJECT, REGION = "bench-project", "us-central1"


def _done_at(fake, name: str) -> float:
    return fake.operations[name].started + fake.operation_seconds


def synchronous(fake, hook, endpoint_id: str, model: str) -> dict:
    started = time.monotonic()
    operation = hook.deploy_model(project_id=PROJECT, region=REGION, endpoint=endpoint_id,
                                  deployed_model={"model": model}, traffic_split={"0": 100})  # fmt: skip
    hook.wait_for_operation(timeout=3600, operation=operation)
    seen = time.monotonic()
    return {"worker_slot_s": round(seen - started, 3),
            "detection_delay_s": round(seen - _done_at(fake, operation.operation.name), 3)}  # fmt: skip


def deferrable(fake, endpoint_id: str, model: str, poll_interval: float) -> dict:
    from deferral_timing import run_deferred
    from vertex.operators import DeferrableDeployModelOperator

    operator = DeferrableDeployModelOperator(task_id="deploy", project_id=PROJECT, region=REGION,
                                             gcp_conn_id="vertex_bench", endpoint_id=endpoint_id,
                                             deployed_model={"model": model}, traffic_split={"0": 100},
                                             poll_interval=poll_interval)  # fmt: skip
    run = run_deferred(operator)
    return {"worker_slot_s": run["worker_slot_s"],
            "detection_delay_s": round(run["seen_at"] - _done_at(fake, run["trigger"].resource), 3),
            "poll_interval_s": poll_interval}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 20.0])
    args = parser.parse_args()
    from results_file import write_results
    from vertex.hooks import VertexEndpointServiceHook, VertexModelServiceHook

    from recsys_devtools.emulators.ports import free_port
    from recsys_devtools.emulators.vertex import RunningFake, VertexFake, airflow_connection

    fake = VertexFake(project=PROJECT, location=REGION, operation_seconds=0.05)
    runs = []
    with RunningFake(fake, free_port()) as running:
        os.environ["AIRFLOW_CONN_VERTEX_BENCH"] = airflow_connection(running.url, PROJECT)
        models, endpoints = VertexModelServiceHook("vertex_bench"), VertexEndpointServiceHook("vertex_bench")
        model = models.upload_model(project_id=PROJECT, region=REGION,
                                    model={"display_name": "m"}).result(timeout=30).model  # fmt: skip
        endpoint_id = endpoints.create_endpoint(project_id=PROJECT, region=REGION, endpoint={"display_name": "e"}
                                                ).result(timeout=30).name.rsplit("/", 1)[-1]  # fmt: skip
        for seconds in args.seconds:
            fake.operation_seconds = seconds
            row = {"operation_seconds": seconds, "synchronous": synchronous(fake, endpoints, endpoint_id, model),
                   "deferrable": [deferrable(fake, endpoint_id, model, p) for p in (2.0, 10.0)]}  # fmt: skip
            runs.append(row)
            sync = row["synchronous"]
            line = f"T={seconds:>5.1f}s  synchronous: slot {sync['worker_slot_s']:6.2f}s "
            line += f"detect +{sync['detection_delay_s']:.2f}s"
            for d in row["deferrable"]:
                line += (f" | deferrable poll {d['poll_interval_s']:>4.0f}s: slot {d['worker_slot_s']:.3f}s "
                         f"detect +{d['detection_delay_s']:.2f}s")  # fmt: skip
            print(line, flush=True)
    write_results("bench_vertex_wait", {"fake": "recsys_devtools.emulators.vertex over loopback HTTP, REST transport",
                                        "runs": runs})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
