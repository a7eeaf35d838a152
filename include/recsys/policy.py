"""The served recommendation policy: one code path for evaluation, the gate and the server.

What a user gets for a query (user id, the user's history, demographics):

1. **History lookup** — the items the user interacted with, oldest first: at serving time the model's
   history snapshot (``history.parquet``) followed by the request's ``recent_item_ids``; offline, the
   user's events strictly before the one being predicted (:mod:`recsys.history`).
2. **Query** — the model's query embedding from the user id, the newest ``history_length`` items
   and the demographics, scored against every candidate (dot product).
3. **Exclusion** — items in the history (when ``exclude_seen``) and the request's
   ``exclude_item_ids`` are never recommended.
4. **Fallback** — a user unknown to the model *and* without history gets the most popular items
   (``no_history="popular"``), the items users most often start with (``"prior"``: the first-event
   prior, ``prior_items`` of the export) or the model's learned no-history query (``"model"``); every
   user of a policy without a model (the popularity baseline) gets popular items, or the prior when
   ``"prior"`` and the user has no history.

Offline metrics (:mod:`recsys.training.evaluate`) rank each held-out item among everything the
policy could return, so what the gate compares is what the server answers. :func:`load_policy`
builds the policy of an exported model; the server and the gate's champion evaluation use it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.history import HISTORY_LENGTH, earlier_events, last_items, pad_histories, positions_within
from recsys.index import Search, top_k

Encoder = Callable[[dict], np.ndarray]  # query features -> [n, dim] embeddings
NO_HISTORY = ("popular", "prior", "model")  # what a user without history gets (see the module docstring)


@dataclass(frozen=True)
class PolicyConfig:
    history_length: int = HISTORY_LENGTH
    exclude_seen: bool = True
    no_history: str = "popular"  # "popular": popular items; "prior": the first-event prior; "model": the model

    def __post_init__(self) -> None:
        if self.history_length < 1 or self.no_history not in NO_HISTORY:
            raise ValueError(f"invalid policy configuration: {self}")


@dataclass
class QueryBatch:
    """Queries ready for the policy: ids, padded newest-N histories, and exclusions (CSR by row)."""

    user_ids: np.ndarray
    histories: np.ndarray  # [n, history_length] item ids, oldest first, left-padded
    history_lengths: np.ndarray  # events known before the query (0 = no history)
    excluded_indptr: np.ndarray  # row r excludes catalog columns excluded_cols[indptr[r]:indptr[r+1]]
    excluded_cols: np.ndarray
    demographics: dict[str, np.ndarray]
    since_last: np.ndarray | None = None  # seconds from the user's newest earlier event to the query (NaN: none)

    def __len__(self) -> int:
        return len(self.user_ids)

    def rows(self, start: int, stop: int) -> QueryBatch:
        lo, hi = self.excluded_indptr[start], self.excluded_indptr[stop]
        return QueryBatch(
            self.user_ids[start:stop],
            self.histories[start:stop],
            self.history_lengths[start:stop],
            self.excluded_indptr[start : stop + 1] - lo,
            self.excluded_cols[lo:hi],
            {k: v[start:stop] for k, v in self.demographics.items()},
            None if self.since_last is None else self.since_last[start:stop],
        )

    def features(self) -> dict[str, np.ndarray]:
        return {"user_id": self.user_ids, "history": self.histories, **self.demographics}


class Policy:
    """Recommendations over ``catalog`` from a query encoder and item embeddings (or popularity only)."""

    def __init__(
        self,
        catalog: Sequence[str],
        popular: Sequence[str],
        config: PolicyConfig = PolicyConfig(),
        *,
        encoder: Encoder | None = None,
        item_embeddings: np.ndarray | None = None,
        known_users: Iterable[str] = (),
        searcher: Search | None = None,
        prior: Sequence[str] | None = None,
    ):
        self.catalog = np.asarray(list(catalog), dtype=object)
        self.position = {item: i for i, item in enumerate(self.catalog)}
        self.config = config
        self.encoder, self.item_embeddings = encoder, item_embeddings
        self.known_users = frozenset(known_users)
        self.searcher = searcher  # approximate top-k (ScaNN) for serving; None = exact scores
        # popularity as a score: the most popular item highest; items outside the list below all of them
        self.popularity = self._rank_scores(popular)
        # no history: the first-event prior when configured (and given), else popularity
        use_prior = config.no_history == "prior" and prior is not None
        self.no_history_scores = self._rank_scores(prior) if use_prior else self.popularity

    @functools.cached_property
    def _index(self) -> pd.Index:
        """The catalog as an index (item id -> column), built when first needed."""
        return pd.Index(self.catalog)

    @functools.cached_property
    def _tiebreak(self) -> np.ndarray:
        """Popularity scaled to [0, 1]: what orders items a score leaves tied."""
        return self.popularity / max(float(self.popularity.max(initial=0.0)), 1.0)

    def _rank_scores(self, ranked_items: Sequence[str]) -> np.ndarray:
        """An item order as scores: the first item highest; items outside the list below all of them."""
        scores = np.zeros(len(self.catalog), dtype=np.float32)
        ranked = [self.position[i] for i in ranked_items if i in self.position]
        scores[ranked] = np.arange(len(ranked), 0, -1, dtype=np.float32)
        return scores

    # ---- building queries -------------------------------------------------------------------------
    def columns_of(self, items) -> np.ndarray:
        """The catalog column of each item id (-1: not in the catalog)."""
        return self._index.get_indexer(pd.Index(np.asarray(items, dtype=str)))

    def _columns(self, items: Iterable[str]) -> list[int]:
        return [c for c in (self.position.get(i) for i in items) if c is not None]

    def batch_from_histories(
        self,
        user_ids: Sequence[str],
        histories: Sequence[Sequence[str]],
        demographics: dict[str, np.ndarray],
        exclude: Sequence[Iterable[str]] | None = None,
        since_last: Sequence[float] | None = None,
    ) -> QueryBatch:
        """Serving: each user's full history (oldest first) plus the request's explicit exclusions;
        ``since_last``: seconds since each user's newest event (NaN: none)."""
        excluded = []
        for row, history in enumerate(histories):
            items = set(history) if self.config.exclude_seen else set()
            if exclude is not None:
                items |= set(exclude[row])
            excluded.append(sorted(self._columns(items)))
        indptr = np.zeros(len(excluded) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(e) for e in excluded])
        cols = np.fromiter((c for e in excluded for c in e), dtype=np.int64, count=int(indptr[-1]))
        return QueryBatch(
            np.asarray(user_ids, dtype=str).astype(object),
            pad_histories([list(h) for h in histories], self.config.history_length),
            np.array([len(h) for h in histories], dtype=np.int64),
            indptr,
            cols,
            demographics,
            None if since_last is None else np.asarray(since_last, dtype=np.float64),
        )

    def batch_from_log(self, events: pd.DataFrame, log: pd.DataFrame, demographics: dict) -> QueryBatch:
        """Offline: one query per row of ``events``; its history = the user's ``log`` events strictly before it."""
        prefixes = earlier_events(events, log)
        lengths = prefixes.lengths()
        if self.config.exclude_seen:
            columns = np.fromiter((self.position.get(i, -1) for i in prefixes.items), np.int64, len(prefixes.items))
            owner = np.repeat(np.arange(len(events)), lengths)
            cols = columns[np.repeat(prefixes.start, lengths) + positions_within(lengths)]
            keep = cols >= 0
            cols, owner = cols[keep], owner[keep]
            indptr = np.zeros(len(events) + 1, dtype=np.int64)
            indptr[1:] = np.cumsum(np.bincount(owner, minlength=len(events)))
        else:
            cols, indptr = np.zeros(0, dtype=np.int64), np.zeros(len(events) + 1, dtype=np.int64)
        return QueryBatch(
            events["user_id"].astype(str).to_numpy(dtype=object),
            last_items(prefixes, self.config.history_length),
            lengths,
            indptr,
            cols,
            demographics,
            events["timestamp"].to_numpy(dtype=np.float64) - prefixes.last_times(),
        )

    # ---- scoring ----------------------------------------------------------------------------------
    def uses_fallback(self, batch: QueryBatch) -> np.ndarray:
        """Rows answered with popular items."""
        if self.encoder is None:
            return np.ones(len(batch), dtype=bool)
        if self.config.no_history == "model":
            return np.zeros(len(batch), dtype=bool)
        known = np.fromiter((u in self.known_users for u in batch.user_ids), dtype=bool, count=len(batch))
        return (batch.history_lengths == 0) & ~known

    def model_scores(self, batch: QueryBatch) -> np.ndarray:
        """Raw model scores ``[n, catalog]`` (dot products of query and item embeddings)."""
        return self.encoder(batch.features()) @ self.item_embeddings.T

    def scores(self, batch: QueryBatch) -> np.ndarray:
        """What the policy ranks by: model or popularity scores, excluded items at -inf."""
        fallback = self.uses_fallback(batch)
        out = np.empty((len(batch), len(self.catalog)), dtype=np.float32)
        out[fallback] = self.popularity
        out[fallback & (batch.history_lengths == 0)] = self.no_history_scores
        if not fallback.all():
            personal = ~fallback
            out[personal] = self.model_scores(_select(batch, personal))
        rows = np.repeat(np.arange(len(batch)), np.diff(batch.excluded_indptr))
        out[rows, batch.excluded_cols] = -np.inf
        return out

    def recommend(self, batch: QueryBatch, k: int) -> list[dict]:
        """The top ``k`` per query: ``item_ids``, ``scores`` (None for popular items), ``fallback``."""
        fallback = self.uses_fallback(batch)
        if self.searcher is None or fallback.all():
            columns, scores = top_k(self.scores(batch), min(k, len(self.catalog)))
        else:
            columns, scores = self._searched(batch, fallback, k)
        prior = fallback & (batch.history_lengths == 0) & (self.no_history_scores is not self.popularity)
        labels = np.where(prior, "first_event_prior", np.where(fallback, "popular_items", None))
        out = []
        for row in range(len(batch)):
            keep = np.isfinite(scores[row])
            items = self.catalog[columns[row][keep][:k]].tolist()
            values = [None] * len(items) if fallback[row] else [round(float(v), 6) for v in scores[row][keep][:k]]
            out.append({"item_ids": items, "scores": values, "fallback": labels[row]})
        return out

    def _searched(self, batch: QueryBatch, fallback: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k through the approximate index, asking for enough neighbours to survive the exclusions."""
        excluded = np.diff(batch.excluded_indptr)
        depth = min(len(self.catalog), k + int(excluded.max(initial=0)))
        columns = np.zeros((len(batch), depth), dtype=np.int64)
        scores = np.full((len(batch), depth), -np.inf, dtype=np.float32)
        personal = np.flatnonzero(~fallback)
        found, values = self.searcher(self.encoder(_select(batch, ~fallback).features()), depth)
        columns[personal, : found.shape[1]], scores[personal, : found.shape[1]] = found, values
        if fallback.any():
            columns[fallback], scores[fallback] = top_k(self.scores(_select(batch, fallback)), depth)
        for row in range(len(batch)):
            banned = batch.excluded_cols[batch.excluded_indptr[row] : batch.excluded_indptr[row + 1]]
            scores[row, np.isin(columns[row], banned)] = -np.inf
        # an approximate search can come back with too few items left after the exclusions (it searches some
        # leaves only): those rows are scored exactly, so a user gets k items whenever the catalog has them
        wanted = np.minimum(k, len(self.catalog) - excluded)
        for row in np.flatnonzero(np.isfinite(scores).sum(axis=1) < wanted):
            (columns[row],), (scores[row],) = top_k(self.scores(batch.rows(row, row + 1)), depth)
        order = np.lexsort((columns, -scores), axis=1)
        return np.take_along_axis(columns, order, 1), np.take_along_axis(scores, order, 1)

    def ranks(self, batch: QueryBatch, targets: Sequence[str], cells: int = 1 << 24) -> np.ndarray:
        """Rank (0 = best) of each row's target among what the policy could return, ties broken by
        catalog column as :meth:`recommend` does; an excluded or unknown target ranks last (the catalog size).
        Rows are scored in chunks of at most ``cells`` scores (64 MiB), whatever the catalog's size."""
        chunk = max(1, min(2048, cells // max(len(self.catalog), 1)))
        columns = np.fromiter((self.position.get(str(t), -1) for t in targets), dtype=np.int64, count=len(targets))
        ranks = np.empty(len(batch), dtype=np.int64)
        for start in range(0, len(batch), chunk):
            stop = min(start + chunk, len(batch))
            scores = self.scores(batch.rows(start, stop))
            target = columns[start:stop]
            own = np.where(target >= 0, scores[np.arange(stop - start), np.maximum(target, 0)], -np.inf)
            before = np.arange(scores.shape[1])[None, :] < target[:, None]
            higher = ((scores > own[:, None]) | ((scores == own[:, None]) & before)).sum(axis=1)
            ranks[start:stop] = np.where(np.isfinite(own), higher, len(self.catalog))
        return ranks


class ItemItemPolicy(Policy):
    """Scores from an item-item weight matrix over the recency-weighted newest history items (the
    baselines item-kNN, RP3beta and EASE, and the item-item retrievers of the two-stage policy)."""

    def __init__(self, catalog, popular, config: PolicyConfig, weights, decay: float, prior=None):
        super().__init__(catalog, popular, config, prior=prior)
        self.weights, self.decay = weights, decay

    def uses_fallback(self, batch: QueryBatch) -> np.ndarray:
        return batch.history_lengths == 0

    def model_scores(self, batch: QueryBatch) -> np.ndarray:
        from scipy import sparse

        columns = self._index.get_indexer(batch.histories.ravel()).reshape(batch.histories.shape)
        rows, positions = np.nonzero(columns >= 0)
        age = batch.histories.shape[1] - 1 - positions  # histories are left-padded, newest last
        picks = sparse.csr_matrix(
            (self.decay**age, (rows, columns[rows, positions])), shape=(len(batch), len(self.catalog))
        )
        scores = picks @ self.weights
        scores = np.asarray(scores.todense() if sparse.issparse(scores) else scores, dtype=np.float64)
        # unscored items (and ties) follow popularity, not catalog order
        scale = np.maximum(np.abs(scores).max(axis=1, keepdims=True), 1e-12)
        return (scores + 1e-4 * scale * self._tiebreak[None, :]).astype(np.float32)


# ---- the ranking stage ----------------------------------------------------------------------------
CANDIDATES_PER_RETRIEVER = 100  # each retriever's top N joins the pool of a query
RECENT_EVENTS = 5_000  # "recent popularity": counts over the newest events of the retrievers' log
POOL_CELLS = 1 << 24  # retriever scores (rows x catalog x retrievers) held at once while building a pool
OUTSIDE_POOL = -1.0e4  # items outside the pool rank below every pool item, by popularity among themselves
ITEM_FEATURES = ("popularity", "recent_popularity", "item_age_days")
QUERY_FEATURES = ("history_length", "hours_since_last_event", "similarity_last_1", "similarity_last_5")


@dataclass(frozen=True)
class ItemStats:
    """What is known of each catalog item at the end of the retrievers' log (point in time: nothing later):
    log1p of its events overall and among the newest ``RECENT_EVENTS``, and days since its first event."""

    popularity: np.ndarray
    recent_popularity: np.ndarray
    item_age_days: np.ndarray

    @classmethod
    def of(cls, log: pd.DataFrame, catalog: Sequence[str], recent_events: int = RECENT_EVENTS) -> ItemStats:
        ordered = log.sort_values("timestamp", kind="stable")
        columns = pd.Index(list(catalog)).get_indexer(ordered["item_id"].astype(str))
        known = columns >= 0
        stamps = ordered["timestamp"].to_numpy(dtype=np.float64)[known]
        columns = columns[known]
        size = len(catalog)
        counts = np.bincount(columns, minlength=size)
        recent = np.bincount(columns[-recent_events:], minlength=size)
        first = np.full(size, np.nan)
        order = np.argsort(columns, kind="stable")  # stable over time order: each item's first event first
        starts = np.unique(columns[order], return_index=True)
        first[starts[0]] = stamps[order][starts[1]]
        end = stamps[-1] if len(stamps) else 0.0
        return cls(np.log1p(counts), np.log1p(recent), (end - first) / 86_400)

    def as_frame(self, catalog: Sequence[str]) -> pd.DataFrame:
        return pd.DataFrame({"item_id": list(catalog), **{name: getattr(self, name) for name in ITEM_FEATURES}})

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> ItemStats:
        return cls(*(frame[name].to_numpy(dtype=np.float64) for name in ITEM_FEATURES))


@dataclass
class Pool:
    """A batch's candidate pool: one row per (query, candidate) pair, grouped by query (``rows`` ascending)."""

    rows: np.ndarray
    columns: np.ndarray
    features: np.ndarray  # [pairs, len(TwoStagePolicy.feature_names)] float32, NaN = missing
    fused: np.ndarray  # reciprocal-rank fusion of the retrievers: the order without a ranker


class TwoStagePolicy(Policy):
    """Retrieval then ranking: each retriever (any :class:`Policy`) proposes its top ``depth`` items, the
    union is the query's pool, and ``ranker`` (a LightGBM booster; None = reciprocal-rank fusion) orders it
    by point-in-time features (:meth:`pool`); items outside the pool follow, by popularity.

    Features per (query, candidate): each retriever's score (normalised by the query's best) and rank
    (missing when it did not propose the item), :data:`ITEM_FEATURES`, the user's history length, hours
    since the user's newest event, and the candidate's item-kNN similarity to the newest 1 and 5 history
    items (``similarity``: an item x item matrix). Every value comes from events before the query."""

    def __init__(
        self,
        catalog,
        popular,
        config: PolicyConfig,
        retrievers: dict[str, Policy],
        stats: ItemStats,
        *,
        depth: int = CANDIDATES_PER_RETRIEVER,
        similarity=None,
        ranker=None,
        threads: int = 0,
    ):
        super().__init__(catalog, popular, config)
        self.retrievers, self.stats, self.depth = retrievers, stats, depth
        self.similarity, self.ranker, self.threads = similarity, ranker, threads

    @property
    def feature_names(self) -> list[str]:
        per_retriever = [f"{name}_{kind}" for name in self.retrievers for kind in ("score", "rank")]
        return [*per_retriever, *ITEM_FEATURES, *QUERY_FEATURES]

    def uses_fallback(self, batch: QueryBatch) -> np.ndarray:
        return np.zeros(len(batch), dtype=bool)  # users without history: the ranker orders the no-history pool

    def pool(self, batch: QueryBatch) -> Pool:
        """The batch's pool and features, ``POOL_CELLS`` retriever scores (64 MiB) in memory at a time."""
        step = max(1, POOL_CELLS // max(len(self.catalog) * len(self.retrievers), 1))
        if len(batch) <= step:
            return self._pool(batch)
        parts = [self._pool(batch.rows(start, min(start + step, len(batch)))) for start in range(0, len(batch), step)]
        offsets = np.arange(0, len(batch), step)
        return Pool(
            np.concatenate([part.rows + offset for part, offset in zip(parts, offsets, strict=True)]),
            np.concatenate([part.columns for part in parts]),
            np.concatenate([part.features for part in parts]),
            np.concatenate([part.fused for part in parts]),
        )

    def _pool(self, batch: QueryBatch) -> Pool:
        n, size = len(batch), len(self.catalog)
        depth = min(self.depth, size)
        member = np.zeros((n, size), dtype=bool)
        proposals = []  # per retriever: its scores, and its top `depth` columns per row with their ranks
        for retriever in self.retrievers.values():
            scores = retriever.scores(batch)
            if depth < size:
                top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
            else:
                top = np.tile(np.arange(size), (n, 1))
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable"), 1)
            proposed = np.isfinite(np.take_along_axis(scores, top, 1))
            rows = np.repeat(np.arange(n), depth).reshape(n, depth)[proposed]
            member[rows, top[proposed]] = True
            keys = rows.astype(np.int64) * size + top[proposed]  # row-major: sorted by row, not within a row
            positions = np.broadcast_to(np.arange(depth), (n, depth))[proposed]
            order = np.argsort(keys, kind="stable")
            proposals.append((scores, keys[order], positions[order].astype(np.float32)))
        rows, columns = np.nonzero(member)
        wanted = rows.astype(np.int64) * size + columns
        features, fused = [], np.zeros(len(rows))
        for scores, keys, positions in proposals:
            best = np.max(np.where(np.isfinite(scores), np.abs(scores), 0.0), axis=1)
            features.append(scores[rows, columns] / np.maximum(best[rows], 1e-12))
            found = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
            rank = np.full(len(rows), np.nan, dtype=np.float32)
            if len(keys):
                hit = keys[found] == wanted
                rank[hit] = positions[found[hit]]
            features.append(rank)
            fused += np.nan_to_num(1.0 / (60.0 + rank), nan=0.0)
        features += [getattr(self.stats, name)[columns] for name in ITEM_FEATURES]
        features += [np.log1p(batch.history_lengths[rows]).astype(np.float64), self._hours_since_last(batch)[rows]]
        features += self._similarities(batch, rows, columns)
        matrix = np.column_stack(features).astype(np.float32) if len(rows) else np.zeros((0, len(features)), np.float32)
        return Pool(rows, columns, matrix, fused)

    @staticmethod
    def _hours_since_last(batch: QueryBatch) -> np.ndarray:
        if batch.since_last is None:
            return np.full(len(batch), np.nan)
        return np.asarray(batch.since_last, dtype=np.float64) / 3600

    def _similarities(self, batch: QueryBatch, rows: np.ndarray, columns: np.ndarray) -> list[np.ndarray]:
        """The candidate's mean ``similarity`` to the user's newest 1 and 5 history items (NaN: none)."""
        out = []
        newest = self._index.get_indexer(batch.histories[:, -5:].ravel()).reshape(len(batch), -1)
        for last in (1, 5):
            total, count = np.zeros(len(rows)), np.zeros(len(rows))
            if self.similarity is not None:
                for position in range(newest.shape[1] - last, newest.shape[1]):
                    items = newest[rows, position]
                    known = items >= 0
                    total[known] += _entries(self.similarity, items[known], columns[known])
                    count[known] += 1
            out.append(np.where(count > 0, total / np.maximum(count, 1), np.nan))
        return out

    def scores(self, batch: QueryBatch) -> np.ndarray:
        """Pool items by the ranker's score; the rest by popularity, below every pool item; excluded at -inf."""
        out = np.empty((len(batch), len(self.catalog)), dtype=np.float32)
        out[:] = OUTSIDE_POOL + self._tiebreak[None, :]
        pool = self.pool(batch)
        if len(pool.rows):
            if self.ranker is None:
                ranked = pool.fused
            else:
                ranked = self.ranker.predict(pool.features, num_threads=self.threads)
            out[pool.rows, pool.columns] = np.clip(ranked, -1e3, 1e3)
        rows = np.repeat(np.arange(len(batch)), np.diff(batch.excluded_indptr))
        out[rows, batch.excluded_cols] = -np.inf
        return out


def _entries(matrix, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``matrix[rows[i], columns[i]]`` for a dense array or a scipy sparse matrix."""
    if isinstance(matrix, np.ndarray):
        return matrix[rows, columns].astype(np.float64)
    if not len(rows):  # scipy answers an empty selection with a sparse matrix, not an array
        return np.zeros(0, dtype=np.float64)
    return np.asarray(matrix[rows, columns], dtype=np.float64).ravel()


def _select(batch: QueryBatch, mask: np.ndarray) -> QueryBatch:
    return QueryBatch(
        batch.user_ids[mask],
        batch.histories[mask],
        batch.history_lengths[mask],
        np.zeros(int(mask.sum()) + 1, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
        {k: v[mask] for k, v in batch.demographics.items()},
        None if batch.since_last is None else batch.since_last[mask],
    )


def load_policy(model_dir: Path, index: str = "brute_force", threads: int = 0) -> Policy:
    """The served policy of an exported model directory. The two-tower model (``metadata.json``
    ``served.policy == "model"``, and every export made before the choice existed): its query SavedModel,
    candidate embeddings, training users, popular items and policy settings; ``index="scann"`` searches with
    ScaNN. Any other winner (the two-stage policy, a baseline) is read from ``served/`` (:func:`read_policy`;
    ``threads``: the ranker's prediction threads, 0 = LightGBM's default)."""
    import json

    metadata = json.loads((model_dir / "metadata.json").read_text())
    served = metadata.get("served", {"policy": "model"})
    if served["policy"] != "model":
        catalog = pd.read_parquet(model_dir / "candidates.parquet", columns=["item_id"])["item_id"].astype(str)
        return read_policy(model_dir / SERVED_DIR, served["described"], catalog.tolist(), threads)
    return _model_policy(model_dir, index, metadata)


def _model_policy(model_dir: Path, index: str = "brute_force", metadata: dict | None = None) -> Policy:
    """The export's two-tower model as served."""
    import json

    metadata = metadata or json.loads((model_dir / "metadata.json").read_text())
    config = PolicyConfig(**metadata.get("policy", {}))
    candidates = pd.read_parquet(model_dir / "candidates.parquet")
    embeddings = np.stack(candidates["embedding"].to_numpy()).astype(np.float32)
    vocab = json.loads((model_dir / "vocabularies.json").read_text())
    item_ids = candidates["item_id"].astype(str).tolist()
    return Policy(
        item_ids,
        metadata["popular_items"],
        config,
        encoder=saved_model_encoder(model_dir / "query_model"),
        item_embeddings=embeddings,
        known_users=vocab["user_ids"],
        searcher=scann_search(model_dir, embeddings, item_ids) if index == "scann" else None,
        prior=metadata.get("prior_items"),
    )


def saved_model_encoder(path: Path, batch: int = 4096) -> Encoder:
    """An :data:`Encoder` over an exported query model; features its signature lacks are dropped
    (a champion exported before history existed is still evaluated, by what it uses)."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    inputs = serve.structured_input_signature[1]

    def encode(features: dict) -> np.ndarray:
        size = len(features["user_id"])
        parts = []
        for start in range(0, size, batch):
            chunk = {
                k: tf.constant(v[start : start + batch], dtype=inputs[k].dtype)
                for k, v in features.items()
                if k in inputs
            }
            parts.append(serve(**chunk)["embedding"].numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    return encode


def scann_search(model_dir: Path, embeddings: np.ndarray, item_ids: list[str]) -> Search:
    """The export's native ScaNN searcher with its chosen query-time settings (an export made before
    the searcher was serialised gets one built from the chosen configuration)."""
    import json

    from recsys import index

    chosen = json.loads((model_dir / "index.json").read_text()).get("scann")
    if not chosen:
        raise ValueError(f"{model_dir} has no qualified ScaNN configuration; serve it with brute_force")
    config = index.config_of(chosen)
    if not (model_dir / index.NATIVE_DIR).exists():
        return index.native_search(index.build(embeddings, config), config)
    searcher, columns = index.load(model_dir / index.NATIVE_DIR)
    if columns != item_ids:
        raise ValueError(f"{model_dir}: the ScaNN index's item ids differ from candidates.parquet")
    return index.native_search(searcher, config)


# ---- policies without a neural model, as files (an export's ``served/``) ----------------------------
SERVED_DIR = "served"


def ranked_items(policy: Policy, scores: np.ndarray) -> list[str]:
    """The item order behind rank scores (:meth:`Policy._rank_scores`): items outside it are left out."""
    listed = np.flatnonzero(scores > 0)
    return policy.catalog[listed[np.argsort(-scores[listed], kind="stable")]].tolist()


def save_policy(policy: Policy, directory: Path, name: str = "policy") -> dict:
    """Write ``policy`` (popularity, the prior, an item-item baseline or the two-stage policy) into
    ``directory`` (an export's ``served/``) and return its description, which :func:`read_policy` rebuilds
    it from. The two-tower model, a retriever of the two-stage policy, is the export's own (``query_model``,
    ``candidates.parquet``): it is described, not written again."""
    import dataclasses

    directory.mkdir(parents=True, exist_ok=True)
    described = {
        "config": dataclasses.asdict(policy.config),
        "popular": ranked_items(policy, policy.popularity),
        "prior": ranked_items(policy, policy.no_history_scores),
    }
    if isinstance(policy, TwoStagePolicy):
        policy.stats.as_frame(policy.catalog).to_parquet(directory / f"{name}_items.parquet", index=False)
        described |= {
            "kind": "two_stage",
            "depth": policy.depth,
            "items": f"{name}_items.parquet",
            "retrievers": {
                key: {"kind": "model"} if r.encoder is not None else save_policy(r, directory, f"{name}_{key}")
                for key, r in policy.retrievers.items()
            },
            "similarity": None if policy.similarity is None else _save_matrix(policy.similarity, directory, name),
            "ranker": None,
        }
        if policy.ranker is not None:
            policy.ranker.save_model(str(directory / f"{name}_ranker.txt"))
            described["ranker"] = f"{name}_ranker.txt"
    elif isinstance(policy, ItemItemPolicy):
        described |= {
            "kind": "item_item",
            "decay": policy.decay,
            "weights": _save_matrix(policy.weights, directory, name),
        }
    elif policy.encoder is None:
        described |= {"kind": "table"}
    else:
        raise ValueError(f"{type(policy).__name__} has a neural model: it is exported as a SavedModel")
    return described


def read_policy(directory: Path, described: dict, catalog: Sequence[str], threads: int = 0) -> Policy:
    """The policy :func:`save_policy` wrote."""
    kind = described["kind"]
    if kind == "model":
        return _model_policy(directory.parent)
    config = PolicyConfig(**described["config"])
    popular, prior = described["popular"], described["prior"] or None
    if kind == "table":
        return Policy(catalog, popular, config, prior=prior)
    if kind == "item_item":
        weights = _load_matrix(directory / described["weights"])
        return ItemItemPolicy(catalog, popular, config, weights, described["decay"], prior=prior)
    if kind != "two_stage":
        raise ValueError(f"unknown policy kind {kind!r} in {directory}")
    import lightgbm

    retrievers = {key: read_policy(directory, r, catalog) for key, r in described["retrievers"].items()}
    stats = ItemStats.from_frame(pd.read_parquet(directory / described["items"]))
    similarity = None if described["similarity"] is None else _load_matrix(directory / described["similarity"])
    ranker = None if described["ranker"] is None else lightgbm.Booster(model_file=str(directory / described["ranker"]))
    return TwoStagePolicy(
        catalog,
        popular,
        config,
        retrievers,
        stats,
        depth=described["depth"],
        similarity=similarity,
        ranker=ranker,
        threads=threads,
    )


def _save_matrix(matrix, directory: Path, name: str) -> str:
    """A dense array as ``.npy``, a scipy sparse matrix as ``.npz``; returns the file name."""
    if isinstance(matrix, np.ndarray):
        np.save(directory / f"{name}_weights.npy", matrix)
        return f"{name}_weights.npy"
    from scipy import sparse

    sparse.save_npz(directory / f"{name}_weights.npz", matrix.tocsr())
    return f"{name}_weights.npz"


def _load_matrix(path: Path):
    if path.suffix == ".npy":
        return np.load(path)
    from scipy import sparse

    return sparse.load_npz(path).tocsr()
