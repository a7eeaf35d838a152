"""Fuzzing the prediction server over HTTP (hypothesis): arbitrary JSON, mutations of a valid request
(wrong types, huge numbers, unicode, long strings), raw bytes, deep nesting and the 1.5 MB edge. Every
answer is a 2xx/4xx with a JSON body — never a 5xx, never a hang (each request has a 10 s timeout) —
and the server stays healthy. At least 10,000 generated requests per run (the 8 adversarial bodies
are counted apart)."""

from __future__ import annotations

import json

import httpx
import pytest
from fakes.serving_process import HEALTH, PREDICT, Server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.serving.request import MAX_BODY_BYTES

SENT = {"requests": 0, "generated": 0}  # every request; the hypothesis-generated ones
EXAMPLES = settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def server(trained_model, tmp_path_factory):
    running = Server(trained_model[0], "auto", tmp_path_factory.mktemp("fuzz"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as session:
        yield session


def check(client: httpx.Client, content: bytes) -> httpx.Response:
    SENT["requests"] += 1
    response = client.post(PREDICT, content=content, headers={"content-type": "application/json"})
    assert response.status_code < 500, (content[:300], response.text[:300])
    body = response.json()
    assert ("predictions" in body) if response.status_code == 200 else isinstance(body.get("error"), str)
    return response


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["u1", "", " ", "\u0000", "😀" * 3, "x" * 300]),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
INSTANCE = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"user_id": JSON},
        optional={
            "age": JSON,
            "gender": JSON,
            "occupation": JSON,
            "recent_item_ids": st.one_of(JSON, st.lists(st.text(max_size=8), max_size=600)),
            "recent_timestamps": st.one_of(JSON, st.lists(st.integers(), max_size=10)),
        },
    ),
)
REQUEST = st.fixed_dictionaries(
    {"instances": st.one_of(JSON, st.lists(INSTANCE, max_size=5))},
    optional={
        "parameters": st.one_of(
            JSON,
            st.fixed_dictionaries(
                {}, optional={"k": JSON, "exclude_item_ids": st.one_of(JSON, st.lists(st.text(max_size=8)))}
            ),
        )
    },
)


BODIES = st.one_of(
    JSON.map(lambda body: json.dumps(body).encode()),
    REQUEST.map(lambda body: json.dumps(body).encode()),
    REQUEST.map(lambda body: json.dumps(body, ensure_ascii=False).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
)


@pytest.mark.timeout(1800)  # 10,000 requests: ~5 min on 2 cores alone, more than the default 10 min beside other suites
@EXAMPLES
@given(content=BODIES)
def test_generated_bodies_get_a_clear_answer(client, content):
    SENT["generated"] += 1
    check(client, content)


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000 + b"]" * 100_000,  # nesting far past Python's recursion limit
        b'{"instances": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        b'{"instances": ["u1"], "parameters": {"k": 1' + b"0" * 5_000 + b"}}",  # a 5,000-digit integer
        b'{"instances": ["u1"], "parameters": {"k": 1e400}}',
        b'{"instances": ["\\ud800"]}',  # a lone surrogate escape
        "\ufeff".encode() + b'{"instances": ["u1"]}',  # a byte-order mark
        b'{"instances": ["u1"]' + b" " * (MAX_BODY_BYTES - 22) + b"}",  # exactly at the limit
        b'{"instances": ["u1"]' + b" " * (MAX_BODY_BYTES - 21) + b"}",  # one byte over
    ],
    ids=["deep-array", "deep-instances", "huge-int", "huge-float", "surrogate", "bom", "limit", "over-limit"],
)
def test_adversarial_bodies_get_a_clear_answer(client, content):
    response = check(client, content)
    if len(content) > MAX_BODY_BYTES:
        assert response.status_code == 413


def test_enough_requests_were_generated_and_the_server_is_healthy(client, server):
    if not SENT["generated"]:
        pytest.skip("counts the generated test's requests: run the module")
    assert SENT["generated"] >= 10_000, SENT  # generated bodies only, not the adversarial ones above
    assert client.get(HEALTH).status_code == 200
    assert server.process.poll() is None
