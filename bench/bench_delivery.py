"""Batch scoring throughput of the two-tower delivery (users/s), one run.

Builds the MovieLens 100K model with the real pipeline (``bench_serving.build_model``), then scores
every user of its history snapshot with the served policy:

- baseline: one user per call (what asking the online predictor user by user costs), on a sample;
- batched, brute force and ScaNN, at two batch sizes (``recsys.delivery.two_tower.batch_rows``);
- end to end: batched ScaNN rows published to a SQLite ``recommendations`` table (staging + swap).

Ratios are against the one-user-per-call baseline measured in the same run. Writes
``bench/results/bench_delivery.json``.

    .venv/bin/python bench/bench_delivery.py [--k 25]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "tests")]


def per_user(model_dir: Path, users: list[str], k: int) -> dict:
    from recsys.serving.predictor import Predictor

    predictor = Predictor(model_dir, index="brute_force")
    predictor.recommend_users(users[:1], k)  # warm-up
    started = time.perf_counter()
    for user in users:
        predictor.recommend_users([user], k)
    seconds = time.perf_counter() - started
    return {"users": len(users), "seconds": round(seconds, 3), "users_per_second": round(len(users) / seconds, 1)}


def batched(model_dir: Path, index: str, batch_size: int, k: int) -> dict:
    from recsys.delivery.two_tower import batch_rows

    started = time.perf_counter()
    rows = sum(1 for _ in batch_rows(model_dir, k, batch_size, index))
    seconds = time.perf_counter() - started
    users = rows // k
    return {
        "index": index,
        "batch_size": batch_size,
        "users": users,
        "rows": rows,
        "seconds": round(seconds, 3),
        "users_per_second": round(users / seconds, 1),
    }


def end_to_end(model_dir: Path, work: Path, k: int) -> dict:
    from sqlalchemy import create_engine

    from recsys.delivery.table import publish
    from recsys.delivery.two_tower import batch_rows

    engine = create_engine(f"sqlite:///{work / 'app.db'}")
    started = time.perf_counter()
    result = publish(engine, batch_rows(model_dir, k, 2048, "scann"), "two_tower", "bench")
    seconds = time.perf_counter() - started
    engine.dispose()
    return {**result, "seconds": round(seconds, 3), "users_per_second": round(result["users"] / seconds, 1)}


def main() -> int:
    import json

    import pandas as pd
    from bench_quality import DEFAULT_DATA
    from bench_serving import build_model
    from results_file import write_results

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--k", type=int, default=25)
    parser.add_argument("--baseline-users", type=int, default=300)
    args = parser.parse_args()
    if not (Path(args.data) / "u.data").exists():
        print(f"MovieLens 100K not found at {args.data}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        model_dir = build_model(args.data, Path(tmp))
        users = sorted(pd.read_parquet(model_dir / "history.parquet")["user_id"].astype(str).unique())
        baseline = per_user(model_dir, users[: args.baseline_users], args.k)
        print("one user per call", baseline, flush=True)
        runs = []
        for index in ("brute_force", "scann"):
            for batch_size in (256, 2048):
                run = batched(model_dir, index, batch_size, args.k)
                run["vs_one_user_per_call"] = round(run["users_per_second"] / baseline["users_per_second"], 1)
                print(run, flush=True)
                runs.append(run)
        published = end_to_end(model_dir, Path(tmp), args.k)
        published["vs_one_user_per_call"] = round(published["users_per_second"] / baseline["users_per_second"], 1)
        print("published", published, flush=True)
        index_report = json.loads((model_dir / "index.json").read_text())
    write_results(
        "bench_delivery",
        {
            "model": "MovieLens 100K via the pipeline (30 days, 1 holdout day); every user of the history snapshot",
            "k": args.k,
            "scann": index_report["grid"][0],
            "threads": "TF op threads as the server sets them",
            "baseline_one_user_per_call": baseline,
            "batched": runs,
            "published_to_sqlite": published,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
