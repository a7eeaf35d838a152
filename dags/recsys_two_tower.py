"""
### recsys_two_tower — train, evaluate, gate and export the two-tower retrieval model

Runs whenever `recsys_extract` publishes a partition (asset `recsys_extract_partitions`) and from
the UI with the form below. Never two runs at once (`max_active_runs=1`).

**Tasks**
1. `plan` — the window (default: 30 days ending at the newest extracted day) and a new model version.
2. `train` (`training_backend=local`, the default) — in the worker: TensorFlow Recommenders
   two-tower model on the window (history-aware query tower: each example sees the user's newest
   `history_length` events strictly before it), temporal holdout = the newest `holdout_days`.
   The model and a most-popular baseline are evaluated **as served** (`recsys.policy`: history =
   window + earlier holdout events, seen items excluded, no-history policy), overall and per
   segment (seen users / new users with history / no history). Exports the query model, a
   brute-force and (when it qualifies) a tuned ScaNN SavedModel, candidate embeddings, the
   history snapshot the server starts from, metadata.
   Too few interactions → the run is **skipped** with the reason.
   `training_backend=vertex` does the same job on Vertex AI instead: `stage_window` copies the
   window to `gs://` (unless the storage root is already there) and `train_on_vertex` runs the
   trainer image as a custom job (deferrable: no worker slot while it runs; a retry reattaches to
   the same job; on timeout the job is cancelled) with `AIP_MODEL_DIR` = the run's model dir.
3. `gate` — evaluates the current champion on the same holdout; blesses the candidate when it beats
   popularity and is not worse than the champion by more than `tolerance` (or `force`); writes
   `model_card.md`, `training_plot.png`, `metrics.json`; moves `models/champion.json` atomically.
4. `publish` — emits the `recsys_blessed_model` asset event, only for a blessed model.
5. `deliver` — the blessed model's top `deliver_top_k` for every user of its history snapshot (the
   served policy, batched; ScaNN when exported with it) replaces the `two_tower` rows of the
   application's `recommendations` table (`delivery_conn_id`, staging table + one-transaction swap).

Output: `<storage_root>/models/<version>/`. Outage days (partitions with status `empty`) in the
window are listed in the model card.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from recsys.assets import BLESSED_MODEL, EXTRACT_PARTITIONS
from recsys.config import load_settings  # stdlib only: cheap at parse time

PARAMS = {
    "end_day": Param(
        None,
        type=["null", "string"],
        format="date",
        title="Last day of the window",
        description="YYYY-MM-DD; empty = the newest extracted partition.",
    ),
    "window_days": Param(30, type="integer", minimum=2, maximum=365, title="Window (days)"),
    "holdout_days": Param(1, type="integer", minimum=1, maximum=30, title="Holdout (newest days)"),
    "epochs": Param(8, type="integer", minimum=1, maximum=50),
    "embedding_dim": Param(32, type="integer", minimum=4, maximum=512),
    "learning_rate": Param(0.05, type="number", exclusiveMinimum=0, maximum=1),
    "batch_size": Param(2048, type="integer", minimum=32, maximum=65536),
    "history_length": Param(
        50,
        type="integer",
        minimum=1,
        maximum=500,
        title="History length",
        description="How many of a user's newest events the query tower reads.",
    ),
    "exclude_seen": Param(
        True,
        type="boolean",
        title="Exclude seen items",
        description="Never recommend items the user already interacted with (served and evaluated).",
    ),
    "no_history": Param(
        "model",
        enum=["model", "popular"],
        title="Users without history get",
        description="model = the learned no-history query (demographics when known); popular = the most popular items.",
    ),
    "tolerance": Param(
        0.01, type="number", minimum=0, maximum=1, title="Allowed drop vs the champion (absolute top-100 accuracy)"
    ),
    "force": Param(False, type="boolean", title="Bless even if the gate says no"),
    "deliver_top_k": Param(
        25,
        type="integer",
        minimum=0,
        maximum=500,
        title="Recommendations per user published to the application table (0 = none)",
        description="After a blessed model: the top k of every user in its history snapshot, as served, "
        "replace the table's two_tower rows (delivery_conn_id).",
    ),
    "training_backend": Param(
        "local",
        enum=["local", "vertex"],
        title="Where to train",
        description="local = in the Airflow worker; vertex = a Vertex AI custom job "
        "running the trainer image (needs RECSYS_TRAINER_IMAGE_URI).",
    ),
}


@dag(
    dag_id="recsys_two_tower",
    schedule=[EXTRACT_PARTITIONS],
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "ml-platform", "retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["recsys", "training"],
    params=PARAMS,
    doc_md=__doc__,
)
def recsys_two_tower():
    @task(multiple_outputs=False)
    def plan() -> dict:
        """Pick the window and a fresh model version directory."""
        from datetime import date

        from airflow.sdk.exceptions import AirflowSkipException

        from recsys.data.partitions import PartitionStore

        params = get_current_context()["params"]
        settings = load_settings(use_airflow_variables=True)
        if params["end_day"]:
            end_day = date.fromisoformat(params["end_day"])
        else:
            days = PartitionStore(settings.extract_root).committed_days()
            if not days:
                raise AirflowSkipException(f"no extracted partitions under {settings.extract_root} yet")
            end_day = days[-1]
        if params["holdout_days"] >= params["window_days"]:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException("holdout_days must be smaller than window_days")
        version = f"{end_day:%Y%m%d}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        planned = {"end_day": end_day.isoformat(), "version": version, "backend": params["training_backend"],
                   "model_dir": f"{settings.models_root}/{version}"}  # fmt: skip
        if params["training_backend"] == "vertex":
            planned["vertex"] = _vertex_plan(settings, version)
            planned["model_dir"] = planned["vertex"]["model_dir"]
        return planned

    def _vertex_plan(settings, version: str) -> dict:
        from airflow.sdk.exceptions import AirflowFailException
        from vertex.training import model_dir_for

        if not settings.vertex_project or not settings.trainer_image_uri:
            raise AirflowFailException("training_backend=vertex: set RECSYS_VERTEX_PROJECT and "
                                       "RECSYS_TRAINER_IMAGE_URI (or the Variables)")  # fmt: skip
        try:
            root = settings.vertex_training_root()
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc
        staged = settings.extract_root.startswith("gs://")
        base = f"{root}/models/{version}"
        return {"project": settings.vertex_project, "region": settings.vertex_region,
                "gcp_conn_id": settings.gcp_conn_id, "image": settings.trainer_image_uri,
                "extract_root": settings.extract_root if staged else f"{root}/windows/{version}/extract",
                "base_output_dir": base, "model_dir": model_dir_for(base),
                "machine_type": settings.vertex_training_machine_type,
                "service_account": settings.vertex_service_account,
                "poll_seconds": settings.vertex_poll_seconds,
                "timeout_seconds": settings.vertex_training_timeout_seconds}  # fmt: skip

    @task.branch
    def choose_backend(plan: dict) -> str:
        return "train" if plan["backend"] == "local" else "stage_window"

    @task(multiple_outputs=False, execution_timeout=timedelta(hours=3))
    def train(plan: dict) -> dict:
        """Train, evaluate and export locally in the worker (TensorFlow is imported here only)."""
        from datetime import date

        from airflow.sdk.exceptions import AirflowSkipException

        from recsys.training.data import NotEnoughDataError
        from recsys.training.fit import TrainParams
        from recsys.training.train import train_and_export

        params = get_current_context()["params"]
        train_params = TrainParams.from_params(params)
        extract_root = load_settings(use_airflow_variables=True).extract_root
        try:
            result = train_and_export(extract_root, date.fromisoformat(plan["end_day"]), params["window_days"],
                                      params["holdout_days"], plan["model_dir"], train_params)  # fmt: skip
        except NotEnoughDataError as exc:
            raise AirflowSkipException(str(exc)) from exc
        return {"model": result["metrics"]["model"], "popularity": result["metrics"]["popularity"],
                "index": result["index"]["serving"], "window": result["window"]}  # fmt: skip

    @task(multiple_outputs=True)  # train_on_vertex reads its keys
    def stage_window(plan: dict) -> dict:
        """Copy the window to gs:// for the Vertex job and build the job (skip if too little data)."""
        from datetime import date

        from airflow.sdk.exceptions import AirflowSkipException
        from vertex.training import trainer_job_spec

        from recsys.training import MIN_INTERACTIONS
        from recsys.training.fit import TrainParams
        from recsys.training.staging import stage_window as copy_window
        from recsys.training.staging import window_manifests, window_rows

        params, vertex = get_current_context()["params"], plan["vertex"]
        end_day = date.fromisoformat(plan["end_day"])
        extract_root = load_settings(use_airflow_variables=True).extract_root
        manifests = window_manifests(extract_root, end_day, params["window_days"])
        rows = window_rows(manifests)
        if rows < MIN_INTERACTIONS:
            raise AirflowSkipException(f"only {rows} interactions in the window ending {end_day}; "
                                       f"need at least {MIN_INTERACTIONS}")  # fmt: skip
        if vertex["extract_root"] != extract_root:
            staged = copy_window(extract_root, manifests, vertex["extract_root"])
        else:
            staged = {"target": extract_root, "rows": rows, "note": "already on gs://, not copied"}
        train_params = TrainParams.from_params(params)
        job = trainer_job_spec(version=plan["version"], image_uri=vertex["image"], extract_root=vertex["extract_root"],
                               end_day=plan["end_day"], window_days=params["window_days"],
                               holdout_days=params["holdout_days"], train_params=train_params.as_dict(),
                               base_output_dir=vertex["base_output_dir"], machine_type=vertex["machine_type"],
                               service_account=vertex["service_account"])  # fmt: skip
        return {"staged": staged, "custom_job": job}

    @task(multiple_outputs=False)
    def gate(plan: dict) -> dict:
        """Compare with the champion on the same holdout, write the model card, promote if blessed."""
        from recsys.training.gate import GatePolicy, run_gate

        params = get_current_context()["params"]
        policy = GatePolicy(tolerance=float(params["tolerance"]), force=bool(params["force"]))
        return run_gate(
            plan["model_dir"], load_settings(use_airflow_variables=True).models_root, plan["version"], policy
        )

    @task.short_circuit
    def blessed(decision: dict) -> bool:
        return bool(decision["blessed"])

    @task(multiple_outputs=False, outlets=[BLESSED_MODEL])
    def publish(decision: dict) -> dict:
        """Announce the blessed model to downstream DAGs (deployment)."""
        event = {"version": decision["version"], "model_dir": decision["model_dir"],
                 "top_100_accuracy": decision["model"]["top_100_accuracy"], "forced": decision["forced"]}  # fmt: skip
        get_current_context()["outlet_events"][BLESSED_MODEL].extra = event
        return event

    @task(multiple_outputs=False)
    def deliver(event: dict) -> dict | None:
        """The blessed model's batch top-k, replacing the two_tower rows of the recommendations table."""
        from recsys.delivery.two_tower import deliver

        k = get_current_context()["params"]["deliver_top_k"]
        if not k:
            return None
        settings = load_settings(use_airflow_variables=True)
        return deliver(event["model_dir"], event["version"], settings.delivery_conn_id, k)

    from airflow.providers.standard.operators.empty import EmptyOperator
    from vertex.operators import DeferrableCustomJobOperator

    planned = plan()
    staged = stage_window(planned)
    on_vertex = DeferrableCustomJobOperator(
        task_id="train_on_vertex", custom_job=staged["custom_job"],
        project_id="{{ ti.xcom_pull('plan')['vertex']['project'] }}",
        region="{{ ti.xcom_pull('plan')['vertex']['region'] }}",
        gcp_conn_id="{{ ti.xcom_pull('plan')['vertex']['gcp_conn_id'] }}",
        poll_interval="{{ ti.xcom_pull('plan')['vertex']['poll_seconds'] }}",
        operation_timeout="{{ ti.xcom_pull('plan')['vertex']['timeout_seconds'] }}",
    )  # fmt: skip
    local = train(planned)
    # joins the two backends: skipped (and so is the gate) when the chosen one skipped for lack of data
    model_exported = EmptyOperator(task_id="model_exported", trigger_rule="none_failed_min_one_success")
    decision = gate(planned)
    choose_backend(planned) >> [local, staged]
    [local, on_vertex] >> model_exported >> decision
    published = publish(decision)
    blessed(decision) >> published
    deliver(published)


recsys_two_tower()
