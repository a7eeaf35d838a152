"""Training throughput on one CPU machine: the training step as it was and as it is, in the same run.

Synthetic interactions shaped like bench_scale's 10M run where it matters to a step (100k items with
1/rank popularity, 50 events per user, so full 50-item histories; ``--interactions`` rows, default 1M):

* ``step``: the same model and batches (64 distinct batches of 2048, cycled), Adagrad, op determinism on as
  in ``fit()``; the three versions take turns (3 rounds of 150 steps each; best round):
  *strings_retrieval* — the towers fed strings (their ``StringLookup`` layers hash every id of the batch),
  ``tfrs.tasks.Retrieval``'s loss (cross-entropy against a ``[batch, batch]`` identity) and the history
  embedded slot by slot (the step when issue 24 was filed);
  *indices_logsumexp* — vocabulary indices and the log-sum-exp loss with TF's own gradients, history as before;
  *now* — the model and optimizer as they are (the known history items embedded once each, the loss's own
  gradients, Adagrad's fused sparse update); the other two run the current Keras Adagrad.
  Examples/s of each and their ratios to the first (input pipeline excluded: all read prepared batches).
* ``fit``: the real ``fit()`` for one epoch (input pipeline included): examples/s.

    .venv/bin/python bench/bench_train_step.py [--interactions 1000000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from results_file import write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
ITEMS, EVENTS_PER_USER, GENRES = 100_000, 50, 18


def synthetic(interactions: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    users = interactions // EVENTS_PER_USER
    popularity = 1.0 / np.arange(1, ITEMS + 1)
    frame = pd.DataFrame(
        {
            "user_id": np.char.add("u", rng.integers(0, users, interactions).astype(str)),
            "item_id": np.char.add("i", rng.choice(ITEMS, interactions, p=popularity / popularity.sum()).astype(str)),
            "timestamp": rng.integers(0, 30 * 86400, interactions),
        }
    )
    genres = [f"g{g}" for g in range(GENRES)]
    items = pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(ITEMS)], "genres": ["|".join(rng.choice(genres, 2)) for _ in range(ITEMS)]}
    )
    people = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(users)],
            "gender": rng.choice(["F", "M"], users),
            "occupation": rng.choice(["a", "b", "c"], users),
            "age": rng.integers(18, 60, users),
        }
    )
    return frame, people, items


def as_strings(batch: dict, vocab) -> dict:
    """The same batch as the towers' raw string inputs (what training fed before the indices)."""
    import numpy as np

    def names(values, index):
        return np.asarray(["", *values], dtype=object)[index]

    return {
        "user_id": names(vocab.user_ids, batch["user_id_index"]),
        "history": names(vocab.item_ids, batch["history_index"]),
        "item_id": names(vocab.item_ids, batch["item_id_index"]),
        "gender": names(vocab.genders, batch["gender_index"]),
        "occupation": names(vocab.occupations, batch["occupation_index"]),
        "age": batch["age"],
        "genres": np.asarray(
            ["|".join(vocab.genres[g - 1] for g in np.flatnonzero(row) if g) for row in batch["genres_multi_hot"]],
            dtype=object,
        ),
        "item_probability": batch["item_probability"],
    }


def slot_by_slot_pooling(tower):
    """The query tower's history pooling as it was: every history slot embedded, padding included."""
    import tensorflow as tf

    pooling = tower.pool

    def call(history, embed):
        weights = tf.cast(history > 0, tf.float32)
        age = tf.cast(tf.range(tf.shape(history)[1] - 1, -1, -1), tf.float32)
        weights *= tf.pow(0.5, age / pooling.half_life)[None, :]
        total = tf.reduce_sum(weights, axis=1, keepdims=True)
        return tf.reduce_sum(embed(history) * weights[:, :, None], axis=1) / tf.maximum(total, 1e-6)

    pooling.call = call


def logsumexp_loss(query, candidate, probability):
    """The loss as it was at the last stop: log-sum-exp over the scores, TF's own gradients."""
    import tensorflow as tf

    correction = tf.math.log(tf.clip_by_value(probability, 1e-6, 1.0))
    scores = tf.linalg.matmul(query, candidate, transpose_b=True) - correction
    positives = tf.reduce_sum(query * candidate, axis=1) - correction
    return tf.reduce_sum(tf.reduce_logsumexp(scores, axis=1) - positives)


