"""One typed settings object for the whole project.

Precedence for every field: an explicit override, then the environment variable ``RECSYS_<FIELD>``,
then the Airflow Variable ``recsys_<field>`` (only when :func:`load_settings` is called with
``use_airflow_variables=True``, i.e. inside a running task), then the default below.
Never call this at DAG-parse time: DAG files pass names, tasks read settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "RECSYS_"
VARIABLE_PREFIX = "recsys_"

# Pools (created by `python -m recsys_devtools.demo setup`; DAGs name them at parse time, so they are constants).
# Personalize allows 5 import jobs in flight per region: 5 slots that count deferred (waiting) tasks too.
PERSONALIZE_IMPORT_POOL = ("personalize_imports", 5, "Personalize dataset import jobs in flight (limit 5/region)")

DEFAULT_EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "watch")


SPARK_BACKENDS = ("spark-local", "glue", "emr-serverless", "dataproc")


def deployed_spark_backends(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The Spark engines this deployment's ``recsys_extract`` has tasks for (``RECSYS_SPARK_BACKENDS``,
    comma-separated; default ``spark-local``). Read when the DAG file is parsed, so a deployment that does
    not use a cloud engine does not import its provider (Dataproc's client adds 0.4 s to every parse)."""
    raw = (os.environ if env is None else env).get(ENV_PREFIX + "SPARK_BACKENDS", "spark-local")
    wanted = tuple(b.strip() for b in raw.split(",") if b.strip())
    unknown = [b for b in wanted if b not in SPARK_BACKENDS]
    if unknown:
        raise ValueError(f"{ENV_PREFIX}SPARK_BACKENDS: unknown {unknown}; choose from {', '.join(SPARK_BACKENDS)}")
    return wanted


def _default_storage_root() -> str:
    home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
    return (home / "recsys-data").resolve().as_uri()


