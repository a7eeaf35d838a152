"""The ASGI prediction app, following Vertex AI's custom-container contract.

* ``AIP_HEALTH_ROUTE`` (default ``/health``): 200 only once the model is loaded and warmed, 503
  before (and if loading failed, with the error), so Vertex never routes traffic to a cold replica.
* ``AIP_PREDICT_ROUTE`` (default ``/predict``): ``{"instances": [...], "parameters": {...}}`` in,
  ``{"predictions": [...]}`` out.
* Bad input never crashes the server: 400 with a JSON error, 413 over 1.5 MB, 404/405 JSON.
* Concurrent requests are answered in micro-batches (:mod:`recsys.serving.batching`); over capacity
  a request gets 503 with ``Retry-After`` at once (``RECSYS_SERVING_MAX_QUEUE`` requests may wait,
  default 64; ``RECSYS_SERVING_MAX_BATCH`` instances per batch, default 64; 1 = one request per
  model call).
* One structured (JSON) access-log line per request on stdout (``batch``: requests answered together).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from recsys.serving.batching import MicroBatcher, Overloaded
from recsys.serving.request import MAX_BODY_BYTES, BadRequest, parse_request

access_log = logging.getLogger("recsys.serving.access")
log = logging.getLogger("recsys.serving")


class ModelState:
    """Loads the predictor in a background thread; health reports its progress."""

    def __init__(self, model_dir: Path, index: str):
        self.model_dir, self.index = model_dir, index
        self.predictor = None
        self.error: str | None = None
        self.started = time.monotonic()

    def load(self) -> None:
        try:
            from recsys.serving.predictor import Predictor

            predictor = Predictor(self.model_dir, self.index)
            predictor.warm_up()
            # The model's objects live as long as the process: keep them out of the collector's full passes,
            # which otherwise walk millions of them every few seconds under load and stall every request.
            gc.collect()
            gc.freeze()
            self.predictor = predictor
            seconds = time.monotonic() - self.started
            log.info("model %s loaded (%s index) in %.1f s", self.model_dir, predictor.index, seconds)
        except Exception as exc:  # reported by the health route; the process stays up for diagnosis
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("model load failed")


SHED_BODY = json.dumps({"error": "the server is at capacity; retry shortly"}).encode()
SHED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(SHED_BODY)).encode()),
    (b"retry-after", b"1"),
]


class Shedder:
    """Outermost ASGI layer: while the prediction queue is full, a prediction request gets 503 with
    ``Retry-After`` before anything else runs (no routing, no body read, no per-request log line: a
    flood of refusals must not starve the requests being served). Refusals are counted and logged
    at most every 10 s."""

    def __init__(self, app, batcher: MicroBatcher, path: str):
        self.app, self.batcher, self.path = app, batcher, path
        self.logged_at, self.logged_count = 0.0, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == self.path and self.batcher.full():
            self.batcher.shed += 1
            await send({"type": "http.response.start", "status": 503, "headers": SHED_HEADERS})
            await send({"type": "http.response.body", "body": SHED_BODY})
            if time.monotonic() - self.logged_at > 10:
                log.warning("at capacity: %d prediction requests refused with 503 so far", self.batcher.shed)
                self.logged_at = time.monotonic()
            return None
        return await self.app(scope, receive, send)


class AccessLog:
    """Pure ASGI middleware: one JSON access-log line per HTTP request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), {}

        async def send_and_record(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            client, state = scope.get("client"), scope.get("state", {})
            line = {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "method": scope["method"],
                "path": scope["path"],
                "status": status.get("code", 500),
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "instances": state.get("instances"),
                "batch": state.get("batch"),
                "client": client[0] if client else None,
            }
            access_log.info(json.dumps(line))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _overloaded() -> Response:
    """503 with ``Retry-After`` (Vertex AI and well-behaved clients retry it): the body the shedder sends."""
    return Response(SHED_BODY, status_code=503, media_type="application/json", headers={"Retry-After": "1"})


async def _read_limited(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"request body is {declared} bytes; the limit is {MAX_BODY_BYTES}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"request body exceeds the limit of {MAX_BODY_BYTES} bytes")
    return bytes(body)


def create_app(model_dir: str | None = None, index: str | None = None, load_in_background: bool = True) -> Starlette:
    configure_logging()
    model_dir = model_dir or os.environ["RECSYS_SERVING_MODEL_DIR"]
    state = ModelState(Path(model_dir), index or os.environ.get("RECSYS_SERVING_INDEX", "auto"))
    batcher = MicroBatcher(
        lambda requests: state.predictor.predict_many(requests),
        max_instances=_env_int("RECSYS_SERVING_MAX_BATCH", 64),
        max_queued=_env_int("RECSYS_SERVING_MAX_QUEUE", 64),
    )
    health_route = os.environ.get("AIP_HEALTH_ROUTE", "/health")
    predict_route = os.environ.get("AIP_PREDICT_ROUTE", "/predict")

    async def health(request: Request) -> JSONResponse:
        if state.predictor is not None:
            return JSONResponse({"status": "ready", "index": state.predictor.index})
        if state.error:
            return JSONResponse({"status": "failed", "error": state.error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    async def predict(request: Request) -> JSONResponse:
        predictor = state.predictor
        if predictor is None:
            return _error(503, "the model is not loaded yet")
        body = await _read_limited(request)
        try:
            parsed = parse_request(json.loads(body), predictor.k_max)
        except json.JSONDecodeError as exc:
            return _error(400, f"the body is not valid JSON: {exc.msg} at position {exc.pos}")
        except UnicodeDecodeError:
            return _error(400, "the body is not UTF-8 text")
        except BadRequest as exc:
            return _error(400, str(exc))
        except RecursionError:  # found by fuzzing: json.loads on "[" * 100000
            return _error(400, "the body is nested too deeply")
        except ValueError as exc:  # found by fuzzing: an integer of more than 4,300 digits
            return _error(400, f"the body is not acceptable JSON: {exc}")
        request.state.instances = len(parsed.instances)
        try:
            predictions, request.state.batch = await batcher.submit(parsed)
        except Overloaded:
            return _overloaded()
        return JSONResponse({"predictions": predictions})

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        messages = {
            404: f"no route {request.url.path}; use {predict_route} or {health_route}",
            405: f"method {request.method} is not allowed on {request.url.path}",
        }
        return _error(exc.status_code, messages.get(exc.status_code, exc.detail))

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("prediction failed")
        return _error(500, f"internal error: {type(exc).__name__}")

    app = Starlette(
        routes=[Route(health_route, health, methods=["GET"]), Route(predict_route, predict, methods=["POST"])],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )

    app.add_middleware(AccessLog)
    app.add_middleware(Shedder, batcher=batcher, path=predict_route)
    if load_in_background:
        threading.Thread(target=state.load, name="model-loader", daemon=True).start()
    else:
        state.load()
    app.state.model, app.state.batcher = state, batcher
    return app


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def configure_logging() -> None:
    """Access lines as bare JSON on stdout; once per process (each uvicorn worker process calls it)."""
    if access_log.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
