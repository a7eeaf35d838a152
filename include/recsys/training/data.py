"""Training data: a sliding window of extraction partitions, splits, vocabularies, ``tf.data``.

Partitions are read through their manifests (never by listing files); days whose manifest says
``empty`` are outages and are reported, not silently skipped. Interactions are joined with the
newest users/items snapshot of the window so each example carries its features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.data.partitions import PartitionStore
from recsys.training.model import Vocabularies

INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp"]


class NotEnoughDataError(ValueError):
    """The window holds too few interactions to train on."""


@dataclass
class Window:
    """The interactions of a window of days plus the newest user/item snapshots."""

    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    days: list[str] = field(default_factory=list)
    outage_days: list[str] = field(default_factory=list)
    missing_days: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {
            "days": self.days,
            "outage_days": self.outage_days,
            "missing_days": self.missing_days,
            "interactions": len(self.interactions),
            "users": int(self.interactions["user_id"].nunique()) if len(self.interactions) else 0,
            "items": int(self.interactions["item_id"].nunique()) if len(self.interactions) else 0,
            "warnings": self.warnings,
        }


def _read_parquet(path) -> pa.Table:
    with path.open("rb") as handle:
        return pq.read_table(handle)


def load_window(extract_root: str, end_day: date, window_days: int) -> Window:
    """Partitions for ``[end_day - window_days + 1, end_day]`` (inclusive), read via manifests."""
    store = PartitionStore(extract_root)
    start_day = end_day - timedelta(days=window_days - 1)
    manifests = {m["partition"]: m for m in store.manifests(start=start_day, end=end_day + timedelta(days=1))}
    wanted = [(start_day + timedelta(days=d)).isoformat() for d in range(window_days)]
    window = Window(pd.DataFrame(columns=INTERACTION_COLUMNS), pd.DataFrame(), pd.DataFrame())
    window.missing_days = [d for d in wanted if d not in manifests]
    window.outage_days = [d for d in wanted if d in manifests and manifests[d]["status"] == "empty"]
    window.days = [d for d in wanted if d in manifests and manifests[d]["status"] == "ok"]
    for manifest in manifests.values():
        window.warnings += [f"{manifest['partition']}: {w}" for w in manifest.get("warnings", [])]
    tables = [_read_parquet(store.file_path(manifests[d], "interactions")).select(INTERACTION_COLUMNS)
              for d in window.days]  # fmt: skip
    if tables:
        window.interactions = pa.concat_tables(tables).to_pandas()
        newest = manifests[window.days[-1]]
        window.users = _read_parquet(store.file_path(newest, "users")).to_pandas()
        window.items = _read_parquet(store.file_path(newest, "items")).to_pandas()
    return window


def temporal_split(interactions: pd.DataFrame, holdout_start_ts: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on everything before ``holdout_start_ts`` (epoch seconds), evaluate on the rest."""
    is_test = interactions["timestamp"].to_numpy() >= holdout_start_ts
    return interactions[~is_test].reset_index(drop=True), interactions[is_test].reset_index(drop=True)


def random_split(interactions: pd.DataFrame, test_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The TFRS tutorial protocol: a seeded random split."""
    order = np.random.default_rng(seed).permutation(len(interactions))
    cut = int(round(len(interactions) * (1 - test_fraction)))
    return (interactions.iloc[order[:cut]].reset_index(drop=True),
            interactions.iloc[order[cut:]].reset_index(drop=True))  # fmt: skip


def _strings(series: pd.Series) -> list[str]:
    return sorted({str(v) for v in series.dropna() if str(v) != ""})


def build_vocabularies(train: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> Vocabularies:
    """Ids seen in training (others map to the OOV bucket) and the feature vocabularies."""
    genres = sorted({g for value in items.get("genres", pd.Series(dtype=str)).dropna()
                     for g in str(value).split("|") if g})  # fmt: skip
    return Vocabularies(
        user_ids=_strings(train["user_id"]),
        item_ids=_strings(train["item_id"]),
        genders=_strings(users["gender"]) if "gender" in users else [],
        occupations=_strings(users["occupation"]) if "occupation" in users else [],
        genres=genres,
    )


def user_features(user_ids: pd.Series, users: pd.DataFrame) -> dict[str, np.ndarray]:
    """Columns for the query tower: ``user_id`` plus demographics (blank/0 when unknown)."""
    frame = pd.DataFrame({"user_id": user_ids.astype(str).to_numpy()})
    if {"gender", "occupation", "age"} <= set(users.columns):
        info = users[["user_id", "gender", "occupation", "age"]].astype({"user_id": str})
        frame = frame.merge(info, on="user_id", how="left")
        return {
            "user_id": frame["user_id"].to_numpy(dtype=object),
            "gender": frame["gender"].fillna("").astype(str).to_numpy(dtype=object),
            "occupation": frame["occupation"].fillna("").astype(str).to_numpy(dtype=object),
            "age": frame["age"].fillna(0).astype("int32").to_numpy(),
        }
    return {"user_id": frame["user_id"].to_numpy(dtype=object)}


def item_features(item_ids: pd.Series, items: pd.DataFrame) -> dict[str, np.ndarray]:
    """Columns for the candidate tower: ``item_id`` plus genres ('' when unknown)."""
    frame = pd.DataFrame({"item_id": item_ids.astype(str).to_numpy()})
    if "genres" in items.columns:
        frame = frame.merge(items[["item_id", "genres"]].astype({"item_id": str}), on="item_id", how="left")
        return {"item_id": frame["item_id"].to_numpy(dtype=object),
                "genres": frame["genres"].fillna("").astype(str).to_numpy(dtype=object)}  # fmt: skip
    return {"item_id": frame["item_id"].to_numpy(dtype=object)}


def training_columns(train: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> dict[str, np.ndarray]:
    """One row per training interaction, with features and the item's sampling probability."""
    counts = train["item_id"].astype(str).value_counts()
    probability = (train["item_id"].astype(str).map(counts) / len(train)).to_numpy(dtype="float32")
    return {**user_features(train["user_id"], users), **item_features(train["item_id"], items),
            "item_probability": probability}  # fmt: skip


def make_dataset(columns: dict[str, np.ndarray], batch_size: int, seed: int):
    """A shuffled, batched, cached ``tf.data`` pipeline over in-memory columns."""
    import tensorflow as tf

    size = len(columns["user_id"])
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    return dataset.shuffle(size, seed=seed, reshuffle_each_iteration=True).batch(batch_size).prefetch(tf.data.AUTOTUNE)
