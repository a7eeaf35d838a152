"""Retrieval quality on MovieLens 100K, all configurations in one run.

Protocol of the TFRS basic retrieval tutorial: random 80/20 split with seed 42, top-k accuracy over
the whole catalog. Compared in the same run:

* (a) the tutorial configuration reproduced: user/item ids only, embedding 32, Adagrad(0.1),
  batch 8192, 3 epochs, no log-frequency correction (reference: top-100 0.232);
* (b) the most-popular baseline;
* (c) this project's model with its defaults (logQ correction, user/item features).

The same three on a temporal split (the newest 20% of ratings held out) follow. Prints a table
and writes ``bench/results/bench_quality.json``.

    .venv/bin/python bench/bench_quality.py [--data ../shared/datasets/movielens-100k]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = os.environ.get("MOVIELENS_100K_DIR", str(ROOT.parent / "shared" / "datasets" / "movielens-100k"))
TUTORIAL = {"epochs": 3, "embedding_dim": 32, "learning_rate": 0.1, "batch_size": 8192,
            "logq_correction": False, "use_features": False}  # fmt: skip


def load(directory: str):
    import pandas as pd

    from recsys.data.movielens import load_ml100k

    data = load_ml100k(Path(directory))
    rows = [r for chunk in data.interaction_chunks() for r in chunk]
    interactions = pd.DataFrame({"user_id": [r["user_id"] for r in rows], "item_id": [r["item_id"] for r in rows],
                                 "timestamp": [int(r["occurred_at"].timestamp()) for r in rows]})  # fmt: skip
    return interactions, pd.DataFrame(data.users), pd.DataFrame(data.items)


def run_protocol(name, train, test, users, items, catalog) -> dict:
    from recsys.training.evaluate import evaluate_embeddings, evaluate_popularity
    from recsys.training.fit import TrainParams, fit

    out = {"split": name, "train_rows": len(train), "test_rows": len(test)}
    started = time.perf_counter()
    out["popularity"] = {"metrics": evaluate_popularity(train, test, catalog),
                         "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
    for label, params in (("tutorial", TrainParams(**TUTORIAL)), ("recsys", TrainParams())):
        started = time.perf_counter()
        fitted = fit(train, users, items, params)
        metrics = evaluate_embeddings(lambda u, f=fitted: f.query_embeddings(u, users),
                                      fitted.candidate_embeddings(catalog, items), catalog, test)  # fmt: skip
        out[label] = {"params": params.as_dict(), "metrics": metrics, "train_seconds": round(fitted.seconds, 2),
                      "wall_seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=DEFAULT_DATA)
    args = parser.parse_args()
    if not (Path(args.data) / "u.data").exists():
        print(f"MovieLens 100K not found at {args.data}", file=sys.stderr)
        return 2
    from results_file import write_results

    import recsys.training  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
    from recsys.training.data import random_split

    interactions, users, items = load(args.data)
    catalog = sorted(set(interactions["item_id"]) | set(items["item_id"]))
    train, test = random_split(interactions, 0.2, seed=42)
    ordered = interactions.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    cut = int(len(ordered) * 0.8)
    runs = [
        run_protocol("random_80_20_seed42", train, test, users, items, catalog),
        run_protocol("temporal_newest_20pct", ordered.iloc[:cut], ordered.iloc[cut:], users, items, catalog),
    ]
    ks = (1, 5, 10, 50, 100)
    for run in runs:
        print(f"\n{run['split']} ({run['train_rows']} train / {run['test_rows']} test)")
        print(f"{'model':<12}" + "".join(f"{'top-' + str(k):>9}" for k in ks) + f"{'train s':>10}")
        for label in ("tutorial", "popularity", "recsys"):
            m = run[label]["metrics"]
            seconds = run[label].get("train_seconds", "-")
            print(f"{label:<12}" + "".join(f"{m[f'top_{k}_accuracy']:>9.4f}" for k in ks) + f"{seconds:>10}")
    write_results("bench_quality", {
        "data": "MovieLens 100K (u.data; this copy's u.item lacks item 267)",
        "reference": {"tutorial_top_100": 0.232, "tutorial_top_50": 0.124, "tutorial_top_10": 0.023},
        "runs": runs,
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
