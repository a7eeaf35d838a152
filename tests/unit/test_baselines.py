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


def test_a_spent_time_budget_leaves_each_later_baseline_its_first_configuration():
    events = synthetic_sequences()
    fit, validation = validation_split(events, 0.2)
    scorer = Validation.of(fit, validation, pd.DataFrame(), len(CYCLE))
    chosen = baselines.tune(fit, CYCLE, PolicyConfig(history_length=5), scorer.score, budget_seconds=0)
    for name, grid in baselines.GRIDS.items():
        first = baselines._grid(grid)[0]
        assert [{k: v for k, v in t.items() if k != "validation"} for t in chosen[name].tried] == [first], name
        assert chosen[name].untried == len(baselines._grid(grid)) - 1, name
    assert chosen["item_knn"].validation > chosen["popularity"].validation  # still scored, still served


def test_ease_is_skipped_with_the_reason_for_a_large_catalog(monkeypatch):
    monkeypatch.setattr(baselines, "EASE_MAX_ITEMS", 30)
    events = synthetic_sequences(40)
    fit, validation = validation_split(events, 0.2)
    scorer = Validation.of(fit, validation, pd.DataFrame(), len(CYCLE))
    chosen = baselines.tune(fit, CYCLE, PolicyConfig(history_length=5), scorer.score)
    assert chosen["ease"].skipped == "40 items > 30: dense inverse too large" and not chosen["ease"].tried


@pytest.mark.parametrize("name", ["item_knn", "rp3beta"])
def test_large_catalogs_are_computed_in_blocks_with_the_same_weights(name):
    """Past DENSE_NEIGHBOURS items the weights are built a block of rows at a time and cut to each row's
    largest: the same as cutting the whole product, row by row."""
    from scipy import sparse

    rng = np.random.default_rng(7)
    matrix = sparse.csr_matrix((rng.random((300, 60)) < 0.15).astype(np.float32))
    weights = {
        "item_knn": lambda **kw: baselines.item_knn_weights(matrix, 10.0, **kw),
        "rp3beta": lambda **kw: baselines.rp3beta_weights(matrix, 0.5, 0.3, **kw),
    }[name]
    whole = weights(dense_up_to=10_000)  # every weight, dense
    blocked = weights(dense_up_to=0, block_rows=7, keep=10).toarray()
    assert np.all(np.diag(whole) == 0) and np.count_nonzero(whole) > 60 * 10
    for row in range(60):
        nonzero = np.flatnonzero(whole[row])
        best = nonzero[np.argsort(-whole[row, nonzero], kind="stable")[:10]]
        expected = np.zeros(60)
        expected[best] = whole[row, best]
        np.testing.assert_array_equal(blocked[row], expected)


@pytest.mark.parametrize("items", [40, 2_100])  # 2,100: the in-place mirror crosses its 1,024-row blocks
def test_ease_by_cholesky_equals_the_closed_form_with_a_general_inverse(items):
    rng = np.random.default_rng(3)
    matrix = (rng.random((300, items)) < 0.2).astype(np.float64)
    gram = matrix.T @ matrix
    inverse = np.linalg.inv(gram + 50.0 * np.eye(items))
    expected = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(baselines.ease_weights(gram, 50.0), expected, rtol=1e-5, atol=1e-7)
    assert np.array_equal(gram, matrix.T @ matrix)  # the shared Gram matrix is left as it was
