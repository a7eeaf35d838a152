"""Loads an exported model directory and answers retrieval requests.

The index is the one the export chose (``metadata.json: serving_index``) unless ``index`` names
``scann`` or ``brute_force``. ScaNN exports need ``import scann`` before loading: done here.
Known users get the model's top-k; unknown users get the most popular items, flagged
``"fallback": "popular_items"``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from recsys.serving.request import Instance, PredictRequest

log = logging.getLogger(__name__)


def fetch_model(uri: str, cache_dir: str | None = None) -> Path:
    """A local copy of ``uri`` (``gs://``, ``s3://``, ``file://`` or a path); local paths are used in place."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, LocalFileSystem):
        return Path(path)
    target = Path(cache_dir or tempfile.mkdtemp(prefix="recsys-model-"))
    if target.exists():
        shutil.rmtree(target)
    fs.get(path.rstrip("/") + "/", str(target), recursive=True)
    return target


def _limit_op_threads(tf) -> None:
    """One request's ops are tiny: parallelism comes from concurrent requests, not inside ops.

    Letting every op fan out over all cores while several requests run at once oversubscribes
    the CPU and inflates tail latency. ``RECSYS_SERVING_TF_THREADS`` (default 1) sets both pools.
    """
    threads = int(os.environ.get("RECSYS_SERVING_TF_THREADS", "1"))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the TF runtime was already initialised in this process
        log.info("TensorFlow thread pools already initialised; keeping them")


def _present(value, default):
    """``value`` unless it is missing: None, or NaN (how pandas reads a null number)."""
    return default if value is None or value != value else value


class Predictor:
    def __init__(self, model_dir: Path, index: str = "auto"):
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        import pandas as pd

        self.model_dir = Path(model_dir)
        metadata = json.loads((self.model_dir / "metadata.json").read_text())
        self.index = metadata["serving_index"] if index == "auto" else index
        if self.index not in {"scann", "brute_force"}:
            raise ValueError(f"index must be auto, scann or brute_force, got {index!r}")
        if self.index == "scann":
            import scann  # noqa: F401  (registers the Scann>... ops before the SavedModel loads)
        import tensorflow as tf

        _limit_op_threads(tf)

        self._tf = tf
        self._serve = tf.saved_model.load(str(self.model_dir / f"index_{self.index}")).signatures["serving_default"]
        self.k_max = int(metadata["k"])
        self.uses_user_features = bool(metadata["user_features"])
        self.popular = list(metadata["popular_items"])
        vocab = json.loads((self.model_dir / "vocabularies.json").read_text())
        self.known_users = frozenset(vocab["user_ids"])
        users = pd.read_parquet(self.model_dir / "users.parquet")
        self.user_info = {str(r.user_id): r for r in users.itertuples(index=False)}
        items = pd.read_parquet(self.model_dir / "items.parquet")
        self.titles = dict(zip(items["item_id"].astype(str), items.get("title", items["item_id"]).astype(str),
                               strict=True))  # fmt: skip

    def _features(self, instances: list[Instance]) -> dict:
        """Model inputs: the request's features win, then the stored ones, then the training defaults
        ('' and 0, as ``fillna`` gives at training time; a null in users.parquet reads back as NaN)."""
        tf = self._tf
        features = {"user_id": tf.constant([i.user_id for i in instances])}
        if self.uses_user_features:
            rows = []
            for instance in instances:
                stored = self.user_info.get(instance.user_id)
                rows.append((
                    instance.gender or _present(getattr(stored, "gender", None), ""),
                    instance.occupation or _present(getattr(stored, "occupation", None), ""),
                    instance.age if instance.age is not None else int(_present(getattr(stored, "age", None), 0)),
                ))  # fmt: skip
            genders, occupations, ages = zip(*rows, strict=True)
            features |= {"gender": tf.constant(genders), "occupation": tf.constant(occupations),
                         "age": tf.constant(ages, dtype=tf.int32)}  # fmt: skip
        return features

    def _entry(self, user_id: str, item_ids: list[str], scores: list[float | None], fallback: str | None) -> dict:
        return {"user_id": user_id, "item_ids": item_ids, "titles": [self.titles.get(i, "") for i in item_ids],
                "scores": scores, "fallback": fallback}  # fmt: skip

    def predict(self, request: PredictRequest) -> list[dict]:
        known = [i for i in request.instances if i.user_id in self.known_users]
        retrieved: dict[str, tuple[list[str], list[float]]] = {}
        if known:
            out = self._serve(**self._features(known))
            ids, scores = out["item_ids"].numpy(), out["scores"].numpy()
            for n, instance in enumerate(known):
                decoded = ((i.decode(), float(s)) for i, s in zip(ids[n], scores[n], strict=True))
                pairs = [(i, s) for i, s in decoded if i not in request.exclude_item_ids][: request.k]
                retrieved[instance.user_id] = ([p[0] for p in pairs], [round(p[1], 6) for p in pairs])
        predictions = []
        for instance in request.instances:
            if instance.user_id in retrieved:
                item_ids, scores = retrieved[instance.user_id]
                predictions.append(self._entry(instance.user_id, item_ids, scores, None))
            else:
                popular = [i for i in self.popular if i not in request.exclude_item_ids][: request.k]
                predictions.append(self._entry(instance.user_id, popular, [None] * len(popular), "popular_items"))
        return predictions

    def warm_up(self) -> None:
        """One real prediction so the first request does not pay graph tracing and lazy loading."""
        user = next(iter(self.known_users), "warm-up-user")
        self.predict(PredictRequest([Instance(user)], k=min(10, self.k_max)))
