"""A real Airflow 3 for end-to-end tests: api-server, scheduler, dag-processor and triggerer
(LocalExecutor) as separate processes on a fresh PostgreSQL metadata database.

Every process gets its own session (process group) so ``stop()`` kills it with its children; the
database is dropped at the end. ``api()`` talks to the public REST API v2.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from recsys_devtools.emulators.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
COMPONENTS = {"api-server": ["api-server"], "scheduler": ["scheduler"], "dag-processor": ["dag-processor"],
              "triggerer": ["triggerer"]}  # fmt: skip


class AirflowStack:
    def __init__(self, home: Path, extra_env: dict[str, str]):
        self.home, self.port = home, free_port()
        self.database = f"recsys_e2e_{uuid.uuid4().hex[:8]}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "RECSYS_"))},
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{self.database}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
                                           "SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # the DAG files do not change during a test: parsed once, not every 30 s (a parse of every file
            # took ~13% of a core per stack, with two stacks running beside the other suites)
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),  # not the shared default 8793
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "TF_USE_LEGACY_KERAS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            # the end-to-end runs test orchestration: scheduled trainings train once, and the bar is popularity
            # (on the synthetic data the cheap baselines tie with the model; the gate's bar has its own tests)
            "RECSYS_TUNING_TRIALS": "0",
            "RECSYS_GATE_BASELINE": "popularity",
            **extra_env,
        }  # fmt: skip
        self.processes: dict[str, subprocess.Popen] = {}
        self._token: str | None = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> AirflowStack:
        with create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT").connect() as admin:
            admin.execute(text(f'CREATE DATABASE "{self.database}"'))
        self.airflow("db", "migrate")
        for name in COMPONENTS:
            self.start_component(name)
        self._wait_for_api()
        return self

    def start_component(self, name: str) -> None:
        log = (self.home / f"{name}.log").open("ab")
        command = [sys.executable, "-m", "airflow", *COMPONENTS[name]]
        self.processes[name] = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )  # its own group: stop() kills its children

    def stop_component(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name)
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=60)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.processes):
            self.stop_component(name)
        with create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT").connect() as admin:
            admin.execute(text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))

    def airflow(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        assert done.returncode == 0, f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def _wait_for_api(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} exited: {self.log_tail(name)}"
            try:
                if httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError(f"the api-server did not come up: {self.log_tail('api-server')}")

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # ---- REST API v2 -----------------------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        if self._token is None:
            answer = httpx.get(f"{self.url}/auth/token", timeout=30)  # all-admins mode: no credentials
            self._token = answer.json()["access_token"]
        headers = {"Authorization": f"Bearer {self._token}"}
        return httpx.request(method, f"{self.url}/api/v2{path}", headers=headers, timeout=60, **kwargs)

    def wait_for_dags(self, dag_ids: set[str], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = {d["dag_id"] for d in self.api("GET", "/dags", params={"limit": 100}).json().get("dags", [])}
            if dag_ids <= found:
                return
            time.sleep(2)
        raise TimeoutError(f"DAGs {dag_ids - found} not parsed: {self.log_tail('dag-processor')}")

    def set_paused(self, dag_id: str, paused: bool) -> None:
        answer = self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})
        assert answer.status_code == 200, answer.text

    def trigger(self, dag_id: str, conf: dict) -> str:
        """A UI-style run (no logical date) with ``conf``; returns its run id."""
        answer = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        assert answer.status_code == 200, answer.text
        return answer.json()["dag_run_id"]

    def backfill(self, dag_id: str, first: date, last: date, max_active_runs: int = 2) -> int:
        """Re-run the days ``first``..``last`` (completed runs included); return the backfill's id."""
        body = {
            "dag_id": dag_id,
            "from_date": f"{first}T00:00:00Z",
            "to_date": f"{last}T00:00:00Z",
            "reprocess_behavior": "completed",
            "max_active_runs": max_active_runs,
        }
        answer = self.api("POST", "/backfills", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()["id"]

    def wait_for_backfill(self, backfill_id: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.api("GET", f"/backfills/{backfill_id}").json()["completed_at"] is None:
            assert time.monotonic() < deadline, f"backfill {backfill_id} not completed: {self.log_tail('scheduler')}"
            time.sleep(3)

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "run_after"}).json()[
            "dag_runs"]  # fmt: skip

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(2)
        raise TimeoutError(f"{dag_id} {run_id} still {run['state']}: {self.log_tail('scheduler')}")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        instances = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100}).json()
        return {(t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else "")): t["state"]
                for t in instances["task_instances"]}  # fmt: skip
