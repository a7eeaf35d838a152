"""The commit protocol of the partition store on a real local file system."""

from __future__ import annotations

import json
from datetime import date

import pytest

from recsys.data.partitions import MANIFEST, PartitionStore

DAY = date(2026, 11, 10)


def stage(store: PartitionStore, text: str) -> dict:
    version, directory = store.new_version(DAY)
    (directory / "data.txt").write_text(text)
    return {"partition": DAY.isoformat(), "version": version,
            "files": {"data": {"path": f"v={version}/data.txt"}}, "counts": {"valid": 1}}  # fmt: skip


def test_uncommitted_versions_are_invisible(tmp_path):
    store = PartitionStore(tmp_path.as_uri())
    stage(store, "draft")
    assert store.read_manifest(DAY) is None and store.manifests() == [] and store.committed_days() == []


def test_commit_publishes_and_replaces_older_versions(tmp_path):
    store = PartitionStore(tmp_path.as_uri())
    first = stage(store, "one")
    store.commit(DAY, first)
    assert store.file_path(store.read_manifest(DAY), "data").read_text() == "one"
    second = stage(store, "two")
    newer_draft = stage(store, "in flight")  # a concurrent attempt that started later
    store.commit(DAY, second)
    manifest = store.read_manifest(DAY)
    assert manifest["version"] == second["version"] and manifest["format_version"] == 1
    assert store.file_path(manifest, "data").read_text() == "two"
    names = sorted(p.name for p in store.partition_dir(DAY).iterdir())
    assert names == sorted([MANIFEST, f"v={second['version']}", f"v={newer_draft['version']}"])
    assert not any(p.name.endswith(".tmp") for p in store.partition_dir(DAY).iterdir())


def test_commit_refuses_a_manifest_whose_files_are_gone(tmp_path):
    store = PartitionStore(tmp_path.as_uri())
    staged = stage(store, "x")
    (store.partition_dir(DAY) / f"v={staged['version']}" / "data.txt").unlink()
    with pytest.raises(FileNotFoundError, match="staged files"):
        store.commit(DAY, staged)
    assert store.read_manifest(DAY) is None


def test_manifests_are_filtered_by_day(tmp_path):
    store = PartitionStore(tmp_path.as_uri())
    for day in (date(2026, 11, 8), date(2026, 11, 9), DAY):
        version, directory = store.new_version(day)
        store.commit(day, {"partition": day.isoformat(), "version": version, "files": {}})
    (tmp_path / "dt=garbage").mkdir()
    (tmp_path / "dt=garbage" / MANIFEST).write_text(json.dumps({}))
    assert [m["partition"] for m in store.manifests(start=date(2026, 11, 9))] == ["2026-11-09", "2026-11-10"]
    assert [m["partition"] for m in store.manifests(end=DAY)] == ["2026-11-08", "2026-11-09"]
