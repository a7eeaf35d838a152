"""Model inputs: vocabularies, query and candidate feature columns, the training ``tf.data`` pipeline.

A query is ``user_id`` + ``history`` (the user's newest N items strictly before the example,
see :mod:`recsys.history`) + demographics when the data has them. A candidate is
``item_id`` + ``genres``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys.history import earlier_events, pad_histories


@dataclass(frozen=True)
class QueryConfig:
    """How the query tower reads a user's history."""

    history_length: int = 50
    pooling: str = "mean"  # or "recency"
    half_life: float = 10.0  # items, for recency pooling
    user_id_dropout: float = 0.5  # share of training examples that query as a new user would
    hidden_units: int = 128
    query_tower: str = "pooling"  # or "attention" (causal self-attention over the history)
    attention_blocks: int = 2
    dropout: float = 0.2  # attention tower only


@dataclass(frozen=True)
class Vocabularies:
    """Everything the towers must know about the data, taken from the training set."""

    user_ids: list[str]
    item_ids: list[str]
    genders: list[str]
    occupations: list[str]
    genres: list[str]

    @property
    def has_user_features(self) -> bool:
        return bool(self.genders or self.occupations)

    @property
    def has_item_features(self) -> bool:
        return bool(self.genres)


def _strings(series: pd.Series) -> list[str]:
    return sorted({str(v) for v in series.dropna() if str(v) != ""})


