"""Retrieval quality on MovieLens 100K, measured the way the system is used.

**Temporal protocol (the yardstick).** All ratings sorted by timestamp; the oldest 80% train, the
newest 20% test. Each test interaction is one query whose history is every earlier interaction of
that user (train and earlier test ones, strictly earlier timestamps); the whole catalog is ranked
with the user's earlier items excluded; top-1/10/100 hit rate and per-user recall@10/100, overall
and per segment (users seen in training / new users with history / no history). Every policy goes
through :class:`recsys.policy.Policy` — the code the server answers with:

* popularity (training counts, same exclusion);
* item-kNN reference: item-item cosine on training co-occurrences; a user's score for an item is
  the sum of its similarities to the user's last 50 items; popular items without history;
* the two-tower model with its defaults (history-aware query tower, recency pooling, learned
  no-history query), trained in a fresh process (training seconds, peak RSS);
* ablations: mean pooling; popular items instead of the no-history query.

**Random split (reference only).** The TFRS tutorial's protocol (random 80/20, seed 42, no
exclusion; histories = strictly earlier events); the tutorial itself reports top-100 0.232.

Prints tables and writes ``bench/results/bench_quality.json``.

    .venv/bin/python bench/bench_quality.py [--data ../shared/datasets/movielens-100k]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = os.environ.get("MOVIELENS_100K_DIR", str(ROOT.parent / "shared" / "datasets" / "movielens-100k"))
KNN_HISTORY = 50


def load(directory: str):
    import pandas as pd

    from recsys_devtools.movielens import load_ml100k

    data = load_ml100k(Path(directory))
    rows = [r for chunk in data.interaction_chunks() for r in chunk]
    interactions = pd.DataFrame(
        {
            "user_id": [r["user_id"] for r in rows],
            "item_id": [r["item_id"] for r in rows],
            "timestamp": [int(r["occurred_at"].timestamp()) for r in rows],
        }
    )
    return interactions, pd.DataFrame(data.users), pd.DataFrame(data.items)


def item_knn_policy(train, catalog, popular, config):
    """Item-item cosine similarity on training co-occurrences, scored over the user's last 50 items."""
    import numpy as np
    from scipy import sparse

    from recsys.policy import Policy

    class ItemKnn(Policy):
        def uses_fallback(self, batch):
            return batch.history_lengths == 0

        def model_scores(self, batch):
            columns = np.vectorize(lambda i: self.position.get(i, -1), otypes=[np.int64])(batch.histories)
            rows, cols = np.nonzero(columns >= 0)
            picks = sparse.csr_matrix(
                (np.ones(len(rows), np.float32), (rows, columns[rows, cols])), shape=(len(batch), len(self.catalog))
            )
            return np.asarray((picks @ similarity).todense(), dtype=np.float32)

    knn = ItemKnn(catalog, popular, config)
    user_codes = {u: n for n, u in enumerate(sorted(set(train["user_id"])))}
    pairs = train.drop_duplicates(["user_id", "item_id"])
    matrix = sparse.csr_matrix(
        (
            np.ones(len(pairs), np.float32),
            (pairs["user_id"].map(user_codes).to_numpy(), pairs["item_id"].map(knn.position).to_numpy()),
        ),
        shape=(len(user_codes), len(catalog)),
    )
    co = (matrix.T @ matrix).tocsr().astype(np.float32)
    norms = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel()) + 1e-9
    similarity = sparse.diags(1 / norms) @ co @ sparse.diags(1 / norms)
    similarity.setdiag(0)
    return knn


def _two_tower(split: dict, params: dict, policy_overrides: dict, results) -> None:
    """Runs in a fresh process: fit, evaluate as served, report seconds and peak RSS."""
    import dataclasses

    import recsys.training  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
    from recsys.policy import Policy
    from recsys.training.evaluate import evaluate_holdout
    from recsys.training.fit import TrainParams, fit

    train, test, users, items, catalog, popular, history = (
        split[k] for k in ("train", "test", "users", "items", "catalog", "popular", "history")
    )
    train_params = TrainParams(**params)
    started = time.perf_counter()
    fitted = fit(train, users, items, train_params)
    fit_seconds = time.perf_counter() - started
    rss_after_fit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    config = dataclasses.replace(train_params.policy_config(), **policy_overrides)
    policy = Policy(
        catalog,
        popular,
        config,
        encoder=fitted.encode_queries,
        item_embeddings=fitted.candidate_embeddings(catalog, items),
        known_users=fitted.vocab.user_ids,
    )
    metrics = evaluate_holdout({"m": policy}, test, history, users, set(train["user_id"]))["m"]
    results.put(
        {
            "params": train_params.as_dict(),
            "policy": dataclasses.asdict(config),
            "metrics": metrics,
            "train_seconds": round(fitted.seconds, 2),
            "fit_seconds": round(fit_seconds, 2),
            "peak_rss_mib_after_training": round(rss_after_fit, 1),
            "loss_per_epoch": fitted.loss_per_epoch,
        }
    )


def two_tower(split: dict, params: dict | None = None, **policy_overrides) -> dict:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_two_tower, args=(split, params or {}, policy_overrides, results))
    child.start()
    while True:  # a child that dies (import error, OOM) must not leave the bench waiting forever
        try:
            result = results.get(timeout=5)
            break
        except queue.Empty:
            if not child.is_alive():
                raise RuntimeError(f"training process exited with {child.exitcode}") from None
    child.join()
    return result


