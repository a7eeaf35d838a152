"""Real-time events back into the lake: read a dataset export job's output, merge one day into its partition.

The export (``ingestionMode=PUT``) holds every event the application sent through the event tracker;
its CSV part files (any depth under the output path; columns case-insensitive, ``timestamp`` in ms or s)
are read, the day's events kept (``[day, day+1)`` UTC), anonymous events (no ``user_id``), events without
an item and unknown event types dropped with counts. What is left is deduplicated against the partition's
rows — the source database may hold the same event — on (user, item, event type, second), so merging
twice adds nothing.

The merge publishes a new version of the partition (same manifest commit as extraction): the interactions
Parquet gains an ``origin`` column (``source`` / ``event_tracker``), the Personalize CSV and the batch
users are rewritten, the other files copied; ``manifest["merged_events"]`` records the export job, the
counts and the rows added. A later re-extraction of the day replaces the partition: run the merge again.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa

from recsys.data import writers as w
from recsys.data.partitions import PartitionStore
from recsys.storage import as_path, copy_file

MERGED_SCHEMA = w.INTERACTIONS_SCHEMA.append(pa.field("origin", pa.string()))
REWRITTEN = ("interactions", "personalize_interactions", "batch_inference_users")


def read_export(output: str, conn_id: str | None) -> list[dict]:
    """Every row of the CSV files under ``output`` (``s3://...``), keys lower-cased."""
    from recsys.data.personalize_files import with_connection

    root = with_connection(output.rstrip("/") + "/", conn_id) if output.startswith("s3://") else as_path(output)
    rows = []
    for path in sorted(root.rglob("*.csv"), key=str):
        text = path.read_text()
        rows += [{k.lower(): v for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]
    return rows


def day_events(rows: list[dict], day: date, known_event_types) -> tuple[list[dict], dict]:
    """The day's usable events as interaction rows, and what was dropped."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    end = start + timedelta(days=1).total_seconds()
    kept, dropped = [], {"other_days": 0, "anonymous": 0, "no_item": 0, "unknown_event_type": 0}
    for row in rows:
        stamp = float(row.get("timestamp") or 0)
        seconds = int(stamp / 1000 if stamp > 1e11 else stamp)  # the export writes ms; imports use s
        if not start <= seconds < end:
            dropped["other_days"] += 1
        elif not row.get("user_id"):
            dropped["anonymous"] += 1
        elif not row.get("item_id"):
            dropped["no_item"] += 1
        elif row.get("event_type") not in known_event_types:
            dropped["unknown_event_type"] += 1
        else:
            kept.append(
                {
                    "user_id": row["user_id"],
                    "item_id": row["item_id"],
                    "event_type": row["event_type"],
                    "event_value": None,
                    "timestamp": seconds,
                    "occurred_at": datetime.fromtimestamp(seconds, UTC),
                    "origin": "event_tracker",
                }
            )
    return kept, dropped


def merge_events(extract_root: str, day: date, rows: list[dict], known_event_types, export_job: str) -> dict:
    """Merge the export's events of ``day`` into its partition; return the provenance record."""
    import pyarrow.parquet as pq

    store = PartitionStore(extract_root)
    manifest = store.read_manifest(day)
    if manifest is None or manifest["status"] != "ok":
        raise ValueError(f"no committed partition with data for {day}: extract it before merging events")
    events, dropped = day_events(rows, day, frozenset(known_event_types))
    with store.file_path(manifest, "interactions").open("rb") as handle:
        existing = pq.read_table(handle).to_pylist()
    for row in existing:
        row.setdefault("origin", "source")
    seen = {(r["user_id"], r["item_id"], r["event_type"], int(r["timestamp"])) for r in existing}
    added = []
    for event in events:
        key = (event["user_id"], event["item_id"], event["event_type"], event["timestamp"])
        if key not in seen:
            seen.add(key)
            added.append(event)
    record = {
        "export_job": export_job,
        "events_in_export": len(rows),
        "events_of_day": len(events),
        "duplicates": len(events) - len(added),
        "added": len(added),
        "dropped": dropped,
        "merged_at": datetime.now(UTC).isoformat(),
    }
    if not added:
        return {**record, "version": manifest["version"]}
    return {**record, "version": _publish(store, day, manifest, existing + added, record)}


def _publish(store: PartitionStore, day: date, manifest: dict, rows: list[dict], record: dict) -> str:
    version, version_dir = store.new_version(day)
    with w.VersionWriter(version_dir, version) as vw:
        vw.parquet("interactions", "interactions.parquet", MERGED_SCHEMA).write_columns(
            {name: [r.get(name) for r in rows] for name in MERGED_SCHEMA.names}
        )
        vw.csv(
            "personalize_interactions", "personalize/interactions.csv", w.PERSONALIZE_INTERACTIONS_HEADER
        ).write_rows([(r["user_id"], r["item_id"], r["timestamp"], r["event_type"]) for r in rows])
        vw.jsonl("batch_inference_users", "batch_inference/users.jsonl").write_user_ids(
            sorted({r["user_id"] for r in rows})
        )
    files = {**manifest["files"], **vw.entries()}
    for name, entry in manifest["files"].items():
        if name not in REWRITTEN:
            relative = entry["path"].split("/", 1)[1]
            copy_file(store.partition_dir(day) / entry["path"], version_dir / relative)
            files[name] = {**entry, "path": f"v={version}/{relative}"}
    counts = {**manifest["counts"], "valid": len(rows)}
    history = [*manifest.get("merged_events", []), record]
    store.commit(day, {**manifest, "version": version, "files": files, "counts": counts, "merged_events": history})
    return version
