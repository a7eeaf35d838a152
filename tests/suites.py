"""``make test``'s pytest runner: the independent suites at once, each its own pytest process (its own
throw-away ``AIRFLOW_HOME``, fixtures and databases: nothing is shared but the database servers), then
each suite's wall and CPU time (its own and its waited children's) and outcome. Every test still runs:
the suites' selections cover the whole tree.

    python tests/suites.py            # every suite, in parallel
    python tests/suites.py ARGS...    # one plain pytest run with ARGS (e.g. a file or -k)

Each suite's output goes to ``.test-logs/<suite>.log``; a failing suite's tail is printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".test-logs"
REAL_AIRFLOW = "e2e or ui or chaos"
DAG_TESTS = ["tests/dags", "-m", f"not ({REAL_AIRFLOW})"]
PERSONALIZE_DAGS = ["tests/dags/test_personalize_dag.py", "tests/dags/test_personalize_setup_dag.py"]
FUZZ_SERVING = "tests/integration/test_fuzz_serving.py"
SUITES = {  # log name -> pytest selection; together they select every test once. The longest chains start first.
    "e2e": ["tests", "-m", "e2e and not ui and not chaos"],  # a real Airflow
    "chaos": ["tests", "-m", "chaos"],  # a real Airflow, faults injected
    "dags-models": [  # dag.test: training, deploy
        *DAG_TESTS,
        "--ignore=tests/dags/test_extract_dag.py",
        *(f"--ignore={path}" for path in PERSONALIZE_DAGS),
    ],
    "unit-integration": [
        "tests/unit",
        "tests/integration",
        "tests/test_compose.py",
        f"--ignore={FUZZ_SERVING}",
        "-m",
        f"not ({REAL_AIRFLOW})",
    ],
    # dag.test: Personalize; and the serving fuzz (one ~5 min test) beside them, to even the suites out
    "dags-personalize": [*PERSONALIZE_DAGS, FUZZ_SERVING, "-m", f"not ({REAL_AIRFLOW})"],
    "dags-extract": ["tests/dags/test_extract_dag.py", "-m", f"not ({REAL_AIRFLOW})"],  # dag.test: Spark engines
    "ui": ["tests", "-m", "ui and not chaos"],  # a real Airflow in a browser
}


def main(argv: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest"]
    if argv:
        return subprocess.call([*pytest, *argv], cwd=ROOT)
    LOGS.mkdir(exist_ok=True)
    started, running = time.monotonic(), {}
    for name, selection in SUITES.items():
        log = (LOGS / f"{name}.log").open("w")
        command = [*pytest, *selection, "--durations=15"]  # each log ends with its slowest tests
        running[name] = (subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log)
    finished: dict[str, tuple[int, float, float, str]] = {}
    while len(finished) < len(running):
        for name, (process, log) in running.items():
            if name in finished:
                continue
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)  # usage: the suite and its waited children
            if pid:
                log.close()
                summary = Path(log.name).read_text().strip().splitlines()[-1:] or ["(no output)"]
                cpu = usage.ru_utime + usage.ru_stime
                finished[name] = (os.waitstatus_to_exitcode(status), time.monotonic() - started, cpu, summary[0])
                print(f"== {name}: {summary[0]} ({finished[name][1] / 60:.1f} min)", flush=True)
        time.sleep(1)
    print(f"\n{'suite':<20} {'minutes':>8} {'CPU min':>8}  result")
    for name, (code, seconds, cpu, summary) in finished.items():
        outcome = "ok" if code == 0 else f"FAILED ({code})"
        print(f"{name:<20} {seconds / 60:>8.1f} {cpu / 60:>8.1f}  {outcome}: {summary}")
    total_cpu = sum(cpu for _, _, cpu, _ in finished.values()) / 60
    print(f"{'all (wall clock)':<20} {(time.monotonic() - started) / 60:>8.1f} {total_cpu:>8.1f}")
    failed = [name for name, (code, _, _, _) in finished.items() if code != 0]
    for name in failed:
        tail = Path(running[name][1].name).read_text().splitlines()[-60:]
        print(f"\n==== {name}: the end of {running[name][1].name}\n" + "\n".join(tail))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
