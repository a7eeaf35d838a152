"""Prediction latency and throughput of the HTTP server: one model call per request vs micro-batched, and
the two-stage policy (retrieval -> LightGBM ranking in one request) beside retrieval only.

Builds the MovieLens 100K model with the real pipeline (seed re-timed onto 30 days -> 30 extracted
partitions -> ``train_and_export`` with a pinned high-recall ScaNN configuration, so both a ScaNN
and a brute-force export exist). For each export, each request kind (the user id alone, or with 5
``recent_item_ids``) and each server mode — ``one_per_call`` (``RECSYS_SERVING_MAX_BATCH=1``, no
queue bound: the server as it was) and ``micro_batched`` (the defaults) — it starts
``python -m recsys.serving`` on loopback and drives it with ``wrk`` (keep-alive, one instance per
request, k=10) at concurrency 1, 8, 32 and 256: p50/p99, requests/s, non-2xx (503s). wrk cannot
split latency by status, so at concurrency 256 ``bench/http_load.py`` (a lean asyncio client) also
measures the accepted (200) requests' client-side p50/p99 apart from the refused ones; the server's
own access log gives the accepted requests' time inside the server. The export is trained serving the
two-stage policy (``serve="two_stage"``); a copy of it serving the two-tower alone gives the retrieval-only
runs, so both answer from the same model in the same run. In-process ``Predictor.predict``
at concurrency 1 gives the HTTP overhead. The load generators share the 2 cores with the server.
Writes ``bench/results/bench_serving.json``.

    .venv/bin/python bench/bench_serving.py [--requests 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path

import http_load
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "tests")]
CONCURRENCY = (1, 8, 32, 256)
MODES = {
    "one_per_call": {"RECSYS_SERVING_MAX_BATCH": "1", "RECSYS_SERVING_MAX_QUEUE": "1000000"},
    "micro_batched": {},
}


def build_model(data_dir: str, work: Path) -> Path:
    """MovieLens -> SQLite source -> 30 extracted days -> trained and exported model directory."""
    from sqlalchemy import create_engine

    from recsys.config import load_settings
    from recsys.data.dataset import write_dataset
    from recsys.data.extract import QualityPolicy, publish_partition, stage_partition
    from recsys.data.validate import Interval
    from recsys.training.export import ScannConfig
    from recsys.training.fit import TrainParams
    from recsys.training.pipeline import train_and_export
    from recsys_devtools.movielens import load_ml100k, retime

    end = date(2026, 11, 23)
    engine = create_engine(f"sqlite:///{work / 'source.db'}")
    write_dataset(engine, retime(load_ml100k(Path(data_dir)), 30, datetime.combine(end, dtime())))
    settings = load_settings({"storage_root": (work / "lake").as_uri()})
    for offset in range(30, 0, -1):
        day = date.fromordinal(end.toordinal() - offset)
        publish_partition(stage_partition(engine, Interval.for_day(day), settings), settings, QualityPolicy())
    model_dir = work / "model"
    train_and_export(
        settings.storage.extract_root,
        date.fromordinal(end.toordinal() - 1),
        30,
        1,
        model_dir.as_uri(),
        TrainParams(),
        scann_grid=[ScannConfig(41, 20, 500)],
        serve="two_stage",
    )
    return model_dir


def retrieval_only(model_dir: Path, work: Path) -> Path:
    """The same export serving the two-tower model alone (retrieval only), for the runs beside the two-stage."""
    target = work / "retrieval"
    shutil.copytree(model_dir, target)
    metadata = json.loads((target / "metadata.json").read_text())
    metadata["served"] = {"policy": "model"}
    (target / "metadata.json").write_text(json.dumps(metadata))
    return target


def summarize(latencies_ms: list[float], seconds: float) -> dict:
    return {
        "requests": len(latencies_ms),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 3),
        "requests_per_s": round(len(latencies_ms) / seconds, 1),
    }


RECENT = 5  # recent events sent with each request of the "with recent events" kind
WRK_SCRIPT = """
users = {%s}
items = {%s}
recent = %d
request = function()
  local events = {}
  for i = 1, recent do events[i] = '"' .. items[math.random(#items)] .. '"' end
  local body = '{"instances": [{"user_id": "' .. users[math.random(#users)] .. '", "recent_item_ids": ['
    .. table.concat(events, ",") .. ']}], "parameters": {"k": 10}}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"""


def body_for(users: list[str], items: list[str], n: int, recent: int) -> dict:
    """One known user per request, with ``recent`` recent events (0: the user id only)."""
    events = [items[(n * 7 + i * 13) % len(items)] for i in range(recent)]
    return {"instances": [{"user_id": users[n % len(users)], "recent_item_ids": events}], "parameters": {"k": 10}}


def _wrk_ms(text: str, label: str) -> float:
    value = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    number, unit = float(value.group(1)), value.group(2)
    return round(number / 1000 if unit == "us" else number * 1000 if unit == "s" else number, 3)


def wrk_load(
    url: str, users: list[str], items: list[str], recent: int, concurrency: int, seconds: int, workdir: Path
) -> dict:
    """wrk (C, one thread) with a random known user per request: the client costs little CPU."""
    script = workdir / "predict.lua"
    quoted = lambda values: ", ".join(f'"{v}"' for v in values[:500])  # noqa: E731
    script.write_text(WRK_SCRIPT % (quoted(users), quoted(items), recent))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    refused = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    refused = int(refused.group(1)) if refused else 0
    return {
        "p50_ms": _wrk_ms(out, "50%"),
        "p99_ms": _wrk_ms(out, "99%"),
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": requests,
        "non_2xx": refused,
        "ok_per_s": round((requests - refused) / seconds, 1),
    }


async def python_load(url: str, users: list[str], items: list[str], recent: int, concurrency: int, total: int) -> dict:
    """Fallback generator (httpx, asyncio): it competes with the server for the 2 cores."""
    import httpx

    latencies: list[float] = []
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker():
            for n in counter:
                body = body_for(users, items, n, recent)
                started = time.perf_counter()
                response = await client.post(url, json=body)
                latencies.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return summarize(latencies, time.perf_counter() - started)


def in_process_load(predictor, users: list[str], items: list[str], recent: int, concurrency: int, total: int) -> dict:
    from recsys.serving.request import parse_request

    def call(n: int) -> float:
        started = time.perf_counter()
        predictor.predict(parse_request(body_for(users, items, n, recent), 100))
        return (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(call, range(total)))
    return summarize(latencies, time.perf_counter() - started)


def start_server(model_dir: Path, index: str, port: int, log: Path, server_env: dict) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "AIP_HTTP_PORT": str(port), "RECSYS_SERVING_HOST": "127.0.0.1", **server_env}
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys.serving", "--model-dir", str(model_dir), "--index", index],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    last = None
    for _ in range(600):
        try:
            last = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            if last.status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    errors = [line for line in log.read_text().splitlines() if not line.startswith('{"ts"')]
    raise RuntimeError(f"{index} server not ready: {last and last.text}\n" + "\n".join(errors[-20:]))


def _accepted_server_ms(log: Path, skip: int) -> tuple[dict, int]:
    """p50/p99 of the 200s the server logged after line ``skip`` (time inside the server only)."""
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith('{"ts"')]
    accepted = [x["latency_ms"] for x in lines[skip:] if x["status"] == 200 and x["path"] == "/predict"]
    figures = {
        "p50_ms": round(float(np.percentile(accepted, 50)), 3),
        "p99_ms": round(float(np.percentile(accepted, 99)), 3),
    }
    return figures, len(lines)


def measure(model_dir: Path, index: str, users, items, recent: int, mode: str, generator: str, args, tmp: Path) -> dict:
    """HTTP at each concurrency for one index, request kind and server mode (plus in-process at c=1)."""
    from recsys.serving.predictor import Predictor
    from recsys_devtools.emulators.ports import free_port

    port = free_port()
    log = tmp / f"{index}-{mode}-{recent}.log"
    server = start_server(model_dir, index, port, log, MODES[mode])
    try:
        url = f"http://127.0.0.1:{port}/predict"
        asyncio.run(python_load(url, users, items, recent, 8, 100))  # warm up
        http = {}
        for c in CONCURRENCY:
            before = sum(1 for x in log.read_text().splitlines() if x.startswith('{"ts"'))
            if generator == "wrk":
                http[c] = wrk_load(url, users, items, recent, c, args.seconds, tmp)
            else:
                http[c] = asyncio.run(python_load(url, users, items, recent, min(c, 64), args.requests))
            http[c]["accepted_in_server"], _ = _accepted_server_ms(log, before)
        bodies = [json.dumps(body_for(users, items, n, recent)).encode() for n in range(500)]
        http["256_by_status"] = http_load.run("127.0.0.1", port, "/predict", bodies, 256, args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    predictor = Predictor(model_dir, index)
    predictor.warm_up()
    local = in_process_load(predictor, users, items, recent, 1, args.requests)
    label = f"{index} recent={recent} {mode}"
    for c in CONCURRENCY:
        h = http[c]
        print(
            f"{label:<38} c={c:<3} p50 {h['p50_ms']:7.2f} ms p99 {h['p99_ms']:7.2f} ms {h['requests_per_s']:8.1f} req/s"
            f" (non-2xx {h.get('non_2xx', 0)}; accepted p99 in server {h['accepted_in_server']['p99_ms']} ms)",
            flush=True,
        )
    return {
        "http": http,
        "in_process_c1": local,
        "http_overhead_p50_ratio_c1": round(http[1]["p50_ms"] / local["p50_ms"], 2),
    }


def main() -> int:
    from bench_quality import DEFAULT_DATA
    from results_file import write_results

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--requests", type=int, default=600, help="per level, python generator / in-process")
    parser.add_argument("--seconds", type=int, default=8, help="per level, with wrk")
    args = parser.parse_args()
    if not (Path(args.data) / "u.data").exists():
        print(f"MovieLens 100K not found at {args.data}", file=sys.stderr)
        return 2
    import pandas as pd

    import recsys.training  # noqa: F401

    generator = "wrk" if shutil.which("wrk") else "python-httpx"
    print(f"load generator: {generator}", flush=True)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        two_stage_dir = build_model(args.data, Path(tmp))
        model_dir = retrieval_only(two_stage_dir, Path(tmp))
        users = json.loads((model_dir / "vocabularies.json").read_text())["user_ids"]
        items = pd.read_parquet(model_dir / "candidates.parquet")["item_id"].astype(str).tolist()
        index_report = json.loads((model_dir / "index.json").read_text())
        # ScaNN is served only when the export qualified it (recall against exact search on real queries)
        indexes = ("brute_force", "scann") if index_report.get("scann") else ("brute_force",)
        for index in indexes:
            for kind, recent in (("user_id", 0), ("with_recent_events", RECENT)):
                for mode in MODES:
                    runs[f"{index}/{kind}/{mode}"] = measure(
                        model_dir, index, users, items, recent, mode, generator, args, Path(tmp)
                    )
        for kind, recent in (("user_id", 0), ("with_recent_events", RECENT)):
            runs[f"two_stage/{kind}/micro_batched"] = measure(
                two_stage_dir, "brute_force", users, items, recent, "micro_batched", generator, args, Path(tmp)
            )
        two_stage = {}
        for kind in ("user_id", "with_recent_events"):
            ranked, served = runs[f"two_stage/{kind}/micro_batched"]["http"], {}
            for index in indexes:
                retrieval = runs[f"{index}/{kind}/micro_batched"]["http"]
                served[f"retrieval_{index}"] = {
                    "p99_c8_ms": retrieval[8]["p99_ms"],
                    "requests_per_s_c32": retrieval[32]["requests_per_s"],
                }
            served["two_stage"] = {"p99_c8_ms": ranked[8]["p99_ms"], "requests_per_s_c32": ranked[32]["requests_per_s"]}
            two_stage[kind] = served
            print(f"two-stage vs retrieval only, {kind}: {served}", flush=True)
        ratios = {}
        for index in indexes:
            for kind in ("user_id", "with_recent_events"):
                base, batched = (
                    runs[f"{index}/{kind}/one_per_call"]["http"],
                    runs[f"{index}/{kind}/micro_batched"]["http"],
                )
                ratios[f"{index}/{kind}"] = {
                    "requests_per_s_c32": round(batched[32]["requests_per_s"] / base[32]["requests_per_s"], 2),
                    "p50_c1_delta_ms": round(batched[1]["p50_ms"] - base[1]["p50_ms"], 3),
                    "p99_c8_ms": batched[8]["p99_ms"],
                    "c256_non_2xx_share": round(batched[256]["non_2xx"] / max(batched[256]["requests"], 1), 3),
                    "c256_p99_all_ms": batched[256]["p99_ms"],
                    "c256_accepted_p99_in_server_ms": batched[256]["accepted_in_server"]["p99_ms"],
                    "c256_accepted_p99_client_ms": batched["256_by_status"]["200"]["p99_ms"],
                    "c256_refused_share_client": round(
                        batched["256_by_status"].get("503", {}).get("requests", 0)
                        / sum(v["requests"] for k, v in batched["256_by_status"].items() if k.isdigit()),
                        3,
                    ),
                }
                print(f"{index}/{kind}: {ratios[f'{index}/{kind}']}", flush=True)
    write_results(
        "bench_serving",
        {
            "model": "MovieLens 100K via the pipeline (30 days, 1 holdout day)",
            "scann_recall": index_report["grid"][0],
            "indexes": list(indexes),
            "scann_not_served": None if "scann" in indexes else index_report.get("reason"),
            "request": f"1 instance, k=10; user_id only, or with {RECENT} recent_item_ids",
            "server": "uvicorn, 1 worker process; one_per_call = one model call per request (the previous "
            "server), micro_batched = the default (coalesced calls, bounded queue, 503 past it)",
            "load_generator": generator,
            "runs": runs,
            "micro_batched_vs_one_per_call": ratios,
            "two_stage_vs_retrieval_only": two_stage,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
