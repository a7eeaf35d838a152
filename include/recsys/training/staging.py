"""Stage a training window for a remote trainer (Vertex AI custom job).

A Vertex job reads Cloud Storage, not the worker's disk, so the window's partitions are copied to
``<target>/dt=.../`` in the same layout (manifest last, so the copy is committed like the original).
Only what training reads is copied: every day's interactions, the newest day's users and items,
and the manifests of empty (outage) days so the model card still lists them. Airflow-free except
for ``ObjectStoragePath``; TensorFlow is not needed.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

from recsys.data.partitions import MANIFEST, PartitionStore
from recsys.storage import atomic_write_text, copy_file


def window_manifests(extract_root: str, end_day: date, window_days: int) -> dict[str, dict]:
    """Committed manifests of ``[end_day - window_days + 1, end_day]``, by day."""
    start = end_day - timedelta(days=window_days - 1)
    return {m["partition"]: m for m in PartitionStore(extract_root).manifests(start, end_day + timedelta(days=1))}


def window_rows(manifests: dict[str, dict]) -> int:
    """Valid interactions in the window, from the manifests alone (no data file is read)."""
    return sum(m["counts"]["valid"] for m in manifests.values() if m["status"] == "ok")


def stage_window(extract_root: str, manifests: dict[str, dict], target_root: str) -> dict:
    """Copy the window (its :func:`window_manifests`) to ``target_root``; return what was copied.
    Re-staging replaces it exactly."""
    source, target = PartitionStore(extract_root), PartitionStore(target_root)
    ok_days = sorted(d for d, m in manifests.items() if m["status"] == "ok")
    copied_bytes = 0
    for day, manifest in sorted(manifests.items()):
        wanted = ["interactions"] if day in ok_days else []
        if ok_days and day == ok_days[-1]:
            wanted += ["users", "items"]
        files = {name: manifest["files"][name] for name in wanted}
        for name in files:
            dst = target.file_path(manifest, name)
            copy_file(source.file_path(manifest, name), dst)
            copied_bytes += dst.stat().st_size
        staged = {**manifest, "files": files, "staged_from": str(source.partition_dir(date.fromisoformat(day)))}
        atomic_write_text(target.partition_dir(date.fromisoformat(day)) / MANIFEST, json.dumps(staged, indent=2))
    return {
        "target": target_root,
        "days": len(manifests),
        "days_with_data": len(ok_days),
        "rows": window_rows(manifests),
        "bytes": copied_bytes,
    }
