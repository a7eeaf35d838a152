"""Training throughput on one CPU machine: the training step as it was and as it is, in the same run.

Synthetic interactions shaped like bench_scale's 10M run where it matters to a step (100k items with
1/rank popularity, 50 events per user, so full 50-item histories; ``--interactions`` rows, default 1M):

* ``step``: the same model and batches, 200 optimizer steps (Adagrad, batch 2048) each way:
  *strings* — the batch's ids, history and genres as strings looked up by the towers' ``StringLookup``
  layers, and ``tfrs.tasks.Retrieval``'s loss (cross-entropy against a ``[batch, batch]`` identity);
  *indices* — the vocabulary indices the training batches now carry and ``in_batch_softmax_loss``.
  Examples/s of each and their ratio (input pipeline excluded: both read prepared batches).
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


def step_examples_per_second(vocab, params, batches: list[dict], legacy: bool, steps: int = 200) -> float:
    """Examples/s of ``steps`` optimizer steps over ``batches`` (cycled), after 10 warm-up steps."""
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    from recsys.training.model import TwoTowerModel, in_batch_softmax_loss

    tf.keras.utils.set_random_seed(params.seed)
    model = TwoTowerModel(vocab, params.embedding_dim, params.query_config(), params.logq_correction)
    optimizer = tf.keras.optimizers.Adagrad(params.learning_rate)
    retrieval = tfrs.tasks.Retrieval()

    @tf.function
    def step(features):
        with tf.GradientTape() as tape:
            query = model.query_tower(features, training=True)
            candidate = model.candidate_tower(features)
            if legacy:
                loss = retrieval(
                    query,
                    candidate,
                    candidate_sampling_probability=features["item_probability"],
                    compute_metrics=False,
                    compute_batch_metrics=False,
                )
            else:
                loss = in_batch_softmax_loss(query, candidate, features["item_probability"])
        optimizer.apply_gradients(
            zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables, strict=True)
        )
        return loss

    tensors = [{k: tf.constant(v) for k, v in b.items()} for b in batches]
    for n in range(10):
        step(tensors[n % len(tensors)])
    started = time.perf_counter()
    for n in range(steps):
        step(tensors[n % len(tensors)])
    return steps * params.batch_size / (time.perf_counter() - started)


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
    rng = np.random.default_rng(1)
    rows = [rng.choice(len(examples), params.batch_size, replace=False) for _ in range(8)]
    indexed = [{k: v.numpy() for k, v in examples.columns(r).items()} for r in rows]
    strings = [as_strings(b, vocab) for b in indexed]
    before = step_examples_per_second(vocab, params, strings, legacy=True)
    after = step_examples_per_second(vocab, params, indexed, legacy=False)
    started = time.perf_counter()
    fitted = fit(train, users, items, params)
    fit_seconds = time.perf_counter() - started
    figures = {
        "data": f"synthetic: {args.interactions:,} interactions, {ITEMS:,} items (1/rank popularity), "
        f"{EVENTS_PER_USER} events per user; batch {params.batch_size}, embedding {params.embedding_dim}",
        "step": {
            "strings_and_retrieval_task_examples_per_s": round(before),
            "indices_and_logsumexp_loss_examples_per_s": round(after),
            "ratio": round(after / before, 2),
        },
        "fit": {
            "epoch_seconds": round(fitted.seconds, 1),
            "examples_per_s": round(len(train) / fitted.seconds),
            "with_setup_seconds": round(fit_seconds, 1),
        },
    }
    print(
        f"step: strings + Retrieval task {before:,.0f} ex/s | indices + log-sum-exp loss {after:,.0f} ex/s "
        f"({after / before:.2f}x) | fit(): {figures['fit']['examples_per_s']:,} ex/s"
    )
    write_results("bench_train_step", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