def build_vocabularies(train: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> Vocabularies:
    """Ids seen in training (others map to the OOV bucket) and the feature vocabularies."""
    genres = sorted(
        {g for value in items.get("genres", pd.Series(dtype=str)).dropna() for g in str(value).split("|") if g}
    )
    return Vocabularies(
        user_ids=_strings(train["user_id"]),
        item_ids=_strings(train["item_id"]),
        genders=_strings(users["gender"]) if "gender" in users else [],
        occupations=_strings(users["occupation"]) if "occupation" in users else [],
        genres=genres,
    )


def demographics(user_ids, users: pd.DataFrame) -> dict[str, np.ndarray]:
    """``gender``, ``occupation``, ``age`` per user ('' / 0 when unknown); {} when ``users`` has none."""
    if not {"gender", "occupation", "age"} <= set(users.columns):
        return {}
    frame = pd.DataFrame({"user_id": np.asarray(user_ids, dtype=str)})
    info = users[["user_id", "gender", "occupation", "age"]].astype({"user_id": str}).drop_duplicates("user_id")
    frame = frame.merge(info, on="user_id", how="left")
    return {
        "gender": frame["gender"].fillna("").astype(str).to_numpy(dtype=object),
        "occupation": frame["occupation"].fillna("").astype(str).to_numpy(dtype=object),
        "age": frame["age"].fillna(0).astype("int32").to_numpy(),
    }


def query_features(user_ids, histories, users: pd.DataFrame, history_length: int) -> dict[str, np.ndarray]:
    """Query tower inputs; ``histories`` is a list of item-id lists (newest last) or a padded array."""
    if not isinstance(histories, np.ndarray):
        histories = pad_histories(histories, history_length)
    return {
        "user_id": np.asarray(user_ids, dtype=str).astype(object),
        "history": histories,
        **demographics(user_ids, users),
    }


def item_features(item_ids: pd.Series, items: pd.DataFrame) -> dict[str, np.ndarray]:
    """Columns for the candidate tower: ``item_id`` plus genres ('' when unknown)."""
    frame = pd.DataFrame({"item_id": item_ids.astype(str).to_numpy()})
    if "genres" in items.columns:
        frame = frame.merge(items[["item_id", "genres"]].astype({"item_id": str}), on="item_id", how="left")
        return {
            "item_id": frame["item_id"].to_numpy(dtype=object),
            "genres": frame["genres"].fillna("").astype(str).to_numpy(dtype=object),
        }
    return {"item_id": frame["item_id"].to_numpy(dtype=object)}


def vocabulary_index(values, vocabulary: list[str]) -> np.ndarray:
    """What the towers' ``StringLookup`` gives each value: 1 + its position in ``vocabulary``, 0 when unknown."""
    return (pd.Index(vocabulary, dtype=object).get_indexer(np.asarray(values, dtype=object)) + 1).astype(np.int32)


def genres_multi_hot(genres, vocabulary: list[str]) -> np.ndarray:
    """The candidate tower's multi-hot genre vector per ``'a|b'`` value (slot 0: an unknown or empty genre,
    as ``tf.strings.split`` and ``StringLookup`` give it)."""
    values = pd.Series([str(v) for v in genres], dtype=object)
    tokens = values.str.split("|").explode()
    hot = np.zeros((len(values), len(vocabulary) + 1), np.float32)
    hot[tokens.index.to_numpy(dtype=np.int64), vocabulary_index(tokens.to_numpy(), vocabulary)] = 1.0
    return hot


@dataclass(frozen=True)
class TrainingExamples:
    """The training interactions as integer codes; every model input is gathered per batch.

    Memory is a few integers per interaction (item codes of the log sorted by user and time, and each
    example's slice of it: ``log_items[start:cut]`` is the user's earlier events), plus one entry per
    user and per item for indices and features. The ``[rows, history_length]`` histories exist only for the
    batch being trained on, so the window's size costs bytes per row, not a history per row.

    The batches carry the towers' vocabulary indices (``<name>_index``, what their ``StringLookup`` layers
    would give, computed once here) rather than strings: no string is gathered or hashed per training step.
    The exported towers keep the lookups and take raw strings.
    """

    user_codes: np.ndarray  # int32, per example: a user code
    item_codes: np.ndarray  # int32, per example: an item code
    start: np.ndarray  # int64, per example
    cut: np.ndarray  # int64, per example
    log_items: np.ndarray  # int32 item codes of the log, sorted by (user, timestamp)
    per_user: dict[str, np.ndarray]  # user_id_index and demographics per user code
    per_item: dict[str, np.ndarray]  # item_id_index, genres and the logQ sampling probability per item code
    history_length: int
    _tf: dict = field(default_factory=dict, repr=False, compare=False)  # the variables, made on first use

    def __len__(self) -> int:
        return len(self.user_codes)

    def columns(self, rows):
        """The model inputs of ``rows`` (example indices), gathered with TF ops. The per-example arrays
        are read through non-trainable variables: a graph constant of them would be copied by every trace."""
        import tensorflow as tf

        table = self._variables()
        users, items = tf.gather(table["user_codes"], rows), tf.gather(table["item_codes"], rows)
        start, cut = tf.gather(table["start"], rows), tf.gather(table["cut"], rows)
        positions = cut[:, None] - self.history_length + tf.range(self.history_length, dtype=tf.int64)[None, :]
        codes = tf.gather(table["log_items"], tf.maximum(positions, 0))
        history = tf.gather(self.per_item["item_id_index"], codes)
        return {
            "history_index": tf.where(positions >= start[:, None], history, 0),  # 0: padding, no item
            **{name: tf.gather(values, users) for name, values in self.per_user.items()},
            **{name: tf.gather(values, items) for name, values in self.per_item.items()},
        }

    def _variables(self) -> dict:
        import tensorflow as tf

        if not self._tf:
            for name in ("user_codes", "item_codes", "start", "cut", "log_items"):
                self._tf[name] = tf.Variable(getattr(self, name), trainable=False, name=name)
        return self._tf


def training_examples(
    train: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, history_length: int, vocab: Vocabularies
) -> TrainingExamples:
    """One example per training interaction: its query (history strictly before it), its item, and the
    item's sampling probability for the logQ correction; ids and features as ``vocab``'s indices."""
    user_codes, user_ids = pd.factorize(train["user_id"].astype(str))
    item_codes, item_ids = pd.factorize(train["item_id"].astype(str))
    prefixes = earlier_events(train.assign(item_id=item_codes))  # integer items: no string per event
    counts = np.bincount(item_codes, minlength=len(item_ids))
    per_user = {"user_id_index": vocabulary_index(user_ids, vocab.user_ids)}
    if vocab.has_user_features:
        known = demographics(user_ids, users)
        per_user["gender_index"] = vocabulary_index(known["gender"], vocab.genders)
        per_user["occupation_index"] = vocabulary_index(known["occupation"], vocab.occupations)
        per_user["age"] = known["age"]
    per_item = {"item_id_index": vocabulary_index(item_ids, vocab.item_ids)}
    if vocab.has_item_features:
        per_item["genres_multi_hot"] = genres_multi_hot(
            item_features(pd.Series(item_ids), items)["genres"], vocab.genres
        )
    return TrainingExamples(
        user_codes=user_codes.astype(np.int32),
        item_codes=item_codes.astype(np.int32),
        start=prefixes.start.astype(np.int64),
        cut=prefixes.cut.astype(np.int64),
        log_items=prefixes.items.astype(np.int32),
        per_user=per_user,
        per_item={**per_item, "item_probability": (counts / max(len(train), 1)).astype(np.float32)},
        history_length=history_length,
    )


def make_dataset(examples: TrainingExamples, batch_size: int, seed: int, replicas: int = 1, pipeline=(0, 1)):
    """Shuffled batches of example indices: a fresh seeded permutation every epoch (the only Python per
    batch is slicing it). The model gathers each batch's inputs in its training step
    (``TwoTowerModel(gather=examples.columns)``).

    Under a distribution strategy (``replicas`` > 1) every global batch of ``batch_size`` is split into
    ``replicas`` equal parts and input pipeline ``pipeline = (id, count)`` yields the parts
    ``id, id + count, ...`` of each (``tf.distribute``'s per-replica batches, in replica order); a last
    batch too small to split is dropped, so every replica takes the same number of steps."""
    import tensorflow as tf

    size = len(examples)
    epochs = iter(range(1 << 30))
    index, count = pipeline

    def batches():
        order = np.random.default_rng([seed, next(epochs)]).permutation(size)
        for begin in range(0, size, batch_size):
            batch = order[begin : begin + batch_size]
            if replicas == 1:
                yield batch
            elif len(batch) >= replicas:
                yield from np.array_split(batch, replicas)[index::count]

    rows = tf.data.Dataset.from_generator(batches, output_signature=tf.TensorSpec([None], tf.int64))
    return rows.prefetch(tf.data.AUTOTUNE)
