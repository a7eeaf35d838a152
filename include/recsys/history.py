"""Time-respecting interaction histories.

The history of an interaction at time ``t`` is the user's interactions with a timestamp strictly
before ``t``, in time order (newest last). Events in the same second are never each other's
history, so neither the target nor anything later can leak into the features a model sees.

The same prefixes give the exclusion sets of the served policy (items the user already interacted
with), so evaluation excludes exactly what the server excludes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

HISTORY_LENGTH = 50  # items a query sees (the newest N); a training parameter
PAD = ""  # the padding id of history tensors (maps to no item)
SNAPSHOT_ITEMS = 1000  # events per user kept in the exported history snapshot (seen-item exclusion)


@dataclass(frozen=True)
class Prefixes:
    """Per row of ``events`` (in its original order), the row range of its earlier events in ``items``.

    ``items[start[i]:cut[i]]`` are row ``i``'s user's events strictly before it, oldest first.
    """

    items: np.ndarray  # item ids of the log, sorted by (user, timestamp)
    start: np.ndarray
    cut: np.ndarray

    def history(self, row: int) -> list[str]:
        return self.items[self.start[row] : self.cut[row]].tolist()

    def lengths(self) -> np.ndarray:
        return self.cut - self.start


def earlier_events(events: pd.DataFrame, log: pd.DataFrame | None = None) -> Prefixes:
    """Prefixes of each row of ``events`` in ``log`` (default: ``events`` itself).

    ``log`` is everything a live system has ingested: for a holdout it is the training window plus
    the holdout, so a holdout event's history includes the user's earlier holdout events.
    """
    if log is not None:  # only the events' users matter
        log = log[log["user_id"].astype(str).isin(events["user_id"].astype(str).unique())]
    log = events if log is None else log
    ordered = (
        log[["user_id", "item_id", "timestamp"]]
        .astype({"user_id": str})
        .sort_values(["user_id", "timestamp"], kind="stable")
        .reset_index(drop=True)
    )
    codes, uniques = pd.factorize(ordered["user_id"], sort=True)
    stamps = ordered["timestamp"].to_numpy(dtype=np.int64)
    floor = min(int(stamps.min()) if len(stamps) else 0, int(events["timestamp"].min()) if len(events) else 0)
    keys = (codes.astype(np.int64) << 34) + (stamps - floor)  # sorted: (user, timestamp) packed in one int
    query_codes = uniques.get_indexer(events["user_id"].astype(str))  # -1: a user with no earlier events
    query_stamps = events["timestamp"].to_numpy(dtype=np.int64) - floor
    start = np.searchsorted(keys, query_codes.astype(np.int64) << 34, side="left")
    cut = np.searchsorted(keys, (query_codes.astype(np.int64) << 34) + query_stamps, side="left")
    unknown = query_codes < 0
    start[unknown], cut[unknown] = 0, 0
    items = ordered["item_id"]  # integer item codes stay integers (training); ids become str objects
    items = items.to_numpy() if pd.api.types.is_integer_dtype(items) else items.astype(str).to_numpy(dtype=object)
    return Prefixes(items, start, cut)


def last_items(prefixes: Prefixes, length: int = HISTORY_LENGTH) -> np.ndarray:
    """A ``[rows, length]`` array of each row's newest ``length`` earlier items, left-padded with PAD."""
    rows = len(prefixes.cut)
    positions = prefixes.cut[:, None] - length + np.arange(length)[None, :]
    valid = positions >= prefixes.start[:, None]
    out = np.full((rows, length), PAD, dtype=object)
    out[valid] = prefixes.items[positions[valid]]
    return out


def pad_histories(histories: list[list[str]], length: int = HISTORY_LENGTH) -> np.ndarray:
    """The newest ``length`` items of each history (oldest first), left-padded with PAD."""
    out = np.full((len(histories), length), PAD, dtype=object)
    for row, history in enumerate(histories):
        newest = history[-length:]
        if newest:
            out[row, length - len(newest) :] = newest
    return out


def snapshot(log: pd.DataFrame, max_items: int = SNAPSHOT_ITEMS) -> pd.DataFrame:
    """Each user's newest ``max_items`` events (``user_id, item_id, timestamp``, oldest first): the
    history the server starts from, exported with the model."""
    ordered = log[["user_id", "item_id", "timestamp"]].astype({"user_id": str, "item_id": str})
    ordered = ordered.sort_values(["user_id", "timestamp"], kind="stable")
    return ordered.groupby("user_id", sort=False).tail(max_items).reset_index(drop=True)
