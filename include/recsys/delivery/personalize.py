"""Personalize batch inference output -> rows for the recommendations table.

Each output line is ``{"input": {"userId": ...}, "output": {"recommendedItems": [...], "scores": [...]},
"error": ...}``. Kept per user: items in the catalog that the user has not interacted with, best first,
at most ``k``; lines with an error are counted, not published.
"""

from __future__ import annotations

import json
from collections.abc import Iterable


def batch_rows(lines: Iterable[str], catalog: set[str], interacted: dict[str, set[str]], k: int) -> tuple[list, dict]:
    """``(user_id, rank, item_id, score)`` rows and counts of what was dropped."""
    rows, stats = [], {"users": 0, "errors": 0, "dropped_interacted": 0, "dropped_not_in_catalog": 0}
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        user = str(record.get("input", {}).get("userId", ""))
        output = record.get("output") or {}
        if record.get("error") or not user:
            stats["errors"] += 1
            continue
        seen = interacted.get(user, set())
        scores = output.get("scores") or [None] * len(output.get("recommendedItems", []))
        rank = 0
        for item, score in zip(output.get("recommendedItems", []), scores, strict=False):
            if item in seen:
                stats["dropped_interacted"] += 1
            elif catalog and item not in catalog:
                stats["dropped_not_in_catalog"] += 1
            elif rank < k:
                rank += 1
                rows.append((user, rank, item, score))
        stats["users"] += 1
    return rows, stats


def window_facts(extract_root: str, end_day, window_days: int) -> tuple[set[str], dict[str, set[str]]]:
    """The catalog (newest items snapshot) and each user's interacted items over the window."""
    from datetime import timedelta

    import pyarrow.parquet as pq

    from recsys.data.partitions import PartitionStore

    store = PartitionStore(extract_root)
    manifests = [
        m
        for m in store.manifests(end_day - timedelta(days=window_days - 1), end_day + timedelta(days=1))
        if m["status"] == "ok"
    ]
    if not manifests:
        raise ValueError(f"no extracted data in the {window_days} days ending {end_day}")
    interacted: dict[str, set[str]] = {}
    for manifest in manifests:
        with store.file_path(manifest, "interactions").open("rb") as handle:
            table = pq.read_table(handle, columns=["user_id", "item_id"])
        for user, item in zip(table.column("user_id").to_pylist(), table.column("item_id").to_pylist(), strict=True):
            interacted.setdefault(user, set()).add(item)
    with store.file_path(manifests[-1], "items").open("rb") as handle:
        catalog = set(pq.read_table(handle, columns=["item_id"]).column("item_id").to_pylist())
    return catalog, interacted


def deliver(
    output_uri: str,
    aws_conn_id: str,
    extract_root: str,
    end_day,
    window_days: int,
    app_conn_id: str,
    k: int,
    model_version: str,
) -> dict:
    """Read the batch job's ``*.out`` files, post-process, replace the table's ``personalize`` rows."""
    from recsys.data.personalize_files import with_connection
    from recsys.data.source import engine_for_conn_id
    from recsys.delivery.table import publish

    catalog, interacted = window_facts(extract_root, end_day, window_days)
    root = with_connection(output_uri.rstrip("/") + "/", aws_conn_id)
    lines = [line for path in sorted(root.rglob("*.out"), key=str) for line in path.read_text().splitlines()]
    rows, stats = batch_rows(lines, catalog, interacted, k)
    engine = engine_for_conn_id(app_conn_id)
    try:
        return {**publish(engine, rows, "personalize", model_version), "postprocessing": stats}
    finally:
        engine.dispose()
