"""Small object-storage helpers shared by the data and training code."""

from __future__ import annotations

import shutil
import uuid

from airflow.sdk import ObjectStoragePath


def as_path(location: str | ObjectStoragePath) -> ObjectStoragePath:
    return location if isinstance(location, ObjectStoragePath) else ObjectStoragePath(location)


def is_local(path: ObjectStoragePath) -> bool:
    return path.protocol in {"file", "local", ""}


def copy_file(source, target) -> None:
    """Stream one file to another (``pathlib.Path`` or ``ObjectStoragePath``, any store), creating its folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as reader, target.open("wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)


def atomic_write_text(target: ObjectStoragePath, text: str) -> None:
    """Replace ``target`` atomically: a same-folder rename on local disk, one PUT on S3/GCS."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_local(target):
        temp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        temp.write_text(text)
        temp.rename(target)
    else:
        target.write_text(text)
