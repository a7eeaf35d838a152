"""Crude faults for the chaos tests: a task process killed, a database session terminated, an object
store that fails or swallows writes.

``kill_task_process(ti_id)`` SIGKILLs the process running a task instance (the task runner titles itself
``airflow worker -- <ti id>``), as the kernel's OOM killer would. ``terminate_waiting_session`` kills the
PostgreSQL backend of a query waiting on a lock (``pg_terminate_backend``).

``FaultyObjectStore`` is a proxy in front of an S3 server (moto) that injects faults into writes:

* ``fail(pattern, times)``: that many PUTs whose path matches ``pattern`` (a regex) are answered
  503 SlowDown (what S3 sends under load), then writes go through again;
* ``hold(pattern)``: the next such PUT is taken and its client kept waiting until the returned event
  is set; the write never reaches the store (a client killed mid-upload leaves no object).

Everything else is forwarded unchanged. Serve it with ``RunningFake(proxy, port)``.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

from recsys_devtools.emulators.running import Hold, released


def task_process(ti_id: str) -> int | None:
    """The pid of the live process running task instance ``ti_id``, if any."""
    title = f"airflow worker -- {ti_id}"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if title in cmdline.read().replace(b"\0", b" ").decode(errors="replace"):
                    return int(pid)
        except OSError:
            continue
    return None


def kill_task_process(ti_id: str, freeze_seconds: float = 0) -> int:
    """SIGKILL the process running task instance ``ti_id`` (after holding it stopped with SIGSTOP for
    ``freeze_seconds``: a hung task, which Airflow may end itself meanwhile); return its pid once it is gone."""
    pid = task_process(ti_id)
    if pid is None:
        raise LookupError(f"no process runs task instance {ti_id}")
    if freeze_seconds:
        os.kill(pid, signal.SIGSTOP)
        time.sleep(freeze_seconds)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # Airflow ended the hung task itself meanwhile (its supervisor was told to)
        pass
    assert process_gone(pid), f"task process {pid} survived SIGKILL"
    return pid


def process_gone(pid: int, timeout: float = 30) -> bool:
    """Whether ``pid`` has exited (gone from /proc, or a zombie waiting for its parent) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def terminate_waiting_session(admin, database: str, table: str, timeout: float = 60) -> bool:
    """Wait for a query on ``table`` blocked on a lock in ``database``; terminate its backend."""
    from sqlalchemy import text

    query = text(
        "SELECT pid FROM pg_stat_activity WHERE datname = :db AND query ILIKE :table AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with admin.connect() as conn:
            pids = conn.execute(query, {"db": database, "table": f"%FROM {table}%"}).scalars().all()
            if pids:
                return bool(conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pids[0]}).scalar())
        time.sleep(0.05)
    return False


SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"


class FaultyObjectStore:
    def __init__(self, upstream: str):
        self.upstream = upstream
        self.failures: list[tuple[re.Pattern, int]] = []
        self.holds: list[tuple[re.Pattern, threading.Event]] = []
        self.refused = 0
        self.held: list[str] = []  # paths of the writes taken by a hold

    def fail(self, pattern: str, times: int) -> None:
        self.failures.append((re.compile(pattern), times))

    def recover(self) -> None:
        self.failures.clear()

    def hold(self, pattern: str) -> Hold:
        release = Hold()
        self.holds.append((re.compile(pattern), release))
        return release

    def _failing(self, path: str) -> bool:
        for index, (pattern, left) in enumerate(self.failures):
            if left and pattern.search(path):
                self.failures[index] = (pattern, left - 1)
                self.refused += 1
                return True
        return False

    def _holding(self, path: str) -> threading.Event | None:
        for index, (pattern, release) in enumerate(self.holds):
            if pattern.search(path):
                del self.holds[index]
                self.held.append(path)
                return release
        return None

    def app(self):
        import httpx
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def forward(request: Request) -> Response:
            path = request.url.path
            if request.method == "PUT":
                if release := self._holding(path):
                    await released(release)
                    return Response(SLOW_DOWN, status_code=503, media_type="application/xml")
                if self._failing(path):
                    return Response(SLOW_DOWN, status_code=503, media_type="application/xml")
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as client:
                answer = await client.request(
                    request.method, path, params=request.query_params, headers=headers, content=await request.body()
                )
            drop = {"transfer-encoding", "content-encoding", "connection"}
            if request.method != "HEAD":  # a HEAD's length is the object's, not the (empty) body's
                drop.add("content-length")
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in drop}
            return Response(answer.content, status_code=answer.status_code, headers=kept)

        methods = ["GET", "PUT", "POST", "DELETE", "HEAD"]
        return Starlette(routes=[Route("/{path:path}", forward, methods=methods), Route("/", forward, methods=methods)])
