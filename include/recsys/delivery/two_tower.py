"""Batch top-k of an exported two-tower model for every user of its history snapshot, as served.

Uses the serving container's predictor (the same policy, history and exclusions as online; ScaNN when
the export's index is ScaNN), ``batch_size`` users per call.
"""

from __future__ import annotations

from collections.abc import Iterator


def batch_rows(predictor, k: int, batch_size: int = 2048, users: list[str] | None = None) -> Iterator[tuple]:
    """``(user_id, rank, item_id, score)`` for ``users`` (default: every user with history in the export)."""
    users = sorted(predictor.history) if users is None else users
    for start in range(0, len(users), batch_size):
        for answer in predictor.recommend_users(users[start : start + batch_size], k):
            for rank, (item, score) in enumerate(zip(answer["item_ids"], answer["scores"], strict=True), 1):
                yield answer["user_id"], rank, item, score


def deliver(model_uri: str, version: str, conn_id: str, k: int, batch_size: int = 2048) -> dict:
    """Publish the model's top ``k`` for every user of its snapshot (source ``two_tower``)."""
    import time

    from recsys.data.source import engine_for_conn_id
    from recsys.delivery.table import publish
    from recsys.serving.predictor import Predictor, fetch_model

    started = time.perf_counter()
    engine = engine_for_conn_id(conn_id)
    try:
        predictor = Predictor(fetch_model(model_uri))
        result = publish(engine, batch_rows(predictor, k, batch_size), "two_tower", version)
    finally:
        engine.dispose()
    seconds = time.perf_counter() - started
    return {**result, "seconds": round(seconds, 2), "users_per_second": round(result["users"] / seconds, 1)}
