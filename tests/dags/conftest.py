"""DAG runs through ``dag.test()``, which sleeps each task's retry delay: the retries are under test, their
delay is not, so these DAGs are parsed with a 1 s delay (the ``retry_delay_seconds`` setting)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def short_retry_delay(monkeypatch):
    monkeypatch.setenv("RECSYS_RETRY_DELAY_SECONDS", "1")
