"""Batch scoring throughput of the two-tower delivery (users/s), one run.

Builds the MovieLens 100K model with the real pipeline (``bench_serving.build_model``), then scores
every user of its history snapshot with the served policy:

- baseline: one user per call (what asking the online predictor user by user costs), on a sample;
- batched, brute force and ScaNN, at three batch sizes (``recsys.delivery.two_tower.batch_rows``);
- end to end: batched ScaNN rows published to a SQLite ``recommendations`` table (staging + swap).

The model is loaded once per index (load time reported apart); MovieLens has 943 users, so the
snapshot's users are scored ``--repeat`` times over. Ratios are against the one-user-per-call
baseline of the same index, measured in the same run. Writes
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


def scoring(predictor, users: list[str], k: int, batch_size: int) -> dict:
    """Score ``users`` ``batch_size`` at a time (1 = one user per call); the model is already loaded."""
    from recsys.delivery.two_tower import batch_rows

    sum(1 for _ in batch_rows(predictor, k, batch_size, users[:batch_size]))  # warm-up
    started = time.perf_counter()
    rows = sum(1 for _ in batch_rows(predictor, k, batch_size, users))
    seconds = time.perf_counter() - started
    return {
        "batch_size": batch_size,
        "users": len(users),
        "rows": rows,
        "seconds": round(seconds, 3),
        "users_per_second": round(len(users) / seconds, 1),
    }


def end_to_end(predictor, work: Path, k: int) -> dict:
    """Scoring + loading the staging table + the swap, into SQLite."""
    from sqlalchemy import create_engine

    from recsys.delivery.table import publish
    from recsys.delivery.two_tower import batch_rows

    engine = create_engine(f"sqlite:///{work / 'app.db'}")
    started = time.perf_counter()
    result = publish(engine, batch_rows(predictor, k, 1024), "two_tower", "bench")
    seconds = time.perf_counter() - started
    engine.dispose()
    return {**result, "seconds": round(seconds, 3), "users_per_second": round(result["users"] / seconds, 1)}


def main() -> int:
    import json

    from bench_quality import DEFAULT_DATA
    from bench_serving import build_model
    from results_file import write_results

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--k", type=int, default=25)
    parser.add_argument("--baseline-users", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=20, help="passes over the snapshot's users")
    args = parser.parse_args()
    if not (Path(args.data) / "u.data").exists():
        print(f"MovieLens 100K not found at {args.data}", file=sys.stderr)
        return 2
    from recsys.serving.predictor import Predictor

    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        model_dir = build_model(args.data, Path(tmp))
        runs, published = {}, None
        for index in ("brute_force", "scann"):
            started = time.perf_counter()
            try:
                predictor = Predictor(model_dir, index=index)
            except ValueError as exc:  # the ScaNN build missed the recall bar this time (random k-means sample)
                runs[index] = {"skipped": str(exc)}
                print(index, exc, flush=True)
                continue
            load_seconds = round(time.perf_counter() - started, 2)
            users = sorted(predictor.history) * args.repeat  # every snapshot user, several passes
            one = scoring(predictor, users[: args.baseline_users], args.k, 1)
            runs[index] = {"load_seconds": load_seconds, "one_user_per_call": one, "batched": []}
            for batch_size in (64, 256, 1024):
                run = scoring(predictor, users, args.k, batch_size)
                run["vs_one_user_per_call"] = round(run["users_per_second"] / one["users_per_second"], 1)
                runs[index]["batched"].append(run)
                print(index, run, flush=True)
            published = end_to_end(predictor, Path(tmp), args.k)  # the last index measured
            print("published", published, flush=True)
        index_report = json.loads((model_dir / "index.json").read_text())
    write_results(
        "bench_delivery",
        {
            "model": "MovieLens 100K via the pipeline (30 days, 1 holdout day); users = the history snapshot "
            f"({len(users) // args.repeat}) x {args.repeat} passes",
            "k": args.k,
            "scann": index_report["grid"][0],
            "baseline": "the same predictor, one user per call (as asking the online predictor user by user)",
            "runs": runs,
            "published_to_sqlite": published,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
