"""Time-respecting histories and the served policy (exclusion, fallback, segments, ranks == answers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.history import PAD, earlier_events, last_items, snapshot
from recsys.policy import Policy, PolicyConfig
from recsys.training.evaluate import SEGMENTS, evaluate_holdout, segment_rows
from recsys.training.features import build_vocabularies, training_examples

# user u: a@1, b@2 and c@2 (the same second), d@3; user v interleaved; rows deliberately unsorted
EVENTS = pd.DataFrame(
    [("u", "d", 3), ("v", "x", 2), ("u", "a", 1), ("u", "c", 2), ("v", "y", 5), ("u", "b", 2)],
    columns=["user_id", "item_id", "timestamp"],
)
# the only right answer: strictly earlier events, oldest first
EXPECTED = {
    ("u", "d"): ["a", "c", "b"],
    ("v", "x"): [],
    ("u", "a"): [],
    ("u", "c"): ["a"],
    ("v", "y"): ["x"],
    ("u", "b"): ["a"],
}


def histories(frame: pd.DataFrame, length: int) -> list[list[str]]:
    return [[i for i in row if i != PAD] for row in frame]


def test_history_holds_only_strictly_earlier_events():
    """A leaking history (the target itself, a same-second or a later event) fails this exactly."""
    got = histories(last_items(earlier_events(EVENTS), 10), 10)
    assert {
        (u, i): h for (u, i), h in zip(zip(EVENTS.user_id, EVENTS.item_id, strict=True), got, strict=True)
    } == EXPECTED


def test_training_examples_use_the_same_time_respecting_history():
    vocab = build_vocabularies(EVENTS, pd.DataFrame(), pd.DataFrame())
    examples = training_examples(EVENTS, pd.DataFrame(), pd.DataFrame(), history_length=2, vocab=vocab)
    columns = {k: v.numpy() for k, v in examples.columns(np.arange(len(EVENTS))).items()}
    users, items = np.array([PAD, *vocab.user_ids]), np.array([PAD, *vocab.item_ids])  # index 0: none
    assert list(users[columns["user_id_index"]]) == list(EVENTS.user_id)
    assert list(items[columns["item_id_index"]]) == list(EVENTS.item_id)
    assert columns["item_probability"].tolist() == pytest.approx([1 / 6] * 6)
    history = items[columns["history_index"]]
    got = [[i for i in row if i] for row in history]
    assert got == [EXPECTED[(u, i)][-2:] for u, i in zip(EVENTS.user_id, EVENTS.item_id, strict=True)]
    assert list(history[0]) == ["c", "b"]  # newest last, truncated to the newest 2
    assert list(history[2]) == [PAD, PAD]  # left-padded


def test_holdout_history_includes_the_window_and_earlier_holdout_events():
    window = EVENTS[EVENTS.timestamp <= 2]
    holdout = pd.DataFrame([("u", "e", 10), ("u", "f", 11), ("w", "z", 10)], columns=EVENTS.columns)
    log = pd.concat([window, holdout])
    got = histories(last_items(earlier_events(holdout, log), 10), 10)
    assert got == [["a", "c", "b"], ["a", "c", "b", "e"], []]


def test_snapshot_keeps_each_users_newest_events():
    shot = snapshot(EVENTS, max_items=2)
    assert shot.groupby("user_id")["item_id"].agg(list).to_dict() == {"u": ["b", "d"], "v": ["x", "y"]}


CATALOG = [f"i{n}" for n in range(8)]
POPULAR = ["i7", "i6", "i5", "i4", "i3", "i2", "i1", "i0"]


def encoder(features: dict) -> np.ndarray:
    """A query is the one-hot of the last history item's successor (or i0 without history)."""
    out = np.zeros((len(features["user_id"]), len(CATALOG)), dtype=np.float32)
    for row, history in enumerate(features["history"]):
        last = [i for i in history if i]
        out[row, (int(last[-1][1:]) + 1) % len(CATALOG) if last else 0] = 1.0
    return out


