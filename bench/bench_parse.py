"""DAG parse time: each DAG file and the whole folder vs a trivial DAG file, in the same run.

Every measurement runs in a fresh interpreter (as a DAG-processor child does): import Airflow
first (its cost is the same for every file, reported separately), then time filling a ``DagBag``
with one file and check the modules that adds against a list of heavy libraries (TensorFlow,
pandas, pyarrow, cloud SDKs). Repeated ``--repeat`` times; the median is reported. Target: every
file within 0.5 s of the trivial baseline, no TensorFlow at parse.
Writes ``bench/results/bench_parse.json``.

    .venv/bin/python bench/bench_parse.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
HEAVY = ("tensorflow", "pandas", "pyarrow", "numpy", "boto3", "botocore", "google.cloud", "scann")
TRIVIAL = """
from datetime import datetime
from airflow.sdk import dag, task

@dag(schedule=None, start_date=datetime(2026, 1, 1), doc_md="trivial")
def trivial():
    @task
    def hello():
        return 1
    hello()

trivial()
"""
PROBE = """
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
t1 = time.perf_counter()
before = set(sys.modules)
bag = DagBag(dag_folder=sys.argv[1])
t2 = time.perf_counter()
heavy = sorted({m.split('.')[0] if not m.startswith('google.cloud') else 'google.cloud'
                for m in set(sys.modules) - before if m.startswith(tuple(sys.argv[2].split(',')))})
print(json.dumps({"airflow_import_s": t1 - t0, "fill_s": t2 - t1, "dags": len(bag.dags),
                  "errors": {str(k): str(v)[-300:] for k, v in bag.import_errors.items()}, "heavy": heavy}))
"""


def measure(path: Path, repeat: int) -> dict:
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(ROOT / "plugins"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins")}  # fmt: skip
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", PROBE, str(path), ",".join(HEAVY)], capture_output=True,
                             text=True, env=env, check=True).stdout  # fmt: skip
        runs.append(json.loads(out.strip().splitlines()[-1]))
    return {"fill_s_median": round(statistics.median(r["fill_s"] for r in runs), 3),
            "fill_s_all": [round(r["fill_s"], 3) for r in runs],
            "airflow_import_s_median": round(statistics.median(r["airflow_import_s"] for r in runs), 3),
            "dags": runs[0]["dags"], "import_errors": runs[0]["errors"], "heavy_modules": runs[0]["heavy"],
            "imports_tensorflow": "tensorflow" in runs[0]["heavy"]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from results_file import write_results

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("AIRFLOW_HOME", tmp)
        trivial = Path(tmp) / "trivial_dag.py"
        trivial.write_text(TRIVIAL)
        baseline = measure(trivial, args.repeat)
        files = {p.name: measure(p, args.repeat) for p in sorted((ROOT / "dags").glob("*.py"))}
        folder = measure(ROOT / "dags", args.repeat)
    print(f"{'file':<28}{'fill s':>8}{'vs trivial':>12}  heavy at parse")
    print(f"{'(trivial baseline)':<28}{baseline['fill_s_median']:>8.3f}{'':>12}  {baseline['heavy_modules']}")
    for name, row in files.items():
        row["over_trivial_s"] = round(row["fill_s_median"] - baseline["fill_s_median"], 3)
        row["within_target"] = row["over_trivial_s"] <= 0.5 and not row["imports_tensorflow"]
        print(f"{name:<28}{row['fill_s_median']:>8.3f}{row['over_trivial_s']:>+12.3f}  {row['heavy_modules']}")
    print(f"{'whole dags/ folder':<28}{folder['fill_s_median']:>8.3f}"
          f"{folder['fill_s_median'] - baseline['fill_s_median']:>+12.3f}  ({folder['dags']} DAGs)")  # fmt: skip
    print(f"Airflow import (not counted above): {baseline['airflow_import_s_median']:.2f} s")
    write_results("bench_parse", {"repeat": args.repeat, "target_over_trivial_s": 0.5, "trivial": baseline,
                                  "files": files, "folder": folder})  # fmt: skip
    return 0 if all(r["within_target"] for r in files.values()) and not folder["import_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
