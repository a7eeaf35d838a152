"""Export: query model, brute-force and ScaNN retrieval SavedModels, and the index evaluator.

Every exported SavedModel takes raw features (``user_id``, ``history`` — ``[batch, N]`` item ids,
oldest first, left-padded with "" — and, when the model uses them, ``gender``, ``occupation``,
``age``) through its ``serving_default`` signature; the retrieval models return ``scores`` and
``item_ids`` in rank order, the query model ``embedding``. The prediction server itself serves
:mod:`recsys.policy` (query model + candidate embeddings + exclusions); the retrieval SavedModels
are the portable artifacts for other TF serving stacks. A process that loads the ScaNN export must
``import scann`` first (it registers the ``Scann>...`` ops).

TFRS's default ScaNN settings give poor recall on real embeddings, so the index evaluator builds a
small grid of ScaNN configurations, measures recall@10/@100 against exact brute force on real
queries and single-query latency, and picks the fastest configuration that reaches the target
recall. If none reaches ``min_recall``, ScaNN is unavailable, or it is no faster than brute force
(small catalogs), serving uses brute force. The ScaNN export is still written when it qualified.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SCANN_SAVE_NAMESPACES = ["Scann"]


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
    """A few configurations around the usual rule of thumb (about sqrt(N) leaves)."""
    leaves = max(2, min(2000, int(math.sqrt(num_candidates))))
    configs = []
    for fraction in (0.05, 0.1, 0.15, 0.2, 0.35):
        for reorder in (max(k, 250), max(k, 1000)):
            configs.append(ScannConfig(leaves, max(1, math.ceil(leaves * fraction)), min(reorder, num_candidates)))
    return sorted(set(configs), key=lambda c: (c.num_leaves_to_search, c.num_reordering_candidates))


def feature_signature(use_user_features: bool, history_length: int):
    import tensorflow as tf

    spec = {
        "user_id": tf.TensorSpec([None], tf.string, name="user_id"),
        "history": tf.TensorSpec([None, history_length], tf.string, name="history"),
    }
    if use_user_features:
        spec |= {
            "gender": tf.TensorSpec([None], tf.string, name="gender"),
            "occupation": tf.TensorSpec([None], tf.string, name="occupation"),
            "age": tf.TensorSpec([None], tf.int32, name="age"),
        }
    return spec


def _candidates_dataset(item_ids: list[str], embeddings: np.ndarray):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((np.array(item_ids, dtype=object), embeddings.astype(np.float32))).batch(
        8192
    )


def build_brute_force(query_tower, item_ids: list[str], embeddings: np.ndarray, k: int):
    import tensorflow_recommenders as tfrs

    index = tfrs.layers.factorized_top_k.BruteForce(query_tower, k=min(k, len(item_ids)))
    index.index_from_dataset(_candidates_dataset(item_ids, embeddings))
    return index


def build_scann(query_tower, item_ids: list[str], embeddings: np.ndarray, k: int, config: ScannConfig):
    import tensorflow_recommenders as tfrs

    index = tfrs.layers.factorized_top_k.ScaNN(
        query_tower,
        k=min(k, len(item_ids)),
        num_leaves=config.num_leaves,
        num_leaves_to_search=config.num_leaves_to_search,
        num_reordering_candidates=config.num_reordering_candidates,
        dimensions_per_block=config.dimensions_per_block,
    )
    index.index_from_dataset(_candidates_dataset(item_ids, embeddings))
    return index


def save_retrieval_model(index, path: Path, use_user_features: bool, history_length: int, scann: bool) -> None:
    """Save ``index`` with a ``serving_default`` signature: features -> {scores, item_ids}."""
    import tensorflow as tf

    @tf.function(input_signature=[feature_signature(use_user_features, history_length)])
    def serve(features):
        scores, ids = index(features)
        return {"scores": scores, "item_ids": ids}

    options = tf.saved_model.SaveOptions(namespace_whitelist=SCANN_SAVE_NAMESPACES) if scann else None
    tf.saved_model.save(index, str(path), signatures={"serving_default": serve}, options=options)


def save_query_model(query_tower, path: Path, use_user_features: bool, history_length: int) -> None:
    import tensorflow as tf

    @tf.function(input_signature=[feature_signature(use_user_features, history_length)])
    def serve(features):
        return {"embedding": query_tower(features)}

    tf.saved_model.save(query_tower, str(path), signatures={"serving_default": serve})


def _top_ids(index, queries: dict, k: int) -> np.ndarray:
    _, ids = index(queries, k=k)
    return ids.numpy()


def _compiled(index, queries: dict):
    """The index as a graph function, like the exported serving signature (no eager overhead)."""
    import tensorflow as tf

    signature = {
        name: tf.TensorSpec([None, *value.shape[1:]], value.dtype, name=name) for name, value in queries.items()
    }
    return tf.function(lambda features: index(features), input_signature=[signature])


def _recall(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    hits = [len(set(f[:k]) & set(e[:k])) / min(k, len(e)) for f, e in zip(found, exact, strict=True)]
    return round(float(np.mean(hits)), 5)


def latency_ms(index, single_queries: list[dict], repeats: int = 3) -> dict:
    index = _compiled(index, single_queries[0])
    index(single_queries[0])  # trace once
    timings = []
    for _ in range(repeats):
        for query in single_queries:
            started = time.perf_counter()
            index(query)
            timings.append((time.perf_counter() - started) * 1000)
    return {"p50": round(float(np.percentile(timings, 50)), 3), "p99": round(float(np.percentile(timings, 99)), 3)}


def choose_index(
    query_tower,
    item_ids: list[str],
    embeddings: np.ndarray,
    queries: dict,
    *,
    k: int = 100,
    target_recall: float = 0.99,
    min_recall: float = 0.95,
    latency_queries: int = 50,
    grid: list[ScannConfig] | None = None,
) -> tuple[object, object | None, dict]:
    """Build brute force and the ScaNN grid (default :func:`scann_grid`); return
    (brute_force, chosen_scann_or_None, report)."""
    brute = build_brute_force(query_tower, item_ids, embeddings, k)
    exact = _top_ids(brute, queries, k)
    n_queries = len(next(iter(queries.values())))
    singles = [
        {name: value[i : i + 1] for name, value in queries.items()} for i in range(min(latency_queries, n_queries))
    ]
    report = {
        "k": k,
        "candidates": len(item_ids),
        "queries": n_queries,
        "target_recall": target_recall,
        "min_recall": min_recall,
        "brute_force_latency_ms": latency_ms(brute, singles),
        "grid": [],
    }
    if not scann_available():
        report |= {"serving": "brute_force", "reason": "scann is not importable"}
        return brute, None, report

    def preference(row: dict) -> tuple:
        """Reaching the target recall first; then the faster, or else the more accurate."""
        reaches = row["recall@10"] >= target_recall
        return reaches, (-row["latency_ms"]["p50"] if reaches else row["recall@10"])

    chosen = row = None
    for config in grid or scann_grid(len(item_ids), k):
        started = time.perf_counter()
        scann = build_scann(query_tower, item_ids, embeddings, k, config)
        build_s = time.perf_counter() - started
        found = _top_ids(scann, queries, k)
        measured = {
            **asdict(config),
            "build_s": round(build_s, 3),
            "recall@10": _recall(found, exact, 10),
            "recall@100": _recall(found, exact, k),
            "latency_ms": latency_ms(scann, singles),
        }
        report["grid"].append(measured)
        if row is None or preference(measured) > preference(row):
            chosen, row = scann, measured
    if row["recall@10"] < min_recall:
        report |= {"serving": "brute_force", "reason": f"best ScaNN recall@10 {row['recall@10']} < {min_recall}"}
        return brute, None, report
    if row["latency_ms"]["p50"] >= report["brute_force_latency_ms"]["p50"]:
        report |= {
            "serving": "brute_force",
            "reason": "ScaNN is not faster than brute force at this catalog size",
            "scann": row,
        }
        return brute, chosen, report
    report |= {
        "serving": "scann",
        "scann": row,
        "speedup_p50": round(report["brute_force_latency_ms"]["p50"] / max(row["latency_ms"]["p50"], 1e-9), 2),
    }
    return brute, chosen, report
