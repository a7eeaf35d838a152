"""The local demo: register embedded-default connections, run the pipeline, print what it made.

    python -m recsys_devtools.demo setup                 # upsert the demo connections into the metadata DB
    python -m recsys_devtools.demo extract --days 14     # run recsys_extract for each of the last 14 days
    python -m recsys_devtools.demo summary               # table of the committed partitions
    python -m recsys_devtools.demo train --days 14       # run recsys_two_tower on that window, show its card

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


def demo_app_db() -> Path:
    """The application database the recommendations table is delivered to."""
    return Path(os.environ["AIRFLOW_HOME"]) / "data" / "app.db"


def setup_connections() -> None:
    """Create or update the embedded-default connections (no secrets involved)."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    settings = load_settings()
    wanted = [
        Connection(conn_id=settings.connections.source, conn_type="sqlite", host=str(demo_source_db())),
        Connection(conn_id=settings.connections.delivery, conn_type="sqlite", host=str(demo_app_db())),
        Connection(conn_id="spark_local", conn_type="spark", host="local[2]"),  # extraction_backend=spark-local
    ]
    with create_session() as session:
        for conn in wanted:
            existing = session.query(Connection).filter(Connection.conn_id == conn.conn_id).one_or_none()
            if existing is not None:
                session.delete(existing)
                session.flush()
            session.add(conn)
            print(f"connection {conn.conn_id}: {conn.conn_type} {conn.host}")


def setup_pools() -> None:
    """Create or update the pools the DAGs use (deferred tasks count against them)."""
    from airflow.models.pool import Pool

    from recsys.config import PERSONALIZE_IMPORT_POOL

    name, slots, description = PERSONALIZE_IMPORT_POOL
    Pool.create_or_update_pool(name, slots, description, include_deferred=True)
    print(f"pool {name}: {slots} slots (deferred tasks included)")


def _dag(dag_id: str, dag_folder: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=dag_folder)
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.dags[dag_id]


def run_extract(days: int, dag_folder: str) -> list[str]:
    """Run ``recsys_extract`` for each of the last ``days`` full UTC days, oldest first."""
    dag = _dag("recsys_extract", dag_folder)
    today = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
    states = []
    for offset in range(days, 0, -1):
        day = today - timedelta(days=offset)
        # The run whose logical date is day+1 covers the data interval [day, day+1).
        run = dag.test(logical_date=day + timedelta(days=1))
        states.append(f"{day.date()} {run.state}")
        print(f"[extract] {day.date()}: {run.state}", flush=True)
    return states


def run_training(days: int, dag_folder: str) -> bool:
    """Run ``recsys_two_tower`` on the last ``days`` partitions and print what the gate decided."""
    import json

    from airflow.sdk import ObjectStoragePath

    from recsys.training.gate import BASELINES, read_champion

    conf = {"window_days": days, "tuning_trials": 4, "tuning_budget_minutes": 3}  # a short tuning, to show it
    run = _dag("recsys_two_tower", dag_folder).test(run_conf=conf)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    print(f"[train] recsys_two_tower: {run.state} ({', '.join(f'{k}={v}' for k, v in sorted(states.items()))})")
    if run.state != "success" or states.get("gate") != "success":
        return False
    planned = run.get_task_instance("plan").xcom_pull(task_ids="plan")
    model_dir = ObjectStoragePath(planned["model_dir"])
    result = json.loads((model_dir / "metrics.json").read_text())
    ks = (1, 5, 10, 50, 100)
    print(
        f"\nModel {planned['version']} (window {result['window']['days'][0]}..{result['window']['end_day']}, "
        f"{result['window']['train_rows']} train / {result['window']['holdout_rows']} holdout rows)"
    )
    print(f"{'':<18}" + "".join(f"{'top-' + str(k):>9}" for k in ks))
    served = result.get("served", {}).get("policy", "model")
    print(f"served policy: {served} (validation objective: {result.get('served', {}).get('validation')})")
    for name in ("two_stage", "model", *BASELINES, "champion"):
        if metrics := result["metrics"].get(name):
            print(f"{name:<18}" + "".join(f"{metrics[f'top_{k}_accuracy']:>9.4f}" for k in ks))
    tuning = result.get("tuning", {})
    if tuning.get("trials"):
        print(f"tuning: {len(tuning['trials'])} trials on the validation split; chosen {tuning['chosen']}")
    print("top-10 / top-100 hit rate per user segment (as served: history, seen items excluded):")
    for segment, counts in result["metrics"]["model"]["segments"].items():
        cells = "  ".join(
            f"{name} {result['metrics'][name]['segments'][segment]['top_10_accuracy']:.3f}/"
            f"{result['metrics'][name]['segments'][segment]['top_100_accuracy']:.3f}"
            for name in dict.fromkeys((served, "model", "popularity"))
        )
        print(f"  {segment:<24}{counts['pairs']:>7} pairs  {cells}")
    print(f"gate: {'blessed' if result['gate']['blessed'] else 'not blessed'}; {'; '.join(result['gate']['reasons'])}")
    print(f"serving index: {result['index']['serving']}")
    champion = read_champion(load_settings().storage.models_root)
    print(f"champion: {champion['version'] if champion else 'none yet'}")
    print(f"model card: {model_dir / 'model_card.md'}\nplot:       {model_dir / 'training_plot.png'}")
    return True


def print_summary() -> None:
    from recsys.data.partitions import PartitionStore

    settings = load_settings()
    store = PartitionStore(settings.storage.extract_root)
    manifests = store.manifests()
    print(f"\nPartitions under {settings.storage.extract_root}:")
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
    parser = argparse.ArgumentParser(prog="python -m recsys_devtools.demo")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup")
    extract = sub.add_parser("extract")
    extract.add_argument("--days", type=int, default=14)
    extract.add_argument("--dag-folder", default=os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", "dags"))
    sub.add_parser("summary")
    train = sub.add_parser("train")
    train.add_argument("--days", type=int, default=14)
    train.add_argument("--dag-folder", default=os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", "dags"))
    args = parser.parse_args(argv)
    if args.command == "setup":
        setup_connections()
        setup_pools()
    elif args.command == "extract":
        logging.getLogger("airflow").setLevel(logging.WARNING)
        states = run_extract(args.days, args.dag_folder)
        if any(not s.endswith("success") for s in states):
            print("some extraction runs failed:", states, file=sys.stderr)
            return 1
    elif args.command == "train":
        logging.getLogger("airflow").setLevel(logging.WARNING)
        logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing/get_config chatter
        if not run_training(args.days, args.dag_folder):
            return 1
    else:
        print_summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
