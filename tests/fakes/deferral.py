"""Drive a deferrable operator the way Airflow does: ``execute`` defers, the trigger runs, then
``execute_complete`` gets the trigger's event."""

from __future__ import annotations

import asyncio

import pytest


def deferred(operator, method: str = "execute_complete"):
    """``execute`` must defer (no worker slot held) to ``method``; return the trigger it deferred to."""
    from airflow.sdk.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferral:
        operator.execute(context={})
    assert deferral.value.method_name == method
    return deferral.value.trigger


def run_trigger(trigger) -> dict:
    """Run a trigger to its first event (the triggerer's job) and return the event's payload."""

    async def first_event():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first_event())