@dataclass(frozen=True)
class Settings:
    """Storage roots, connection ids, names and extraction defaults."""

    storage_root: str = field(default_factory=_default_storage_root)
    source_conn_id: str = "recsys_source"
    aws_conn_id: str = "aws_default"
    gcp_conn_id: str = "google_cloud_default"
    extract_chunk_rows: int = 50_000
    extraction_backend: str = "auto"  # auto | arrow | rows | spark-local | glue | emr-serverless | dataproc
    # The Spark backends (recsys.data.spark_extract): where the job's code goes, the engines' resources.
    spark_jdbc_jars: str = "/usr/share/java/postgresql.jar,/usr/share/java/mariadb-java-client.jar"
    spark_code_uri: str = (
        ""  # s3:// or gs:// prefix for the job's script, zip and jars; empty = <storage_root>/code/spark
    )
    glue_job_name: str = "recsys-extract"
    glue_role_arn: str = ""  # the job's IAM role (README: Spark backends, IAM)
    emr_serverless_application_id: str = ""
    emr_serverless_role_arn: str = ""
    dataproc_project: str = ""  # empty = vertex_project
    dataproc_region: str = ""  # empty = vertex_region
    dataproc_service_account: str = ""
    spark_poll_seconds: int = 30  # cloud engines: how often the triggerer polls the job (read at parse time)
    spark_timeout_seconds: int = 4 * 3600
    known_event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    anomaly_lookback_partitions: int = 7
    anomaly_low_ratio: float = 0.5
    anomaly_high_ratio: float = 2.0
    vertex_project: str = ""
    vertex_region: str = "us-central1"
    vertex_model_display_name: str = "recsys-two-tower"
    vertex_endpoint_display_name: str = "recsys-retrieval"
    vertex_dedicated_endpoint: bool = False  # new endpoints get their own DNS (dedicatedEndpointEnabled)
    serving_image_uri: str = ""
    vertex_poll_seconds: float = 10.0
    vertex_operation_timeout_seconds: float = 3600.0  # upload / deploy / undeploy waits
    trainer_image_uri: str = ""  # docker/trainer.Dockerfile in Artifact Registry (training_backend=vertex)
    vertex_staging_uri: str = ""  # gs:// prefix for staged windows and job outputs when storage_root is not gs://
    vertex_training_machine_type: str = "n1-standard-8"
    vertex_service_account: str = ""  # the job's identity; empty = the project's default Vertex service agent
    vertex_training_timeout_seconds: float = 4 * 3600.0
    # Cloud Run Jobs training (training_backend=cloud_run): the trainer image as a job, one execution per run
    cloud_run_project: str = ""  # empty = vertex_project
    cloud_run_region: str = ""  # empty = vertex_region
    cloud_run_job_name: str = "recsys-trainer"
    cloud_run_cpu: str = "4"
    cloud_run_memory: str = "16Gi"
    cloud_run_service_account: str = ""  # the job's identity; empty = the Compute Engine default
    cloud_run_timeout_seconds: float = 4 * 3600.0
    # Amazon Personalize: recsys_personalize_setup records the ARNs below as Variables (or set them by hand / IaC).
    personalize_s3_uri: str = ""  # s3://bucket/prefix the role can read (CSVs, batch input) and write (output)
    personalize_role_arn: str = ""  # the role Personalize assumes to read/write that prefix
    personalize_interactions_dataset_arn: str = ""
    personalize_users_dataset_arn: str = ""
    personalize_items_dataset_arn: str = ""
    personalize_solution_arn: str = ""  # its recipe decides whether UPDATE training exists
    personalize_campaign_arn: str = ""  # empty = no campaign to update
    personalize_dataset_group_arn: str = ""
    personalize_event_tracker_arn: str = ""
    personalize_tracking_id: str = ""  # the event tracker's id the application sends PutEvents with
    personalize_filter_arn: str = ""  # batch inference filter; empty = none
    personalize_poll_seconds: float = 60.0
    # recsys_extract's first data day (read at parse time): unpausing it catches up from here.
    extract_start_date: str = "2026-11-01"
    # Task retries of every DAG (read at parse time): a killed or failed try is retried after the delay.
    task_retries: int = 2
    retry_delay_seconds: int = 120
    # Alerts (read at parse time): failure notifications and deadlines; empty/0 = off.
    alert_email_to: str = ""  # comma-separated recipients (SmtpNotifier through alert_smtp_conn_id)
    alert_smtp_conn_id: str = "smtp_default"
    alert_webhook_conn_id: str = ""  # an HTTP connection whose host is the receiver's base URL
    alert_webhook_endpoint: str = ""  # path under it, e.g. "hooks/recsys"
    extract_deadline_hours: float = 0.0  # recsys_extract must finish this long after its run is queued
    training_deadline_hours: float = 0.0  # recsys_two_tower, likewise
    # The application database the recommendations table is published to (an Airflow SQL connection).
    delivery_conn_id: str = "recsys_app"

    @property
    def extract_root(self) -> str:
        """Root of the extraction partitions (``<storage_root>/extract``)."""
        return self.storage_root.rstrip("/") + "/extract"

    @property
    def models_root(self) -> str:
        """Root of the versioned model directories and the champion pointer."""
        return self.storage_root.rstrip("/") + "/models"

    def personalize_dataset_arns(self) -> dict[str, str]:
        return {
            "interactions": self.personalize_interactions_dataset_arn,
            "users": self.personalize_users_dataset_arn,
            "items": self.personalize_items_dataset_arn,
        }

    def vertex_training_root(self) -> str:
        """The ``gs://`` folder a remote training job (Vertex AI, Cloud Run) reads from and writes to."""
        root = self.storage_root if self.storage_root.startswith("gs://") else self.vertex_staging_uri
        if not root.startswith("gs://"):
            raise ValueError(
                "training on Vertex AI or Cloud Run needs storage_root or vertex_staging_uri on gs:// "
                f"(storage_root={self.storage_root!r}, vertex_staging_uri={self.vertex_staging_uri!r})"
            )
        return root.rstrip("/")


def _coerce(raw: Any, default: Any) -> Any:
    """Convert a string from env/Variables to the type of the field's default."""
    if not isinstance(raw, str):
        return raw
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, tuple):
        text = raw.strip()
        items = json.loads(text) if text.startswith("[") else text.split(",")
        return tuple(str(item).strip() for item in items if str(item).strip())
    return raw


def _airflow_variable_getter() -> Callable[[str], Any]:
    from airflow.sdk import Variable

    return lambda key: Variable.get(key, default=None)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    use_airflow_variables: bool = False,
) -> Settings:
    """Build :class:`Settings` from overrides, environment and (optionally) Airflow Variables."""
    overrides = dict(overrides or {})
    env = os.environ if env is None else env
    get_variable = _airflow_variable_getter() if use_airflow_variables else (lambda _key: None)
    defaults = Settings()
    unknown = set(overrides) - {f.name for f in fields(Settings)}
    if unknown:
        raise ValueError(f"unknown setting(s): {sorted(unknown)}")
    values: dict[str, Any] = {}
    for f in fields(Settings):
        default = getattr(defaults, f.name)
        if f.name in overrides and overrides[f.name] is not None:
            raw = overrides[f.name]
        elif (ENV_PREFIX + f.name.upper()) in env:
            raw = env[ENV_PREFIX + f.name.upper()]
        else:
            raw = get_variable(VARIABLE_PREFIX + f.name)
            if raw is None:
                continue
        try:
            values[f.name] = _coerce(raw, default)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"setting {f.name!r} has an invalid value {raw!r}: {exc}") from exc
    return dataclasses.replace(defaults, **values)
