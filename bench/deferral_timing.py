"""Run a deferrable operator the way Airflow does and time the worker's share of it."""

from __future__ import annotations

import asyncio
import time


def run_deferred(operator) -> dict:
    """``execute`` (must defer) -> the trigger to its event -> ``execute_complete``.

    Returns the trigger, the event, the result, ``worker_slot_s`` (time spent in ``execute`` and
    ``execute_complete``, i.e. in a worker) and ``seen_at`` (monotonic time the event arrived).
    """
    from airflow.sdk.exceptions import TaskDeferred

    started = time.monotonic()
    try:
        operator.execute(context={})
        raise AssertionError(f"{operator.task_id} did not defer")
    except TaskDeferred as deferral:
        trigger = deferral.trigger
    start_slot = time.monotonic() - started

    async def first_event():
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(first_event())
    seen = time.monotonic()
    result = operator.execute_complete({}, event)
    return {"trigger": trigger, "event": event, "result": result, "seen_at": seen,
            "worker_slot_s": round(start_slot + time.monotonic() - seen, 3)}  # fmt: skip
