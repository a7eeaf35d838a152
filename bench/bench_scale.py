"""How the pipeline's cost grows with its data: 1M and 10M (and, with ``--sizes``, 30M) interactions.

For each size, the project's synthetic generator (30 days; users = interactions / 50, items =
interactions / 100, at most 1M) is bulk-loaded into a scratch PostgreSQL database, then every stage
runs in its own process (peak RSS is that process's own):

* extraction, Arrow backend: all 30 days, one partition each (the nightly job, backfilled);
* extraction, Spark-local backend: the newest day (``spark-submit --master local[2]``); the worker's
  peak RSS and the Spark JVM's (its process tree) are reported apart;
* training: the real job (``train_and_export``, one epoch): the window read through the manifests
  (29 days; the newest is the holdout), the choices on the validation split (the baselines' grids within
  ``BASELINE_MINUTES``, no model tuning trials), the fit, the evaluation (holdout rows x items scored capped),
  the export (candidate embeddings, brute force vs ScaNN on 1,000 real queries, SavedModels); its stage
  timings, peak RSS, and the serving index's size on disk;
* serving: that export behind the prediction server, 400 sequential requests (user id + the
  server's own history lookup), p50 / p99.

Each stage's growth is the slope of a log-log fit of its cost against the interaction count (1.0 =
linear). Prints a table, writes ``bench/results/bench_scale.json`` and plots it to
``bench/results/bench_scale.png``.

    .venv/bin/python bench/bench_scale.py [--sizes 1000000 10000000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from results_file import RESULTS_DIR, measured_commit, write_results

ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
END = datetime(2026, 11, 1, tzinfo=UTC)  # the window is the 30 days before it
DAYS = 30
BASELINE_MINUTES = 3  # the training job's budget for choosing the baselines' parameters (10 by default)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def _peak_mib(who=resource.RUSAGE_SELF) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def _db_url(db: str) -> str:
    return ADMIN.rsplit("/", 1)[0] + f"/{db}"


def seed(db: str, interactions: int) -> dict:
    """The synthetic source in PostgreSQL, bulk-loaded with COPY from generated columns."""
    import psycopg2
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from sqlalchemy import create_engine, text

    from recsys.data import schema
    from recsys_devtools.synthetic import EVENT_TYPES, SyntheticSpec, synthetic_dataset

    spec = SyntheticSpec(
        users=max(interactions // 50, 100),
        items=min(max(interactions // 100, 100), 1_000_000),
        interactions=interactions,
        days=DAYS,
        chunk_rows=1_000_000,
    )
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{db}"'))
    admin.dispose()
    engine = create_engine(_db_url(db))
    schema.metadata.create_all(engine)
    engine.dispose()
    dataset = synthetic_dataset(spec, END)
    started = time.perf_counter()
    conn = psycopg2.connect(dbname=db, user="postgres", host="127.0.0.1")
    with conn, conn.cursor() as cur:
        for table, rows in (("users", dataset.users), ("items", dataset.items)):
            data = io.BytesIO()
            pacsv.write_csv(pa.Table.from_pylist(rows), data)
            data.seek(0)
            cur.copy_expert(f"COPY {table} ({','.join(rows[0])}) FROM STDIN WITH (FORMAT csv, HEADER true)", data)
        events = pa.array(EVENT_TYPES)
        for columns in dataset.interaction_columns():
            table = pa.table(
                {
                    "user_id": pa.compute.binary_join_element_wise(
                        "u", pa.array(columns["user"]).cast(pa.string()), ""
                    ),
                    "item_id": pa.compute.binary_join_element_wise(
                        "i", pa.array(columns["item"]).cast(pa.string()), ""
                    ),
                    "event_type": events.take(pa.array(columns["event"])),
                    "event_value": pa.array([1.0] * len(columns["user"])),
                    "occurred_at": pa.array(columns["offset_us"] + int(dataset.start.timestamp() * 1e6)).cast(
                        pa.timestamp("us")
                    ),
                }
            )
            data = io.BytesIO()
            pacsv.write_csv(table, data)
            data.seek(0)
            cur.copy_expert(
                "COPY interactions (user_id, item_id, event_type, event_value, occurred_at) "
                "FROM STDIN WITH (FORMAT csv, HEADER true)",
                data,
            )
        cur.execute("ANALYZE interactions")
    conn.close()
    return {"seconds": round(time.perf_counter() - started, 1), "users": spec.users, "items": spec.items}


def drop(db: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
    admin.dispose()


def _days() -> list[date]:
    return [(END - timedelta(days=DAYS - d)).date() for d in range(DAYS)]


def child_extract_arrow(db: str, root: str) -> dict:
    from sqlalchemy import create_engine

    from recsys.config import load_settings
    from recsys.data.extract import QualityPolicy, publish_partition, stage_partition
    from recsys.data.validate import Interval

    settings = load_settings({"storage_root": root, "extraction_backend": "arrow"})
    engine = create_engine(_db_url(db))
    per_day, rows = [], 0
    started = time.perf_counter()
    for day in _days():
        begun = time.perf_counter()
        manifest = publish_partition(
            stage_partition(engine, Interval.for_day(day), settings), settings, QualityPolicy()
        )
        per_day.append(time.perf_counter() - begun)
        rows += manifest["counts"]["valid"]
    return {
        "seconds": time.perf_counter() - started,
        "newest_day_seconds": per_day[-1],
        "rows": rows,
        "peak_rss_mib": _peak_mib(),
    }


def child_extract_spark(db: str, root: str) -> dict:
    from sqlalchemy import create_engine

    from recsys.config import load_settings
    from recsys.data import spark_extract
    from recsys.data.extract import QualityPolicy, publish_partition
    from recsys.data.validate import Interval

    settings = load_settings({"storage_root": root, "extraction_backend": "spark-local"})
    engine = create_engine(_db_url(db))
    started = time.perf_counter()
    plan = spark_extract.prepare(engine, Interval.for_day(_days()[-1]), settings, "spark-local", "bench")
    job_started = time.perf_counter()
    spark_extract.run_local(plan)
    job = time.perf_counter() - job_started
    manifest = publish_partition(spark_extract.assemble(plan, {}), settings, QualityPolicy())
    return {
        "seconds": time.perf_counter() - started,
        "job_seconds": job,
        "rows": manifest["counts"]["valid"],
        "peak_rss_mib": _peak_mib(),
        "spark_peak_rss_mib": _peak_mib(resource.RUSAGE_CHILDREN),
    }


def child_train(root: str, model_dir: str) -> dict:
    """The real training job (``train_and_export``) with one epoch; its stage timings and peak RSS."""
    from recsys.training.fit import TrainParams
    from recsys.training.pipeline import train_and_export
    from recsys.training.tuning import TuningConfig

    samples, done = [], threading.Event()

    def sample_rss():  # (seconds since start, RSS MiB) every 0.2 s: the peak of each stage of the job
        page = os.sysconf("SC_PAGE_SIZE")
        while not done.wait(0.2):
            rss = int(Path("/proc/self/statm").read_text().split()[1]) * page / 2**20
            samples.append((time.perf_counter() - started, rss))

    started = time.perf_counter()
    threading.Thread(target=sample_rss, daemon=True).start()
    budget = TuningConfig(0, baseline_budget_minutes=BASELINE_MINUTES)
    result = train_and_export(
        root + "/extract", _days()[-1], DAYS, 1, Path(model_dir).as_uri(), TrainParams(epochs=1), tuning=budget
    )
    done.set()
    stage_peaks, begin = {}, 0.0
    for stage, seconds in result["stage_seconds"].items():
        inside = [rss for t, rss in samples if begin <= t < begin + seconds]
        stage_peaks[f"{stage}_peak_rss_mib"] = round(max(inside), 1) if inside else None
        begin += seconds
    index = result["index"]["serving"]
    index_dir = Path(model_dir) / ("index_scann" if index == "scann" else "index_brute_force")
    return {
        "seconds": time.perf_counter() - started,
        **{f"{stage}_seconds": seconds for stage, seconds in result["stage_seconds"].items()},
        "epoch_seconds": result["train_seconds"],
        "train_rows": result["window"]["train_rows"],
        "examples_per_second": round(result["window"]["train_rows"] / result["train_seconds"]),
        "evaluated_rows": result["window"]["evaluated_rows"],
        "serving_index": index,
        "index_bytes": sum(f.stat().st_size for f in index_dir.rglob("*") if f.is_file()),
        "peak_rss_mib": _peak_mib(),
        **stage_peaks,
        "model_top_10": result["metrics"]["model"]["top_10_accuracy"],
        "baselines": {  # tuning on validation (the choose stage): seconds per baseline and its holdout top-10
            name: {
                "tuning_seconds": chosen.get("seconds"),
                "configurations": len(chosen.get("tried", [])),
                "top_10": result["metrics"].get(name, {}).get("top_10_accuracy"),
                **({"skipped": chosen["skipped"]} if chosen.get("skipped") else {}),
            }
            for name, chosen in result["baselines"].items()
        },
    }


def child_train_workers(root: str, model_dir: str, workers: str = "2") -> dict:
    """The same job (the trainer CLI, one epoch) as ``workers`` processes on this machine under
    MultiWorkerMirroredStrategy, with the ``CLUSTER_SPEC`` a Vertex AI worker pool sets; the chief's figures."""
    from recsys_devtools.emulators.ports import free_port

    hosts = [f"127.0.0.1:{free_port()}" for _ in range(int(workers))]
    cluster = {"workerpool0": hosts[:1], "workerpool1": hosts[1:]}
    command = [sys.executable, "-m", "recsys.training.train", "--extract-root", root + "/extract"]
    command += ["--end-day", _days()[-1].isoformat(), "--window-days", str(DAYS), "--epochs", "1"]
    command += ["--baseline-budget-minutes", str(BASELINE_MINUTES)]
    started = time.perf_counter()
    processes = []
    for pool, index in [("workerpool0", 0), *(("workerpool1", n) for n in range(len(hosts) - 1))]:
        task = {"type": pool, "index": index}
        env = {**os.environ, "CLUSTER_SPEC": json.dumps({"cluster": cluster, "task": task})}
        out = subprocess.PIPE if pool == "workerpool0" else subprocess.DEVNULL
        processes.append(subprocess.Popen([*command, "--model-dir", Path(model_dir).as_uri()], env=env, stdout=out))
    chief = json.loads(processes[0].communicate()[0].decode().strip().splitlines()[-1])
    if any(p.wait() for p in processes):
        raise RuntimeError(f"a worker failed: {[p.returncode for p in processes]}")
    metrics = json.loads((Path(model_dir) / "metrics.json").read_text())
    return {
        "workers": len(hosts),
        "seconds": time.perf_counter() - started,
        "epoch_seconds": metrics["train_seconds"],
        "train_rows": metrics["window"]["train_rows"],
        "examples_per_second": round(metrics["window"]["train_rows"] / metrics["train_seconds"]),
        "distribution": chief["distribution"],
        "model_top_10": chief["model"]["top_10_accuracy"],
    }


