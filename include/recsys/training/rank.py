"""The two-stage policy's training: retrievers, then a LightGBM LambdaMART ranker over their pool.

Point in time, twice over. The ranker learns from queries it could have been asked: the newest
``ranker_fraction`` of the rows it is given (the *ranking part*), each query's candidates and features
coming from retrievers fitted on the older rows only (:func:`retrieval`), and each query's history from
the user's earlier events. Then the retrievers are refitted on all the rows, which is what the policy
serves with: the same features, one step later in time.

* :func:`choose` runs on the fit part of a training run: the ranker's hyperparameters (:data:`GRID`) and
  boosting rounds (early stopping on the newest ``early_stopping_fraction`` of the ranking queries) are
  chosen by the whole policy's score on the validation split, within a time budget; the pool's recall
  and the retrieval-only policy (reciprocal-rank fusion) are measured there too.
* :func:`fit` repeats that with the chosen values on the whole training part, for the holdout and serving.

Ranking queries are a seeded sample of at most ``max_queries`` rows and ``max_pairs`` (query, candidate)
rows: the ranker's cost is bounded by settings, not grown with the window or the catalog. The retrievers
are the two-tower model, the tuned item-item baselines (their validation parameters), popularity, recent
popularity and the first-event prior.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys.history import users_log
from recsys.policy import CANDIDATES_PER_RETRIEVER, ItemStats, Policy, PolicyConfig, QueryBatch, TwoStagePolicy
from recsys.training.validation import validation_split

RETRIEVERS = ("ease", "rp3beta", "item_knn")  # item-item baselines used as retrievers (when tuned, not skipped)
BASE = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [10, 100],
    "lambdarank_truncation_level": 100,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "feature_fraction": 0.9,
    "verbosity": -1,
    "seed": 0,
    "deterministic": True,
    "force_row_wise": True,
}
GRID = (  # tried in this order while the budget lasts
    {"num_leaves": 31, "min_data_in_leaf": 50, "learning_rate": 0.05},
    {"num_leaves": 15, "min_data_in_leaf": 100, "learning_rate": 0.1},
    {"num_leaves": 63, "min_data_in_leaf": 50, "learning_rate": 0.03},
)


@dataclass(frozen=True)
class RankingConfig:
    candidates_per_retriever: int = CANDIDATES_PER_RETRIEVER
    ranker_fraction: float = 0.2  # the newest share of the rows the ranker learns from
    early_stopping_fraction: float = 0.3  # the newest share of the ranking queries that stops boosting
    max_queries: int = 20_000  # ranking queries sampled (seeded) at most
    max_pairs: int = 4_000_000  # and at most this many (query, candidate) rows, by the pool size of a probe
    max_rounds: int = 500
    patience: int = 30  # rounds without a better early-stopping ndcg before boosting stops
    budget_minutes: float = 10.0  # choosing among GRID: the first configuration always runs
    seed: int = 0
    label_horizon: int = 5  # relevance: 2 for the item taken next, 1 for the user's others among the next N events
    two_tower: bool = True  # the two-tower is a retriever (and its score a feature): two or three more fits of it a run

    def __post_init__(self) -> None:
        if not (
            self.candidates_per_retriever >= 1
            and 0 < self.ranker_fraction < 1
            and 0 < self.early_stopping_fraction < 1
            and self.max_queries >= 10
            and self.max_pairs >= 1000
            and self.max_rounds >= 1
        ):
            raise ValueError(f"invalid ranking settings: {self}")


@dataclass
class RankerChoice:
    """What validation chose: the ranker's parameters and rounds, and how each configuration scored."""

    params: dict
    rounds: int
    validation: float
    report: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Retrievers:
    """What the retrieval stage is built from: the item-item baselines' chosen parameters (name -> params),
    the first-event prior's ``first_events`` and each retriever's share of the pool."""

    chosen: dict
    first_events: int
    depth: int = CANDIDATES_PER_RETRIEVER
    two_tower: Callable[[pd.DataFrame], Policy] | None = None  # fits the two-tower on a log: its served policy

    @classmethod
    def of(cls, baselines: dict, first_events: int, depth: int, two_tower=None) -> Retrievers:
        """From :func:`recsys.training.baselines.tune`'s results (skipped ones left out)."""
        chosen = {name: b.params for name, b in baselines.items() if name in RETRIEVERS and not b.skipped}
        return cls(chosen, first_events, depth, two_tower)


