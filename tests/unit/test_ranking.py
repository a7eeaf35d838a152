"""The two-stage policy: pool, point-in-time features, LightGBM ranker, export round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.policy import PolicyConfig, TwoStagePolicy, load_policy, read_policy, save_policy
from recsys.training import rank

CONFIG = PolicyConfig(history_length=10, exclude_seen=True, no_history="prior")
SPEC = rank.Retrievers(
    {
        "item_knn": {"shrink": 0.0, "decay": 0.8},
        "rp3beta": {"alpha": 1.0, "beta": 0.3, "decay": 0.8},
        "ease": {"lambda": 100.0, "decay": 0.8},
    },
    first_events=1,
    depth=8,
)


def clustered_log(users: int = 80, items: int = 40, per_user: int = 12, seed: int = 0) -> pd.DataFrame:
    """Users who each follow one of four item clusters, one event a minute per user, interleaved."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        cluster = user % 4
        pool = [i for i in range(items) if i % 4 == cluster]
        picks = rng.choice(pool, size=min(per_user, len(pool)), replace=False)
        for step, item in enumerate(picks):
            rows.append((f"u{user}", f"i{item}", 1_700_000_000 + step * 60 + user))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).sort_values("timestamp", ignore_index=True)


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    return clustered_log()


@pytest.fixture(scope="module")
def catalog(log) -> list[str]:
    return sorted(log["item_id"].unique())


def test_the_pool_is_the_union_of_each_retrievers_top_n_without_seen_items(log, catalog):
    policy = rank.retrieval(log, catalog, CONFIG, SPEC)
    queries = log.tail(30)
    batch = policy.batch_from_log(queries, log, {})
    pool = policy.pool(batch)
    assert pool.features.shape == (len(pool.rows), len(policy.feature_names))
    for row in range(len(batch)):
        proposed = set()
        for retriever in policy.retrievers.values():
            scores = retriever.scores(batch.rows(row, row + 1))[0]
            order = np.argsort(-scores, kind="stable")
            proposed |= {c for c in order[: SPEC.depth] if np.isfinite(scores[c])}
        assert set(pool.columns[pool.rows == row]) == proposed
        seen = set(batch.excluded_cols[batch.excluded_indptr[row] : batch.excluded_indptr[row + 1]])
        assert not proposed & seen


