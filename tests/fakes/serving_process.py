"""The project's prediction server as a real child process on a loopback port (for tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from recsys_devtools.emulators.ports import free_port

HEALTH, PREDICT = "/v1/models/recsys/health", "/v1/models/recsys:predict"  # non-default AIP routes


class Server:
    def __init__(self, model_dir: str, index: str, tmp_path: Path, env: dict[str, str] | None = None):
        self.index = index
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"server-{index}.log"
        env = {
            **os.environ,
            "AIP_HTTP_PORT": str(self.port),
            "AIP_HEALTH_ROUTE": HEALTH,
            "AIP_PREDICT_ROUTE": PREDICT,
            "AIP_STORAGE_URI": model_dir,
            "RECSYS_SERVING_HOST": "127.0.0.1",
            "RECSYS_SERVING_INDEX": index,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **(env or {}),
        }
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "recsys.serving"], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.health_codes = self._wait_ready()

    def _wait_ready(self) -> list[int]:
        codes = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            try:
                codes.append(httpx.get(self.url + HEALTH, timeout=2).status_code)
                if codes[-1] == 200:
                    return codes
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready: {self.log_path.read_text()[-3000:]}")

    def access_log(self) -> list[dict]:
        """The server's JSON access-log lines so far."""
        import json

        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith('{"ts"')]

    def predict_log(self, at_least: int, timeout: float = 30) -> list[dict]:
        """The access-log lines of predict calls, once there are ``at_least`` (a line is written just
        after its response is sent, so the last answers' lines can trail the answers)."""
        deadline = time.monotonic() + timeout
        while len(lines := [line for line in self.access_log() if line["path"] == PREDICT]) < at_least:
            assert time.monotonic() < deadline, f"{len(lines)} predict lines, expected {at_least}"
            time.sleep(0.05)
        return lines

    def predict(self, body, **kwargs) -> httpx.Response:
        if isinstance(body, dict | list):
            return httpx.post(self.url + PREDICT, json=body, timeout=30, **kwargs)
        return httpx.post(self.url + PREDICT, content=body, timeout=30, **kwargs)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode
