"""The Personalize fake and the settings the Personalize DAG tests share."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

from recsys_devtools.emulators.personalize import PersonalizeFake, airflow_connection
from recsys_devtools.emulators.ports import free_port
from recsys_devtools.emulators.running import RunningFake

ROLE = "arn:aws:iam::123456789012:role/PersonalizeS3Access"


@contextmanager
def running_personalize(synthetic_lake: str, moto_s3: str, bucket: str, tmp_path: Path, monkeypatch, settings=None):
    """The Personalize fake served on loopback, the session's lake copied to a fresh storage root, and the
    AWS connection + settings pointing at both; ``settings(fake)`` adds ``RECSYS_*`` values (e.g. ARNs)."""
    from recsys_devtools.demo import setup_pools

    setup_pools()
    root = tmp_path / "storage"
    shutil.copytree(Path(synthetic_lake.removeprefix("file://")) / "extract", root / "extract")
    fake = PersonalizeFake(s3_endpoint=moto_s3, pending_seconds=0.1, job_seconds=0.3)
    extra = settings(fake) if settings else {}
    with RunningFake(fake, free_port()) as running:
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", airflow_connection(running.url, moto_s3))
        values = {
            "STORAGE_ROOT": root.as_uri(),
            "PERSONALIZE_S3_URI": f"s3://{bucket}/personalize",
            "PERSONALIZE_ROLE_ARN": ROLE,
            "PERSONALIZE_POLL_SECONDS": "0.2",
            **extra,
        }
        for key, value in values.items():
            monkeypatch.setenv(f"RECSYS_{key}", value)
        fake.bucket, fake.root, fake.url = bucket, root, running.url
        yield fake