def retrieval(
    log: pd.DataFrame, catalog: list[str], config: PolicyConfig, spec: Retrievers, two_tower: Policy | None = None
) -> TwoStagePolicy:
    """The retrieval stage fitted on ``log``: the two-tower model (``two_tower`` when given, already fitted on
    ``log``; else ``spec.two_tower(log)`` when the spec has one), the chosen item-item baselines, popularity,
    recent popularity and the first-event prior; no ranker yet (reciprocal-rank fusion)."""
    from recsys.policy import RECENT_EVENTS
    from recsys.training import baselines
    from recsys.training.evaluate import popularity_order

    cache: dict = {}
    retrievers: dict[str, Policy] = {}
    if two_tower is None and spec.two_tower is not None:
        two_tower = spec.two_tower(log)
    if two_tower is not None:
        retrievers["two_tower"] = two_tower
    for name in RETRIEVERS:
        if name in spec.chosen:
            retrievers[name] = baselines.build(name, log, catalog, config, spec.chosen[name], cache)
    cache.pop("gram", None)
    popular = popularity_order(log)
    recent = popularity_order(log.sort_values("timestamp", kind="stable").tail(RECENT_EVENTS))
    as_popular = PolicyConfig(config.history_length, config.exclude_seen, "popular")
    retrievers["popularity"] = Policy(catalog, popular, as_popular)
    retrievers["recent_popularity"] = Policy(catalog, [*recent, *popular], as_popular)
    prior = baselines.first_event_prior(log, spec.first_events)
    retrievers["first_event_prior"] = Policy(
        catalog, popular, PolicyConfig(config.history_length, config.exclude_seen, "prior"), prior=prior
    )
    similarity = (
        retrievers["item_knn"].weights
        if "item_knn" in retrievers
        else baselines.item_knn_weights(baselines.interaction_matrix(log, catalog), 10.0)
    )
    return TwoStagePolicy(
        catalog, popular, config, retrievers, ItemStats.of(log, catalog), depth=spec.depth, similarity=similarity
    )


@dataclass
class RankingRows:
    """LightGBM's training input: features, relevance labels, and the group (pairs) of each query."""

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    queries: int  # queries asked
    recalled: int  # queries whose target was in the pool (the only ones kept: the rest teach nothing)


def ranking_rows(
    policy: TwoStagePolicy,
    queries: pd.DataFrame,
    log: pd.DataFrame,
    users: pd.DataFrame | None = None,
    horizon: int = 1,
    chunk: int = 1024,
) -> RankingRows:
    """Each query's pool with a graded label: 2 for the item the user took next, 1 for the user's other items
    among the next ``horizon`` events (labels may look ahead; features never do). ``log``: every event, the
    queries' among them (a query's history is its user's events strictly before it); ``users``: demographics
    (what the two-tower retriever's query reads). Only queries whose next item is in the pool are kept."""
    batch = policy.batch_from_log(queries, users_log(queries, log), query_demographics(queries, users))
    targets = policy.columns_of(queries["item_id"])
    later = policy.columns_of(next_items(queries, log, horizon).ravel()).reshape(len(queries), horizon)
    features, labels, groups, recalled = [], [], [], 0
    for start in range(0, len(batch), chunk):
        stop = min(start + chunk, len(batch))
        pool = policy.pool(batch.rows(start, stop))
        hit = pool.columns == targets[start:stop][pool.rows]
        soon = (later[start:stop][pool.rows] == pool.columns[:, None]).any(axis=1)
        sizes = np.bincount(pool.rows, minlength=stop - start)
        useful = np.bincount(pool.rows, weights=hit, minlength=stop - start) > 0
        keep = useful[pool.rows]
        features.append(pool.features[keep])
        labels.append(np.where(hit, 2.0, np.where(soon, 1.0, 0.0))[keep].astype(np.float32))
        groups.append(sizes[useful])
        recalled += int(useful.sum())
    return RankingRows(
        np.concatenate(features) if features else np.zeros((0, len(policy.feature_names)), np.float32),
        np.concatenate(labels) if labels else np.zeros(0, np.float32),
        np.concatenate(groups) if groups else np.zeros(0, np.int64),
        len(batch),
        recalled,
    )


