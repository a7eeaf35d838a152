"""Ranking metrics, the popularity baseline, the gate rules and the ScaNN grid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.index import scann_grid
from recsys.policy import Policy, PolicyConfig
from recsys.training.evaluate import evaluate_holdout, metrics_from_ranks, popularity_order
from recsys.training.gate import GatePolicy, bar, decide, promote, read_champion

NO_EXCLUSION = PolicyConfig(exclude_seen=False)


def test_ranks_count_strictly_better_candidates_and_unknown_items_rank_last():
    embeddings = {"a": [0.9, 0.5, 0.1], "b": [0.1, 0.2, 0.3]}
    policy = Policy(
        ["i0", "i1", "i2"],
        [],
        NO_EXCLUSION,
        encoder=lambda f: np.array([embeddings[u] for u in f["user_id"]]),
        item_embeddings=np.eye(3),
        known_users=["a", "b"],
    )
    batch = policy.batch_from_histories(["a", "a", "b", "b"], [[]] * 4, {})
    assert policy.ranks(batch, ["i0", "i2", "i0", "elsewhere"]).tolist() == [0, 2, 2, 3]


def test_metrics_accuracy_and_per_user_recall():
    ranks = np.array([0, 5, 200, 0])
    users = np.array(["a", "a", "a", "b"])
    m = metrics_from_ranks(ranks, users, ks=(1, 10))
    assert m["top_1_accuracy"] == 0.5  # 2 of 4 pairs
    assert m["recall@1"] == pytest.approx((1 / 3 + 1) / 2, abs=1e-5)  # user a: 1/3, user b: 1
    assert m["top_10_accuracy"] == 0.75 and m["pairs"] == 4 and m["users"] == 2


def test_popularity_baseline_with_and_without_exclusion():
    train = pd.DataFrame({"user_id": list("abcdef"), "item_id": ["x", "x", "x", "y", "y", "z"], "timestamp": 1})
    assert popularity_order(train) == ["x", "y", "z"]
    test = pd.DataFrame({"user_id": ["g", "h", "a"], "item_id": ["x", "z", "y"], "timestamp": 2})
    catalog = ["w", "x", "y", "z"]
    # ranks: g->x 0, h->z 2; a (who saw x) -> y: 1 without exclusion, 0 with it
    for config, top_1 in ((NO_EXCLUSION, 1 / 3), (PolicyConfig(), 2 / 3)):
        policy = Policy(catalog, popularity_order(train), config)
        m = evaluate_holdout({"p": policy}, test, train, pd.DataFrame(), set(train["user_id"]))["p"]
        assert m["top_1_accuracy"] == pytest.approx(top_1, abs=1e-4) and m["top_5_accuracy"] == 1.0
        assert m["segments"]["seen_users"]["pairs"] == 1 and m["segments"]["no_history"]["pairs"] == 2


def test_policies_given_as_functions_are_built_in_turn_and_dropped_after():
    """evaluate_holdout builds a policy given as a function when its turn comes and lets it go before the
    next one is built (one baseline's weights in memory at a time); the metrics are those of the policy."""
    import gc
    import weakref

    train = pd.DataFrame({"user_id": list("abcdef"), "item_id": ["x", "x", "x", "y", "y", "z"], "timestamp": 1})
    test = pd.DataFrame({"user_id": ["g", "h"], "item_id": ["x", "z"], "timestamp": 2})
    built: list[weakref.ref] = []

    def build() -> Policy:
        gc.collect()
        assert all(ref() is None for ref in built), "the previous policy is still alive"
        policy = Policy(["w", "x", "y", "z"], popularity_order(train), PolicyConfig())
        built.append(weakref.ref(policy))
        return policy

    ready = Policy(["w", "x", "y", "z"], popularity_order(train), PolicyConfig())
    out = evaluate_holdout({"first": build, "second": build, "ready": ready}, test, train, pd.DataFrame(), {"a"})
    assert len(built) == 2 and out["first"] == out["second"] == out["ready"]
    assert out["first"]["top_1_accuracy"] == 0.5


def metrics(value: float) -> dict:
    return {"top_100_accuracy": value}


def test_gate_rules():
    policy = GatePolicy(tolerance=0.01)
    base = ("popularity", metrics(0.3))
    first = decide(metrics(0.5), base, None, policy, "two_stage")
    assert first["blessed"] is True and first["beats_bar"] and first["reasons"][0].startswith("serving two_stage")
    below = decide(metrics(0.29), base, None, policy)  # below the bar on the holdout: reported, still served
    assert below["blessed"] is True and not below["beats_bar"]
    assert "below the best baseline (popularity) 0.3000 on the holdout by 0.0100" in below["reasons"][1]
    assert decide(metrics(0.495), base, metrics(0.5), policy)["blessed"] is True  # within tolerance
    worse = decide(metrics(0.48), base, metrics(0.5), policy)
    assert worse["blessed"] is False and "worse than the champion" in worse["reasons"][-1]
    forced = decide(metrics(0.1), base, metrics(0.5), GatePolicy(force=True))
    assert forced["blessed"] is True and forced["reasons"][-1] == "forced by the operator"
    with pytest.raises(ValueError):
        GatePolicy(tolerance=-0.1)
    with pytest.raises(ValueError, match="baseline must be one of"):
        GatePolicy(baseline="item_knn")


def test_a_served_baseline_is_said_so_and_the_bar_is_the_best_baseline_unless_popularity_is_asked_for():
    on_holdout = {
        "model": metrics(0.40),
        "popularity": metrics(0.20),
        "item_knn": metrics(0.45),
        "ease": metrics(0.43),
        "champion": metrics(0.9),  # never a baseline
    }
    assert bar(on_holdout, GatePolicy()) == ("item_knn", metrics(0.45))
    served = decide(on_holdout["ease"], bar(on_holdout, GatePolicy()), None, GatePolicy(), "ease")
    assert served["blessed"] and served["served_is_baseline"] and served["baseline"] == "item_knn"
    assert "did not beat ease on validation" in served["reasons"][1]
    assert bar(on_holdout, GatePolicy(baseline="popularity")) == ("popularity", metrics(0.20))


def test_the_served_policy_is_the_best_on_validation_with_ties_to_the_two_stage_policy():
    from recsys.training.pipeline import served_choice

    assert served_choice({}) == "model"
    assert served_choice({"two_stage": 0.3, "model": 0.31, "ease": 0.2}) == "model"
    assert served_choice({"two_stage": 0.3, "model": 0.29, "ease": 0.35, "item_knn": 0.35}) == "ease"
    assert served_choice({"ease": 0.3, "model": 0.3, "two_stage": 0.3}) == "two_stage"


def test_champion_pointer_round_trip(tmp_path):
    root = tmp_path.as_uri()
    assert read_champion(root) is None
    promote(root, {"version": "v1", "model_dir": "x"})
    promote(root, {"version": "v2", "model_dir": "y"})
    assert read_champion(root)["version"] == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["champion.json"]


def test_scann_grid_fits_the_catalog():
    small = scann_grid(50, k=100)
    assert all(c.num_leaves_to_search <= c.num_leaves and c.num_reordering_candidates <= 50 for c in small)
    big = scann_grid(1_000_000, k=100)
    assert {c.num_leaves for c in big} == {1000, 2000} and max(c.num_reordering_candidates for c in big) == 1000
    assert min(c.num_leaves_to_search for c in big) == 20
