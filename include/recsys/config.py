"""Settings in sections, read at the right time.

**Task-time settings** (:class:`Settings`: one section per subsystem — ``storage``, ``connections``,
``extract``, ``spark``, ``vertex``, ``training``, ``cloud_run``, ``personalize``) are read inside tasks:
an explicit override, then the environment variable ``RECSYS_<NAME>``, then the Airflow Variable
``recsys_<name>`` (when ``use_airflow_variables=True``), then the default. A task reads them once
(:func:`load_settings`, or :func:`load_section` for one section, which reads only that section's Variables)
and hands each function the section or the values it uses.

**Parse-time settings** (:class:`DagSettings`: retries, alerts, deadlines, the first extraction day, the
Spark engines' waits) shape the DAGs themselves, so they are read when the DAG files are parsed, from the
environment only (:func:`load_dag_settings`): parsing never reads Variables. A Variable set for one of them
would be silently ignored, so every task that reads Variables (:func:`load_settings` with
``use_airflow_variables=True``) also looks for such Variables and logs a warning naming each one and the
environment variable to set instead (once per process).

``<NAME>`` is the setting's flat name (``personalize_s3_uri`` is ``settings.personalize.s3_uri``), listed
by :func:`setting_names`; docs/settings.md has the table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

log = logging.getLogger(__name__)

ENV_PREFIX = "RECSYS_"
VARIABLE_PREFIX = "recsys_"

# Pools (created by `python -m recsys_devtools.demo setup`; DAGs name them at parse time, so they are constants).
# Personalize allows 5 import jobs in flight per region: 5 slots that count deferred (waiting) tasks too.
PERSONALIZE_IMPORT_POOL = ("personalize_imports", 5, "Personalize dataset import jobs in flight (limit 5/region)")

DEFAULT_EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "watch")


SPARK_BACKENDS = ("spark-local", "glue", "emr-serverless", "dataproc")
# accelerator type -> (the machine series it attaches to, the counts per machine it comes in); on the
# a2 / a3 series the count is part of the machine type (a2-highgpu-2g: 2), on the others it is chosen
ACCELERATORS = {
    "NVIDIA_TESLA_T4": ("n1-", (1, 2, 4)),
    "NVIDIA_TESLA_V100": ("n1-", (1, 2, 4, 8)),
    "NVIDIA_TESLA_P100": ("n1-", (1, 2, 4)),
    "NVIDIA_TESLA_P4": ("n1-", (1, 2, 4)),
    "NVIDIA_L4": ("g2-standard-", (1, 2, 4, 8)),
    "NVIDIA_TESLA_A100": ("a2-highgpu-", (1, 2, 4, 8)),
    "NVIDIA_A100_80GB": ("a2-ultragpu-", (1, 2, 4, 8)),
    "NVIDIA_H100_80GB": ("a3-highgpu-", (1, 2, 4, 8)),
}


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


def named(name: str, default: Any = dataclasses.MISSING, **kwargs) -> Any:
    """A field whose flat setting name is ``name`` rather than the section's prefix + the field's name."""
    return field(default=default, metadata={"name": name}, **kwargs)


class Section:
    """Base of the settings sections: a frozen dataclass whose fields map to flat setting names."""

    PREFIX: ClassVar[str] = ""

    @classmethod
    def setting_names(cls) -> dict[str, str]:
        """field name -> flat setting name (``RECSYS_<NAME>``, Variable ``recsys_<name>``)."""
        return {f.name: f.metadata.get("name", cls.PREFIX + f.name) for f in fields(cls)}


@dataclass(frozen=True)
class StorageSettings(Section):
    """Where the lake, the models and the reports live (``file://``, ``s3://``, ``gs://``)."""

    root: str = named("storage_root", default_factory=_default_storage_root)

    @property
    def extract_root(self) -> str:
        """Root of the extraction partitions (``<storage_root>/extract``)."""
        return self.root.rstrip("/") + "/extract"

    @property
    def models_root(self) -> str:
        """Root of the versioned model directories and the champion pointer."""
        return self.root.rstrip("/") + "/models"


@dataclass(frozen=True)
class ConnectionSettings(Section):
    """Airflow connection ids."""

    source: str = named("source_conn_id", "recsys_source")
    aws: str = named("aws_conn_id", "aws_default")
    gcp: str = named("gcp_conn_id", "google_cloud_default")
    # The application database the recommendations table is published to (an Airflow SQL connection).
    delivery: str = named("delivery_conn_id", "recsys_app")


@dataclass(frozen=True)
class ExtractSettings(Section):
    """How ``recsys_extract`` reads and checks a day."""

    chunk_rows: int = named("extract_chunk_rows", 50_000)
    backend: str = named(
        "extraction_backend", "auto"
    )  # auto | arrow | rows | spark-local | glue | emr-serverless | dataproc
    known_event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    anomaly_lookback_partitions: int = 7
    anomaly_low_ratio: float = 0.5
    anomaly_high_ratio: float = 2.0


@dataclass(frozen=True)
class SparkSettings(Section):
    """The Spark backends (recsys.data.spark_extract): where the job's code goes, the engines' resources."""

    jdbc_jars: str = named("spark_jdbc_jars", "/usr/share/java/postgresql.jar,/usr/share/java/mariadb-java-client.jar")
    code_uri: str = named(
        "spark_code_uri", ""
    )  # s3:// or gs:// prefix for the job's code; empty = <storage_root>/code/spark
    glue_job_name: str = "recsys-extract"
    glue_role_arn: str = ""  # the job's IAM role (docs: Spark backends, IAM)
    emr_serverless_application_id: str = ""
    emr_serverless_role_arn: str = ""
    dataproc_project: str = ""  # empty = vertex_project
    dataproc_region: str = ""  # empty = vertex_region
    dataproc_service_account: str = ""


@dataclass(frozen=True)
class VertexSettings(Section):
    """Vertex AI: the project, the serving image, the registry model and the endpoint."""

    PREFIX: ClassVar[str] = "vertex_"
    project: str = ""
    region: str = "us-central1"
    model_display_name: str = "recsys-two-tower"
    endpoint_display_name: str = "recsys-retrieval"
    dedicated_endpoint: bool = False  # new endpoints get their own DNS (dedicatedEndpointEnabled)
    serving_image_uri: str = named("serving_image_uri", "")
    poll_seconds: float = 10.0
    operation_timeout_seconds: float = 3600.0  # upload / deploy / undeploy waits


@dataclass(frozen=True)
class TrainingSettings(Section):
    """Remote training (``training_backend=vertex`` or ``cloud_run``): the trainer image and its job."""

    image_uri: str = named("trainer_image_uri", "")  # docker/trainer.Dockerfile in Artifact Registry
    staging_uri: str = named("vertex_staging_uri", "")  # gs:// prefix for staged windows when storage_root is not
    machine_type: str = named("vertex_training_machine_type", "n1-standard-8")
    replica_count: int = named("vertex_training_replica_count", 1)  # > 1: MultiWorkerMirroredStrategy
    accelerator_type: str = named("vertex_training_accelerator_type", "")  # e.g. NVIDIA_L4; "" = none
    accelerator_count: int = named("vertex_training_accelerator_count", 0)  # per replica
    service_account: str = named("vertex_service_account", "")  # empty = the project's default Vertex service agent
    timeout_seconds: float = named("vertex_training_timeout_seconds", 4 * 3600.0)


@dataclass(frozen=True)
class CloudRunSettings(Section):
    """Cloud Run Jobs training (``training_backend=cloud_run``): one execution of the job per run."""

    PREFIX: ClassVar[str] = "cloud_run_"
    project: str = ""  # empty = vertex_project
    region: str = ""  # empty = vertex_region
    job_name: str = "recsys-trainer"
    cpu: str = "4"
    memory: str = "16Gi"
    service_account: str = ""  # the job's identity; empty = the Compute Engine default
    timeout_seconds: float = 4 * 3600.0


@dataclass(frozen=True)
class PersonalizeSettings(Section):
    """Amazon Personalize: ``recsys_personalize_setup`` records the ARNs as Variables (or set them by hand / IaC)."""

    PREFIX: ClassVar[str] = "personalize_"
    s3_uri: str = ""  # s3://bucket/prefix the role can read (CSVs, batch input) and write (output)
    role_arn: str = ""  # the role Personalize assumes to read/write that prefix
    interactions_dataset_arn: str = ""
    users_dataset_arn: str = ""
    items_dataset_arn: str = ""
    solution_arn: str = ""  # its recipe decides whether UPDATE training exists
    campaign_arn: str = ""  # empty = no campaign to update
    dataset_group_arn: str = ""
    event_tracker_arn: str = ""
    tracking_id: str = ""  # the event tracker's id the application sends PutEvents with
    filter_arn: str = ""  # batch inference filter; empty = none
    poll_seconds: float = 60.0

    def dataset_arns(self) -> dict[str, str]:
        return {
            "interactions": self.interactions_dataset_arn,
            "users": self.users_dataset_arn,
            "items": self.items_dataset_arn,
        }


@dataclass(frozen=True)
class DagSettings(Section):
    """Parse-time settings (environment only): they shape the DAGs, so a Variable cannot change them."""

    extract_start_date: str = "2026-11-01"  # recsys_extract's first data day: unpausing it catches up from here
    task_retries: int = 2  # every DAG's tasks: a killed or failed try is retried after the delay
    retry_delay_seconds: int = 120
    alert_email_to: str = ""  # comma-separated recipients (SmtpNotifier through alert_smtp_conn_id); empty = off
    alert_smtp_conn_id: str = "smtp_default"
    alert_webhook_conn_id: str = ""  # an HTTP connection whose host is the receiver's base URL
    alert_webhook_endpoint: str = ""  # path under it, e.g. "hooks/recsys"
    extract_deadline_hours: float = 0.0  # recsys_extract must finish this long after its run is queued; 0 = off
    training_deadline_hours: float = 0.0  # recsys_two_tower, likewise
    spark_poll_seconds: int = 30  # cloud Spark engines: how often the triggerer polls the job
    spark_timeout_seconds: int = 4 * 3600
    tuning_trials: int = 12  # recsys_two_tower's default Params: trials on the validation split (0 = none)
    tuning_budget_minutes: float = 10.0
    gate_baseline: str = "best"  # recsys_two_tower's default bar: the best cheap baseline, or "popularity"
    alert_after_runs_without_champion: int = 3  # recsys_two_tower alerts after this many runs without a new champion
    candidates_per_retriever: int = 100  # recsys_two_tower's default Param: each retriever's share of the pool


@dataclass(frozen=True)
class Settings:
    """The task-time settings, by section."""

    storage: StorageSettings = field(default_factory=StorageSettings)
    connections: ConnectionSettings = field(default_factory=ConnectionSettings)
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    spark: SparkSettings = field(default_factory=SparkSettings)
    vertex: VertexSettings = field(default_factory=VertexSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    cloud_run: CloudRunSettings = field(default_factory=CloudRunSettings)
    personalize: PersonalizeSettings = field(default_factory=PersonalizeSettings)

    def remote_training_root(self) -> str:
        """The ``gs://`` folder a remote training job (Vertex AI, Cloud Run) reads from and writes to."""
        root = self.storage.root if self.storage.root.startswith("gs://") else self.training.staging_uri
        if not root.startswith("gs://"):
            raise ValueError(
                "training on Vertex AI or Cloud Run needs storage_root or vertex_staging_uri on gs:// "
                f"(storage_root={self.storage.root!r}, vertex_staging_uri={self.training.staging_uri!r})"
            )
        return root.rstrip("/")


SECTIONS: dict[str, type[Section]] = {f.name: f.default_factory for f in fields(Settings)}
S = TypeVar("S", bound=Section)


def setting_names(section: type[Section] | None = None) -> list[str]:
    """The flat names of one section's settings, or of every task-time section's."""
    sections = [section] if section else list(SECTIONS.values())
    return [name for cls in sections for name in cls.setting_names().values()]


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


def _build(cls: type[S], overrides: Mapping[str, Any], env: Mapping[str, str], get_variable) -> S:
    defaults = cls()
    values: dict[str, Any] = {}
    for attr, name in cls.setting_names().items():
        if overrides.get(name) is not None:
            raw = overrides[name]
        elif (ENV_PREFIX + name.upper()) in env:
            raw = env[ENV_PREFIX + name.upper()]
        else:
            raw = get_variable(VARIABLE_PREFIX + name)
            if raw is None:
                continue
        try:
            values[attr] = _coerce(raw, getattr(defaults, attr))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"setting {name!r} has an invalid value {raw!r}: {exc}") from exc
    return dataclasses.replace(defaults, **values)


def _check_known(overrides: Mapping[str, Any], known: list[str]) -> None:
    unknown = set(overrides) - set(known)
    if unknown:
        raise ValueError(f"unknown setting(s): {sorted(unknown)}")


def load_section(
    section: type[S],
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    use_airflow_variables: bool = False,
) -> S:
    """One task-time section (overrides by flat name); with Variables, only this section's are read."""
    overrides = dict(overrides or {})
    _check_known(overrides, setting_names(section))
    get_variable = _airflow_variable_getter() if use_airflow_variables else (lambda _key: None)
    return _build(section, overrides, os.environ if env is None else env, get_variable)


def ignored_variables(get_variable: Callable[[str], Any]) -> list[str]:
    """A warning for each Variable set for a parse-time setting (those are read from the environment only)."""
    return [
        f"Variable {VARIABLE_PREFIX + name} is set but ignored: {name} is a parse-time setting, read from the "
        f"environment only; set {ENV_PREFIX + name.upper()} for the DAG processor, scheduler and workers instead"
        for name in DagSettings.setting_names().values()
        if get_variable(VARIABLE_PREFIX + name) is not None
    ]


_WARNED: set[str] = set()


def _warn_ignored_variables(get_variable: Callable[[str], Any]) -> None:
    for warning in ignored_variables(get_variable):
        if warning not in _WARNED:
            _WARNED.add(warning)
            log.warning(warning)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    use_airflow_variables: bool = False,
) -> Settings:
    """Every task-time section, from overrides (by flat name), environment and (optionally) Variables."""
    overrides = dict(overrides or {})
    _check_known(overrides, setting_names())
    env = os.environ if env is None else env
    get_variable = _airflow_variable_getter() if use_airflow_variables else (lambda _key: None)
    if use_airflow_variables:
        _warn_ignored_variables(get_variable)
    return Settings(**{name: _build(cls, overrides, env, get_variable) for name, cls in SECTIONS.items()})


def load_dag_settings(env: Mapping[str, str] | None = None) -> DagSettings:
    """The parse-time settings, from the environment only (DAG files call this at import)."""
    return _build(DagSettings, {}, os.environ if env is None else env, lambda _key: None)
