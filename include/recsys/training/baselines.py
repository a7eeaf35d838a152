"""The cheap baselines every candidate must beat, served the same way as the model.

Each baseline is a :class:`recsys.policy.Policy` (history lookup, seen-item exclusion, segments), so the
gate compares like with like:

* ``popularity`` — training counts; no parameters.
* ``first_event_prior`` — for users without history, the items users most often start with (their first
  ``first_events`` events); popularity for the others. The no-history list of every baseline below.
* ``item_knn`` — item-item cosine similarity of training co-occurrences.
* ``rp3beta`` — the three-step random walk item -> user -> item, probabilities raised to ``alpha`` and
  divided by the target's popularity to the power ``beta`` (Paudel et al., 2016).
* ``ease`` — the closed-form linear item-item model with L2 weight ``lambda`` (Steck, 2019); only when the
  catalog fits (``EASE_MAX_ITEMS``), else skipped with the reason.

The item-item baselines score an item by the sum of its weights from the user's newest
``history_length`` items, the newest weighing 1 and each older step ``decay`` times less. Every
parameter is chosen on the validation split (:func:`tune`); nothing is read from the holdout.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

from recsys.history import UserTimeline, string_codes
from recsys.policy import ItemItemPolicy, Policy, PolicyConfig
from recsys.training.evaluate import popularity_order, ranked

EASE_MAX_ITEMS = 20_000  # EASE inverts a dense items x items matrix
DENSE_NEIGHBOURS = 5_000  # catalogs up to this keep every neighbour; larger keep the top NEIGHBOURS per item
NEIGHBOURS = 200
BLOCK_ROWS = 2_000  # item rows of the co-occurrence product computed at a time (larger catalogs)
DECAYS = (1.0, 0.9, 0.8, 0.7, 0.5)
GRIDS: dict[str, dict[str, tuple]] = {
    "popularity": {},
    "first_event_prior": {"first_events": (1, 2, 3, 5)},
    "item_knn": {"decay": DECAYS, "shrink": (0.0, 10.0)},
    "rp3beta": {"decay": DECAYS, "alpha": (0.5, 1.0), "beta": (0.0, 0.3, 0.6)},
    "ease": {"decay": DECAYS, "lambda": (100.0, 300.0, 1000.0, 3000.0)},
}
ITEM_ITEM = ("item_knn", "rp3beta", "ease")
FIRST_EVENTS = 2  # the first-event prior's default, where it is not tuned


def first_event_prior(train: pd.DataFrame, first_events: int) -> list[str]:
    """Item ids by how often they are among users' first ``first_events`` events (ties: popularity, id).
    Integer codes throughout: no per-row string or sorted copy of the frame (10M rows: seconds, not a minute
    and a GiB)."""
    timeline = UserTimeline.of(train)
    codes, items = string_codes(train["item_id"])
    firsts = np.bincount(codes[timeline.order[timeline.rank < first_events]], minlength=len(items))
    return ranked(items, firsts, np.bincount(codes, minlength=len(items)))


def interaction_matrix(train: pd.DataFrame, catalog: list[str]) -> sparse.csr_matrix:
    """Binary users x catalog matrix of the training interactions."""
    user_codes, users = string_codes(train["user_id"], sort=True)  # rows in user id order, no string per row
    item_codes, items = string_codes(train["item_id"])
    columns = pd.Index(catalog).get_indexer(items)[item_codes]
    keep = columns >= 0
    matrix = sparse.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (user_codes[keep], columns[keep])), shape=(len(users), len(catalog))
    )
    matrix.data[:] = 1.0  # duplicates count once
    return matrix


def _neighbours(
    left: sparse.csr_matrix,
    right: sparse.csr_matrix,
    finish: Callable[[sparse.csr_matrix, int], sparse.csr_matrix],
    keep: int = NEIGHBOURS,
    dense_up_to: int = DENSE_NEIGHBOURS,
    block_rows: int = BLOCK_ROWS,
):
    """Item-item weights ``finish(left @ right)``, diagonal zeroed, each row's ``keep`` largest kept.

    A catalog up to ``dense_up_to`` items keeps every weight, densely (scoring is then one sparse x dense
    product). A larger one is computed ``block_rows`` rows at a time, ``finish(block, first_row)``
    applied and each row cut to its ``keep`` largest before the next block: the full product (hundreds
    of millions of co-occurrences at 100k items) is never held in memory."""
    if left.shape[0] <= dense_up_to:
        weights = finish((left @ right).tocsr(), 0).toarray()
        np.fill_diagonal(weights, 0.0)
        return weights
    blocks = []
    for first in range(0, left.shape[0], block_rows):
        block = finish((left[first : first + block_rows] @ right).tocsr(), first)
        block = block.tocoo()
        block.data[block.col == block.row + first] = 0.0
        block = block.tocsr()
        block.eliminate_zeros()
        blocks.append(_top_of_rows(block, keep))
    return sparse.vstack(blocks, format="csr")


def _top_of_rows(block: sparse.csr_matrix, keep: int) -> sparse.csr_matrix:
    """Each row's ``keep`` largest entries (ties: the lower column first)."""
    block.sort_indices()
    rows = []
    for row in range(block.shape[0]):
        start, stop = block.indptr[row], block.indptr[row + 1]
        best = np.argsort(-block.data[start:stop], kind="stable")[:keep] + start
        rows.append((np.full(len(best), row), block.indices[best], block.data[best]))
    r, c, v = (np.concatenate(parts) for parts in zip(*rows, strict=True)) if rows else ([], [], [])
    return sparse.csr_matrix((v, (r, c)), shape=block.shape)


