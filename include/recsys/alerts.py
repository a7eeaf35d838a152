"""Failure notifications and deadline alerts, through Airflow's notifier interface (provider notifiers).

Settings, read when the DAG files are parsed (``RECSYS_*`` environment):

* ``alert_email_to`` (comma-separated) → ``SmtpNotifier`` through ``alert_smtp_conn_id``;
* ``alert_webhook_conn_id`` (+ ``alert_webhook_endpoint``) → ``HttpNotifier`` POSTing a JSON document.

A failed task's message names the DAG, the run, the task, the try, the reason (the exception) and a
link to the task's log. ``deadline_alert`` builds an Airflow ``DeadlineAlert`` (a run still not finished
``hours`` after it was queued) whose callback sends the same channels a "deadline missed" message from
the triggerer. With nothing configured there are no callbacks at all.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from recsys.config import DagSettings as Settings

SUBJECT = "[recsys] {{ dag.dag_id }} / {{ ti.task_id }} failed (try {{ ti.try_number }})"
BODY = (
    "<p>DAG <b>{{ dag.dag_id }}</b>, run {{ run_id }}: task <b>{{ ti.task_id }}</b> failed on try "
    '{{ ti.try_number }}.</p><p>Reason: {{ exception }}</p><p><a href="{{ ti.log_url }}">Task log</a></p>'
)
PAYLOAD = {
    "event": "task_failed",
    "dag_id": "{{ dag.dag_id }}",
    "run_id": "{{ run_id }}",
    "task_id": "{{ ti.task_id }}",
    "try_number": "{{ ti.try_number }}",
    "reason": "{{ exception }}",
    "log_url": "{{ ti.log_url }}",
}


def _recipients(settings: Settings) -> list[str]:
    return [address.strip() for address in settings.alert_email_to.split(",") if address.strip()]


def failure_notifiers(settings: Settings) -> list:
    """The configured notifiers for ``on_failure_callback`` (empty when none is configured)."""
    notifiers = []
    if recipients := _recipients(settings):
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        notifiers.append(
            SmtpNotifier(to=recipients, smtp_conn_id=settings.alert_smtp_conn_id, subject=SUBJECT, html_content=BODY)
        )
    if settings.alert_webhook_conn_id:
        from airflow.providers.http.notifications.http import HttpNotifier

        notifiers.append(
            HttpNotifier(
                http_conn_id=settings.alert_webhook_conn_id, endpoint=settings.alert_webhook_endpoint, json=PAYLOAD
            )
        )
    return notifiers


def send(settings: Settings, event: str, text: str, **fields: Any) -> list[str]:
    """An alert that is not a task failure (e.g. a baseline served) through every configured channel: a mail
    with ``text``, and a JSON document ``{"event", "text", **fields}`` to the webhook. Returns the channels used
    (none when nothing is configured)."""
    sent = []
    if recipients := _recipients(settings):
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        subject = f"[recsys] {event}: {fields.get('dag_id', 'recsys')}"
        SmtpNotifier(
            to=recipients, smtp_conn_id=settings.alert_smtp_conn_id, subject=subject, html_content=f"<p>{text}</p>"
        ).notify({})
        sent.append("email")
    if settings.alert_webhook_conn_id:
        from airflow.providers.http.notifications.http import HttpNotifier

        HttpNotifier(
            http_conn_id=settings.alert_webhook_conn_id,
            endpoint=settings.alert_webhook_endpoint,
            json={"event": event, "text": text, **fields},
        ).notify({})
        sent.append("webhook")
    return sent


def on_failure(settings: Settings) -> dict[str, Any]:
    """``default_args`` entries that notify on every failed task try (none when nothing is configured)."""
    notifiers = failure_notifiers(settings)
    return {"on_failure_callback": notifiers} if notifiers else {}


def task_defaults(settings: Settings) -> dict[str, Any]:
    """Every DAG's ``default_args``: owner, retries and their delay (settings), failure notifiers."""
    return {
        "owner": "ml-platform",
        "retries": settings.task_retries,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
        **on_failure(settings),
    }


def deadline_alert(settings: Settings, dag_id: str, hours: float):
    """A ``DeadlineAlert``: ``dag_id``'s run is not finished ``hours`` after it was queued (None when off)."""
    if hours <= 0 or not (_recipients(settings) or settings.alert_webhook_conn_id):
        return None
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    text = f"{dag_id}: a run is not finished {hours:g} h after it was queued (deadline missed)"
    if settings.alert_webhook_conn_id:
        callback = AsyncCallback(
            "airflow.providers.http.notifications.http.HttpNotifier",
            kwargs={
                "http_conn_id": settings.alert_webhook_conn_id,
                "endpoint": settings.alert_webhook_endpoint,
                "json": {"event": "deadline_missed", "dag_id": dag_id, "hours": hours, "text": text},
            },
        )
    else:
        callback = AsyncCallback(
            "airflow.providers.smtp.notifications.smtp.SmtpNotifier",
            kwargs={
                "to": _recipients(settings),
                "smtp_conn_id": settings.alert_smtp_conn_id,
                "subject": f"[recsys] deadline missed: {dag_id}",
                "html_content": f"<p>{text}</p>",
            },
        )
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=hours),
        callback=callback,
        name=f"{dag_id}-deadline",
    )