def policy(**config) -> Policy:
    return Policy(
        CATALOG,
        POPULAR,
        PolicyConfig(history_length=3, **config),
        encoder=encoder,
        item_embeddings=np.eye(len(CATALOG), dtype=np.float32) + 0.01 * np.arange(8)[None, :],
        known_users=["known"],
    )


def test_seen_items_are_excluded_and_request_exclusions_apply():
    p = policy()
    batch = p.batch_from_histories(["known", "new"], [["i1", "i2"], ["i3"]], {}, exclude=[["i7"], []])
    first, second = p.recommend(batch, k=8)
    assert first["item_ids"][0] == "i3" and not {"i1", "i2", "i7"} & set(first["item_ids"])
    assert len(first["item_ids"]) == 5 and second["item_ids"][0] == "i4" and "i3" not in second["item_ids"]
    keeps_seen = policy(exclude_seen=False)
    batch = keeps_seen.batch_from_histories(["known", "new"], [["i1", "i2"], ["i3"]], {}, exclude=[["i7"], []])
    kept = keeps_seen.recommend(batch, k=8)[0]["item_ids"]
    assert {"i1", "i2"} <= set(kept) and "i7" not in kept


def test_fallback_only_for_unknown_users_without_history():
    p = policy(no_history="popular")
    batch = p.batch_from_histories(["stranger", "known", "new"], [[], [], ["i5"]], {}, exclude=[["i7"], [], []])
    stranger, known, new = p.recommend(batch, k=3)
    assert stranger == {"item_ids": ["i6", "i5", "i4"], "scores": [None] * 3, "fallback": "popular_items"}
    assert known["fallback"] is None and known["item_ids"][0] == "i0"
    assert new["fallback"] is None and new["item_ids"][0] == "i6"
    learned = policy(no_history="model").recommend(batch, k=3)[0]
    assert learned["fallback"] is None and learned["item_ids"][0] == "i0"
    baseline = Policy(CATALOG, POPULAR, PolicyConfig(history_length=3))  # no model: popularity for everyone
    assert all(r["fallback"] == "popular_items" for r in baseline.recommend(batch, k=3))


def test_offline_ranks_agree_with_what_is_served():
    """For random logs: target ranked < k offline  <=>  the server's top-k holds it."""
    rng = np.random.default_rng(7)
    log = pd.DataFrame(
        {
            "user_id": rng.choice(["known", "a", "b", "c", "d", "e"], 40),
            "item_id": rng.choice(CATALOG, 40),
            "timestamp": rng.integers(0, 100, 40),
        }
    )
    events = log[log.timestamp >= 50]
    for p in (policy(), policy(no_history="popular"), policy(exclude_seen=False)):
        batch = p.batch_from_log(events, log, {})
        ranks = p.ranks(batch, events["item_id"].to_numpy())
        prefixes = earlier_events(events, log)
        served = p.batch_from_histories(
            events["user_id"].to_numpy(), [prefixes.history(r) for r in range(len(events))], {}
        )
        assert np.array_equal(served.histories, batch.histories)
        for k in (1, 3):
            answers = p.recommend(served, k)
            in_top = [t in a["item_ids"] for t, a in zip(events["item_id"], answers, strict=True)]
            assert in_top == list(ranks < k)


def test_exact_and_searched_top_k_agree():
    exact = policy()
    searched = policy()
    searched.searcher = lambda q, depth: _exact_search(q @ exact.item_embeddings.T, depth)
    batch = exact.batch_from_histories(["known", "x", "y"], [["i1", "i2"], ["i6"], []], {}, exclude=[["i4"], [], []])
    assert exact.recommend(batch, 4) == searched.recommend(batch, 4)


def _exact_search(scores: np.ndarray, depth: int):
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return top, np.take_along_axis(scores, top, 1)


