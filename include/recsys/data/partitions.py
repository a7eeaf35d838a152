"""Partition layout on object storage, with atomic, idempotent commits.

    <root>/dt=2026-11-20/_manifest.json            the commit: names the live version and its files
    <root>/dt=2026-11-20/v=<version>/...           data files of one extraction attempt

Files are written into a fresh version folder that no reader looks at; the partition becomes
visible (or is replaced) only when ``_manifest.json`` is written, which is atomic on every store
(a rename on local disk, a single PUT on S3/GCS). Versions the manifest does not name are deleted
after the commit (older ones only), so re-running a day replaces that partition exactly. Readers must go through the
manifest and never list data files themselves.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from typing import Any

from airflow.sdk import ObjectStoragePath

from recsys.storage import as_path, atomic_write_text

MANIFEST = "_manifest.json"
FORMAT_VERSION = 1


class PartitionStore:
    """Daily partitions under one root (``file://``, ``s3://``, ``gs://``)."""

    def __init__(self, root: str | ObjectStoragePath):
        self.root = as_path(root)

    def partition_dir(self, day: date) -> ObjectStoragePath:
        return self.root / f"dt={day.isoformat()}"

    def new_version(self, day: date) -> tuple[str, ObjectStoragePath]:
        """A fresh, unique version folder for one extraction attempt."""
        version = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"  # sorts by creation time
        path = self.partition_dir(day) / f"v={version}"
        path.mkdir(parents=True, exist_ok=True)
        return version, path

    def read_manifest(self, day: date) -> dict[str, Any] | None:
        path = self.partition_dir(day) / MANIFEST
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def committed_days(self) -> list[date]:
        """Days that have a committed manifest, oldest first."""
        if not self.root.exists():
            return []
        days = []
        for child in self.root.iterdir():
            name = child.name
            if name.startswith("dt=") and (child / MANIFEST).exists():
                try:
                    days.append(date.fromisoformat(name[3:]))
                except ValueError:
                    continue
        return sorted(days)

    def manifests(self, start: date | None = None, end: date | None = None) -> list[dict[str, Any]]:
        """Committed manifests with ``start <= day < end``, oldest first."""
        days = [d for d in self.committed_days() if (start is None or d >= start) and (end is None or d < end)]
        return [m for m in (self.read_manifest(d) for d in days) if m is not None]

    def file_path(self, manifest: dict[str, Any], name: str) -> ObjectStoragePath:
        """Absolute path of file ``name`` (e.g. ``interactions``) of a committed partition."""
        entry = manifest["files"][name]
        return self.partition_dir(date.fromisoformat(manifest["partition"])) / entry["path"]

    def commit(self, day: date, manifest: dict[str, Any]) -> ObjectStoragePath:
        """Atomically publish ``manifest`` for ``day``, then delete the versions it replaced."""
        manifest = {"format_version": FORMAT_VERSION, **manifest}
        missing = [n for n, f in manifest["files"].items() if not (self.partition_dir(day) / f["path"]).exists()]
        if missing:
            raise FileNotFoundError(f"cannot commit {day}: staged files {missing} are gone (a concurrent run?)")
        target = self.partition_dir(day) / MANIFEST
        atomic_write_text(target, json.dumps(manifest, indent=2, sort_keys=True))
        self.remove_older_versions(day, keep=manifest["version"])
        return target

    def remove_older_versions(self, day: date, keep: str) -> list[str]:
        """Delete versions older than ``keep``. Newer ones may belong to a concurrent attempt."""
        removed = []
        for child in self.partition_dir(day).iterdir():
            if child.name.startswith("v=") and child.name < f"v={keep}":
                child.fs.rm(child.path, recursive=True)
                removed.append(child.name)
        return removed
