"""The local demo: register embedded-default connections, run the pipeline, print what it made.

    python -m recsys.demo setup                 # upsert the demo connections into the metadata DB
    python -m recsys.demo extract --days 14     # run recsys_extract for each of the last 14 days
    python -m recsys.demo summary               # table of the committed partitions

Used by ``make demo``; needs an initialised ``AIRFLOW_HOME`` (``airflow db migrate``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from recsys.config import load_settings


def demo_source_db() -> Path:
    return Path(os.environ["AIRFLOW_HOME"]) / "data" / "source.db"


def setup_connections() -> None:
    """Create or update the embedded-default connections (no secrets involved)."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    wanted = [Connection(conn_id=load_settings().source_conn_id, conn_type="sqlite", host=str(demo_source_db()))]
    with create_session() as session:
        for conn in wanted:
            existing = session.query(Connection).filter(Connection.conn_id == conn.conn_id).one_or_none()
            if existing is not None:
                session.delete(existing)
                session.flush()
            session.add(conn)
            print(f"connection {conn.conn_id}: {conn.conn_type} {conn.host}")


def run_extract(days: int, dag_folder: str) -> list[str]:
    """Run ``recsys_extract`` for each of the last ``days`` full UTC days, oldest first."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=dag_folder)
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag("recsys_extract")
    today = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
    states = []
    for offset in range(days, 0, -1):
        day = today - timedelta(days=offset)
        # The run whose logical date is day+1 covers the data interval [day, day+1).
        run = dag.test(logical_date=day + timedelta(days=1))
        states.append(f"{day.date()} {run.state}")
        print(f"[extract] {day.date()}: {run.state}", flush=True)
    return states


def print_summary() -> None:
    from recsys.data.partitions import PartitionStore

    settings = load_settings()
    store = PartitionStore(settings.extract_root)
    manifests = store.manifests()
    print(f"\nPartitions under {settings.extract_root}:")
    print(f"{'day':<12}{'status':<8}{'rows':>8}{'quarantined':>13}{'users':>8}  warnings")
    for m in manifests:
        c = m["counts"]
        print(
            f"{m['partition']:<12}{m['status']:<8}{c['valid']:>8}{c['quarantined']:>13}{c['active_users']:>8}  "
            f"{'; '.join(m['warnings']) or '-'}"
        )
    if manifests:
        last = manifests[-1]
        print(f"\nLatest partition files ({last['partition']}):")
        for name, entry in sorted(last["files"].items()):
            print(f"  {name:<26}{entry['rows']:>8} rows  {store.file_path(last, name)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys.demo")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup")
    extract = sub.add_parser("extract")
    extract.add_argument("--days", type=int, default=14)
    extract.add_argument("--dag-folder", default=os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", "dags"))
    sub.add_parser("summary")
    args = parser.parse_args(argv)
    if args.command == "setup":
        setup_connections()
    elif args.command == "extract":
        logging.getLogger("airflow").setLevel(logging.WARNING)
        states = run_extract(args.days, args.dag_folder)
        if any(not s.endswith("success") for s in states):
            print("some extraction runs failed:", states, file=sys.stderr)
            return 1
    else:
        print_summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
