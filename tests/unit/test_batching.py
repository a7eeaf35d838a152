"""The micro-batcher: a lone request runs alone on the next loop tick, requests parsed in the same tick share
a batch within the instance bound, a full queue sheds at once, a failing request fails alone."""

import asyncio

import pytest

from recsys.serving.batching import MicroBatcher, Overloaded
from recsys.serving.request import Instance, PredictRequest


def request(*users: str, k: int = 10) -> PredictRequest:
    return PredictRequest([Instance(u) for u in users], k=k)


class Recorder:
    """A predict_many that answers each instance with its user id and k, and fails on user "boom"."""

    def __init__(self):
        self.batches: list[list[str]] = []

    def __call__(self, requests):
        self.batches.append([i.user_id for r in requests for i in r.instances])
        if any(i.user_id == "boom" for r in requests for i in r.instances):
            raise RuntimeError("boom")
        return [[{"user_id": i.user_id, "k": r.k} for i in r.instances] for r in requests]


def together(batcher: MicroBatcher, *requests: PredictRequest) -> list:
    """Submit the requests in one loop tick (as requests parsed together are) and gather the outcomes."""

    async def scenario():
        tasks = [asyncio.ensure_future(batcher.submit(r)) for r in requests]
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(scenario())


def test_a_lone_request_is_answered_alone():
    recorder = Recorder()
    [(answer, size)] = together(MicroBatcher(recorder), request("a", k=3))
    assert answer == [{"user_id": "a", "k": 3}] and size == 1 and recorder.batches == [["a"]]


def test_requests_of_one_tick_share_batches_within_the_bound():
    recorder = Recorder()
    results = together(MicroBatcher(recorder, max_instances=4), *(request(f"u{n}", f"v{n}", k=n) for n in range(1, 4)))
    # two requests of two instances fill a batch of four; the third forms the next batch
    assert recorder.batches == [["u1", "v1", "u2", "v2"], ["u3", "v3"]]
    assert [size for _, size in results] == [2, 2, 1]
    assert results[1][0] == [{"user_id": "u2", "k": 2}, {"user_id": "v2", "k": 2}]  # split back per request


def test_a_full_queue_sheds_at_once():
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_queued=2)
    first, second, refused = together(batcher, request("q1"), request("q2"), request("refused"))
    assert isinstance(refused, Overloaded) and batcher.shed == 1
    assert [first[0][0]["user_id"], second[0][0]["user_id"]] == ["q1", "q2"] and recorder.batches == [["q1", "q2"]]
    assert not batcher.full()  # drained: the next request is served
    [(answer, _)] = together(batcher, request("later"))
    assert answer[0]["user_id"] == "later"


def test_a_failing_request_fails_alone():
    recorder = Recorder()
    good, bad = together(MicroBatcher(recorder), request("good"), request("boom"))
    assert good == ([{"user_id": "good", "k": 10}], 1) and isinstance(bad, RuntimeError)
    assert recorder.batches == [["good", "boom"], ["good"], ["boom"]]


def test_a_lone_failing_request_is_not_computed_twice():
    recorder = Recorder()
    [outcome] = together(MicroBatcher(recorder), request("boom"))
    assert isinstance(outcome, RuntimeError) and recorder.batches == [["boom"]]


def test_the_first_request_over_the_bound_still_runs():
    recorder = Recorder()
    [(answer, size)] = together(MicroBatcher(recorder, max_instances=2), request("a", "b", "c"))
    assert len(answer) == 3 and size == 1


@pytest.mark.parametrize("max_queued", [1, 3])
def test_shed_count_matches_refusals(max_queued):
    batcher = MicroBatcher(Recorder(), max_queued=max_queued)
    outcomes = together(batcher, *(request(f"u{n}") for n in range(5)))
    assert sum(isinstance(o, Overloaded) for o in outcomes) == batcher.shed == 5 - max_queued
