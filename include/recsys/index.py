"""The candidate index the server searches: exact (numpy dot products) or a native ScaNN searcher.

Native ScaNN (``scann.scann_ops_pybind``) runs without TensorFlow in the search path: a call costs
microseconds where a TF op call costs about half a millisecond. Column ``c`` of either index is row
``c`` of the export's ``candidates.parquet``.

* :func:`tune` builds one ScaNN tree per leaf count and tries the grid's leaves-to-search and
  reordering depths as query-time settings, measuring recall@10/@k against exact search on real
  queries and single-query latency against the exact search the server would otherwise run; it picks
  the fastest configuration that reaches the target recall (else the most accurate).
* :func:`save` / :func:`load`: the chosen searcher serialised with relative paths (the model folder
  moves between object stores and machines) plus ``item_ids.json``, the id of each column.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

NATIVE_DIR = "index_scann_native"
Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (queries, depth) -> (columns, scores)


@dataclass(frozen=True)
class ScannConfig:
    num_leaves: int
    num_leaves_to_search: int
    num_reordering_candidates: int
    dimensions_per_block: int = 2


def scann_available() -> bool:
    try:
        import scann  # noqa: F401
    except ImportError:
        return False
    return True


def scann_grid(num_candidates: int, k: int) -> list[ScannConfig]:
    """Two trees (about sqrt(N) and 2 sqrt(N) leaves: two builds) and, for each, leaves-to-search and
    reordering depths tried at query time (cheap). On 1M noisy 32-d embeddings the finer tree wins."""
    root = int(math.sqrt(num_candidates))
    configs = []
    for leaves in {max(2, min(2000, root)), max(2, min(4000, 2 * root))}:
        for fraction in (0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.35):
            for reorder in (max(k, 250), max(k, 500), max(k, 1000)):
                to_search = max(1, math.ceil(leaves * fraction))
                configs.append(ScannConfig(leaves, to_search, min(reorder, num_candidates)))
    return sorted(set(configs), key=lambda c: (c.num_leaves, c.num_leaves_to_search, c.num_reordering_candidates))


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns and scores of each row's ``k`` best, best first; ties go to the lower column."""
    kth = np.partition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k]
    columns = np.zeros((len(scores), k), dtype=np.int64)
    for row in range(len(scores)):
        candidates = np.flatnonzero(scores[row] >= kth[row])
        columns[row] = candidates[np.lexsort((candidates, -scores[row, candidates]))][:k]
    return columns, np.take_along_axis(scores, columns, 1)


