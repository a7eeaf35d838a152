"""Extraction of one daily partition: resolve the interval, stage validated files, publish.

``stage_partition`` streams the interval's interactions and the users/items snapshots into a fresh
version folder (nobody reads it yet). ``publish_partition`` applies the data-quality policy and
commits the manifest atomically. Splitting the two keeps the commit small and retryable.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from recsys.config import Settings
from recsys.data import arrow_extract
from recsys.data import writers as w
from recsys.data.partitions import PartitionStore
from recsys.data.source import stream_interactions, stream_table
from recsys.data.validate import (
    SNAPSHOT_FIELDS,
    Interval,
    assess_volume,
    quarantine_row,
    snapshot_row,
    validate_interaction,
)

log = logging.getLogger(__name__)


class DataQualityError(RuntimeError):
    """The staged partition breaks the data-quality policy; nothing was published."""


@dataclass(frozen=True)
class QualityPolicy:
    max_bad_fraction: float = 0.01
    anomaly_action: str = "warn"  # or "fail"
    fail_on_empty: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        if self.anomaly_action not in {"warn", "fail"}:
            raise ValueError(f"anomaly_action must be 'warn' or 'fail', got {self.anomaly_action!r}")


BACKENDS = ("auto", "arrow", "rows", "spark-local", "glue", "emr-serverless", "dataproc")


def extraction_backend(engine: Engine, wanted: str) -> str:
    """``arrow`` (ADBC, PostgreSQL only) or ``rows`` in the worker; ``auto`` picks arrow where it applies.
    The Spark backends run as jobs (:mod:`recsys.data.spark_extract`), not here."""
    if wanted not in BACKENDS[:3]:
        raise ValueError(f"extraction_backend must be one of {', '.join(BACKENDS)}; {wanted!r} does not run here")
    if wanted == "arrow" and not arrow_extract.supports(engine):
        raise ValueError(f"the arrow backend reads PostgreSQL sources; this source is {engine.dialect.name}")
    if wanted == "auto":
        return "arrow" if arrow_extract.supports(engine) else "rows"
    return wanted


def resolve_interval(
    extract_date: str | None,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    run_after: datetime | None,
) -> Interval:
    """The day to extract.

    An explicit ``extract_date`` wins; otherwise the run's data interval (scheduled runs, backfills
    and manual runs with a logical date); otherwise (a manual run without a logical date) the last
    full UTC day before ``run_after``.
    """
    if extract_date:
        return Interval.for_day(date.fromisoformat(extract_date))
    if data_interval_start is not None and data_interval_end is not None and data_interval_end > data_interval_start:
        return Interval(data_interval_start, data_interval_end)
    anchor = (run_after or datetime.now(UTC)).astimezone(UTC)
    return Interval.for_day(anchor.date() - timedelta(days=1))


def split_rows(rows, interval, known) -> tuple[list, list[tuple], Counter]:
    """The row backend's validation of one chunk: clean rows, quarantine rows ``(table, reason, raw)``,
    reason counts (the Arrow backend's ``split`` gives the same for the same rows)."""
    good, quarantined, reasons = [], [], Counter()
    for row in rows:
        clean, why = validate_interaction(row, interval, known)
        if clean is None:
            reasons[why] += 1
            quarantined.append(("interactions", why, quarantine_row(row)))
        else:
            good.append(clean)
    return good, quarantined, reasons


def _write_interactions(engine, interval, settings, out, known) -> tuple[Counter, int, set[str]]:
    reasons: Counter = Counter()
    read = 0
    active_users: set[str] = set()
    for chunk in stream_interactions(engine, interval.start, interval.end, settings.extract.chunk_rows):
        read += len(chunk)
        good, bad_rows, why = split_rows(chunk, interval, known)
        reasons.update(why)
        columns = list(zip(*good, strict=True)) if good else [()] * len(w.INTERACTIONS_SCHEMA.names)
        out["interactions"].write_columns(dict(zip(w.INTERACTIONS_SCHEMA.names, columns, strict=True)))
        csv_rows = [(c.user_id, c.item_id, c.timestamp, c.event_type) for c in good]
        active_users.update(c.user_id for c in good)
        out["personalize_interactions"].write_rows(csv_rows)
        out["quarantine"].write_rows(bad_rows)
    return reasons, read, active_users


def _write_snapshot(engine, settings, table: str, out) -> Counter:
    reasons: Counter = Counter()
    for chunk in stream_table(engine, table, settings.extract.chunk_rows):
        good, bad = [], []
        for row in chunk:
            typed, why = snapshot_row(table, row)
            if typed is None:
                bad.append((table, why, quarantine_row(row)))
            else:
                good.append(typed)
        reasons.update(why for _, why, _ in bad)
        out[table].write_columns({name: [r[i] for r in good] for i, (name, _) in enumerate(SNAPSHOT_FIELDS[table])})
        out[f"personalize_{table}"].write_rows(good)
        out["quarantine"].write_rows(bad)
    return reasons


def open_outputs(vw: w.VersionWriter) -> dict[str, Any]:
    """The files of one partition version, by name (every backend writes the same set)."""
    return {
        "interactions": vw.parquet("interactions", "interactions.parquet", w.INTERACTIONS_SCHEMA),
        "users": vw.parquet("users", "users.parquet", w.USERS_SCHEMA),
        "items": vw.parquet("items", "items.parquet", w.ITEMS_SCHEMA),
        "personalize_interactions": vw.csv(
            "personalize_interactions", "personalize/interactions.csv", w.PERSONALIZE_INTERACTIONS_HEADER
        ),
        "personalize_users": vw.csv("personalize_users", "personalize/users.csv", w.PERSONALIZE_USERS_HEADER),
        "personalize_items": vw.csv("personalize_items", "personalize/items.csv", w.PERSONALIZE_ITEMS_HEADER),
        "batch_inference_users": vw.jsonl("batch_inference_users", "batch_inference/users.jsonl"),
        "quarantine": vw.csv("quarantine", "quarantine.csv", w.QUARANTINE_HEADER),
    }


@dataclass
class StagedCounts:
    """What a backend reports after writing a version's files."""

    read: int
    reasons: Counter
    user_reasons: Counter
    item_reasons: Counter
    active_users: Collection[str]


def staged_record(
    interval: Interval, version: str, version_dir, files: dict, counts: StagedCounts, run: dict[str, Any]
) -> dict[str, Any]:
    """The staged partition as ``publish_partition`` takes it (and the manifest records it)."""
    reasons, user_reasons, item_reasons = counts.reasons, counts.user_reasons, counts.item_reasons
    staged = {
        "partition": interval.day.isoformat(),
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "version": version,
        "version_dir": str(version_dir),
        "counts": {
            "read": counts.read,
            "valid": files["interactions"]["rows"],
            "quarantined": sum(reasons.values()),
            "quarantined_snapshot_rows": sum(user_reasons.values()) + sum(item_reasons.values()),
            "active_users": len(counts.active_users),
            "users": files["users"]["rows"],
            "items": files["items"]["rows"],
        },
        "quarantine_reasons": {"interactions": dict(reasons), "users": dict(user_reasons), "items": dict(item_reasons)},
        "files": files,
        "run": run,
    }
    log.info("staged %s version %s: %s", staged["partition"], version, staged["counts"])
    return staged


def stage_partition(
    engine: Engine, interval: Interval, settings: Settings, *, run: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Extract, validate and write one interval into a new, unpublished version folder."""
    store = PartitionStore(settings.storage.extract_root)
    version, version_dir = store.new_version(interval.day)
    known = frozenset(settings.extract.known_event_types)
    backend = extraction_backend(engine, settings.extract.backend)
    with w.VersionWriter(version_dir, version) as vw:
        out = open_outputs(vw)
        if backend == "arrow":
            reasons, read, active_users, user_reasons, item_reasons = arrow_extract.write_partition(
                engine, interval, out, known
            )
        else:
            reasons, read, active_users = _write_interactions(engine, interval, settings, out, known)
            user_reasons = _write_snapshot(engine, settings, "users", out)
            item_reasons = _write_snapshot(engine, settings, "items", out)
        out["batch_inference_users"].write_user_ids(sorted(active_users))
    counts = StagedCounts(read, reasons, user_reasons, item_reasons, active_users)
    run = {**(run or {}), "extraction_backend": backend}
    return staged_record(interval, version, version_dir, vw.entries(), counts, run)


def publish_partition(staged: dict[str, Any], settings: Settings, policy: QualityPolicy) -> dict[str, Any]:
    """Apply the quality policy to a staged version and commit it; return the manifest."""
    store = PartitionStore(settings.storage.extract_root)
    day = date.fromisoformat(staged["partition"])
    counts = staged["counts"]
    quarantine_path = f"{staged['version_dir']}/quarantine.csv"
    if counts["read"] and counts["quarantined"] / counts["read"] > policy.max_bad_fraction:
        raise DataQualityError(
            f"{staged['partition']}: {counts['quarantined']} of {counts['read']} rows failed validation "
            f"({counts['quarantined'] / counts['read']:.1%} > {policy.max_bad_fraction:.1%}): "
            f"{staged['quarantine_reasons']['interactions']}. Nothing was published; the rows are in {quarantine_path}"
        )
    previous = [
        m["counts"]["valid"]
        for m in store.manifests(end=day)[-settings.extract.anomaly_lookback_partitions :]
        if m.get("status") == "ok"
    ]
    volume = assess_volume(
        counts["valid"], previous, settings.extract.anomaly_low_ratio, settings.extract.anomaly_high_ratio
    )
    status = "ok" if counts["valid"] else "empty"
    warnings = []
    if status == "empty":
        warnings.append("no valid interactions in the interval: recorded as a data outage")
        if policy.fail_on_empty:
            raise DataQualityError(f"{staged['partition']}: empty interval (fail_on_empty is set)")
    elif volume["anomaly"]:
        if policy.anomaly_action == "fail":
            raise DataQualityError(f"{staged['partition']}: row count anomaly: {volume['reason']}")
        warnings.append(f"row count anomaly: {volume['reason']}")
    manifest = {
        **{k: staged[k] for k in ("partition", "interval", "version", "counts", "quarantine_reasons", "files", "run")},
        "status": status,
        "volume": volume,
        "warnings": warnings,
        "policy": vars(policy),
        "committed_at": datetime.now(UTC).isoformat(),
    }
    store.commit(day, manifest)
    for message in warnings:
        log.warning("%s: %s", staged["partition"], message)
    log.info("published %s (%s, %d rows)", staged["partition"], status, counts["valid"])
    return manifest
