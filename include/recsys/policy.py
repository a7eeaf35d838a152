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

    def _rank_scores(self, ranked_items: Sequence[str]) -> np.ndarray:
        """An item order as scores: the first item highest; items outside the list below all of them."""
        scores = np.zeros(len(self.catalog), dtype=np.float32)
        ranked = [self.position[i] for i in ranked_items if i in self.position]
        scores[ranked] = np.arange(len(ranked), 0, -1, dtype=np.float32)
        return scores

    # ---- building queries -------------------------------------------------------------------------
    def _columns(self, items: Iterable[str]) -> list[int]:
        return [c for c in (self.position.get(i) for i in items) if c is not None]

    def batch_from_histories(
        self,
        user_ids: Sequence[str],
        histories: Sequence[Sequence[str]],
        demographics: dict[str, np.ndarray],
        exclude: Sequence[Iterable[str]] | None = None,
    ) -> QueryBatch:
        """Serving: each user's full history (oldest first) plus the request's explicit exclusions."""
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


def _select(batch: QueryBatch, mask: np.ndarray) -> QueryBatch:
    return QueryBatch(
        batch.user_ids[mask],
        batch.histories[mask],
        batch.history_lengths[mask],
        np.zeros(int(mask.sum()) + 1, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
        {k: v[mask] for k, v in batch.demographics.items()},
    )


def load_policy(model_dir: Path, index: str = "brute_force") -> Policy:
    """The policy of an exported model directory: its query SavedModel, candidate embeddings,
    training users, popular items and policy settings; ``index="scann"`` searches with ScaNN."""
    import json

    metadata = json.loads((model_dir / "metadata.json").read_text())
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
