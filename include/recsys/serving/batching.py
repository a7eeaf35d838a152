"""Micro-batching and load shedding for the prediction route.

Parsed requests wait in one bounded queue. ``workers`` batch loops each take what is waiting (whole
requests, up to ``max_instances`` instances) and answer it with one predictor call in a thread: one
query-model call and one batched search for all of them, results split back per request.

* No timer: a request that finds a loop free is answered at once, alone. Under load the requests
  that arrive while a batch runs form the next one, so the wait is bounded by one batch's run time.
* Shedding: when ``max_queued`` requests already wait, a new one is refused at once
  (:class:`Overloaded` -> HTTP 503 with ``Retry-After``, which Vertex AI retries) instead of queueing
  without bound; health is answered outside the queue and stays green.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import anyio.to_thread

from recsys.serving.request import PredictRequest


class Overloaded(Exception):
    """The queue is full: answer 503 with ``Retry-After``."""


class MicroBatcher:
    def __init__(
        self,
        predict_many: Callable[[list[PredictRequest]], list[list[dict]]],
        *,
        workers: int = 2,
        max_instances: int = 64,
        max_queued: int = 64,
    ):
        self.predict_many = predict_many
        self.workers, self.max_instances, self.max_queued = workers, max_instances, max_queued
        self.waiting: deque[tuple[PredictRequest, asyncio.Future]] = deque()
        self.ready: asyncio.Event | None = None
        self.loops: list[asyncio.Task] = []
        self.limiter = anyio.CapacityLimiter(workers)
        self.batches = self.shed = 0

    def start(self) -> None:
        """Start the batch loops on the running event loop (the app's lifespan does this)."""
        self.ready = asyncio.Event()
        self.loops = [asyncio.create_task(self._loop(), name=f"predict-batch-{n}") for n in range(self.workers)]

    async def stop(self) -> None:
        for task in self.loops:
            task.cancel()
        await asyncio.gather(*self.loops, return_exceptions=True)

    async def submit(self, request: PredictRequest) -> tuple[list[dict], int]:
        """The request's predictions, computed together with whatever else was waiting, and how many
        requests that batch answered."""
        if len(self.waiting) >= self.max_queued:
            self.shed += 1
            raise Overloaded(f"{len(self.waiting)} requests are waiting")
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((request, future))
        self.ready.set()
        return await future

    def _take(self) -> list[tuple[PredictRequest, asyncio.Future]]:
        taken, instances = [], 0
        while self.waiting:
            size = len(self.waiting[0][0].instances)
            if taken and instances + size > self.max_instances:
                break
            request, future = self.waiting.popleft()
            if not future.cancelled():  # the client went away while it waited
                taken.append((request, future))
                instances += size
        if not self.waiting:
            self.ready.clear()
        return taken

    async def _loop(self) -> None:
        while True:
            await self.ready.wait()
            taken = self._take()
            if not taken:
                continue
            self.batches += 1
            try:
                results = await self._run([request for request, _ in taken])
            except Exception:  # noqa: BLE001 - one failing request must not fail the others: alone each
                for request, future in taken:
                    await self._answer_alone(request, future)
                continue
            for (_, future), result in zip(taken, results, strict=True):
                if not future.done():
                    future.set_result((result, len(taken)))

    async def _run(self, requests: list[PredictRequest]) -> list[list[dict]]:
        return await anyio.to_thread.run_sync(self.predict_many, requests, limiter=self.limiter)

    async def _answer_alone(self, request: PredictRequest, future: asyncio.Future) -> None:
        try:
            (result,) = await self._run([request])
        except Exception as exc:  # noqa: BLE001 - the route answers it with a 500
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result((result, 1))
