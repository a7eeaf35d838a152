"""Chaos under a real Airflow: faults injected, survived, data lost, duplicate cloud jobs.

Runs the chaos suite (``tests/e2e/test_chaos_airflow.py``: a real api-server, scheduler, dag-processor
and triggerer on PostgreSQL, a PostgreSQL source, S3 behind a faulty proxy, the Vertex AI and
Personalize fakes) and collects the outcome each test records for its fault: whether the fault was
injected, whether the run ended correctly with exactly the fault-free result (survived), rows lost,
and duplicates (extra partition versions or rows, a second deployment, a second solution version).

Writes ``bench/results/bench_chaos.json``. Target: every fault survived, 0 rows lost, 0 duplicates.

    .venv/bin/python bench/bench_chaos.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
SUITE = "tests/e2e/test_chaos_airflow.py"


def main() -> int:
    from results_file import write_results

    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        report = Path(tmp) / "faults.jsonl"
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", SUITE],
            cwd=ROOT,
            env={**os.environ, "CHAOS_REPORT": str(report)},
        )
        seconds = time.monotonic() - started
        faults = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    figures = {
        "suite": SUITE,
        "pytest_exit_code": done.returncode,
        "faults_injected": sum(f["injected"] for f in faults),
        "faults_survived": sum(f["survived"] for f in faults),
        "data_lost_rows": sum(f["data_lost"] or 0 for f in faults),
        "duplicates": sum(f["duplicates"] or 0 for f in faults),
        "suite_seconds": round(seconds, 1),
        "faults": faults,
    }
    print(f"{'fault':<80} {'injected':>8} {'survived':>8} {'lost':>5} {'dup':>4} {'s':>6}")
    for f in faults:
        row = (f["fault"], f["injected"], f["survived"], f["data_lost"], f["duplicates"], f["seconds"])
        print("{:<80} {!s:>8} {!s:>8} {!s:>5} {!s:>4} {:>6}".format(*row))
    print(
        f"faults injected {figures['faults_injected']}, survived {figures['faults_survived']}, "
        f"rows lost {figures['data_lost_rows']}, duplicates {figures['duplicates']} ({seconds:.0f} s)"
    )
    write_results("bench_chaos", figures)
    complete = faults and all(f["injected"] and f["survived"] for f in faults)
    return 0 if done.returncode == 0 and complete else 1


if __name__ == "__main__":
    sys.exit(main())
