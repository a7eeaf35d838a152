"""Keep Personalize's users and items current between FULL imports: PutUsers / PutItems of what changed.

What changed on day D: the rows of D's users/items snapshot that are new or differ from the newest
committed partition before D (all rows when there is none). Properties follow the dataset schema's
field names in camelCase (``RELEASE_YEAR`` -> ``releaseYear``); empty values are left out.

What was sent is recorded per day in ``<storage_root>/personalize/puts/dt=<D>/<kind>.json`` (record id ->
fingerprint of the properties sent), written after every ``checkpoint_records`` records, so a re-run or a
retry sends only what is not recorded yet (PutUsers/PutItems are upserts: a crash between a call and its
checkpoint resends at most that many records, harmlessly).
"""

from __future__ import annotations

import hashlib
import json
from datetime import date

from recsys.data.partitions import PartitionStore
from recsys.storage import as_path, atomic_write_text

ID_COLUMN = {"users": "user_id", "items": "item_id"}
ID_KEY = {"users": "userId", "items": "itemId"}


def camel(name: str) -> str:
    head, *rest = name.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


def _snapshot(store: PartitionStore, manifest: dict, kind: str) -> dict[str, dict]:
    import pyarrow.parquet as pq

    with store.file_path(manifest, kind).open("rb") as handle:
        rows = pq.read_table(handle).to_pylist()
    key = ID_COLUMN[kind]
    return {str(r[key]): {camel(k): v for k, v in r.items() if k != key and v not in (None, "")} for r in rows}


def changed_records(extract_root: str, day: date, kind: str) -> list[dict]:
    """``[{"userId"|"itemId": ..., "properties": "<json>"}]`` for the rows of ``day`` new or changed since
    the previous committed partition."""
    store = PartitionStore(extract_root)
    manifest = store.read_manifest(day)
    if manifest is None or manifest["status"] != "ok":
        raise ValueError(f"no committed partition with data for {day} under {extract_root}")
    current = _snapshot(store, manifest, kind)
    earlier = [d for d in store.committed_days() if d < day]
    previous_manifest = store.read_manifest(earlier[-1]) if earlier else None
    previous = _snapshot(store, previous_manifest, kind) if previous_manifest else {}
    return [
        {ID_KEY[kind]: key, "properties": json.dumps(props, sort_keys=True)}
        for key, props in sorted(current.items())
        if previous.get(key) != props
    ]


def _fingerprint(record: dict) -> str:
    return hashlib.sha256(record["properties"].encode()).hexdigest()[:16]


def send_changed(
    hook, storage_root: str, extract_root: str, day: date, kind: str, dataset_arn: str, checkpoint_records: int = 200
) -> dict:
    """Send the day's changed ``kind`` records not sent yet; return counts for the report."""
    record_path = as_path(storage_root) / "personalize" / "puts" / f"dt={day.isoformat()}" / f"{kind}.json"
    sent = json.loads(record_path.read_text())["sent"] if record_path.exists() else {}
    changed = changed_records(extract_root, day, kind)
    todo = [r for r in changed if sent.get(r[ID_KEY[kind]]) != _fingerprint(r)]
    chunk = checkpoint_records
    calls = 0
    for start in range(0, len(todo), chunk):
        batch = todo[start : start + chunk]
        calls += hook.put_records(kind, dataset_arn, batch)
        sent.update({r[ID_KEY[kind]]: _fingerprint(r) for r in batch})
        atomic_write_text(record_path, json.dumps({"dataset_arn": dataset_arn, "sent": sent}, sort_keys=True))
    return {
        "kind": kind,
        "changed": len(changed),
        "already_sent": len(changed) - len(todo),
        "sent": len(todo),
        "calls": calls,
        "record": str(record_path),
    }
