"""Completion-detection delay and worker-slot seconds: Personalize waits, deferrable vs Step Functions.

The Personalize fake (JSON 1.1 over loopback HTTP, real boto3/aiobotocore clients) finishes each
solution version ``T`` seconds after it is created. Measured in one run, for each ``T``:

* deferrable: ``PersonalizeCreateSolutionVersionOperator`` (the DAG's mode) — the worker only runs
  the create call and the completion callback; ``SolutionVersionTrigger`` polls the custom waiter
  every ``waiter_delay`` s (2 s and 10 s here; the DAG's default is ``personalize_poll_seconds``=60);
* synchronous: the same operator with ``deferrable=False`` (waiter polled every 2 s in the worker);
* Step Functions baseline: the replaced workflow's ``Wait 600 s -> Describe -> Choice`` loop,
  simulated on a virtual clock (nobody waits 10 minutes in a benchmark): it notices completion at
  the first multiple of 600 s after ``T`` (mean delay 300 s over random completion times). A
  state machine holds no Airflow worker, but the same loop inside a task would hold one throughout.

Writes ``bench/results/bench_personalize_wait.json``.

    .venv/bin/python bench/bench_personalize_wait.py [--seconds 5 20]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests"), str(ROOT / "plugins")]
SFN_WAIT_SECONDS = 600


def _done_at(fake, arn: str) -> float:
    job = fake.jobs[arn]
    return job.started + job.pending + job.running


def _operator(fake, name: str, **kwargs):
    from personalize.operators import PersonalizeCreateSolutionVersionOperator

    kwargs.setdefault("deferrable", True)
    return PersonalizeCreateSolutionVersionOperator(
        task_id=name,
        solution_arn=fake.resources["solution"],
        name=name,
        training_mode="FULL",
        waiter_max_attempts=10_000,
        **kwargs,
    )


def deferrable(fake, seconds: float, delay: float) -> dict:
    from deferral_timing import run_deferred

    run = run_deferred(_operator(fake, f"bench-deferred-{int(seconds)}-{int(delay)}", waiter_delay=delay))
    # time.monotonic() in the bench vs time.time() in the fake: compare on the wall clock
    seen_wall = time.time() - (time.monotonic() - run["seen_at"])
    return {"poll_s": delay, "worker_slot_s": run["worker_slot_s"],
            "detection_delay_s": round(seen_wall - _done_at(fake, run["result"]), 3)}  # fmt: skip


def synchronous(fake, seconds: float, delay: float) -> dict:
    started = time.time()
    arn = _operator(fake, f"bench-sync-{int(seconds)}", deferrable=False, waiter_delay=delay).execute({})
    seen = time.time()
    return {"poll_s": delay, "worker_slot_s": round(seen - started, 3),
            "detection_delay_s": round(seen - _done_at(fake, arn), 3)}  # fmt: skip


def step_functions(seconds: float) -> dict:
    noticed = math.ceil(seconds / SFN_WAIT_SECONDS) * SFN_WAIT_SECONDS
    return {"poll_s": SFN_WAIT_SECONDS, "detection_delay_s": noticed - seconds,
            "mean_detection_delay_s": SFN_WAIT_SECONDS / 2, "slot_s_if_run_in_a_task": noticed}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 20.0])
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    from results_file import write_results

    from recsys_devtools.emulators.personalize import PersonalizeFake, airflow_connection
    from recsys_devtools.emulators.ports import free_port
    from recsys_devtools.emulators.running import RunningFake

    fake = PersonalizeFake(pending_seconds=0.0)
    fake.resources = fake.create_dataset_group()
    next(d for d in fake.datasets.values() if d["type"] == "interactions")["rows"] = 100_000
    rows = []
    with RunningFake(fake, free_port()) as running:
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = airflow_connection(running.url, None)
        for seconds in args.seconds:
            fake.job_seconds = seconds
            row = {"job_seconds": seconds, "deferrable": [deferrable(fake, seconds, d) for d in (2.0, 10.0)]}
            row |= {"synchronous": synchronous(fake, seconds, 2.0), "step_functions": step_functions(seconds)}
            rows.append(row)
            (fast, slow), sync, sfn = row["deferrable"], row["synchronous"], row["step_functions"]
            print(f"T={seconds:5.1f}s  deferrable(2s): slot {fast['worker_slot_s']:.3f}s delay "
                  f"+{fast['detection_delay_s']:.2f}s | deferrable(10s): delay +{slow['detection_delay_s']:.2f}s"
                  f" | sync: slot {sync['worker_slot_s']:.2f}s | Step Functions (Wait 600 s): delay "
                  f"+{sfn['detection_delay_s']:.0f}s, mean {sfn['mean_detection_delay_s']:.0f}s")  # fmt: skip
    write_results("bench_personalize_wait", {
        "fake": "recsys_devtools.emulators.personalize over loopback HTTP (JSON 1.1), boto3 + aiobotocore clients",
        "step_functions_model": f"Wait {SFN_WAIT_SECONDS} s loop on a virtual clock", "runs": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
