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
    stamps: np.ndarray | None = None  # the log's timestamps in the same order as ``items``

    def history(self, row: int) -> list[str]:
        return self.items[self.start[row] : self.cut[row]].tolist()

    def lengths(self) -> np.ndarray:
        return self.cut - self.start

    def last_times(self) -> np.ndarray:
        """Each row's newest earlier event's timestamp (NaN without one)."""
        out = np.full(len(self.cut), np.nan)
        some = self.cut > self.start
        out[some] = self.stamps[self.cut[some] - 1]
        return out


def users_log(events: pd.DataFrame, *logs: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``logs`` (``user_id, item_id, timestamp``, concatenated) of the users in ``events``: all
    their histories can come from, without a copy of the whole logs."""
    users = events["user_id"].astype(str).unique()
    columns = ["user_id", "item_id", "timestamp"]
    return pd.concat([log.loc[log["user_id"].astype(str).isin(users), columns] for log in logs], ignore_index=True)


def earlier_events(events: pd.DataFrame, log: pd.DataFrame | None = None) -> Prefixes:
    """Prefixes of each row of ``events`` in ``log`` (default: ``events`` itself).

    ``log`` is everything a live system has ingested: for a holdout it is the training window plus
    the holdout, so a holdout event's history includes the user's earlier holdout events.
    """
    log = events if log is None else users_log(events, log)  # only the events' users matter
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
    return Prefixes(items, start, cut, ordered["timestamp"].to_numpy(dtype=np.float64))


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


def positions_within(lengths: np.ndarray) -> np.ndarray:
    """0, 1, ... within each of consecutive groups of these ``lengths`` (e.g. an event's rank in its user's run)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def string_codes(values: pd.Series, sort: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of ``values`` compared as strings ("1" and 1 are one value), and those strings (sorted
    with ``sort``): one string per distinct value is made, never one per row."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    recoded, strings = pd.factorize(uniques.astype(str), sort=sort)
    return recoded[codes], np.asarray(strings, dtype=object)


@dataclass(frozen=True)
class UserTimeline:
    """The rows of a log by (user id as a string, timestamp), stable: ``order`` (row positions), and for each
    of them its ``rank`` among the user's events (0 = oldest) and the user's event ``count``."""

    order: np.ndarray
    rank: np.ndarray
    count: np.ndarray

    @classmethod
    def of(cls, log: pd.DataFrame) -> UserTimeline:
        """Integer codes throughout: no per-row string copy or sorted frame (10M rows: seconds, not a GiB)."""
        users, uniques = string_codes(log["user_id"], sort=True)
        order = np.lexsort((log["timestamp"].to_numpy(), users))  # stable: ties keep the log's order
        counts = np.bincount(users, minlength=len(uniques))  # every distinct user has events: none is 0
        return cls(order, positions_within(counts), counts[users[order]])


def snapshot(log: pd.DataFrame, max_items: int = SNAPSHOT_ITEMS) -> pd.DataFrame:
    """Each user's newest ``max_items`` events (``user_id, item_id, timestamp``, oldest first): the
    history the server starts from, exported with the model."""
    timeline = UserTimeline.of(log)
    newest = timeline.order[timeline.rank >= timeline.count - max_items]
    out = pd.DataFrame({column: log[column].array.take(newest) for column in ("user_id", "item_id", "timestamp")})
    return out.astype({"user_id": str, "item_id": str})