def item_knn_weights(matrix: sparse.csr_matrix, shrink: float, **blocking):
    """Cosine similarity of the items' user sets, ``shrink`` added to the denominator."""
    norms = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel())

    def cosine(block: sparse.csr_matrix, first: int) -> sparse.csr_matrix:
        block = block.astype(np.float32).tocoo()
        denominator = norms[block.row + first] * norms[block.col] + shrink + 1e-9
        return sparse.csr_matrix((block.data / denominator, (block.row, block.col)), shape=block.shape)

    return _neighbours(matrix.T.tocsr(), matrix, cosine, **blocking)


def rp3beta_weights(matrix: sparse.csr_matrix, alpha: float, beta: float, **blocking):
    """item -> user -> item transition probabilities to the power ``alpha``, over popularity ** ``beta``."""
    user_degree = np.maximum(np.asarray(matrix.sum(axis=1)).ravel(), 1)
    item_degree = np.maximum(np.asarray(matrix.sum(axis=0)).ravel(), 1)
    user_to_item = sparse.diags(1 / user_degree) @ matrix
    item_to_user = sparse.diags(1 / item_degree) @ matrix.T
    user_to_item.data **= alpha
    item_to_user = item_to_user.tocsr()
    item_to_user.data **= alpha
    popularity = sparse.diags(1 / item_degree**beta)
    return _neighbours(
        item_to_user, user_to_item.tocsr(), lambda block, _: sparse.csr_matrix(block @ popularity), **blocking
    )


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE's closed form from the items' Gram matrix (``matrix.T @ matrix``, dense, shared by every
    ``l2``): ``B = I - P / diag(P)`` with ``P = (G + l2 I)^-1``, inverted by Cholesky (G + l2 I is
    positive definite: half the work of a general inverse)."""
    from scipy.linalg import lapack

    regularized = gram.copy()
    regularized[np.diag_indices_from(regularized)] += l2
    factor, info = lapack.dpotrf(regularized, lower=False, overwrite_a=True)
    if info == 0:
        inverse, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: the regularized Gram matrix is not positive definite (LAPACK {info})")
    rows = 1024  # dpotri fills the upper triangle: mirror it, in place, this many rows at a time
    for first in range(0, len(inverse), rows):
        last = first + rows
        inverse[first:last, :first] = inverse[:first, first:last].T
        block = inverse[first:last, first:last]
        block[:] = np.triu(block) + np.triu(block, 1).T
    weights = inverse
    weights /= -np.diag(inverse).copy()[None, :]  # in place: no second n x n array (10k items: 800 MB each)
    weights[np.diag_indices_from(weights)] = 0.0
    return weights.astype(np.float32)


@dataclass
class Baseline:
    """One baseline's chosen parameters, its validation score, the seconds tuning it took and how many of its
    configurations the time budget left untried."""

    name: str
    params: dict = field(default_factory=dict)
    validation: float = 0.0
    tried: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    untried: int = 0
    skipped: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def build(
    name: str, train: pd.DataFrame, catalog: list[str], config: PolicyConfig, params: dict, cache: dict | None = None
) -> Policy:
    """The baseline ``name`` with ``params``, fitted on ``train`` (the first-event prior for users
    without history is ``params['first_events']``, default ``FIRST_EVENTS``). ``cache`` keeps the popular order, the
    prior, the interaction matrix and each baseline's latest weights across calls: calls that differ
    only in ``decay`` (applied when scoring) reuse them."""
    cache = {} if cache is None else cache
    first_events = int(params.get("first_events", FIRST_EVENTS))
    if ("prior", first_events) not in cache:  # the same for every configuration of a grid: computed once
        cache["popular"] = popularity_order(train)
        cache[("prior", first_events)] = first_event_prior(train, first_events)
    popular, prior = cache["popular"], cache[("prior", first_events)]
    if name == "popularity":
        return Policy(catalog, popular, PolicyConfig(config.history_length, config.exclude_seen, "popular"))
    prior_config = PolicyConfig(config.history_length, config.exclude_seen, "prior")
    if name == "first_event_prior":
        return Policy(catalog, popular, prior_config, prior=prior)
    key = (name, *sorted((k, v) for k, v in params.items() if k not in {"decay", "first_events"}))
    if cache.get(("key", name)) != key:  # one weight matrix per baseline is kept: the grid varies decay fastest
        if "matrix" not in cache:
            cache["matrix"] = interaction_matrix(train, catalog)
        matrix = cache["matrix"]
        if name == "ease" and "gram" not in cache:
            cache["gram"] = (matrix.T @ matrix).toarray().astype(np.float64)
        cache.pop(("weights", name), None)  # freed before the next one is built
        cache[("weights", name)] = {
            "item_knn": lambda: item_knn_weights(matrix, params["shrink"]),
            "rp3beta": lambda: rp3beta_weights(matrix, params["alpha"], params["beta"]),
            "ease": lambda: ease_weights(cache["gram"], params["lambda"]),
        }[name]()
        cache[("key", name)] = key
    weights = cache[("weights", name)]
    return ItemItemPolicy(catalog, popular, prior_config, weights, params["decay"], prior=prior)


def release(cache: dict, name: str) -> None:
    """Drop the matrices only baseline ``name`` needs from a :func:`build` cache (the next baseline needs none)."""
    for done in (("weights", name), ("key", name), "gram"):
        cache.pop(done, None)


Score = Callable[[Policy], float]  # a policy's validation score (higher is better)


def tune(
    train: pd.DataFrame, catalog: list[str], config: PolicyConfig, score: Score, budget_seconds: float | None = None
) -> dict[str, Baseline]:
    """Every baseline's parameters chosen by ``score`` (validation), the prior's first: the item-item
    baselines then use its ``first_events`` for users without history. Grid search: the grids are small, but
    each configuration scores every validation row, so large catalogs take long: once ``budget_seconds``
    have passed (checked between configurations), every baseline still to come tries its first
    configuration only, and ``untried`` counts what was left out."""
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    chosen: dict[str, Baseline] = {}
    shared: dict = {}
    cache: dict = {}
    for name, grid in GRIDS.items():
        started = time.perf_counter()
        if name == "ease" and len(catalog) > EASE_MAX_ITEMS:
            chosen[name] = Baseline(name, skipped=f"{len(catalog)} items > {EASE_MAX_ITEMS}: dense inverse too large")
            continue
        result = Baseline(name)
        configurations = _grid(grid)
        for number, values in enumerate(configurations):
            if number and deadline is not None and time.monotonic() > deadline:
                result.untried = len(configurations) - number
                break
            params = {**shared, **values}
            value = score(build(name, train, catalog, config, params, cache))
            result.tried.append({**values, "validation": round(value, 5)})
            if len(result.tried) == 1 or value > result.validation:
                result.params, result.validation = params, value
        result.seconds = round(time.perf_counter() - started, 2)
        release(cache, name)
        if name == "first_event_prior":
            shared = {"first_events": result.params["first_events"]}
        chosen[name] = result
    return chosen


def _grid(grid: dict[str, tuple]) -> list[dict]:
    """Every combination; ``decay`` varies fastest (it only changes scoring: one weight matrix per row)."""
    names = sorted(grid, key=lambda name: name == "decay")
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]
