"""Failure notifications through Airflow's notifier interface, received by a real local SMTP server
(aiosmtpd) and a local HTTP receiver; deadline alerts declared on the nightly chain."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from fakes.receiver import Receiver

from recsys_devtools.emulators.ports import free_port
from recsys_devtools.emulators.running import RunningFake

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def channels(monkeypatch):
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    mails = []

    class Keep(Message):
        def handle_message(self, message):
            mails.append(message)

    smtp_port = free_port()
    controller = Controller(Keep(), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    receiver = Receiver()
    with RunningFake(receiver, free_port()) as running:
        smtp = {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": smtp_port,
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.com"},
        }
        monkeypatch.setenv("AIRFLOW_CONN_ALERT_SMTP", json.dumps(smtp))
        monkeypatch.setenv("AIRFLOW_CONN_ALERT_HOOK", json.dumps({"conn_type": "http", "host": running.url}))
        monkeypatch.setenv("RECSYS_ALERT_EMAIL_TO", "oncall@example.com, ml@example.com")
        monkeypatch.setenv("RECSYS_ALERT_SMTP_CONN_ID", "alert_smtp")
        monkeypatch.setenv("RECSYS_ALERT_WEBHOOK_CONN_ID", "alert_hook")
        monkeypatch.setenv("RECSYS_ALERT_WEBHOOK_ENDPOINT", "hooks/recsys")
        monkeypatch.setenv("RECSYS_EXTRACT_DEADLINE_HOURS", "6")
        monkeypatch.setenv("RECSYS_TRAINING_DEADLINE_HOURS", "9")
        yield mails, receiver.posts
    controller.stop()


def bag():
    from airflow.dag_processing.dagbag import DagBag

    parsed = DagBag(dag_folder=str(DAGS))
    assert parsed.import_errors == {}
    return parsed.dags


def test_a_failed_task_is_reported_by_mail_and_webhook(airflow_db, channels, monkeypatch):
    mails, posts = channels
    for name in ("RECSYS_VERTEX_PROJECT", "RECSYS_CLOUD_RUN_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    conf = {"training_backend": "cloud_run", "end_day": "2026-11-09", "window_days": 8}
    run = bag()["recsys_two_tower"].test(run_conf=conf)  # plan fails at once: no project configured
    assert run.state == "failed"
    (post,) = posts
    assert post["event"] == "task_failed" and post["dag_id"] == "recsys_two_tower" and post["task_id"] == "plan"
    assert post["try_number"] == "1" and "RECSYS_CLOUD_RUN_PROJECT" in post["reason"]
    assert post["run_id"] == run.run_id and "recsys_two_tower" in post["log_url"]
    (mail,) = mails
    assert mail["To"] == "oncall@example.com, ml@example.com"
    assert mail["Subject"] == "[recsys] recsys_two_tower / plan failed (try 1)"
    html = next(part for part in mail.walk() if part.get_content_type() == "text/html").get_payload(decode=True)
    assert b"RECSYS_CLOUD_RUN_PROJECT" in html and post["log_url"].encode() in html


def test_the_nightly_chain_has_deadlines_with_the_same_channels(channels):
    dags = bag()
    for dag_id, hours in (("recsys_extract", 6), ("recsys_two_tower", 9)):
        (alert,) = dags[dag_id].deadline
        assert alert.interval == timedelta(hours=hours) and type(alert.reference).__name__ == "DagRunQueuedAtDeadline"
        assert alert.callback.path == "airflow.providers.http.notifications.http.HttpNotifier"
        assert alert.callback.kwargs["json"]["event"] == "deadline_missed"
        assert alert.callback.kwargs["http_conn_id"] == "alert_hook"
    assert dags["recsys_vertex_deploy"].deadline in (None, [])  # no deadline where none is asked for


def test_nothing_is_configured_by_default():
    from recsys.alerts import deadline_alert, on_failure
    from recsys.config import load_dag_settings

    settings = load_dag_settings(env={})
    assert on_failure(settings) == {} and deadline_alert(settings, "recsys_extract", 6) is None