def run_child(kind: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-4000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def serve(model_dir: Path, tmp: Path, requests: int = 400) -> dict:
    """p50/p99 of sequential requests (known users; the server looks their history up)."""
    import httpx
    import numpy as np
    from bench_serving import start_server

    from recsys_devtools.emulators.ports import free_port

    users = json.loads((model_dir / "vocabularies.json").read_text())["user_ids"]
    port = free_port()
    process = start_server(model_dir, "auto", port, tmp / "server.log", {})  # micro-batched, as deployed
    try:
        rng = np.random.default_rng(7)
        latencies = []
        with httpx.Client(timeout=30) as client:
            for n in range(requests + 20):
                body = {"instances": [{"user_id": users[rng.integers(len(users))]}], "parameters": {"k": 10}}
                begun = time.perf_counter()
                response = client.post(f"http://127.0.0.1:{port}/predict", json=body)
                if n >= 20:  # the first requests warm the server up
                    latencies.append((time.perf_counter() - begun) * 1000)
                response.raise_for_status()
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
    }


def slope(sizes: list[int], costs: list[float]) -> float | None:
    """The exponent of a least-squares power law ``cost ~ size ** slope``."""
    import numpy as np

    if len(sizes) < 2 or min(costs) <= 0:
        return None
    return round(float(np.polyfit(np.log(sizes), np.log(costs), 1)[0]), 3)


