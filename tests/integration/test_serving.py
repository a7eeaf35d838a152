"""The real prediction server process on loopback, driven by a real HTTP client."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fakes.serving_process import HEALTH, PREDICT, Server


@pytest.fixture(scope="module", params=["brute_force", "scann"])
def server(request, trained_model, tmp_path_factory):
    model_dir, _ = trained_model
    running = Server(model_dir, request.param, tmp_path_factory.mktemp("serving"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def users(trained_model) -> list[str]:
    model_dir = Path(trained_model[0].removeprefix("file://"))
    return json.loads((model_dir / "vocabularies.json").read_text())["user_ids"]


def test_health_is_503_until_the_model_is_warm(server):
    assert server.health_codes[-1] == 200 and 503 in server.health_codes
    assert httpx.get(server.url + HEALTH).json()["status"] == "ready"


def test_predictions_follow_the_contract(server, users, trained_model):
    model_dir = Path(trained_model[0].removeprefix("file://"))
    titles = dict(pd.read_parquet(model_dir / "items.parquet")[["item_id", "title"]].itertuples(index=False))
    # k=5.0 and age=30.0: what JSON numbers look like after protobuf.Value on the Vertex path
    response = server.predict({"instances": [users[0], {"user_id": users[1], "age": 30.0}], "parameters": {"k": 5.0}})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    predictions = response.json()["predictions"]
    assert [p["user_id"] for p in predictions] == [users[0], users[1]]
    for p in predictions:
        assert len(p["item_ids"]) == 5 and p["fallback"] is None
        assert p["scores"] == sorted(p["scores"], reverse=True)
        assert p["titles"] == [titles[i] for i in p["item_ids"]]


TOP_K_BY_INDEX: dict[str, list] = {}


def test_scann_and_brute_force_serve_the_same_top_k(server, users):
    """The exhaustive ScaNN export must return exactly the brute-force ranking."""
    body = {"instances": users[:20], "parameters": {"k": 10}}
    TOP_K_BY_INDEX[server.index] = [p["item_ids"] for p in server.predict(body).json()["predictions"]]
    if len(TOP_K_BY_INDEX) == 2:
        assert TOP_K_BY_INDEX["scann"] == TOP_K_BY_INDEX["brute_force"]


def test_exclusions_and_unknown_users(server, users):
    first = server.predict({"instances": [users[0]], "parameters": {"k": 10}}).json()["predictions"][0]
    excluded = first["item_ids"][:3]
    again = server.predict({"instances": [users[0]], "parameters": {"k": 10, "exclude_item_ids": excluded}})
    again_ids = again.json()["predictions"][0]["item_ids"]
    assert not set(excluded) & set(again_ids) and again_ids[:7] == first["item_ids"][3:10]
    # a new user without events: the export's policy answers with the model's learned no-history query
    stranger = server.predict({"instances": ["never-seen-user"], "parameters": {"k": 4}}).json()["predictions"][0]
    assert stranger["fallback"] is None and len(stranger["item_ids"]) == 4
    assert stranger["scores"] == sorted(stranger["scores"], reverse=True)


def test_recent_events_are_used_in_the_same_request(server, users, trained_model):
    """Two events sent with the request change the answer at once, and are never recommended back."""
    model_dir = Path(trained_model[0].removeprefix("file://"))
    items = pd.read_parquet(model_dir / "items.parquet")
    horror = items[items["genres"].str.startswith("Horror")]["item_id"].head(2).tolist()

    def top(instance) -> list[str]:
        return server.predict({"instances": [instance], "parameters": {"k": 10}}).json()["predictions"][0]["item_ids"]

    for user in (users[0], "brand-new-user"):
        before = top(user)
        after = top({"user_id": user, "recent_item_ids": horror})
        assert after != before and not set(horror) & set(after)
    # timestamps order the recent events among themselves (and the snapshot): same as sending them sorted
    stamps = {
        "user_id": "brand-new-user",
        "recent_item_ids": horror[::-1],
        "recent_timestamps": [2_000_000_001, 2_000_000_000],
    }
    assert top(stamps) == top({"user_id": "brand-new-user", "recent_item_ids": horror})


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not"),
        ([1, 2], 400, "must be a JSON object"),
        ({"instances": []}, 400, "non-empty list"),
        ({"instances": "u1"}, 400, "non-empty list"),
        ({"instances": [42]}, 400, "instances[0] must be a user id string"),
        ({"instances": [{"id": "u1"}]}, 400, "unknown field(s) ['id']"),
        ({"instances": [{"user_id": "u1", "age": "old"}]}, 400, "age must be an integer"),
        ({"instances": ["u1"], "parameters": {"k": 0}}, 400, "between 1 and 100"),
        ({"instances": ["u1"], "parameters": {"k": 101}}, 400, "between 1 and 100"),
        ({"instances": ["u1"], "parameters": {"k": True}}, 400, "between 1 and 100"),
        ({"instances": ["u1"], "parameters": {"k": 2.5}}, 400, "between 1 and 100"),
        ({"instances": ["u1"], "parameters": {"exclude_item_ids": "i1"}}, 400, "list of item id strings"),
        ({"instances": ["u1"], "parameters": {"temperature": 2}}, 400, "unknown parameter"),
        ({"instances": ["u"] * 1001}, 400, "at most 1000 instances"),
        ({"instances": [{"user_id": "u1", "recent_item_ids": "i1"}]}, 400, "recent_item_ids must be a list"),
        (
            {"instances": [{"user_id": "u1", "recent_item_ids": ["i1", 7]}]},
            400,
            "recent_item_ids[1] must be a non-empty",
        ),
        ({"instances": [{"user_id": "u1", "recent_item_ids": ["i"] * 501}]}, 400, "at most 500"),
        (
            {"instances": [{"user_id": "u1", "recent_item_ids": ["i1"], "recent_timestamps": [1, 2]}]},
            400,
            "one epoch-seconds value per recent item",
        ),
        (
            {"instances": [{"user_id": "u1", "recent_item_ids": ["i1"], "recent_timestamps": [-5]}]},
            400,
            "non-negative integers",
        ),
        (b"x" * 1_500_001, 413, "limit is 1500000"),
    ],
)
def test_bad_requests_get_clear_json_errors(server, body, status, message):
    response = server.predict(body)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_oversized_chunked_body_is_rejected_without_content_length(server):
    def chunks():
        for _ in range(20):
            yield b"a" * 100_000

    response = httpx.post(server.url + PREDICT, content=chunks(), timeout=30)
    assert response.status_code == 413


def test_unknown_routes_and_methods_are_json(server):
    assert httpx.get(server.url + "/nope").status_code == 404
    assert "no route /nope" in httpx.get(server.url + "/nope").json()["error"]
    assert httpx.get(server.url + PREDICT).status_code == 405
    assert httpx.post(server.url + HEALTH).status_code == 405


def test_concurrent_requests_are_batched_and_answered_as_alone(server, users, trained_model):
    """Requests that arrive together are answered in shared batches, each with its own k and exclusions,
    as the same request answered alone (the same items; scores equal up to float rounding)."""
    model_dir = Path(trained_model[0].removeprefix("file://"))
    items = pd.read_parquet(model_dir / "candidates.parquet")["item_id"].tolist()

    def body(n):
        excluded = [] if n % 3 else [items[n % 7], items[n % 11]]
        instance = users[n % len(users)] if n % 4 else {"user_id": f"new-{n}", "recent_item_ids": [items[n % 5]]}
        return {"instances": [instance], "parameters": {"k": 1 + n % 10, "exclude_item_ids": excluded}}

    before = len(server.predict_log(0))
    alone = [server.predict(body(n)).json()["predictions"] for n in range(120)]
    seen = len(server.predict_log(before + 120))

    async def all_at_once():  # 60 at a time: under the default queue bound (64), so none is shed
        async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=60)) as client:
            first = await asyncio.gather(*(client.post(PREDICT, json=body(n)) for n in range(60)))
            return first + await asyncio.gather(*(client.post(PREDICT, json=body(n)) for n in range(60, 120)))

    together = asyncio.run(all_at_once())
    assert all(r.status_code == 200 for r in together)
    for response, answer in zip(together, alone, strict=True):
        (batched,), (single,) = response.json()["predictions"], answer
        assert batched["scores"] == pytest.approx(single["scores"], abs=1e-5)  # a batched matmul rounds apart
        assert {**batched, "scores": None} == {**single, "scores": None}
    batches = [line["batch"] for line in server.predict_log(seen + 120)[seen:]]
    assert len(batches) == 120 and max(batches) > 1  # requests shared a model call


def test_over_capacity_requests_are_shed_at_once_and_health_stays_green(trained_model, tmp_path, users):
    """100 requests at once against a queue of 4: the overflow gets 503 + Retry-After, the rest are served,
    and health answers 200 in the middle of it."""
    running = Server(trained_model[0], "brute_force", tmp_path, env={"RECSYS_SERVING_MAX_QUEUE": "4"})
    body = {"instances": users[:50], "parameters": {"k": 100}}

    async def flood():
        async with httpx.AsyncClient(base_url=running.url, limits=httpx.Limits(max_connections=101)) as client:
            calls = [client.post(PREDICT, json=body) for _ in range(100)]
            return await asyncio.gather(*calls[:50], client.get(HEALTH), *calls[50:])

    try:
        responses = asyncio.run(flood())
    finally:
        running.stop()
    health = responses.pop(50)
    assert health.status_code == 200
    shed = [r for r in responses if r.status_code == 503]
    served = [r for r in responses if r.status_code == 200]
    assert shed and served and len(shed) + len(served) == len(responses)
    assert all(r.headers["retry-after"] == "1" and "capacity" in r.json()["error"] for r in shed)
    assert all(len(r.json()["predictions"]) == 50 for r in served)


def test_structured_access_log_and_graceful_shutdown(trained_model, tmp_path):
    running = Server(trained_model[0], "auto", tmp_path)
    assert running.predict({"instances": ["x"]}).status_code == 200
    # SIGTERM: uvicorn drains, shuts down, then re-raises the signal so the exit status reflects it
    assert running.stop() in (0, -signal.SIGTERM)
    log = running.log_path.read_text()
    assert log.index("Shutting down") < log.index("Application shutdown complete") < log.index("Finished server")
    predict = [entry for entry in running.access_log() if entry["path"] == PREDICT]
    assert predict[-1]["status"] == 200 and predict[-1]["instances"] == 1 and predict[-1]["latency_ms"] > 0
    assert predict[-1]["batch"] == 1


def test_model_is_copied_from_object_storage(trained_model, moto_s3, monkeypatch, tmp_path):
    """AIP_STORAGE_URI on S3 (moto server over HTTP): the folder is copied locally and loads."""
    import boto3

    from recsys.serving.predictor import Predictor, fetch_model
    from recsys.serving.request import parse_request

    for key, value in {
        "AWS_ENDPOINT_URL": moto_s3,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    source = Path(trained_model[0].removeprefix("file://"))
    for path in source.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "models", f"recsys/v1/{path.relative_to(source).as_posix()}")
    local = fetch_model("s3://models/recsys/v1", cache_dir=str(tmp_path / "copy"))
    assert (local / "index_brute_force" / "saved_model.pb").exists()
    predictor = Predictor(local, "brute_force")
    users = json.loads((local / "vocabularies.json").read_text())["user_ids"]
    prediction = predictor.predict(parse_request({"instances": [users[0]]}, predictor.k_max))[0]
    assert len(prediction["item_ids"]) == 10 and prediction["fallback"] is None


def test_null_stored_features_use_the_training_defaults(trained_model, tmp_path):
    """A user whose age is null in users.parquet (NaN once read) is served like training saw it (0)."""
    import shutil

    from recsys.serving.predictor import Predictor
    from recsys.serving.request import parse_request

    source = Path(trained_model[0].removeprefix("file://"))
    copy = tmp_path / "model"
    shutil.copytree(source, copy)
    users = pd.read_parquet(copy / "users.parquet")
    user = json.loads((copy / "vocabularies.json").read_text())["user_ids"][0]
    users["age"] = users["age"].astype("float64").where(users["user_id"] != user)  # null age for one user
    users.to_parquet(copy / "users.parquet", index=False)
    predictor = Predictor(copy, "brute_force")
    with_null = predictor.predict(parse_request({"instances": [user]}, predictor.k_max))[0]
    explicit = predictor.predict(parse_request({"instances": [{"user_id": user, "age": 0}]}, predictor.k_max))[0]
    assert with_null["item_ids"] == explicit["item_ids"] and with_null["fallback"] is None


def test_a_models_root_serves_its_champion(tmp_path):
    from recsys.serving.__main__ import champion_or

    (tmp_path / "champion.json").write_text(json.dumps({"model_dir": "file:///models/v7"}))
    assert champion_or(str(tmp_path)) == "file:///models/v7"
    assert champion_or(str(tmp_path / "v7")) == str(tmp_path / "v7")  # a model dir is served as it is
