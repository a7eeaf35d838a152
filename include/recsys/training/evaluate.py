"""Offline retrieval metrics over the whole catalog, computed exactly from ranks.

* ``top_k_accuracy@k``: share of held-out (user, item) pairs whose item ranks in the user's top k
  among all candidates (what ``tfrs.metrics.FactorizedTopK`` reports).
* ``recall@k``: per user, share of that user's distinct held-out items in the top k; averaged over
  users.

Ranks are counted as the number of candidates scoring strictly higher than the target, so the
same function scores the model (dot products), a champion, or the popularity baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

DEFAULT_KS = (1, 5, 10, 50, 100)


def ranks_from_scores(
    score_users: Callable[[np.ndarray], np.ndarray],
    user_ids: np.ndarray,
    target_index: np.ndarray,
    batch_users: int = 1024,
) -> np.ndarray:
    """Rank (0 = best) of each target among all candidates.

    ``score_users(unique_user_ids) -> [n_users, n_candidates]`` scores; ``target_index`` is the
    target item's column in that matrix (-1 for an item outside the catalog: ranked last).
    """
    unique, inverse = np.unique(user_ids.astype(str), return_inverse=True)
    ranks = np.empty(len(user_ids), dtype=np.int64)
    for start in range(0, len(unique), batch_users):
        users = unique[start : start + batch_users]
        scores = np.asarray(score_users(users), dtype=np.float32)
        rows = np.flatnonzero((inverse >= start) & (inverse < start + len(users)))
        local = inverse[rows] - start
        targets = target_index[rows]
        known = targets >= 0
        target_scores = np.where(known, scores[local, np.maximum(targets, 0)], np.inf)
        higher = (scores[local] > target_scores[:, None]).sum(axis=1)
        ranks[rows] = np.where(known, higher, scores.shape[1])
    return ranks


def metrics_from_ranks(ranks: np.ndarray, user_ids: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict:
    frame = pd.DataFrame({"user": user_ids.astype(str), "rank": ranks})
    out = {"pairs": int(len(frame)), "users": int(frame["user"].nunique())}
    for k in ks:
        hit = frame["rank"] < k
        out[f"top_{k}_accuracy"] = round(float(hit.mean()), 5) if len(frame) else 0.0
        out[f"recall@{k}"] = round(float(hit.groupby(frame["user"]).mean().mean()), 5) if len(frame) else 0.0
    return out


def catalog_index(catalog_ids: Sequence[str], item_ids: np.ndarray) -> np.ndarray:
    """Column of each item in the catalog, -1 when absent."""
    position = {item: i for i, item in enumerate(catalog_ids)}
    return np.fromiter((position.get(str(i), -1) for i in item_ids), dtype=np.int64, count=len(item_ids))


def evaluate_embeddings(
    query_embeddings: Callable[[np.ndarray], np.ndarray],
    candidate_embeddings: np.ndarray,
    catalog_ids: Sequence[str],
    test: pd.DataFrame,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict:
    """Metrics of a dot-product retrieval model over ``catalog_ids``."""
    user_ids = test["user_id"].to_numpy()
    ranks = ranks_from_scores(
        lambda users: query_embeddings(users) @ candidate_embeddings.T,
        user_ids,
        catalog_index(catalog_ids, test["item_id"].to_numpy()),
    )
    return metrics_from_ranks(ranks, user_ids, ks)


def popularity_order(train: pd.DataFrame) -> list[str]:
    """Item ids by training-set frequency, most popular first (ties by id, deterministic)."""
    counts = train["item_id"].astype(str).value_counts()
    return sorted(counts.index, key=lambda item: (-counts[item], item))


def evaluate_popularity(train: pd.DataFrame, test: pd.DataFrame, catalog_ids: Sequence[str],
                        ks: Sequence[int] = DEFAULT_KS) -> dict:  # fmt: skip
    """Metrics of recommending the most popular training items to everyone."""
    order = popularity_order(train)
    score_of = {item: float(len(order) - i) for i, item in enumerate(order)}
    scores = np.array([score_of.get(str(item), 0.0) for item in catalog_ids], dtype=np.float32)
    user_ids = test["user_id"].to_numpy()
    ranks = ranks_from_scores(
        lambda users: np.broadcast_to(scores, (len(users), len(scores))),
        user_ids,
        catalog_index(catalog_ids, test["item_id"].to_numpy()),
    )
    return metrics_from_ranks(ranks, user_ids, ks)
