"""Loads an exported model directory and answers retrieval requests.

Answers with the model's served policy (:mod:`recsys.policy`): the user's history = the exported
snapshot + the request's ``recent_item_ids``; items the user has seen and ``exclude_item_ids`` are
excluded; a new user without events gets the model's no-history query or the most popular items
(``"fallback": "popular_items"``), as the export's policy says. Top-k is exact (``brute_force``)
or approximate through native ScaNN (``scann``), as the export chose (``metadata.json:
serving_index``) unless ``index`` says otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
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
    def __init__(self, model_dir: Path, index: str = "auto", clock=time.time):
        """``clock``: seconds since the epoch now (the ranking stage's "time since the user's last event")."""
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        self.clock = clock
        import pandas as pd

        self.model_dir = Path(model_dir)
        metadata = json.loads((self.model_dir / "metadata.json").read_text())
        self.index = metadata["serving_index"] if index == "auto" else index
        if self.index not in {"scann", "brute_force"}:
            raise ValueError(f"index must be auto, scann or brute_force, got {index!r}")
        import tensorflow as tf

        _limit_op_threads(tf)
        from recsys.policy import load_policy

        self.policy = load_policy(
            self.model_dir, self.index, threads=int(os.environ.get("RECSYS_SERVING_TF_THREADS", "1"))
        )
        self.k_max = int(metadata["k"])
        self.uses_user_features = bool(metadata["user_features"])
        users = pd.read_parquet(self.model_dir / "users.parquet")
        self.user_info = {str(r.user_id): r for r in users.itertuples(index=False)}
        self.history = _history_snapshot(self.model_dir / "history.parquet")
        items = pd.read_parquet(self.model_dir / "items.parquet")
        self.titles = dict(
            zip(items["item_id"].astype(str), items.get("title", items["item_id"]).astype(str), strict=True)
        )

    def _demographics(self, instances: list[Instance]) -> dict:
        """The request's features win, then the stored ones, then the training defaults ('' and 0, as
        ``fillna`` gives at training time; a null in users.parquet reads back as NaN)."""
        import numpy as np

        if not self.uses_user_features:
            return {}
        rows = []
        for instance in instances:
            stored = self.user_info.get(instance.user_id)
            rows.append(
                (
                    instance.gender or _present(getattr(stored, "gender", None), ""),
                    instance.occupation or _present(getattr(stored, "occupation", None), ""),
                    instance.age if instance.age is not None else int(_present(getattr(stored, "age", None), 0)),
                )
            )
        genders, occupations, ages = zip(*rows, strict=True)
        return {
            "gender": np.array(genders, dtype=object),
            "occupation": np.array(occupations, dtype=object),
            "age": np.array(ages, dtype=np.int32),
        }

    def history_of(self, instance: Instance) -> list[str]:
        """The snapshot's events of the user followed by the request's recent events (oldest first).

        An item sent again moves to its newest position; with ``recent_timestamps`` the recent events
        are placed among the snapshot's by time."""
        stored = self.history.get(instance.user_id, ([], []))
        recent = set(instance.recent_item_ids)
        kept = [(t, i) for i, t in zip(*stored, strict=True) if i not in recent]
        if instance.recent_timestamps is None:
            return [i for _, i in kept] + list(instance.recent_item_ids)
        merged = kept + list(zip(instance.recent_timestamps, instance.recent_item_ids, strict=True))
        return [i for _, i in sorted(merged, key=lambda pair: pair[0])]

    def since_last_of(self, instance: Instance, now: float) -> float:
        """Seconds from the user's newest known event to ``now``: 0 for a request with recent events but no
        timestamps (they just happened), NaN for a user without events."""
        stamps = list(self.history.get(instance.user_id, ([], []))[1])
        if instance.recent_item_ids:
            if instance.recent_timestamps is None:
                return 0.0
            stamps += list(instance.recent_timestamps)
        return max(0.0, now - float(max(stamps))) if stamps else float("nan")

    def predict(self, request: PredictRequest) -> list[dict]:
        return self.predict_many([request])[0]

    def predict_many(self, requests: list[PredictRequest]) -> list[list[dict]]:
        """Several requests in one policy call (one query-model call, one search): each request's
        instances keep their own exclusions and get their own ``k`` (the top ``k`` of a deeper
        ranking is the same ranking's first ``k``)."""
        instances = [i for r in requests for i in r.instances]
        now = self.clock()
        batch = self.policy.batch_from_histories(
            [i.user_id for i in instances],
            [self.history_of(i) for i in instances],
            self._demographics(instances),
            exclude=[r.exclude_item_ids for r in requests for _ in r.instances],
            since_last=[self.since_last_of(i, now) for i in instances],
        )
        answers = iter(self.policy.recommend(batch, max(r.k for r in requests)))
        out = []
        for request in requests:
            predictions = []
            for instance, answer in zip(request.instances, answers, strict=False):
                ids = answer["item_ids"][: request.k]
                predictions.append(
                    {
                        "user_id": instance.user_id,
                        "item_ids": ids,
                        "scores": answer["scores"][: request.k],
                        "fallback": answer["fallback"],
                        "titles": [self.titles.get(i, "") for i in ids],
                    }
                )
            out.append(predictions)
        return out

    def recommend_users(self, user_ids: list[str], k: int) -> list[dict]:
        """Batch recommendations for known users from their history snapshot alone (no request events)."""
        instances = [Instance(user) for user in user_ids]
        now = self.clock()
        batch = self.policy.batch_from_histories(
            user_ids,
            [self.history_of(i) for i in instances],
            self._demographics(instances),
            since_last=[self.since_last_of(i, now) for i in instances],
        )
        return [
            {"user_id": user, **answer} for user, answer in zip(user_ids, self.policy.recommend(batch, k), strict=True)
        ]

    def warm_up(self) -> None:
        """One real prediction so the first request does not pay graph tracing and lazy loading."""
        user = next(iter(self.policy.known_users), "warm-up-user")
        self.predict(PredictRequest([Instance(user)], k=min(10, self.k_max)))


def _history_snapshot(path: Path) -> dict[str, tuple[list[str], list[int]]]:
    """user -> (items, timestamps), oldest first; empty for an export without a snapshot."""
    import pandas as pd

    if not path.exists():
        return {}
    frame = pd.read_parquet(path)
    grouped = frame.groupby("user_id", sort=False)
    items, stamps = grouped["item_id"].agg(list), grouped["timestamp"].agg(list)
    return {str(user): (items[user], stamps[user]) for user in items.index}
