"""Export: query model, brute-force and ScaNN retrieval SavedModels, and the index choice.

Every exported SavedModel takes raw features (``user_id``, ``history`` — ``[batch, N]`` item ids,
oldest first, left-padded with "" — and, when the model uses them, ``gender``, ``occupation``,
``age``) through its ``serving_default`` signature; the retrieval models return ``scores`` and
``item_ids`` in rank order, the query model ``embedding``. The prediction server itself serves
:mod:`recsys.policy` (query model + candidate embeddings + exclusions); the retrieval SavedModels
are the portable artifacts for other TF serving stacks. A process that loads the ScaNN export must
``import scann`` first (it registers the ``Scann>...`` ops).

The server searches a native ScaNN searcher (:mod:`recsys.index`), tuned on real queries against
exact search; the TFRS ScaNN SavedModel is built with the same configuration. If no configuration
reaches ``min_recall`` or ScaNN is unavailable, serving uses exact search; if ScaNN is no faster
(small catalogs), serving uses exact search but both ScaNN exports are still written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recsys import index
from recsys.index import ScannConfig

log = logging.getLogger(__name__)

SCANN_SAVE_NAMESPACES = ["Scann"]


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


def save_signature_only(layer, path: Path, serve, options=None) -> None:
    """``tf.saved_model.save`` of a Keras ``layer`` with ``serve`` as its only function: the variables,
    lookup tables and the ``serving_default`` signature, without Keras's traces of every sub-layer's call
    (``save_traces=False``, as ``Model.save`` offers). Nothing loads those traces (every reader calls
    ``signatures["serving_default"]``) and they cost: ``bench/bench_export.py``."""
    import tensorflow as tf
    from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope

    with keras_option_scope(save_traces=False):
        tf.saved_model.save(layer, str(path), signatures={"serving_default": serve}, options=options)


def save_retrieval_model(index, path: Path, use_user_features: bool, history_length: int, scann: bool) -> None:
    """Save ``index`` with a ``serving_default`` signature: features -> {scores, item_ids}."""
    import tensorflow as tf

    @tf.function(input_signature=[feature_signature(use_user_features, history_length)])
    def serve(features):
        scores, ids = index(features)
        return {"scores": scores, "item_ids": ids}

    options = tf.saved_model.SaveOptions(namespace_whitelist=SCANN_SAVE_NAMESPACES) if scann else None
    save_signature_only(index, path, serve, options)


def save_query_model(query_tower, path: Path, use_user_features: bool, history_length: int) -> None:
    import tensorflow as tf

    @tf.function(input_signature=[feature_signature(use_user_features, history_length)])
    def serve(features):
        return {"embedding": query_tower(features)}

    save_signature_only(query_tower, path, serve)


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
) -> tuple[object, object | None, object | None, dict]:
    """Tune the native ScaNN searcher on the queries' real embeddings (:func:`recsys.index.tune`);
    return (TFRS brute force, TFRS ScaNN of the chosen configuration or None, native searcher or None,
    report). The TFRS layers are what the portable retrieval SavedModels wrap."""
    query_embeddings = np.asarray(query_tower(queries), dtype=np.float32)
    native, report = index.tune(
        embeddings,
        query_embeddings,
        k=k,
        target_recall=target_recall,
        min_recall=min_recall,
        latency_queries=latency_queries,
        grid=grid,
    )
    brute = build_brute_force(query_tower, item_ids, embeddings, k)
    portable = None
    if native is not None:
        portable = build_scann(query_tower, item_ids, embeddings, k, index.config_of(report["scann"]))
    return brute, portable, native, report