def exact_search(embeddings: np.ndarray, cells: int = 1 << 24) -> Search:
    """Exhaustive dot-product search, scored in chunks of at most ``cells`` scores."""

    def search(queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        depth = min(depth, len(embeddings))
        chunk = max(1, cells // max(len(embeddings), 1))
        parts = [top_k(queries[s : s + chunk] @ embeddings.T, depth) for s in range(0, len(queries), chunk)]
        if not parts:
            return np.zeros((0, depth), np.int64), np.zeros((0, depth), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return search


def build(embeddings: np.ndarray, config: ScannConfig):
    """A native ScaNN searcher: a tree of ``num_leaves`` leaves, asymmetric hashing, exact reordering."""
    import scann

    leaves = min(config.num_leaves, len(embeddings))
    return (
        scann.scann_ops_pybind.builder(embeddings.astype(np.float32), 10, "dot_product")
        .tree(leaves, min(config.num_leaves_to_search, leaves), training_sample_size=len(embeddings))
        .score_ah(config.dimensions_per_block, anisotropic_quantization_threshold=0.2)
        .reorder(min(config.num_reordering_candidates, len(embeddings)))
        .build()
    )


def native_search(searcher, config: ScannConfig) -> Search:
    """Search ``searcher`` with the configuration's leaves-to-search and reordering depth."""
    leaves = min(config.num_leaves_to_search, config.num_leaves)

    def search(queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        reorder = max(depth, config.num_reordering_candidates)
        columns, scores = searcher.search_batched(
            np.ascontiguousarray(queries, dtype=np.float32),
            final_num_neighbors=depth,
            pre_reorder_num_neighbors=reorder,
            leaves_to_search=leaves,
        )
        return columns.astype(np.int64), scores.astype(np.float32)

    return search


def save(searcher, directory: Path, item_ids: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    searcher.serialize(str(directory), relative_path=True)
    (directory / "item_ids.json").write_text(json.dumps(list(item_ids)))


def load(directory: Path) -> tuple[object, list[str]]:
    """The serialised searcher and the item id of each of its columns."""
    import scann

    searcher = scann.scann_ops_pybind.load_searcher(str(directory))
    return searcher, json.loads((directory / "item_ids.json").read_text())


def blas_threads() -> int | None:
    """Threads numpy's BLAS uses (the exact search's parallelism), when threadpoolctl can tell."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    pools = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas" and "numpy" in p["filepath"]]
    return pools[0] if pools else None


def latency_ms(search: Search, queries: np.ndarray, k: int, repeats: int = 3) -> dict:
    """Single-query latency (one row per call, as one request is searched)."""
    search(queries[:1], k)
    timings = []
    for _ in range(repeats):
        for row in range(len(queries)):
            started = time.perf_counter()
            search(queries[row : row + 1], k)
            timings.append((time.perf_counter() - started) * 1000)
    return {"p50": round(float(np.percentile(timings, 50)), 4), "p99": round(float(np.percentile(timings, 99)), 4)}


def _recall(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    hits = [len(set(f[:k]) & set(e[:k])) / min(k, len(e)) for f, e in zip(found, exact, strict=True)]
    return round(float(np.mean(hits)), 5)


def tune(
    embeddings: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = 100,
    target_recall: float = 0.99,
    min_recall: float = 0.95,
    latency_queries: int = 50,
    grid: list[ScannConfig] | None = None,
) -> tuple[object | None, dict]:
    """The chosen native searcher (None when ScaNN is unavailable or below ``min_recall``) and the report:
    ``serving`` (``scann`` / ``brute_force``), ``reason``, the grid, the chosen row under ``scann``.

    The queries are split in two halves (seeded shuffle): the configuration is chosen on one; its recall
    is measured again on the other (``held_out``), and that figure is the one held to ``min_recall``."""
    k = min(k, len(embeddings))
    exact = exact_search(embeddings)
    order = np.random.default_rng(0).permutation(len(queries))
    held_out = queries[order[len(queries) // 2 :]]
    queries = queries[order[: len(queries) // 2]] if len(queries) > 1 else queries
    exact_ids, _ = exact(queries, k)
    singles = queries[:latency_queries]
    report = {
        "k": k,
        "candidates": len(embeddings),
        "queries": len(queries),
        "held_out_queries": len(held_out),
        "target_recall": target_recall,
        "min_recall": min_recall,
        "brute_force_latency_ms": latency_ms(exact, singles, k),
        "brute_force_blas_threads": blas_threads(),
        "index": "native ScaNN (scann_ops_pybind)",
        "grid": [],
    }
    if not scann_available():
        return None, report | {"serving": "brute_force", "reason": "scann is not importable"}

    def preference(row: dict) -> tuple:
        """Reaching the target recall first; then the faster, or else the more accurate."""
        reaches = row["recall@10"] >= target_recall
        return reaches, (-row["latency_ms"]["p50"] if reaches else row["recall@10"])

    chosen = row = None
    by_leaves: dict[int, list[ScannConfig]] = {}
    for config in grid or scann_grid(len(embeddings), k):
        by_leaves.setdefault(config.num_leaves, []).append(config)
    for configs in by_leaves.values():  # one tree per leaf count; the rest are query-time settings
        started = time.perf_counter()
        searcher = build(embeddings, max(configs, key=lambda c: c.num_reordering_candidates))
        build_s = round(time.perf_counter() - started, 3)
        for config in configs:
            search = native_search(searcher, config)
            found, _ = search(queries, k)
            measured = {
                **asdict(config),
                "build_s": build_s,
                "recall@10": _recall(found, exact_ids, 10),
                "recall@100": _recall(found, exact_ids, k),  # at k (100 unless the catalog is smaller)
                "latency_ms": latency_ms(search, singles, k),
            }
            report["grid"].append(measured)
            if row is None or preference(measured) > preference(row):
                chosen, row = (searcher, config), measured
    held_ids, _ = exact(held_out, k)
    found, _ = native_search(*chosen)(held_out, k)
    row = row | {"held_out": {"recall@10": _recall(found, held_ids, 10), "recall@100": _recall(found, held_ids, k)}}
    if row["held_out"]["recall@10"] < min_recall:
        reason = f"best ScaNN recall@10 on held-out queries {row['held_out']['recall@10']} < {min_recall}"
        return None, report | {"serving": "brute_force", "reason": reason, "best_scann": row}
    report["scann"] = row
    speedup = round(report["brute_force_latency_ms"]["p50"] / max(row["latency_ms"]["p50"], 1e-9), 2)
    report["speedup_p50"] = speedup
    if speedup <= 1:
        return chosen[0], report | {"serving": "brute_force", "reason": "ScaNN is not faster than exact search here"}
    return chosen[0], report | {"serving": "scann"}


def config_of(row: dict) -> ScannConfig:
    """The :class:`ScannConfig` of a report row (``index.json``'s ``scann``)."""
    return ScannConfig(**{f: row[f] for f in ScannConfig.__dataclass_fields__ if f in row})
