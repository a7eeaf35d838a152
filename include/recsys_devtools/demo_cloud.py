"""Demo stages after training: the prediction server, then the cloud DAGs against local emulators.

    python -m recsys_devtools.demo_cloud serve  # the serving entrypoint, asked for recommendations
    python -m recsys_devtools.demo_cloud emulated  # recsys_vertex_deploy + recsys_personalize on the emulators

Everything cloud-side here is EMULATED (``recsys_devtools.emulators`` + a moto S3 server on loopback); the
DAGs, hooks, operators and triggers are the real ones, through the same connections a real
deployment uses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path

import httpx

from recsys.config import load_settings
from recsys_devtools.emulators.ports import free_port
from recsys_devtools.emulators.running import start_process

SERVING_IMAGE = "local/recsys-serving:demo"


def _champion() -> dict:
    from recsys.training.gate import read_champion

    champion = read_champion(load_settings().storage.models_root)
    if champion is None:
        raise SystemExit("no champion model yet: run the training stage first")
    return champion


def serve() -> None:
    """Start the prediction server on the champion and print recommendations for a few users."""
    import pandas as pd
    from airflow.sdk import ObjectStoragePath

    champion, port = _champion(), free_port()
    env = {
        **os.environ,
        "AIP_STORAGE_URI": load_settings().storage.models_root,
        "AIP_HTTP_PORT": str(port),
        "RECSYS_SERVING_HOST": "127.0.0.1",
    }
    log = Path(os.environ["AIRFLOW_HOME"]) / "serving.log"
    url = f"http://127.0.0.1:{port}"
    # /health answers 503 until the model is loaded and warmed, so this returns once it serves
    server = start_process([sys.executable, "-m", "recsys.serving"], url + "/health", log, env)
    try:
        with (ObjectStoragePath(champion["model_dir"]) / "holdout.parquet").open("rb") as handle:
            users = pd.read_parquet(handle)["user_id"].astype(str).drop_duplicates().head(3).tolist()
        body = {"instances": [*users, "someone-new"], "parameters": {"k": 5}}
        print(f"[serve] {url}/predict (model {champion['version']}, log {log}):")
        for prediction in _predict(url, body):
            note = " (new user, no events)" if prediction["user_id"] == "someone-new" else ""
            print(f"  {prediction['user_id']:<12} {_titles(prediction)}{note}")
        _show_recent_events(url, users[0], users[1])
    finally:
        server.terminate()
        server.wait(timeout=30)


def _predict(url: str, body: dict) -> list[dict]:
    answer = httpx.post(url + "/predict", json=body, timeout=30)
    answer.raise_for_status()
    return answer.json()["predictions"]


def _titles(prediction: dict) -> str:
    note = " [most popular items]" if prediction["fallback"] else ""
    return ", ".join(t or i for t, i in zip(prediction["titles"], prediction["item_ids"], strict=True)) + note


def _show_recent_events(url: str, user: str, other: str) -> None:
    """One user's recommendations before and after two recent events sent with the request: two items
    of another user's taste (that user's top picks this user was not going to get), as if just watched."""
    before = _predict(url, {"instances": [user], "parameters": {"k": 20}})[0]
    theirs = _predict(url, {"instances": [other], "parameters": {"k": 20}})[0]
    recent = [i for i in theirs["item_ids"] if i not in before["item_ids"]][:2]
    after = _predict(url, {"instances": [{"user_id": user, "recent_item_ids": recent}], "parameters": {"k": 5}})[0]
    titles = dict(zip(theirs["item_ids"], theirs["titles"], strict=True))
    print(f"[serve] {user} before and after two recent events in the request ({', '.join(titles[i] for i in recent)}):")
    print(f"  before       {_titles({**before, 'item_ids': before['item_ids'][:5], 'titles': before['titles'][:5]})}")
    print(f"  after        {_titles(after)}")
    fresh = [{"user_id": "someone-new"}, {"user_id": "someone-new", "recent_item_ids": recent}]
    new_before, new_after = _predict(url, {"instances": fresh, "parameters": {"k": 5}})
    print("[serve] a new user before and after the same two events:")
    print(f"  before       {_titles(new_before)}")
    print(f"  after        {_titles(new_after)}")


def emulated() -> int:
    """Run the Vertex deploy and the Personalize retrain DAGs against local emulators."""
    from recsys_devtools.demo import _dag
    from recsys_devtools.emulators.personalize import PersonalizeFake
    from recsys_devtools.emulators.personalize import airflow_connection as personalize_connection
    from recsys_devtools.emulators.running import RunningFake
    from recsys_devtools.emulators.vertex import VertexFake
    from recsys_devtools.emulators.vertex import airflow_connection as vertex_connection

    home, champion = Path(os.environ["AIRFLOW_HOME"]), _champion()
    moto_port = free_port()
    moto_url = f"http://127.0.0.1:{moto_port}"
    moto = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)]
    with ExitStack() as stack:
        s3 = start_process(moto, moto_url + "/moto-api/", home / "moto.log")
        stack.callback(s3.terminate)
        import boto3

        boto3.client(
            "s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="demo", aws_secret_access_key="demo"
        ).create_bucket(Bucket="recsys-demo")
        personalize = PersonalizeFake(s3_endpoint=moto_url, pending_seconds=0.5, job_seconds=1.5)  # empty
        vertex = VertexFake(
            project="demo-project",
            operation_seconds=1.0,
            images={SERVING_IMAGE: [sys.executable, "-m", "recsys.serving"]},
        )
        p_url = stack.enter_context(RunningFake(personalize, free_port())).url
        v_url = stack.enter_context(RunningFake(vertex, free_port())).url
        os.environ.update(
            {
                "AIRFLOW_CONN_AWS_DEFAULT": personalize_connection(p_url, moto_url),
                "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": vertex_connection(v_url, vertex.project),
                "RECSYS_VERTEX_PROJECT": vertex.project,
                "RECSYS_SERVING_IMAGE_URI": SERVING_IMAGE,
                "RECSYS_VERTEX_POLL_SECONDS": "1",
                "RECSYS_PERSONALIZE_POLL_SECONDS": "1",
                "RECSYS_PERSONALIZE_S3_URI": "s3://recsys-demo/personalize",
                "RECSYS_PERSONALIZE_ROLE_ARN": "arn:aws:iam::123456789012:role/PersonalizeS3Access",
            }
        )
        dags = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", "dags")
        print(f"[vertex] EMULATED Vertex AI at {v_url}: recsys_vertex_deploy for model {champion['version']}")
        conf = {"model_dir": champion["model_dir"], "dedicated_endpoint": True}
        run = _dag("recsys_vertex_deploy", dags).test(run_conf=conf)
        (endpoint,) = vertex.endpoints.values() or [{}]
        print(
            f"[vertex] {run.state}: endpoint {endpoint.get('displayName')} traffic {endpoint.get('trafficSplit')}, "
            f"model versions {[v['versionId'] for vs in vertex.models.values() for v in vs]}"
        )
        if run.state == "success":
            _predict_dedicated(vertex, endpoint)
        print(f"[personalize] EMULATED Amazon Personalize at {p_url}, S3 (moto) at {moto_url}")
        setup = _dag("recsys_personalize_setup", dags).test(
            run_conf={"prefix": "recsys-demo", "initial_import_days": 14}
        )
        storage = Path(load_settings().storage.root.removeprefix("file://"))
        made = json.loads((storage / "personalize" / "setup" / "recsys-demo.json").read_text())["resources"]
        print(
            f"[personalize] recsys_personalize_setup {setup.state}: campaign {made['campaign']}, event tracker "
            f"{made['tracking_id']}, filter {made['batch_filter']} (recorded as Variables)"
        )
        run2 = _dag("recsys_personalize", dags).test(run_conf={"training_mode": "FULL", "window_days": 14})
        reports = sorted(
            (Path(load_settings().storage.root.removeprefix("file://")) / "personalize").glob("runs/*/report.json"),
            key=lambda p: p.stat().st_mtime,
        )
        report = json.loads(reports[-1].read_text()) if reports else {}
        print(
            f"[personalize] recsys_personalize {run2.state}: {len(report.get('imports', []))} imports, version "
            f"{report.get('solution_version')}, {(report.get('metrics') or {}).get('summary', '')}; "
            f"batch output {report.get('batch_output')}; report {reports[-1] if reports else '-'}"
        )
        smoke, delivery = report.get("smoke_test") or {}, report.get("delivery") or {}
        print(
            f"[personalize] campaign smoke test ok={smoke.get('ok')}; delivered {delivery.get('rows')} rows for "
            f"{delivery.get('users')} users to the recommendations table ({delivery.get('postprocessing')})"
        )
        _print_recommendations()
        return 0 if run.state == run2.state == setup.state == "success" else 1


def _predict_dedicated(vertex, endpoint: dict) -> None:
    """What an application does with a dedicated endpoint: call its own DNS (the shared host refuses it)."""
    from google.protobuf import json_format
    from vertex.deploy import predict
    from vertex.hooks import VertexPredictionServiceHook

    dns, endpoint_id = endpoint["dedicatedEndpointDns"], endpoint["name"].rsplit("/", 1)[-1]
    user = json.loads((Path(_champion()["model_dir"].removeprefix("file://")) / "vocabularies.json").read_text())
    answer = predict(
        VertexPredictionServiceHook(),
        vertex.project,
        vertex.location,
        endpoint_id,
        [user["user_ids"][0]],
        {"k": 5},
        dedicated_dns=dns,
    )
    (prediction,) = [json_format.MessageToDict(p) for p in answer._pb.predictions]
    print(f"[vertex] dedicated endpoint {dns}: {prediction['user_id']} -> {prediction['item_ids']}")


def _print_recommendations() -> None:
    """What the application reads: one user's rows of each source in the recommendations table."""
    import sqlite3

    from recsys_devtools.demo import demo_app_db

    with sqlite3.connect(demo_app_db()) as db:
        for source, user in db.execute("SELECT source, MIN(user_id) FROM recommendations GROUP BY source").fetchall():
            items = db.execute(
                "SELECT item_id FROM recommendations WHERE source = ? AND user_id = ? ORDER BY rank LIMIT 5",
                (source, user),
            ).fetchall()
            print(f"[app db] recommendations {source} for {user}: {[i for (i,) in items]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_devtools.demo_cloud")
    parser.add_argument("stage", choices=["serve", "emulated"])
    args = parser.parse_args(argv)
    if args.stage == "serve":
        serve()
        return 0
    return emulated()


if __name__ == "__main__":
    sys.exit(main())
