"""Model inputs: vocabularies, query and candidate feature columns, the training ``tf.data`` pipeline.

A query is ``user_id`` + ``history`` (the user's newest N items strictly before the example,
see :mod:`recsys.training.history`) + demographics when the data has them. A candidate is
``item_id`` + ``genres``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.training.history import earlier_events, last_items, pad_histories


@dataclass(frozen=True)
class QueryConfig:
    """How the query tower reads a user's history."""

    history_length: int = 50
    pooling: str = "mean"  # or "recency"
    half_life: float = 10.0  # items, for recency pooling
    user_id_dropout: float = 0.5  # share of training examples that query as a new user would
    hidden_units: int = 128


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


def training_columns(
    train: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, history_length: int
) -> dict[str, np.ndarray]:
    """One row per training interaction: its query (history strictly before it), its item, and the
    item's sampling probability for the logQ correction."""
    counts = train["item_id"].astype(str).value_counts()
    probability = (train["item_id"].astype(str).map(counts) / len(train)).to_numpy(dtype="float32")
    histories = last_items(earlier_events(train), history_length)
    return {
        **query_features(train["user_id"].to_numpy(), histories, users, history_length),
        **item_features(train["item_id"], items),
        "item_probability": probability,
    }


def make_dataset(columns: dict[str, np.ndarray], batch_size: int, seed: int):
    """A shuffled, batched ``tf.data`` pipeline over in-memory columns."""
    import tensorflow as tf

    size = len(columns["user_id"])
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    return dataset.shuffle(size, seed=seed, reshuffle_each_iteration=True).batch(batch_size).prefetch(tf.data.AUTOTUNE)
