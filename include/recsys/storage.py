"""Small object-storage helpers shared by the data and training code."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

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


def upload_dir(local: Path, target: str) -> None:
    """Copy a local folder to any ``ObjectStoragePath`` destination (file://, s3://, gs://)."""
    root = as_path(target)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            copy_file(path, root / path.relative_to(local).as_posix())


def download_dir(source: str, local: Path) -> Path:
    """Copy an ``ObjectStoragePath`` folder to ``local`` (a local path is used in place)."""
    root = as_path(source)
    if root.protocol in {"file", "local", ""}:
        return Path(root.path)
    for path in root.rglob("*"):
        if path.is_file():
            copy_file(path, local / str(path.relative_to(root)))
    return local