METRICS = {  # name -> (stage, key)
    "extract_arrow_seconds": ("extract_arrow", "seconds"),
    "extract_arrow_peak_rss_mib": ("extract_arrow", "peak_rss_mib"),
    "extract_spark_local_seconds": ("extract_spark_local", "seconds"),
    "extract_spark_local_jvm_peak_rss_mib": ("extract_spark_local", "spark_peak_rss_mib"),
    "train_load_seconds": ("train", "load_seconds"),
    "train_epoch_seconds": ("train", "epoch_seconds"),
    "train_examples_per_second": ("train", "examples_per_second"),
    "train_job_peak_rss_mib": ("train", "peak_rss_mib"),
    "train_fit_peak_rss_mib": ("train", "fit_peak_rss_mib"),
    "evaluate_seconds": ("train", "evaluate_seconds"),
    "export_seconds": ("train", "export_seconds"),
    "index_bytes": ("train", "index_bytes"),
    "serving_p50_ms": ("serving", "p50_ms"),
    "serving_p99_ms": ("serving", "p99_ms"),
}


def plot(runs: list[dict], slopes: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["interactions"] for r in runs]
    fig, ax = plt.subplots(figsize=(9, 6))
    for number, (name, (stage, key)) in enumerate(METRICS.items()):
        values = [r[stage][key] for r in runs]
        ax.plot(
            sizes,
            [v / values[0] for v in values],
            marker="o",
            color=plt.cm.tab20(number),
            label=f"{name} (slope {slopes[name]})",
        )
    ax.plot(sizes, [s / sizes[0] for s in sizes], "k--", label="linear (slope 1)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("interactions")
    ax.set_ylabel(f"cost relative to {sizes[0]:,} interactions")
    ax.set_title("recsys pipeline: cost growth with data size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--child", choices=["extract_arrow", "extract_spark_local", "train", "train_workers"])
    parser.add_argument("--workers-at", type=int, default=1_000_000, help="the size that also trains on 2 workers")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from the results JSON")
    parser.add_argument("--results", default="bench_scale", help="results file name (a partial run: not the README's)")
    parser.add_argument(
        "--merge", action="store_true", help="keep the results file's runs of other sizes (e.g. add 30M to 1M + 10M)"
    )
    parser.add_argument("args", nargs="*")
    args = parser.parse_args()
    if args.replot:
        results = json.loads((RESULTS_DIR / "bench_scale.json").read_text())
        plot(results["runs"], results["slopes"], RESULTS_DIR / "bench_scale.png")
        return 0
    if args.child:
        children = {
            "extract_arrow": child_extract_arrow,
            "extract_spark_local": child_extract_spark,
            "train": child_train,
            "train_workers": child_train_workers,
        }
        print(json.dumps(children[args.child](*args.args), default=str))
        return 0

    runs = []
    for size in args.sizes:
        db = f"recsys_scale_{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory(prefix="recsys-scale-") as tmp_name:
            tmp = Path(tmp_name)
            root = tmp.joinpath("lake").as_uri()
            try:
                run = {"interactions": size, "commit": measured_commit(), "seed": seed(db, size)}
                run["extract_arrow"] = run_child("extract_arrow", db, root)
                run["extract_spark_local"] = run_child("extract_spark_local", db, tmp.joinpath("spark").as_uri())
            finally:
                drop(db)
            run["train"] = run_child("train", root, str(tmp / "model"))
            if size == args.workers_at:
                run["train_2_workers"] = run_child("train_workers", root, str(tmp / "model-2-workers"))
            run["serving"] = serve(tmp / "model", tmp)
        runs.append(run)
        print(
            f"{size:>11,} interactions: "
            + ", ".join(f"{name} {run[stage][key]:,.1f}" for name, (stage, key) in METRICS.items()),
            flush=True,
        )
    if args.merge and (RESULTS_DIR / f"{args.results}.json").exists():
        earlier = json.loads((RESULTS_DIR / f"{args.results}.json").read_text())["runs"]
        runs = sorted({r["interactions"]: r for r in earlier + runs}.values(), key=lambda r: r["interactions"])
    sizes = [r["interactions"] for r in runs]
    slopes = {name: slope(sizes, [r[stage][key] for r in runs]) for name, (stage, key) in METRICS.items()}
    print("log-log slopes (1.0 = linear):", json.dumps(slopes, indent=1))
    linear = [name for name, s in slopes.items() if s is not None and s <= 1.1]
    write_results(
        args.results,
        {
            "source": f"synthetic, {DAYS} days, users = interactions/50, items = interactions/100 (<= 1M), PostgreSQL",
            "baseline_budget_minutes": BASELINE_MINUTES,
            "runs": runs,
            "slopes": slopes,
            "targets": {
                "slope_at_most_1_1": {"met": linear, "missed": [n for n in slopes if n not in linear]},
                "train_peak_rss_mib_at_10m_at_most_4096": next(
                    (r["train"]["peak_rss_mib"] <= 4096 for r in runs if r["interactions"] == 10_000_000), None
                ),
            },
        },
    )
    if len(runs) > 1:
        plot(runs, slopes, RESULTS_DIR / "bench_scale.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