def test_features_come_only_from_events_before_the_query(log, catalog):
    """A planted future event (the user takes the candidate later) must change nothing the ranker sees."""
    older, newer = log.iloc[: len(log) // 2], log.iloc[len(log) // 2 :]
    policy = rank.retrieval(older, catalog, CONFIG, SPEC)
    queries = newer.head(40)
    before = rank.ranking_rows(policy, queries, log)
    future = queries.assign(timestamp=log["timestamp"].max() + 3600, item_id=queries["item_id"].iloc[::-1].to_numpy())
    after = rank.ranking_rows(policy, queries, pd.concat([log, future], ignore_index=True))
    assert np.array_equal(before.features, after.features, equal_nan=True)
    assert np.array_equal(before.labels, after.labels) and np.array_equal(before.groups, after.groups)
    # and the feature that would carry it does move when the same event is planted in the past
    past = future.assign(timestamp=queries["timestamp"].to_numpy() - 1)
    moved = rank.ranking_rows(policy, queries, pd.concat([log, past], ignore_index=True))
    assert moved.features.shape != before.features.shape or not np.array_equal(
        moved.features, before.features, equal_nan=True
    )


def test_the_ranker_learns_and_the_policy_round_trips_through_files(log, catalog, tmp_path):
    older, newer = log.iloc[: int(len(log) * 0.8)], log.iloc[int(len(log) * 0.8) :]
    choice = rank.RankerChoice({"num_leaves": 7, "min_data_in_leaf": 5, "learning_rate": 0.1}, 20, 0.0)
    policy, report = rank.fit(older, catalog, CONFIG, SPEC, rank.RankingConfig(candidates_per_retriever=8), choice)
    assert policy.ranker is not None and report["pairs"] > 0 and report["in_pool"] > 0
    batch = policy.batch_from_log(newer, log, {})
    described = save_policy(policy, tmp_path)
    again = read_policy(tmp_path, described, catalog)
    assert isinstance(again, TwoStagePolicy) and list(again.retrievers) == list(policy.retrievers)
    assert np.array_equal(again.scores(batch), policy.scores(batch))
    ranked = policy.recommend(batch, 5)
    assert all(len(r["item_ids"]) == 5 and r["fallback"] is None for r in ranked)
    # the ranker orders the pool: pool items first, then the rest by popularity, seen items never
    scores = policy.scores(batch)
    pool = policy.pool(batch)
    for row in range(len(batch)):
        inside = scores[row, pool.columns[pool.rows == row]]
        outside = np.delete(scores[row], pool.columns[pool.rows == row])
        assert inside.min() > outside[np.isfinite(outside)].max(initial=-np.inf)


def test_an_export_serving_a_baseline_loads_as_that_baseline(log, catalog, tmp_path):
    import json

    from recsys.training import baselines

    ease = baselines.build("ease", log, catalog, CONFIG, {"lambda": 100.0, "decay": 0.8})
    (tmp_path / "served").mkdir()
    described = save_policy(ease, tmp_path / "served")
    (tmp_path / "metadata.json").write_text(json.dumps({"served": {"policy": "ease", "described": described}}))
    pd.DataFrame({"item_id": catalog}).to_parquet(tmp_path / "candidates.parquet")
    loaded = load_policy(tmp_path)
    batch = ease.batch_from_log(log.tail(10), log, {})
    assert type(loaded) is type(ease) and np.array_equal(loaded.scores(batch), ease.scores(batch))


def test_labels_look_ahead_over_the_horizon_and_only_labels_do():
    log = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "a", "b", "b"],
            "item_id": ["x", "y", "z", "w", "y", "x"],
            "timestamp": [10, 20, 30, 40, 15, 25],
        }
    )
    queries = log.iloc[[1, 4]]  # a at 20 (took y), b at 15 (took y)
    assert rank.next_items(queries, log, 3).tolist() == [["y", "z", "w"], ["y", "x", ""]]
    catalog = ["w", "x", "y", "z"]
    spec = rank.Retrievers({}, first_events=1, depth=4)
    policy = rank.retrieval(log, catalog, PolicyConfig(5, True, "popular"), spec)
    rows = rank.ranking_rows(policy, queries, log, horizon=3)
    # a has seen x: its pool is w, y, z (y next: 2; z, w later: 1); b has nothing seen: w, x, y, z
    assert rows.groups.tolist() == [3, 4]
    assert rows.labels.tolist() == [1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 0.0]


def test_a_pool_built_in_slices_equals_one_built_at_once(log, catalog, monkeypatch):
    import recsys.policy

    policy = rank.retrieval(log, catalog, CONFIG, SPEC)
    batch = policy.batch_from_log(log.tail(50), log, {})
    whole = policy.pool(batch)
    monkeypatch.setattr(recsys.policy, "POOL_CELLS", len(catalog) * len(policy.retrievers) * 7)  # 7 rows a slice
    sliced = policy.pool(batch)
    assert np.array_equal(whole.rows, sliced.rows) and np.array_equal(whole.columns, sliced.columns)
    assert np.array_equal(whole.features, sliced.features, equal_nan=True) and np.allclose(whole.fused, sliced.fused)


def test_similarity_features_from_sparse_neighbour_lists_equal_the_dense_ones(log, catalog):
    """Large catalogs keep sparse top-k neighbour lists: the features read them as the dense matrix, also for a
    slice whose users have no history (an empty selection)."""
    from scipy import sparse

    policy = rank.retrieval(log, catalog, CONFIG, SPEC)
    queries = pd.concat([log.head(5).assign(user_id="new-user"), log.tail(20)], ignore_index=True)
    batch = policy.batch_from_log(queries, log, {})
    dense = policy.pool(batch)
    policy.similarity = sparse.csr_matrix(policy.similarity)
    newcomers = policy.pool(batch.rows(0, 5))  # only a user without history: nothing to look up
    assert np.isnan(newcomers.features[:, -2:]).all()
    assert np.array_equal(policy.pool(batch).features, dense.features, equal_nan=True)