def run_temporal(interactions, users, items, catalog) -> dict:
    from recsys.policy import Policy, PolicyConfig
    from recsys.training.evaluate import evaluate_holdout, popularity_order

    ordered = interactions.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    cut = int(len(ordered) * 0.8)
    train, test = ordered.iloc[:cut].reset_index(drop=True), ordered.iloc[cut:].reset_index(drop=True)
    popular = popularity_order(train)
    config = PolicyConfig()
    baselines = {
        "popularity": Policy(catalog, popular, config),
        "item_knn": item_knn_policy(train, catalog, popular, config),
    }
    started = time.perf_counter()
    out = {"split": "temporal_newest_20pct", "train_rows": len(train), "test_rows": len(test)}
    out |= {
        name: {"metrics": m}
        for name, m in evaluate_holdout(baselines, test, train, users, set(train["user_id"])).items()
    }
    out["baseline_seconds"] = round(time.perf_counter() - started, 2)
    split = {
        "train": train,
        "test": test,
        "users": users,
        "items": items,
        "catalog": catalog,
        "popular": popular,
        "history": train,
    }
    out["two_tower"] = two_tower(split)
    out["ablation_mean_pooling"] = two_tower(split, {"pooling": "mean"})
    out["ablation_popular_for_no_history"] = two_tower(split, no_history="popular")
    return out


def run_random(interactions, users, items, catalog) -> dict:
    from recsys.policy import Policy, PolicyConfig
    from recsys.training.data import random_split
    from recsys.training.evaluate import evaluate_holdout, popularity_order

    train, test = random_split(interactions, 0.2, seed=42)
    popular = popularity_order(train)
    # the tutorial ranks without exclusion; histories as in the temporal protocol (strictly earlier events)
    config = PolicyConfig(exclude_seen=False)
    metrics = evaluate_holdout(
        {"popularity": Policy(catalog, popular, config)}, test, train, users, set(train["user_id"])
    )
    split = {
        "train": train,
        "test": test,
        "users": users,
        "items": items,
        "catalog": catalog,
        "popular": popular,
        "history": train,
    }
    return {
        "split": "random_80_20_seed42",
        "train_rows": len(train),
        "test_rows": len(test),
        "popularity": {"metrics": metrics["popularity"]},
        "two_tower": two_tower(split, exclude_seen=False),
    }


def print_table(run: dict, names: list[str]) -> None:
    print(f"\n{run['split']} ({run['train_rows']} train / {run['test_rows']} test)")
    columns = [
        ("top-1", "top_1_accuracy"),
        ("top-10", "top_10_accuracy"),
        ("top-100", "top_100_accuracy"),
        ("recall@10", "recall@10"),
        ("recall@100", "recall@100"),
    ]
    print(f"{'policy':<34}" + "".join(f"{c:>11}" for c, _ in columns) + f"{'train s':>9}")
    for name in names:
        m = run[name]["metrics"]
        print(
            f"{name:<34}"
            + "".join(f"{m[key]:>11.4f}" for _, key in columns)
            + f"{run[name].get('train_seconds', '-'):>9}"
        )
    if "segments" in run[names[0]]["metrics"]:
        print("per segment, top-10 / top-100 hit rate:")
        for segment, counts in run[names[0]]["metrics"]["segments"].items():
            cells = "  ".join(
                f"{name}: {run[name]['metrics']['segments'][segment]['top_10_accuracy']:.3f}/"
                f"{run[name]['metrics']['segments'][segment]['top_100_accuracy']:.3f}"
                for name in names
            )
            print(f"  {segment} ({counts['pairs']} pairs)  {cells}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=DEFAULT_DATA)
    args = parser.parse_args()
    if not (Path(args.data) / "u.data").exists():
        print(f"MovieLens 100K not found at {args.data}", file=sys.stderr)
        return 2
    from results_file import write_results

    interactions, users, items = load(args.data)
    catalog = sorted(set(interactions["item_id"]) | set(items["item_id"]))
    temporal = run_temporal(interactions, users, items, catalog)
    random = run_random(interactions, users, items, catalog)
    print_table(
        temporal, ["popularity", "item_knn", "two_tower", "ablation_mean_pooling", "ablation_popular_for_no_history"]
    )
    print_table(random, ["popularity", "two_tower"])
    tt, knn = temporal["two_tower"]["metrics"], temporal["item_knn"]["metrics"]
    ratios = {
        f"two_tower_vs_item_knn_top_{k}": round(tt[f"top_{k}_accuracy"] / knn[f"top_{k}_accuracy"], 3)
        for k in (1, 10, 100)
    }
    print(
        f"\ntwo-tower / item-kNN: {ratios}; training {temporal['two_tower']['train_seconds']} s, "
        f"peak RSS {temporal['two_tower']['peak_rss_mib_after_training']} MiB"
    )
    write_results(
        "bench_quality",
        {
            "data": "MovieLens 100K (u.data; this copy's u.item lacks item 267)",
            "reference": {
                "tfrs_tutorial_random_split_top_100": 0.232,
                "issue_11_temporal": {"popularity": [0.074, 0.357], "item_knn": [0.157, 0.546]},
            },
            "ratios": ratios,
            "runs": [temporal, random],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
