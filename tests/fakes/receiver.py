"""A webhook endpoint (``POST /hooks/recsys``) that keeps the JSON documents it is sent."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class Receiver:
    def __init__(self):
        self.posts: list[dict] = []

    def app(self) -> Starlette:
        async def hook(request: Request) -> JSONResponse:
            self.posts.append(await request.json())
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/hooks/recsys", hook, methods=["POST"])])
