"""Offline metrics of served policies on a temporal holdout, overall and per user segment.

Each holdout interaction is one query whose history is the user's events strictly before it in the
log a live system would have: the model's history snapshot (its training window) followed by the
earlier holdout events. Every policy (the model, the champion, popularity) is ranked the same way,
by :meth:`recsys.policy.Policy.ranks` — seen-item exclusion and fallback included.

* ``top_k_accuracy@k`` (hit rate): share of held-out (user, item) pairs whose item is among the
  top k the policy returns.
* ``recall@k``: per user, share of that user's held-out pairs hit; averaged over users.

Segments: ``seen_users`` (in the training data), ``new_users_with_history`` (new since training,
with earlier events), ``no_history`` (no earlier event at all).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from recsys.history import string_codes, users_log
from recsys.policy import Policy, QueryBatch
from recsys.training.features import demographics

DEFAULT_KS = (1, 5, 10, 50, 100)
SEGMENTS = ("seen_users", "new_users_with_history", "no_history")


def popularity_order(train: pd.DataFrame) -> list[str]:
    """Item ids by training-set frequency, most popular first (ties by id, deterministic)."""
    codes, items = string_codes(train["item_id"])
    return ranked(items, np.bincount(codes, minlength=len(items)))


def ranked(ids, *counts: np.ndarray) -> list[str]:
    """``ids`` (strings) by ``counts[0]`` descending, then ``counts[1]``..., then by id."""
    ids = np.asarray(ids, dtype=str)
    return ids[np.lexsort((ids, *(-c for c in reversed(counts))))].tolist()


def metrics_from_ranks(ranks: np.ndarray, user_ids: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict:
    frame = pd.DataFrame({"user": np.asarray(user_ids, dtype=str), "rank": ranks})
    out = {"pairs": int(len(frame)), "users": int(frame["user"].nunique())}
    for k in ks:
        hit = frame["rank"] < k
        out[f"top_{k}_accuracy"] = round(float(hit.mean()), 5) if len(frame) else 0.0
        out[f"recall@{k}"] = round(float(hit.groupby(frame["user"]).mean().mean()), 5) if len(frame) else 0.0
    return out


def segment_rows(batch: QueryBatch, training_users: Iterable[str]) -> np.ndarray:
    """The segment of each query (see the module docstring)."""
    seen = frozenset(training_users)
    is_seen = np.fromiter((u in seen for u in batch.user_ids), dtype=bool, count=len(batch))
    return np.where(is_seen, SEGMENTS[0], np.where(batch.history_lengths > 0, SEGMENTS[1], SEGMENTS[2]))


def evaluate_policy(policy: Policy, batch: QueryBatch, targets: Sequence[str], segment_of_row: np.ndarray) -> dict:
    """Whole-holdout metrics (top level) plus ``segments``: the same metrics per segment."""
    ranks = policy.ranks(batch, targets)
    result = metrics_from_ranks(ranks, batch.user_ids)
    result["segments"] = {
        name: metrics_from_ranks(ranks[segment_of_row == name], batch.user_ids[segment_of_row == name])
        for name in SEGMENTS
    }
    return result


def evaluate_holdout(
    policies: Mapping[str, Policy | Callable[[], Policy]],
    holdout: pd.DataFrame,
    history: pd.DataFrame,
    users: pd.DataFrame,
    training_users: Iterable[str],
) -> dict[str, dict]:
    """Metrics of each policy on ``holdout``; ``history`` = the events known before it (snapshot). A policy
    given as a function is built when its turn comes and dropped after it: one baseline's weights in memory
    at a time."""
    log = users_log(holdout, history, holdout)
    features = demographics(holdout["user_id"].to_numpy(), users)
    targets = holdout["item_id"].astype(str).to_numpy()
    out, segment_of_row = {}, None
    for name, policy in policies.items():
        policy = policy if isinstance(policy, Policy) else policy()
        batch = policy.batch_from_log(holdout, log, features)
        if segment_of_row is None:
            segment_of_row = segment_rows(batch, training_users)
        out[name] = evaluate_policy(policy, batch, targets, segment_of_row)
    return out
