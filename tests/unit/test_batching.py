"""The micro-batcher: a lone request runs at once, requests that arrive during a batch form the next one,
batches stay within their instance bound, a full queue sheds at once, a failing request fails alone."""

import asyncio
import threading

import pytest

from recsys.serving.batching import MicroBatcher, Overloaded
from recsys.serving.request import Instance, PredictRequest


def request(*users: str, k: int = 10) -> PredictRequest:
    return PredictRequest([Instance(u) for u in users], k=k)


class Recorder:
    """A predict_many that answers each instance with its user id and can be held inside a batch."""

    def __init__(self):
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self, requests):
        self.batches.append([i.user_id for r in requests for i in r.instances])
        self.entered.set()
        self.release.wait(5)
        if any(i.user_id == "boom" for r in requests for i in r.instances):
            raise RuntimeError("boom")
        return [[{"user_id": i.user_id, "k": r.k} for i in r.instances] for r in requests]


async def _entered(recorder: Recorder) -> None:
    while not recorder.entered.is_set():
        await asyncio.sleep(0.001)
    recorder.entered.clear()


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_lone_request_is_answered_alone_and_at_once():
    async def scenario():
        recorder = Recorder()
        batcher = MicroBatcher(recorder, workers=1)
        batcher.start()
        answer, size = await asyncio.wait_for(batcher.submit(request("a", k=3)), 2)
        await batcher.stop()
        return recorder, answer, size

    recorder, answer, size = run(scenario())
    assert answer == [{"user_id": "a", "k": 3}] and size == 1 and recorder.batches == [["a"]]


def test_requests_arriving_during_a_batch_form_the_next_one_within_the_bound():
    async def scenario():
        recorder = Recorder()
        batcher = MicroBatcher(recorder, workers=1, max_instances=4)
        batcher.start()
        recorder.release.clear()
        first = asyncio.ensure_future(batcher.submit(request("first")))
        await _entered(recorder)  # the loop is busy with "first"
        waiting = [asyncio.ensure_future(batcher.submit(request(f"u{n}", f"v{n}", k=n))) for n in range(1, 4)]
        await asyncio.sleep(0.01)
        recorder.release.set()
        results = await asyncio.gather(first, *waiting)
        await batcher.stop()
        return recorder, results

    recorder, results = run(scenario())
    # two requests of two instances fill a batch of four; the third waits for the next batch
    assert recorder.batches == [["first"], ["u1", "v1", "u2", "v2"], ["u3", "v3"]]
    assert [size for _, size in results] == [1, 2, 2, 1]
    assert results[2][0] == [{"user_id": "u2", "k": 2}, {"user_id": "v2", "k": 2}]  # split back per request


def test_a_full_queue_sheds_at_once():
    async def scenario():
        recorder = Recorder()
        batcher = MicroBatcher(recorder, workers=1, max_queued=2)
        batcher.start()
        recorder.release.clear()
        busy = asyncio.ensure_future(batcher.submit(request("busy")))
        await _entered(recorder)
        queued = [asyncio.ensure_future(batcher.submit(request(u))) for u in ("q1", "q2")]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await asyncio.wait_for(batcher.submit(request("refused")), 0.5)
        recorder.release.set()
        answers = await asyncio.gather(busy, *queued)
        await batcher.stop()
        return batcher, answers

    batcher, answers = run(scenario())
    assert batcher.shed == 1 and [a[0][0]["user_id"] for a in answers] == ["busy", "q1", "q2"]


def test_a_failing_request_fails_alone():
    async def scenario():
        recorder = Recorder()
        batcher = MicroBatcher(recorder, workers=1)
        batcher.start()
        recorder.release.clear()
        busy = asyncio.ensure_future(batcher.submit(request("busy")))
        await _entered(recorder)
        good = asyncio.ensure_future(batcher.submit(request("good")))
        bad = asyncio.ensure_future(batcher.submit(request("boom")))
        await asyncio.sleep(0.01)
        recorder.release.set()
        results = await asyncio.gather(busy, good, bad, return_exceptions=True)
        await batcher.stop()
        return results

    busy, good, bad = run(scenario())
    assert good[0] == [{"user_id": "good", "k": 10}] and isinstance(bad, RuntimeError)