def make_step(version: str, vocab, params):
    """One optimizer step of ``version`` (a fresh model and optimizer, same seed)."""
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    from recsys.training.model import TwoTowerModel, in_batch_softmax_loss

    tf.keras.utils.set_random_seed(params.seed)
    model = TwoTowerModel(vocab, params.embedding_dim, params.query_config(), params.logq_correction)
    if version != "now":
        slot_by_slot_pooling(model.query_tower)
    optimizer = params.make_optimizer() if version == "now" else tf.keras.optimizers.Adagrad(params.learning_rate)
    retrieval = tfrs.tasks.Retrieval()
    losses = {
        "strings_retrieval": lambda q, c, p: retrieval(
            q, c, candidate_sampling_probability=p, compute_metrics=False, compute_batch_metrics=False
        ),
        "indices_logsumexp": logsumexp_loss,
        "now": in_batch_softmax_loss,
    }

    @tf.function
    def step(features):
        with tf.GradientTape() as tape:
            query = model.query_tower(features, training=True)
            candidate = model.candidate_tower(features)
            loss = losses[version](query, candidate, features["item_probability"])
        optimizer.apply_gradients(
            zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables, strict=True)
        )
        return loss

    return step


def steps_per_second(versions: dict, rounds: int = 3, steps: int = 150) -> dict[str, float]:
    """``{version: (step, batches)}`` -> steps/s of each, best of ``rounds`` turns (after 5 warm-up steps)."""
    best = dict.fromkeys(versions, 0.0)
    for step, batches in versions.values():
        for n in range(5):
            step(batches[n])
    for _ in range(rounds):
        for name, (step, batches) in versions.items():
            started = time.perf_counter()
            for n in range(steps):
                step(batches[n % len(batches)])
            best[name] = max(best[name], steps / (time.perf_counter() - started))
    return best


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interactions", type=int, default=1_000_000)
    args = parser.parse_args()

    import numpy as np

    from recsys.training.features import build_vocabularies, training_examples
    from recsys.training.fit import TrainParams, fit

    params = TrainParams(epochs=1)
    train, users, items = synthetic(args.interactions)
    vocab = build_vocabularies(train, users, items)
    examples = training_examples(train, users, items, params.history_length, vocab)
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # as fit() runs
    order = np.random.default_rng(1).permutation(len(examples))
    rows = [order[n * params.batch_size : (n + 1) * params.batch_size] for n in range(64)]
    indexed = [{k: v.numpy() for k, v in examples.columns(r).items()} for r in rows]
    batches = {
        "strings_retrieval": [as_strings(b, vocab) for b in indexed],
        "indices_logsumexp": indexed,
        "now": indexed,
    }
    versions = {
        name: (make_step(name, vocab, params), [{k: tf.constant(v) for k, v in b.items()} for b in given])
        for name, given in batches.items()
    }
    per_second = {name: rate * params.batch_size for name, rate in steps_per_second(versions).items()}
    started = time.perf_counter()
    fitted = fit(train, users, items, params)
    fit_seconds = time.perf_counter() - started
    figures = {
        "data": f"synthetic: {args.interactions:,} interactions, {ITEMS:,} items (1/rank popularity), "
        f"{EVENTS_PER_USER} events per user; batch {params.batch_size}, embedding {params.embedding_dim}",
        "step": {
            **{f"{name}_examples_per_s": round(rate) for name, rate in per_second.items()},
            "now_vs_strings_retrieval": round(per_second["now"] / per_second["strings_retrieval"], 2),
            "now_vs_indices_logsumexp": round(per_second["now"] / per_second["indices_logsumexp"], 2),
        },
        "fit": {
            "epoch_seconds": round(fitted.seconds, 1),
            "examples_per_s": round(len(train) / fitted.seconds),
            "with_setup_seconds": round(fit_seconds, 1),
        },
    }
    print(
        " | ".join(f"{name} {rate:,.0f} ex/s" for name, rate in per_second.items())
        + f" | fit(): {figures['fit']['examples_per_s']:,} ex/s"
    )
    write_results("bench_train_step", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
