"""The cheap baselines, the validation split and the first-event prior, on data small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.policy import Policy, PolicyConfig
from recsys.training import baselines
from recsys.training.validation import Validation, validation_split

CATALOG = ["a", "b", "c", "x", "y"]


def frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_first_event_prior_counts_what_users_start_with():
    train = frame([("u1", "a", 1), ("u1", "x", 2), ("u2", "a", 5), ("u2", "x", 6), ("u3", "b", 1), ("u3", "x", 2)])
    assert baselines.first_event_prior(train, 1)[:3] == ["a", "b", "x"]  # x is the most popular, never first
    assert baselines.first_event_prior(train, 2)[0] == "x"


def test_recency_decay_favours_what_follows_the_newest_item():
    weights = np.zeros((5, 5), dtype=np.float32)
    weights[0, 3] = 1.0  # a -> x
    weights[1, 4] = 1.0  # b -> y
    config = PolicyConfig(history_length=5, exclude_seen=True, no_history="popular")

    def top(decay: float, history: list[str]) -> str:
        policy = baselines.ItemItemPolicy(CATALOG, ["c", "x", "y", "a", "b"], config, weights, decay)
        return policy.recommend(policy.batch_from_histories(["u"], [history], {}), 1)[0]["item_ids"][0]

    assert top(0.5, ["a", "b"]) == "y"  # b is the newest: its neighbour wins
    assert top(0.5, ["b", "a"]) == "x"
    assert top(1.0, ["a", "b"]) == "x"  # a tie (1 = 1): popularity breaks it, not the catalog order


def test_no_history_rows_get_the_prior_when_configured():
    prior_config = PolicyConfig(exclude_seen=True, no_history="prior")
    policy = Policy(CATALOG, ["c", "x"], prior_config, prior=["y", "a"])
    batch = policy.batch_from_histories(["new", "old"], [[], ["a"]], {})
    new, old = policy.recommend(batch, 2)
    assert new["item_ids"] == ["y", "a"] and new["fallback"] == "first_event_prior"
    assert old["item_ids"] == ["c", "x"] and old["fallback"] == "popular_items"


def test_validation_is_the_newest_share_and_never_splits_a_second():
    train = frame([("u", str(i), t) for i, t in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 9, 9])])
    fit, validation = validation_split(train, 0.1)
    assert validation["timestamp"].tolist() == [9, 9] and fit["timestamp"].max() == 8
    with pytest.raises(ValueError, match="validation_fraction"):
        validation_split(train, 1.5)


CYCLE = [f"i{n:02d}" for n in range(40)]


def synthetic_sequences(users: int = 120) -> pd.DataFrame:
    """Every user walks a fixed cycle of 40 items: the next item is always the one after the newest."""
    rows = []
    for user in range(users):
        start = user % 40
        rows += [(f"u{user}", CYCLE[(start + step) % 40], 10 * step + user % 7) for step in range(6)]
    return frame(rows)


def test_tuning_picks_on_validation_and_the_chosen_decay_is_the_best_there():
    events = synthetic_sequences()
    fit, validation = validation_split(events, 0.2)
    config = PolicyConfig(history_length=5, exclude_seen=False, no_history="popular")
    scorer = Validation.of(fit, validation, pd.DataFrame(), len(CYCLE))
    chosen = baselines.tune(fit, CYCLE, config, scorer.score)
    assert set(chosen) == set(baselines.GRIDS)
    for name in baselines.ITEM_ITEM:
        result = chosen[name]
        assert result.validation == max(t["validation"] for t in result.tried)
        assert len(result.tried) == len(baselines._grid(baselines.GRIDS[name]))
    # item-item weights learn the cycle: they beat popularity on it
    assert chosen["item_knn"].validation > chosen["popularity"].validation


def test_ease_is_skipped_with_the_reason_for_a_large_catalog(monkeypatch):
    monkeypatch.setattr(baselines, "EASE_MAX_ITEMS", 30)
    events = synthetic_sequences(40)
    fit, validation = validation_split(events, 0.2)
    scorer = Validation.of(fit, validation, pd.DataFrame(), len(CYCLE))
    chosen = baselines.tune(fit, CYCLE, PolicyConfig(history_length=5), scorer.score)
    assert chosen["ease"].skipped == "40 items > 30: dense inverse too large" and not chosen["ease"].tried