def next_items(queries: pd.DataFrame, log: pd.DataFrame, horizon: int) -> np.ndarray:
    """``[queries, horizon]`` item ids: each query's user's events from the query's own time on, oldest first
    (the query's item first when it is the only one of its second), padded with ``""``."""
    from recsys.history import earlier_events

    later = log.assign(timestamp=-log["timestamp"])  # "strictly before" on negated time = "strictly after"
    prefixes = earlier_events(queries.assign(timestamp=-queries["timestamp"] + 1), later)
    out = np.full((len(queries), horizon), "", dtype=object)
    # the prefix of the negated log runs newest first: its last `horizon` items, reversed, are the next ones
    for step in range(horizon):
        position = prefixes.cut - 1 - step
        valid = position >= prefixes.start
        out[valid, step] = prefixes.items[position[valid]]
    return out


def query_demographics(queries: pd.DataFrame, users: pd.DataFrame | None) -> dict:
    from recsys.training.features import demographics

    return {} if users is None else demographics(queries["user_id"].to_numpy(), users)


def pool_recall(policy: TwoStagePolicy, batch: QueryBatch, targets, chunk: int = 1024) -> float:
    """The share of ``targets`` (one per query of ``batch``) in the query's pool: no ranker can beat it."""
    columns = policy.columns_of(targets)
    found = 0
    for start in range(0, len(batch), chunk):
        stop = min(start + chunk, len(batch))
        pool = policy.pool(batch.rows(start, stop))
        found += int(np.count_nonzero(pool.columns == columns[start:stop][pool.rows]))
    return round(found / max(len(batch), 1), 5)


def query_budget(policy: TwoStagePolicy, rows: pd.DataFrame, log: pd.DataFrame, config: RankingConfig, users) -> int:
    """How many ranking queries to sample: ``max_queries``, fewer when the pool (measured on a seeded probe of
    256 queries) would make more than ``max_pairs`` rows: a large catalog's larger pools cost no more memory."""
    probe = rows.sample(min(256, len(rows)), random_state=config.seed)
    pool = policy.pool(policy.batch_from_log(probe, users_log(probe, log), query_demographics(probe, users)))
    per_query = max(len(pool.rows) / max(len(probe), 1), 1.0)
    return max(10, min(config.max_queries, int(config.max_pairs / per_query)))


def _sample(rows: pd.DataFrame, most: int, seed: int) -> pd.DataFrame:
    return rows if len(rows) <= most else rows.sample(most, random_state=seed).sort_index()


