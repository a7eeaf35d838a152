"""
### recsys_two_tower — train, evaluate, gate and export the two-tower retrieval model

Runs whenever `recsys_extract` publishes a partition (asset `recsys_extract_partitions`) and from
the UI with the form below. Never two runs at once (`max_active_runs=1`).

**Tasks**
1. `plan` — the window (default: 30 days ending at the newest extracted day) and a new model version.
2. `train` (`training_backend=local`, the default) — in the worker: TensorFlow Recommenders
   two-tower model on the window (history-aware query tower: each example sees the user's newest
   `history_length` events strictly before it), temporal holdout = the newest `holdout_days`, validation =
   the newest 10% of the rows before it. On validation only: `tuning_trials` parameter sets are tried
   (Optuna TPE + pruning, within `tuning_budget_minutes`; the query tower, epochs and no-history policy
   included) and the baselines' parameters are chosen; the holdout is read once, after the final fit.
   The model and the baselines (popularity, first-event prior, item-kNN, RP3beta, EASE) are evaluated
   **as served** (`recsys.policy`: history =
   window + earlier holdout events, seen items excluded, no-history policy), overall and per
   segment (seen users / new users with history / no history). Exports the query model, a
   brute-force and (when it qualifies) a tuned ScaNN SavedModel, candidate embeddings, the
   history snapshot the server starts from, metadata.
   Too few interactions → the run is **skipped** with the reason.
   `training_backend=vertex` does the same job on Vertex AI instead: `stage_window` copies the
   window to `gs://` (unless the storage root is already there) and `train_on_vertex` runs the
   trainer image as a custom job (deferrable: no worker slot while it runs; a retry reattaches to
   the same job; on timeout the job is cancelled) with `AIP_MODEL_DIR` = the run's model dir. With
   `tuning_trials` > 0 it runs a Vertex AI hyperparameter tuning job instead (`tune_on_vertex`:
   deferrable, reattaching on retry; each trial measures its values on the validation split and reports
   them through cloudml-hypertune); `adopt_best_trial` makes the best trial's model the candidate.
   `training_backend=cloud_run` runs the same image as an execution of the Cloud Run job
   `cloud_run_job_name` (created or updated first) with the window as args and `AIP_MODEL_DIR` as
   env overrides (`train_on_cloud_run`: deferrable; a retry reattaches to the run's execution; on
   timeout or kill the execution is cancelled).
   Beside the model, a **two-stage policy** is trained: candidates from the tuned item-item baselines,
   popularity, recent popularity and the first-event prior (`candidates_per_retriever` each), ordered by a
   LightGBM LambdaMART ranker over point-in-time features (ranker learned on the newest 20% of the rows with
   the retrievers fitted on the older part; its parameters and rounds chosen on validation). The policy
   **served** is the best on validation among the two-stage policy, the two-tower model and every baseline:
   a baseline that wins is exported and served like any model.
3. `gate` — evaluates the current champion on the rows the candidate was scored on; blesses the served
   policy unless it is worse than the champion by more than `tolerance` (or `force`); reports it against the
   best baseline (`gate_baseline`); writes `model_card.md`, `training_plot.png`, `metrics.json`; moves
   `models/champion.json` atomically. Alerts (the configured notifiers) when a baseline is served or when
   `alert_after_runs_without_champion` runs in a row brought no new champion. Times out after 1 hour.
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

from recsys.alerts import deadline_alert, task_defaults  # notifiers built from settings at parse time
from recsys.assets import BLESSED_MODEL, EXTRACT_PARTITIONS
from recsys.config import ACCELERATORS, load_dag_settings, load_settings  # stdlib only: cheap at parse time
from recsys.steps.two_tower import TrainingPlan
from recsys.steps.xcom import pulled

_SETTINGS = load_dag_settings()  # parse time: the environment only (retries, notifiers, deadlines, tuning defaults)
PARAMS = {
    "end_day": Param(
        None,
        type=["null", "string"],
        format="date",
        title="Last day of the window",
        description="YYYY-MM-DD; empty = the newest extracted partition.",
    ),
    "window_days": Param(
        30,
        type="integer",
        minimum=2,
        maximum=365,
        title="Window (days)",
        description="Days of interactions in the training window, ending at the last day.",
    ),
    "holdout_days": Param(
        1,
        type="integer",
        minimum=1,
        maximum=30,
        title="Holdout (newest days)",
        description="The newest days of the window are held out for the temporal evaluation and the gate.",
    ),
    "epochs": Param(
        20,
        type="integer",
        minimum=1,
        maximum=50,
        title="Epochs",
        description="Passes over the training examples; with tuning, the most a trial runs (each stops when "
        "validation stops improving) and the final fit uses the best trial's best epoch.",
    ),
    "embedding_dim": Param(
        32,
        type="integer",
        minimum=4,
        maximum=512,
        title="Embedding size",
        description="Dimensions of the user/item embeddings and of the query vector.",
    ),
    "learning_rate": Param(
        0.05,
        type="number",
        exclusiveMinimum=0,
        maximum=1,
        title="Learning rate",
        description="The optimizer's learning rate (Adagrad unless tuning picks Adam).",
    ),
    "batch_size": Param(
        2048,
        type="integer",
        minimum=32,
        maximum=65536,
        title="Batch size",
        description="Training examples per step (in-batch negatives).",
    ),
    "history_length": Param(
        50,
        type="integer",
        minimum=1,
        maximum=500,
        title="History length",
        description="How many of a user's newest events the query tower reads.",
    ),
    "tuning_trials": Param(
        _SETTINGS.tuning_trials,
        type="integer",
        minimum=0,
        maximum=200,
        title="Tuning trials",
        description="Parameter sets tried on the validation split (the newest 10% of the training rows) before "
        "the final fit; 0 = train once with the values below. The first trial is always the values below.",
    ),
    "tuning_budget_minutes": Param(
        _SETTINGS.tuning_budget_minutes,
        type="number",
        exclusiveMinimum=0,
        maximum=1440,
        title="Tuning budget (minutes)",
        description="Tuning stops starting trials after this long (a running trial stops at its next epoch).",
    ),
    "query_tower": Param(
        "pooling",
        enum=["pooling", "attention"],
        title="Query tower",
        description="How the query reads the history: recency-weighted pooling or causal self-attention "
        "(SASRec-style). Tuning may choose the other one on validation.",
    ),
    "exclude_seen": Param(
        True,
        type="boolean",
        title="Exclude seen items",
        description="Never recommend items the user already interacted with (served and evaluated).",
    ),
    "no_history": Param(
        "model",
        enum=["model", "prior", "popular"],
        title="Users without history get",
        description="model = the learned no-history query (demographics when known); prior = the items users most "
        "often start with; popular = the most popular items. Tuning chooses among them on validation.",
    ),
    "candidates_per_retriever": Param(
        _SETTINGS.candidates_per_retriever,
        type="integer",
        minimum=1,
        maximum=2000,
        title="Candidates per retriever (two-stage policy)",
        description="Each retriever (item-kNN, RP3beta, EASE, popularity, recent popularity, first-event prior) "
        "adds its top N to a query's pool, which the LightGBM ranker orders.",
    ),
    "served_policy": Param(
        "best",
        enum=["best", "two_stage", "model"],
        title="Policy to serve",
        description="best = whichever of the two-stage policy, the two-tower model and the tuned baselines scores "
        "best on validation; two_stage / model = that one, whatever validation says (recorded in the model card).",
    ),
    "gate_baseline": Param(
        _SETTINGS.gate_baseline,
        enum=["best", "popularity"],
        title="Baseline the served policy is reported against",
        description="best = the best of popularity, first-event prior, item-kNN, RP3beta and EASE (each tuned on "
        "validation) on the holdout; popularity = popularity only. The served policy itself is the best on "
        "validation (a baseline included), never chosen on the holdout.",
    ),
    "tolerance": Param(
        0.01,
        type="number",
        minimum=0,
        maximum=1,
        title="Allowed drop vs the champion (absolute top-100 accuracy)",
        description="The candidate is blessed if its top-100 accuracy is at most this much below the champion's.",
    ),
    "force": Param(
        False,
        type="boolean",
        title="Bless even if the gate says no",
        description="Promote the candidate to champion whatever the gate decides (recorded in the model card).",
    ),
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
        enum=["local", "vertex", "cloud_run"],
        title="Where to train",
        description="local = in the Airflow worker; vertex = a Vertex AI custom job; cloud_run = a Cloud Run "
        "job execution (cheaper for small models); both run the trainer image (RECSYS_TRAINER_IMAGE_URI).",
    ),
    "vertex_replicas": Param(
        None,
        type=["null", "integer"],
        minimum=1,
        maximum=16,
        title="Vertex AI training replicas",
        description="training_backend=vertex: machines that train together (> 1: MultiWorkerMirroredStrategy, "
        "tuning_trials must be 0). Empty = the setting vertex_training_replica_count.",
    ),
    "vertex_machine_type": Param(
        None,
        type=["null", "string"],
        title="Vertex AI training machine type",
        description="e.g. n1-standard-8, g2-standard-8, a2-highgpu-1g. Empty = the setting.",
    ),
    "vertex_accelerator_type": Param(
        None,
        enum=[None, *ACCELERATORS],
        title="Vertex AI accelerator",
        description="GPUs per training machine (checked against the machine type). Empty = the setting.",
    ),
    "vertex_accelerator_count": Param(
        None,
        type=["null", "integer"],
        minimum=0,
        maximum=8,
        title="Vertex AI accelerators per machine",
        description="Empty = the setting.",
    ),
}


_plan = TrainingPlan.from_xcom  # the plan task's XCom dict, as the typed plan


def _settings():
    return load_settings(use_airflow_variables=True)


@dag(
    dag_id="recsys_two_tower",
    deadline=deadline_alert(_SETTINGS, "recsys_two_tower", _SETTINGS.training_deadline_hours),
    schedule=[EXTRACT_PARTITIONS],
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=task_defaults(_SETTINGS),
    tags=["recsys", "training"],
    params=PARAMS,
    doc_md=__doc__,
)
def recsys_two_tower():
    @task(multiple_outputs=False)
    def plan() -> dict:
        """Pick the window and a fresh model version directory."""
        from recsys.steps import two_tower

        return two_tower.plan(_settings(), get_current_context()["params"])

    @task.branch
    def choose_backend(plan: dict) -> str:
        return "train" if plan["backend"] == "local" else "stage_window"

    @task(multiple_outputs=False, execution_timeout=timedelta(hours=3))
    def train(plan: dict) -> dict:
        """Train, evaluate and export locally in the worker (TensorFlow is imported here only)."""
        from recsys.steps import two_tower

        return two_tower.train(_settings(), _plan(plan), get_current_context()["params"])

    @task(multiple_outputs=True)  # the remote training task reads its keys
    def stage_window(plan: dict) -> dict:
        """Copy the window to gs:// for the remote job and build its request (skip if too little data)."""
        from recsys.steps import two_tower

        return two_tower.stage_window(_settings(), _plan(plan), get_current_context()["params"])

    @task.branch
    def remote_backend(staged: dict) -> str:
        from recsys.steps import two_tower

        return two_tower.remote_backend(staged)

    @task(multiple_outputs=False)
    def adopt_best_trial(plan: dict, tuned: dict) -> dict:
        """The best Vertex tuning trial's model becomes this run's candidate (copied to the run's model dir)."""
        from recsys.steps import two_tower

        return two_tower.adopt_best_trial(_plan(plan), tuned)

    @task(multiple_outputs=False, execution_timeout=timedelta(hours=1))
    def gate(plan: dict) -> dict:
        """Compare the served policy with the champion on the same rows, write the model card, promote if
        blessed, alert when a baseline is served."""
        from recsys.steps import two_tower

        return two_tower.gate(_settings(), _plan(plan), get_current_context()["params"])

    @task.short_circuit
    def blessed(decision: dict) -> bool:
        return bool(decision["blessed"])

    @task(multiple_outputs=False, outlets=[BLESSED_MODEL])
    def publish(decision: dict) -> dict:
        """Announce the blessed model to downstream DAGs (deployment)."""
        from recsys.steps import two_tower

        event = two_tower.blessed_event(decision)
        get_current_context()["outlet_events"][BLESSED_MODEL].extra = event
        return event

    @task(multiple_outputs=False)
    def deliver(event: dict) -> dict | None:
        """The blessed model's batch top-k, replacing the two_tower rows of the recommendations table."""
        from recsys.steps import two_tower

        return two_tower.deliver(_settings(), event, get_current_context()["params"]["deliver_top_k"])

    from airflow.providers.standard.operators.empty import EmptyOperator
    from cloud_run.operators import CloudRunJobExecutionOperator
    from vertex.operators import DeferrableCustomJobOperator, DeferrableHyperparameterTuningJobOperator

    planned = plan()
    staged = stage_window(planned)
    remote = {
        "project_id": pulled("plan", "remote", "project"),
        "region": pulled("plan", "remote", "region"),
        "gcp_conn_id": pulled("plan", "remote", "gcp_conn_id"),
        "poll_interval": pulled("plan", "remote", "poll_seconds"),
    }
    on_vertex = DeferrableCustomJobOperator(
        task_id="train_on_vertex",
        custom_job=staged["custom_job"],
        operation_timeout=pulled("plan", "remote", "timeout_seconds"),
        **remote,
    )
    tune_on_vertex = DeferrableHyperparameterTuningJobOperator(
        task_id="tune_on_vertex",
        hyperparameter_tuning_job=staged["tuning_job"],
        operation_timeout=pulled("plan", "remote", "timeout_seconds"),
        **remote,
    )
    on_cloud_run = CloudRunJobExecutionOperator(
        task_id="train_on_cloud_run",
        job=staged["job"],
        overrides=staged["overrides"],
        job_id=pulled("plan", "remote", "job_id"),
        run_key=pulled("plan", "version"),
        timeout_seconds=pulled("plan", "remote", "timeout_seconds"),
        **remote,
    )
    local = train(planned)
    # joins the backends: skipped (and so is the gate) when the chosen one skipped for lack of data
    model_exported = EmptyOperator(task_id="model_exported", trigger_rule="none_failed_min_one_success")
    decision = gate(planned)
    choose_backend(planned) >> [local, staged]
    remote_backend(staged) >> [on_vertex, tune_on_vertex, on_cloud_run]
    adopted = adopt_best_trial(planned, tune_on_vertex.output)
    [local, on_vertex, adopted, on_cloud_run] >> model_exported >> decision
    published = publish(decision)
    blessed(decision) >> published
    deliver(published)


recsys_two_tower()
