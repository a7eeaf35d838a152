"""A broken serving container for canary tests: the project's real server with one fault on ``:predict``.

    python -m recsys_devtools.emulators.faulty_serving FAULT

It honours the same custom-container contract as ``python -m recsys.serving`` (``AIP_HTTP_PORT``,
``AIP_HEALTH_ROUTE``, ``AIP_PREDICT_ROUTE``, ``AIP_STORAGE_URI``) and loads the model the same way,
so its health route turns ready like the real one; only predictions are broken. FAULT is one of:

* ``error`` — every prediction is a 500 with the server's error body;
* ``schema`` — the predictions carry other keys than ``user_id`` / ``item_ids``;
* ``empty`` — every prediction has no items;
* ``slow:SECONDS`` — right answers, each after SECONDS;
* ``shed:N`` — the first N predictions are refused with 503 + ``Retry-After`` (the real shedder's
  answer), the rest are right.
"""

from __future__ import annotations

import asyncio
import os
import sys

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class FaultyPredictions:
    """ASGI wrapper: the real app for every route, ``fault`` on the predict route."""

    def __init__(self, app, fault: str, predict_route: str):
        self.app, self.predict_route = app, predict_route
        self.kind, _, argument = fault.partition(":")
        self.argument = float(argument or 0)
        self.calls = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != self.predict_route:
            return await self.app(scope, receive, send)
        body = await Request(scope, receive).body()
        response = await self.answer(body)
        await response(scope, receive, send)

    async def answer(self, body: bytes) -> Response:
        from recsys.serving.app import _overloaded  # the real shedder's answer

        self.calls += 1
        if self.kind == "error":
            return JSONResponse({"error": "internal error: RuntimeError"}, status_code=500)
        if self.kind == "shed" and self.calls <= self.argument:
            return _overloaded()
        if self.kind == "slow":
            await asyncio.sleep(self.argument)
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://container") as client:
            answer = await client.post(self.predict_route, content=body, headers={"content-type": "application/json"})
        data = answer.json()
        if answer.status_code == 200 and self.kind == "schema":
            data = {"predictions": [{"user": p["user_id"], "recommended": p["item_ids"]} for p in data["predictions"]]}
        if answer.status_code == 200 and self.kind == "empty":
            data = {"predictions": [{**p, "item_ids": [], "scores": [], "titles": []} for p in data["predictions"]]}
        return JSONResponse(data, status_code=answer.status_code)


def main(argv: list[str]) -> int:
    import uvicorn

    from recsys.serving.__main__ import champion_or
    from recsys.serving.app import create_app
    from recsys.serving.predictor import fetch_model

    (fault,) = argv
    model_dir = str(fetch_model(champion_or(os.environ["AIP_STORAGE_URI"])))
    predict_route = os.environ.get("AIP_PREDICT_ROUTE", "/predict")
    app = FaultyPredictions(create_app(model_dir), fault, predict_route)
    host = os.environ.get("RECSYS_SERVING_HOST", "127.0.0.1")
    uvicorn.run(app, host=host, port=int(os.environ.get("AIP_HTTP_PORT", "8080")), log_config=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