def test_segments_and_segment_metrics():
    train = pd.DataFrame([("old", "i1", 1), ("old", "i2", 2)], columns=EVENTS.columns)
    holdout = pd.DataFrame([("old", "i3", 10), ("new", "i4", 10), ("new", "i5", 11)], columns=EVENTS.columns)
    p = policy()
    batch = p.batch_from_log(holdout, pd.concat([train, holdout]), {})
    assert list(segment_rows(batch, {"old"})) == ["seen_users", "no_history", "new_users_with_history"]
    metrics = evaluate_holdout({"m": p}, holdout, train, pd.DataFrame(), {"old"})["m"]
    assert set(metrics["segments"]) == set(SEGMENTS)
    assert [metrics["segments"][s]["pairs"] for s in SEGMENTS] == [1, 1, 1]
    # old: history i1,i2 -> query i3 (hit at rank 0); new's 2nd event: history i4 -> i5 (hit)
    assert metrics["segments"]["seen_users"]["top_1_accuracy"] == 1.0
    assert metrics["segments"]["new_users_with_history"]["top_1_accuracy"] == 1.0


def test_invalid_policy_settings():
    with pytest.raises(ValueError, match="invalid policy"):
        PolicyConfig(no_history="random")


def test_events_of_one_second_keep_the_source_order_not_item_order():
    """Within one second the newest event is the one the source recorded last (extraction reads
    ORDER BY occurred_at, id; every later sort is stable), never the largest item id."""
    log = pd.DataFrame({"user_id": ["u", "u", "u", "v"], "item_id": ["z", "a", "m", "b"], "timestamp": [5, 5, 9, 5]})
    prefixes = earlier_events(log.iloc[[2]], log)
    assert prefixes.history(0) == ["z", "a"]  # source order; sorted by item it would be ["a", "z"]
    assert last_items(prefixes, 3).tolist() == [["", "z", "a"]]
    assert snapshot(log).query("user_id == 'u'")["item_id"].tolist() == ["z", "a", "m"]


def test_an_approximate_search_that_comes_back_short_is_completed_exactly():
    """A searcher that finds 2 neighbours, one of them seen: the user still gets k items, exactly ranked."""
    embeddings = np.eye(4, dtype=np.float32)[:, :3] + np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [0.5, 0.5, 0.5]])
    policy = Policy(
        ["a", "b", "c", "d"],
        [],
        PolicyConfig(exclude_seen=True, no_history="model"),
        encoder=lambda f: np.array([[1.0, 0.2, 0.1]] * len(f["user_id"]), dtype=np.float32),
        item_embeddings=embeddings,
        known_users=["u"],
        searcher=lambda queries, depth: (np.array([[0, 3]] * len(queries)), np.array([[1.0, 0.9]] * len(queries))),
    )
    (answer,) = policy.recommend(policy.batch_from_histories(["u"], [["a"]], {}), 3)
    assert answer["item_ids"] == ["d", "b", "c"]  # a is seen; the searcher alone would give only ["d"]


EVENT_LOGS = st.lists(
    st.tuples(st.sampled_from(["u", "v", "10", 10, 9]), st.sampled_from(["a", "b", 1, "1"]), st.integers(0, 3)),
    max_size=40,
).map(lambda rows: pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))


@settings(max_examples=200, deadline=None)
@given(EVENT_LOGS, st.integers(1, 4))
def test_integer_code_timelines_match_the_sorted_frame_definition(log, k):
    """snapshot and the first-event prior (integer codes, no sorted copy) equal their definitions on a sorted
    string frame: ties in a second keep the log's order, ids compare as strings (10 and "10" are one user)."""
    from recsys.training.baselines import first_event_prior

    ordered = log.astype({"user_id": str, "item_id": str}).sort_values(["user_id", "timestamp"], kind="stable")
    expected = ordered.groupby("user_id", sort=False).tail(k).reset_index(drop=True)
    pd.testing.assert_frame_equal(snapshot(log, max_items=k), expected)
    firsts = ordered.groupby("user_id", sort=False).head(k)["item_id"].value_counts()
    counts = ordered["item_id"].value_counts()
    table = pd.DataFrame({"firsts": firsts, "counts": counts}).fillna(0).rename_axis("id").reset_index()
    by_definition = table.sort_values(["firsts", "counts", "id"], ascending=[False, False, True])["id"].tolist()
    assert first_event_prior(log, k) == by_definition
