"""Small object-storage helpers shared by the data and training code."""

from __future__ import annotations

import uuid

from airflow.sdk import ObjectStoragePath


def as_path(location: str | ObjectStoragePath) -> ObjectStoragePath:
    return location if isinstance(location, ObjectStoragePath) else ObjectStoragePath(location)


def is_local(path: ObjectStoragePath) -> bool:
    return path.protocol in {"file", "local", ""}


def atomic_write_text(target: ObjectStoragePath, text: str) -> None:
    """Replace ``target`` atomically: a same-folder rename on local disk, one PUT on S3/GCS."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_local(target):
        temp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        temp.write_text(text)
        temp.rename(target)
    else:
        target.write_text(text)
