"""Training feeds the towers vocabulary indices; serving feeds raw strings: both must embed the same."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.training.features import (
    QueryConfig,
    build_vocabularies,
    genres_multi_hot,
    query_features,
    training_examples,
    vocabulary_index,
)

TRAIN = pd.DataFrame(
    {
        "user_id": ["u1", "u2", "u1", "u3", "u2", "u1"],
        "item_id": ["a", "b", "c", "a", "d", "b"],
        "timestamp": [1, 2, 3, 4, 5, 6],
    }
)
USERS = pd.DataFrame(
    {"user_id": ["u1", "u2", "u3"], "gender": ["F", "M", ""], "occupation": ["x", "y", "x"], "age": [25, 40, 0]}
)
# c has no genre, d's trailing '|' leaves an empty token: both count as the unknown genre, as in the lookup
ITEMS = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "genres": ["g1", "g1|g2", "", "g2|"]})


def test_vocabulary_index_is_what_the_lookup_layer_gives():
    import tensorflow as tf

    vocabulary = ["a", "b", "d"]
    values = np.array(["d", "a", "zz", "", "b"], dtype=object)
    lookup = tf.keras.layers.StringLookup(vocabulary=vocabulary, mask_token=None)
    assert vocabulary_index(values, vocabulary).tolist() == lookup(values).numpy().tolist() == [3, 1, 0, 0, 2]


def test_genres_multi_hot_is_what_the_lookup_layer_gives():
    import tensorflow as tf

    vocabulary = ["g1", "g2"]
    values = ["g1", "g1|g2", "", "g2|", "g9"]
    lookup = tf.keras.layers.StringLookup(vocabulary=vocabulary, output_mode="multi_hot")
    expected = lookup(tf.strings.split(tf.constant(values), "|")).numpy()
    assert genres_multi_hot(values, vocabulary).tolist() == expected.tolist()


@pytest.mark.parametrize("query_tower", ["pooling", "attention"])
def test_index_inputs_embed_exactly_as_the_raw_strings(query_tower):
    import tensorflow as tf

    from recsys.training.model import TwoTowerModel

    tf.keras.utils.set_random_seed(0)
    vocab = build_vocabularies(TRAIN, USERS, ITEMS)
    model = TwoTowerModel(vocab, 8, QueryConfig(history_length=3, query_tower=query_tower))
    examples = training_examples(TRAIN, USERS, ITEMS, 3, vocab)
    indexed = {k: v.numpy() for k, v in examples.columns(np.arange(len(TRAIN))).items()}

    histories = [TRAIN.item_id[:row][TRAIN.user_id[:row] == user].tolist() for row, user in enumerate(TRAIN.user_id)]
    raw = query_features(TRAIN.user_id, histories, USERS, 3)
    raw_items = ITEMS.set_index("item_id").loc[TRAIN.item_id].reset_index()
    strings = {
        **raw,
        "item_id": TRAIN.item_id.to_numpy(dtype=object),
        "genres": raw_items.genres.to_numpy(dtype=object),
    }

    for tower in (model.query_tower, model.candidate_tower):
        from_strings = tower({k: tf.constant(v) for k, v in strings.items()}).numpy()
        from_indices = tower({k: tf.constant(v) for k, v in indexed.items()}).numpy()
        np.testing.assert_allclose(from_indices, from_strings, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("logq", [True, False])
def test_the_sparse_in_batch_loss_is_the_retrieval_tasks_loss(logq):
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    from recsys.training.model import in_batch_softmax_loss

    rng = np.random.default_rng(3)
    query, candidate = (tf.constant(rng.normal(size=(64, 16)), tf.float32) for _ in range(2))
    probability = tf.constant(rng.uniform(1e-7, 0.2, size=64), tf.float32) if logq else None
    expected = tfrs.tasks.Retrieval()(query, candidate, candidate_sampling_probability=probability)
    got = in_batch_softmax_loss(query, candidate, probability)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([query, candidate])
        losses = [
            in_batch_softmax_loss(query, candidate, probability),
            tfrs.tasks.Retrieval()(query, candidate, candidate_sampling_probability=probability),
        ]
    for ours, theirs in zip(*(tape.gradient(loss, [query, candidate]) for loss in losses), strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4, 5], [5, 0, 3, 1, 4, 2]], ids=["time-ordered", "shuffled"])
def test_a_split_at_a_time_keeps_order_and_shares_a_time_ordered_frames_memory(order):
    from recsys.training.data import split_at

    frame = TRAIN.iloc[order].reset_index(drop=True)
    before, after = split_at(frame, 4)
    later = frame["timestamp"] >= 4
    pd.testing.assert_frame_equal(before, frame[~later].reset_index(drop=True))
    pd.testing.assert_frame_equal(after, frame[later].reset_index(drop=True))
    shared = np.shares_memory(before["timestamp"].to_numpy(), frame["timestamp"].to_numpy())
    assert shared == (order == sorted(order))  # slices of a frame in time order: no copy of 10M rows
