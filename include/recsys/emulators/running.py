"""Serve a fake's ASGI app (any object with ``app()``) on a loopback port in a background thread."""

from __future__ import annotations

import threading
import time

import uvicorn


class RunningFake:
    """``with RunningFake(fake, port) as running:`` serves ``fake.app()`` at ``running.url``."""

    def __init__(self, fake, port: int):
        self.fake, self.port = fake, port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RunningFake:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        if hasattr(self.fake, "close"):
            self.fake.close()  # child processes the fake started
