"""Copy the extraction's Amazon Personalize files to the S3 prefix Personalize imports from.

Layout of one run, under ``<personalize_s3_uri>/runs/<run_key>/``::

    interactions/<day>.csv   one file per day with data (a folder import: Personalize reads them all)
    users/users.csv          the newest snapshot in the window
    items/items.csv
    batch-input/users.jsonl  {"userId": ...} lines: the users active on the newest day

Re-running writes the same keys with the same bytes, so a retry is harmless.
"""

from __future__ import annotations

from datetime import date, timedelta

from airflow.sdk import ObjectStoragePath

from recsys.data.partitions import PartitionStore
from recsys.storage import copy_file

MIN_FULL_INTERACTIONS = 1000  # Personalize refuses to train on fewer


class NothingToImportError(ValueError):
    """The window holds no data for the requested import."""


def with_connection(s3_uri: str, conn_id: str | None) -> ObjectStoragePath:
    """``s3://bucket/key`` as a path that authenticates with the Airflow connection ``conn_id``."""
    return ObjectStoragePath(s3_uri.replace("s3://", f"s3://{conn_id}@", 1) if conn_id else s3_uri)


def stage_personalize_files(
    extract_root: str,
    end_day: date,
    window_days: int,
    datasets: list[str],
    interactions_mode: str,
    run_uri: str,
    conn_id: str | None,
) -> dict:
    """Copy what the imports need; return ``{"imports": [...], "batch_input": uri | None, "warnings": [...]}``.

    ``interactions_mode`` FULL copies the whole window (``window_days`` ending ``end_day``),
    INCREMENTAL only ``end_day``. Each import entry: ``dataset``, ``data_location``, ``rows``, ``days``.
    """
    store = PartitionStore(extract_root)
    days_wanted = window_days if interactions_mode == "FULL" else 1
    start = end_day - timedelta(days=days_wanted - 1)
    manifests = [m for m in store.manifests(start, end_day + timedelta(days=1)) if m["status"] == "ok"]
    if not manifests:
        raise NothingToImportError(f"no extracted data between {start} and {end_day}")
    newest, run_uri = manifests[-1], run_uri.rstrip("/")
    imports, warnings = [], []
    for dataset in datasets:
        sources = manifests if dataset == "interactions" else [newest]
        folder = f"{run_uri}/{dataset}/"
        rows = 0
        for manifest in sources:
            name = f"{manifest['partition']}.csv" if dataset == "interactions" else f"{dataset}.csv"
            copy_file(store.file_path(manifest, f"personalize_{dataset}"), with_connection(folder + name, conn_id))
            rows += manifest["files"][f"personalize_{dataset}"]["rows"]
        if dataset == "interactions" and interactions_mode == "FULL" and rows < MIN_FULL_INTERACTIONS:
            raise NothingToImportError(
                f"a FULL interactions import needs at least {MIN_FULL_INTERACTIONS} rows; {start}..{end_day} has {rows}"
            )
        if newest["partition"] != end_day.isoformat():
            warnings.append(f"{dataset}: newest data is {newest['partition']}, not {end_day}")
        imports.append(
            {"dataset": dataset, "data_location": folder, "rows": rows, "days": [m["partition"] for m in sources]}
        )
    batch_input = None
    if "batch_inference_users" in newest["files"]:
        batch_input = f"{run_uri}/batch-input/users.jsonl"
        copy_file(store.file_path(newest, "batch_inference_users"), with_connection(batch_input, conn_id))
    return {"imports": imports, "batch_input": batch_input, "warnings": sorted(set(warnings))}
