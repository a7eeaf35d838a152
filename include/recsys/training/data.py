"""Training data: a sliding window of extraction partitions and its train/holdout splits.

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
    tables = [
        _read_parquet(store.file_path(manifests[d], "interactions")).select(INTERACTION_COLUMNS) for d in window.days
    ]
    if tables:
        window.interactions = pa.concat_tables(tables).to_pandas()
        newest = manifests[window.days[-1]]
        window.users = _read_parquet(store.file_path(newest, "users")).to_pandas()
        window.items = _read_parquet(store.file_path(newest, "items")).to_pandas()
    return window


def split_at(frame: pd.DataFrame, stamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``frame``'s rows before ``stamp`` and the rest, each in ``frame``'s order. A frame in time order (the
    window is: days in order, each partition by time) is cut into two slices that share its memory; 10M rows
    would otherwise be copied once more for every split."""
    stamps = frame["timestamp"].to_numpy()
    if bool(np.all(stamps[:-1] <= stamps[1:])):
        cut = int(np.searchsorted(stamps, stamp, side="left"))
        return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)
    later = stamps >= stamp
    return frame[~later].reset_index(drop=True), frame[later].reset_index(drop=True)


def temporal_split(interactions: pd.DataFrame, holdout_start_ts: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on everything before ``holdout_start_ts`` (epoch seconds), evaluate on the rest."""
    return split_at(interactions, holdout_start_ts)


def random_split(interactions: pd.DataFrame, test_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The TFRS tutorial protocol: a seeded random split."""
    order = np.random.default_rng(seed).permutation(len(interactions))
    cut = int(round(len(interactions) * (1 - test_fraction)))
    return (
        interactions.iloc[order[:cut]].reset_index(drop=True),
        interactions.iloc[order[cut:]].reset_index(drop=True),
    )