def _queries(rows: pd.DataFrame, config: RankingConfig, most: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded sample of at most ``most`` ranking queries, split in time into (train, early stopping)."""
    rows = _sample(rows, most, config.seed).sort_values("timestamp", kind="stable")
    cut = int(len(rows) * (1 - config.early_stopping_fraction))
    return rows.iloc[:cut], rows.iloc[cut:]


def _train(params: dict, rows: RankingRows, rounds: int, stopping: RankingRows | None = None, patience: int = 30):
    import lightgbm

    data = lightgbm.Dataset(rows.features, rows.labels, group=rows.groups, free_raw_data=False)
    options = {**BASE, **params, "num_threads": 0}
    if stopping is None or not len(stopping.groups):
        return lightgbm.train(options, data, num_boost_round=rounds)
    valid = lightgbm.Dataset(stopping.features, stopping.labels, group=stopping.groups, reference=data)
    callbacks = [lightgbm.early_stopping(patience, first_metric_only=False, verbose=False)]
    return lightgbm.train(options, data, num_boost_round=rounds, valid_sets=[valid], callbacks=callbacks)


def choose(
    fit_part: pd.DataFrame,
    validation,
    catalog: list[str],
    config: PolicyConfig,
    spec: Retrievers,
    ranking: RankingConfig,
    users: pd.DataFrame | None = None,
    two_tower: Policy | None = None,
) -> RankerChoice:
    """The ranker's parameters and rounds, by the two-stage policy's score on ``validation``
    (a :class:`~recsys.training.validation.Validation` over the rows after ``fit_part``; ``two_tower``: the
    two-tower already fitted on ``fit_part``, reused)."""
    started = time.perf_counter()
    deadline = time.monotonic() + ranking.budget_minutes * 60
    older, newer = validation_split(fit_part, ranking.ranker_fraction)
    early = retrieval(older, catalog, config, spec)
    learn, stop = _queries(newer, ranking, query_budget(early, newer, fit_part, ranking, users))
    learn_rows = ranking_rows(early, learn, fit_part, users, ranking.label_horizon)
    stop_rows = ranking_rows(early, stop, fit_part, users, ranking.label_horizon)
    prepared = time.perf_counter() - started
    served = retrieval(fit_part, catalog, config, spec, two_tower)
    retrieval_only = validation.metrics(served)
    tried = []
    best: RankerChoice | None = None
    for number, params in enumerate(GRID):
        if number and time.monotonic() > deadline:
            break
        fit_started = time.perf_counter()
        booster = _train(params, learn_rows, ranking.max_rounds, stop_rows, ranking.patience)
        served.ranker = booster
        metrics = validation.metrics(served)
        rounds = max(1, booster.best_iteration or booster.current_iteration())
        tried.append({**params, "rounds": rounds, "validation": metrics["objective"], "metrics": metrics})
        tried[-1]["seconds"] = round(time.perf_counter() - fit_started, 1)
        if best is None or metrics["objective"] > best.validation:
            best = RankerChoice(params, rounds, metrics["objective"])
    best.report = {
        "tried": tried,
        "untried": len(GRID) - len(tried),
        "retrieval_only": retrieval_only,
        "pool_recall": pool_recall(served, validation.batch(served), validation.rows["item_id"]),
        "ranking_queries": {
            "learn": learn_rows.queries,
            "early_stopping": stop_rows.queries,
            "in_pool": learn_rows.recalled + stop_rows.recalled,
            "pairs": int(len(learn_rows.labels) + len(stop_rows.labels)),
        },
        "features": served.feature_names,
        "candidates_per_retriever": spec.depth,
        "prepare_seconds": round(prepared, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return best


def fit(
    train: pd.DataFrame,
    catalog: list[str],
    config: PolicyConfig,
    spec: Retrievers,
    ranking: RankingConfig,
    choice,
    users: pd.DataFrame | None = None,
    two_tower: Policy | None = None,
) -> tuple[TwoStagePolicy, dict]:
    """The two-stage policy served from ``train``: the ranker (``choice``'s parameters and rounds) learned on
    the newest part with the retrievers fitted on the older part, then the retrievers refitted on all of it
    (``two_tower``: the two-tower already fitted on ``train``, reused)."""
    started = time.perf_counter()
    older, newer = validation_split(train, ranking.ranker_fraction)
    early = retrieval(older, catalog, config, spec)
    queries = _sample(newer, query_budget(early, newer, train, ranking, users), ranking.seed)
    rows = ranking_rows(early, queries, train, users, ranking.label_horizon)
    fit_started = time.perf_counter()
    booster = _train(choice.params, rows, choice.rounds)
    ranker_seconds = time.perf_counter() - fit_started
    policy = retrieval(train, catalog, config, spec, two_tower)
    policy.ranker = booster
    report = {
        "ranker_fit_seconds": round(ranker_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "ranking_queries": rows.queries,
        "in_pool": rows.recalled,
        "pairs": int(len(rows.labels)),
    }
    return policy, report
