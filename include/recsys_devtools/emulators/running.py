"""Serve a fake's ASGI app (any object with ``app()``) on a loopback port in a background thread."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time

import uvicorn


class Hold(threading.Event):
    """A held answer (a fake's ``hold()``): ``set()`` releases it; ``answered`` is set once the fake has
    let it go, so a chaos test can assert that the held call really was held and then answered."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = threading.Event()


async def released(hold: Hold) -> None:
    """Wait, without blocking the server's event loop, until a fake's held answer is released."""
    while not hold.is_set():
        await asyncio.sleep(0.05)
    hold.answered.set()


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


def start_process(
    command: list[str], ready_url: str, log_path, env: dict | None = None, timeout: float = 120
) -> subprocess.Popen:
    """Start a local server process (output to ``log_path``); return once ``ready_url`` answers below 500."""
    import httpx

    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited with {process.returncode}: see {log_path}")
        try:
            if httpx.get(ready_url, timeout=2).status_code < 500:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"{command[0]} did not answer {ready_url} within {timeout:.0f} s: see {log_path}")
