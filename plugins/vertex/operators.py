"""Deferrable Vertex AI operators: start the long-running operation, then wait in the triggerer.

The provider's upload/deploy/undeploy operators block a worker slot for the whole operation
(deploys take 5-15 minutes). These start it with the project's configurable hooks, defer to
:class:`~vertex.triggers.VertexOperationTrigger`, and fail with the operation's own error message.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

from vertex.links import VertexCustomJobLink, VertexEndpointLink, VertexModelLink


class VertexOperationFailed(RuntimeError):
    """The Vertex AI operation ended with an error or did not finish in time."""


def quota_retry():
    """Retry a start call answered 429 (quota / RESOURCE_EXHAUSTED: nothing was started) with backoff,
    up to 10 minutes, inside the task: throttling never burns a task retry."""
    from google.api_core import exceptions, retry

    return retry.Retry(
        predicate=retry.if_exception_type(exceptions.TooManyRequests, exceptions.ResourceExhausted),
        initial=1.0,
        maximum=60.0,
        multiplier=2.0,
        timeout=600.0,
    )


class _DeferrableVertexOperator(BaseOperator):
    """Start a long-running Vertex AI operation, defer until it is done, return :meth:`finish`'s result.
    These operators always defer (there is no synchronous mode: that is what the provider's own operators do).

    :param project_id: the Google Cloud project.
    :param region: the Vertex AI region, e.g. ``us-central1``.
    :param gcp_conn_id: the Google Cloud connection (its extra ``api_endpoint`` may point at a local fake).
    :param poll_interval: seconds between the triggerer's polls of the operation.
    :param operation_timeout: seconds the operation may run before the task fails.
    """

    template_fields: tuple[str, ...] = ("project_id", "region", "gcp_conn_id", "poll_interval", "operation_timeout")

    def __init__(
        self,
        *,
        project_id: str,
        region: str,
        gcp_conn_id: str = "google_cloud_default",
        poll_interval: float = 10.0,
        operation_timeout: float = 3600.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.project_id, self.region, self.gcp_conn_id = project_id, region, gcp_conn_id
        self.poll_interval, self.operation_timeout = poll_interval, operation_timeout

    def persist_link(self, link, context, **resource_id) -> None:
        """Record what ``link`` (a console link of :mod:`vertex.links`) needs to point at the resource."""
        link.persist(context, region=self.region, project_id=self.project_id, **resource_id)

    def start(self):
        """Start the operation; return the ``google.api_core.operation.Operation``."""
        raise NotImplementedError

    def finish(self, response: dict, context) -> Any:
        return response

    def defer_until_done(self, trigger_class, resource: str, method_name: str = "execute_complete") -> None:
        self.log.info("%s is running; deferring until it is done", resource)
        self.defer(
            trigger=trigger_class(
                resource, self.region, self.gcp_conn_id, float(self.poll_interval), float(self.operation_timeout)
            ),
            method_name=method_name,
            timeout=timedelta(seconds=float(self.operation_timeout) + 60),
        )

    def execute(self, context):
        from vertex.triggers import VertexOperationTrigger

        self.defer_until_done(VertexOperationTrigger, self.start().operation.name)

    def execute_complete(self, context, event: dict):
        if event["status"] != "success":
            raise VertexOperationFailed(f"{event['operation']}: {event['message']}")
        return self.finish(event["response"], context)


class DeferrableUploadModelOperator(_DeferrableVertexOperator):
    """Upload a model to the Model Registry; returns ``model``, ``model_id`` and ``version_id``.

    :param model: the ``Model`` resource (display name, artifact URI, serving container spec, labels).
    :param parent_model: the bare id of the model this is a new version of; ``None`` for a new model.
    """

    operator_extra_links = (VertexModelLink(),)
    template_fields = (*_DeferrableVertexOperator.template_fields, "model", "parent_model")

    def __init__(self, *, model: dict, parent_model: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model, self.parent_model = model, parent_model

    def start(self):
        from vertex.hooks import VertexModelServiceHook

        return VertexModelServiceHook(gcp_conn_id=self.gcp_conn_id).upload_model(
            project_id=self.project_id,
            region=self.region,
            model=self.model,
            parent_model=self.parent_model,
            retry=quota_retry(),
        )

    def finish(self, response: dict, context) -> dict:
        self.persist_link(VertexModelLink, context, model_id=response["model"].rsplit("/", 1)[-1])
        return {
            "model": response["model"],
            "model_id": response["model"].rsplit("/", 1)[-1],
            "version_id": response.get("modelVersionId"),
        }


class DeferrableDeployModelOperator(_DeferrableVertexOperator):
    """Deploy a model to an endpoint, once per display name: a retry reuses its own deployment, or waits for
    one still in flight. Returns ``deployed_model_id`` and ``endpoint_id``.

    :param endpoint_id: the endpoint's id.
    :param deployed_model: the ``DeployedModel`` (``model``, a run-unique ``display_name``, resources).
    :param traffic_split: deployed model id -> percent; the key ``"0"`` is the model being deployed.
    """

    operator_extra_links = (VertexEndpointLink(),)
    template_fields = (*_DeferrableVertexOperator.template_fields, "endpoint_id", "deployed_model", "traffic_split")

    def __init__(self, *, endpoint_id: str, deployed_model: dict, traffic_split: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.endpoint_id, self.deployed_model, self.traffic_split = endpoint_id, deployed_model, traffic_split

    def execute(self, context):
        self.persist_link(VertexEndpointLink, context, endpoint_id=self.endpoint_id)
        existing = self.already_deployed()
        if existing is not None:
            self.log.info(
                "%s is already deployed as %s: not deploying again", self.deployed_model["display_name"], existing
            )
            return {"deployed_model_id": existing, "endpoint_id": self.endpoint_id, "reused": True}
        if in_flight := self.deployment_in_flight():
            from vertex.triggers import VertexOperationTrigger

            self.log.info("a deployment to this endpoint is still running (a killed try's?): waiting, then checking")
            self.defer_until_done(VertexOperationTrigger, in_flight, method_name="execute_after_wait")
        return super().execute(context)

    def execute_after_wait(self, context, event: dict):
        """The deployment in flight ended: ours, reuse it; failed or someone else's, deploy. Still running
        after the operation timeout: fail (a retry waits again) rather than deploy beside it."""
        if event["status"] == "timeout":
            raise VertexOperationFailed(f"{event['operation']}: {event['message']}")
        return self.execute(context)

    def deployment_in_flight(self) -> str | None:
        """An unfinished deployModel operation on the endpoint: a try killed after its deploy call landed
        leaves one behind, and its deployed model appears only when it finishes."""
        from vertex.hooks import VertexEndpointServiceHook

        client = VertexEndpointServiceHook(gcp_conn_id=self.gcp_conn_id).get_endpoint_service_client(self.region)
        request = {"name": client.endpoint_path(self.project_id, self.region, self.endpoint_id)}
        while True:  # the endpoint's operations, every page
            page = client.list_operations(request=request)
            for op in page.operations:
                if not op.done and op.metadata.type_url.endswith("DeployModelOperationMetadata"):
                    return op.name
            if not page.next_page_token:
                return None
            request["page_token"] = page.next_page_token

    def already_deployed(self) -> str | None:
        """A retry after a lost worker or a timed-out wait finds its own deployment (same display name)."""
        from vertex.hooks import VertexEndpointServiceHook

        name = self.deployed_model.get("display_name")
        endpoint = VertexEndpointServiceHook(gcp_conn_id=self.gcp_conn_id).get_endpoint(
            project_id=self.project_id, region=self.region, endpoint=self.endpoint_id
        )
        return next((d.id for d in endpoint.deployed_models if name and d.display_name == name), None)

    def start(self):
        from vertex.hooks import VertexEndpointServiceHook

        return VertexEndpointServiceHook(gcp_conn_id=self.gcp_conn_id).deploy_model(
            project_id=self.project_id,
            region=self.region,
            endpoint=self.endpoint_id,
            deployed_model=self.deployed_model,
            traffic_split=self.traffic_split,
            retry=quota_retry(),
        )

    def finish(self, response: dict, context) -> dict:
        return {"deployed_model_id": response["deployedModel"]["id"], "endpoint_id": self.endpoint_id}


class DeferrableUndeployModelOperator(_DeferrableVertexOperator):
    """Undeploy one deployed model from an endpoint (nothing to do when ``deployed_model_id`` is empty).

    :param endpoint_id: the endpoint's id.
    :param deployed_model_id: the deployed model to remove.
    :param traffic_split: the endpoint's traffic split afterwards (required while others take traffic).
    """

    operator_extra_links = (VertexEndpointLink(),)
    template_fields = (*_DeferrableVertexOperator.template_fields, "endpoint_id", "deployed_model_id", "traffic_split")

    def __init__(self, *, endpoint_id: str, deployed_model_id: str, traffic_split: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.endpoint_id, self.deployed_model_id, self.traffic_split = endpoint_id, deployed_model_id, traffic_split

    def execute(self, context):
        if not self.deployed_model_id:
            self.log.info("nothing to undeploy")
            return None
        self.persist_link(VertexEndpointLink, context, endpoint_id=self.endpoint_id)
        return super().execute(context)

    def start(self):
        from vertex.hooks import VertexEndpointServiceHook

        return VertexEndpointServiceHook(gcp_conn_id=self.gcp_conn_id).undeploy_model(
            project_id=self.project_id,
            region=self.region,
            endpoint=self.endpoint_id,
            deployed_model_id=self.deployed_model_id,
            traffic_split=self.traffic_split,
            retry=quota_retry(),
        )

    def finish(self, response: dict, context) -> dict:
        return {"undeployed_model_id": self.deployed_model_id, "endpoint_id": self.endpoint_id}


class IdempotentUploadModelOperator(DeferrableUploadModelOperator):
    """Upload as a new version of the parent model found by display name, unless this version
    (its ``recsys-version`` label) is already there: then return it without uploading again.

    :param version: the model version's label value (the run's model version).
    """

    def __init__(self, *, version: str, **kwargs):
        super().__init__(**kwargs)
        self.version = version

    template_fields = (*DeferrableUploadModelOperator.template_fields, "version")

    def execute(self, context):
        from vertex.deploy import find_model_version
        from vertex.hooks import VertexModelServiceHook

        hook = VertexModelServiceHook(gcp_conn_id=self.gcp_conn_id)
        found = find_model_version(hook, self.project_id, self.region, self.model["display_name"], self.version)
        if found and found["version_id"]:
            self.log.info("version %s is already uploaded as %s: not uploading again", self.version, found["model"])
            self.persist_link(VertexModelLink, context, model_id=found["model_id"])
            return {
                "model": found["model"],
                "model_id": found["model_id"],
                "version_id": found["version_id"],
                "reused": True,
            }
        self.parent_model = found["model_id"] if found else None
        return super().execute(context)

    def finish(self, response: dict, context) -> dict:
        result = super().finish(response, context)
        return {**result, "model": f"{response['model']}@{result['version_id']}", "reused": False}


class DeferrableCustomJobOperator(_DeferrableVertexOperator):
    """Run a Vertex AI custom job and wait for it in the triggerer.

    ``custom_job`` is the ``CustomJob`` resource (``display_name``, ``job_spec``, ``labels``). Its
    ``labels[idempotency_label]`` identifies the run: a retry or re-run that finds a job with that label
    which is queued, running or succeeded reattaches to it instead of starting a second one. On a
    failed job the task fails with the job's error; on timeout (or when the task is killed while
    running) the job is cancelled so it stops costing money.

    :param custom_job: the ``CustomJob`` resource.
    :param idempotency_label: the label whose value identifies the run's job.
    """

    operator_extra_links = (VertexCustomJobLink(),)

    template_fields = (*_DeferrableVertexOperator.template_fields, "custom_job")
    ALIVE = ("JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED")
    job_type = "custom_job"  # the JobService methods (create_/list_/cancel_<job_type>s) and the resource argument

    def __init__(self, *, custom_job: dict | None = None, idempotency_label: str = "recsys-run", **kwargs):
        super().__init__(**kwargs)
        self.custom_job, self.idempotency_label = custom_job, idempotency_label
        self.job_name: str | None = None

    @property
    def job(self) -> dict:
        return getattr(self, self.job_type)

    def _client(self):
        from vertex.hooks import VertexJobServiceHook

        return VertexJobServiceHook(gcp_conn_id=self.gcp_conn_id).get_job_service_client(self.region)

    @property
    def parent(self) -> str:
        return f"projects/{self.project_id}/locations/{self.region}"

    def find_existing(self, client):
        key = self.job.get("labels", {}).get(self.idempotency_label)
        if not key:
            return None
        jobs = getattr(client, f"list_{self.job_type}s")(
            request={"parent": self.parent, "filter": f'labels.{self.idempotency_label}="{key}"'}
        )
        alive = [job for job in jobs if job.state.name in self.ALIVE]
        return max(alive, key=lambda job: job.create_time, default=None)

    def execute(self, context):
        client = self._client()
        job = self.find_existing(client)
        if job is not None:
            self.log.info("reattaching to %s (%s) instead of starting another job", job.name, job.state.name)
        else:
            create = getattr(client, f"create_{self.job_type}")
            job = create(parent=self.parent, **{self.job_type: self.job}, retry=quota_retry())
        self.job_name = job.name
        self.persist_link(VertexCustomJobLink, context, custom_job_id=job.name.rsplit("/", 1)[-1])
        if job.state.name == "JOB_STATE_SUCCEEDED":
            return self.finish({}, context)
        self.defer_until_done(self.trigger_class(), job.name)

    @staticmethod
    def trigger_class():
        from vertex.triggers import VertexCustomJobTrigger

        return VertexCustomJobTrigger

    def execute_complete(self, context, event: dict):
        self.job_name = event["job"]
        if event["status"] == "timeout":
            self.cancel()
        if event["status"] != "success":
            raise VertexOperationFailed(f"{event['job']}: {event['message']}")
        return self.finish(event, context)

    def finish(self, response: dict, context) -> dict:
        return {"job": self.job_name, "state": "JOB_STATE_SUCCEEDED"}

    def cancel(self) -> None:
        if self.job_name:
            self.log.warning("cancelling %s", self.job_name)
            getattr(self._client(), f"cancel_{self.job_type}")(name=self.job_name)

    def on_kill(self) -> None:
        self.cancel()


class DeferrableHyperparameterTuningJobOperator(DeferrableCustomJobOperator):
    """Run a Vertex AI hyperparameter tuning job and wait for all its trials in the triggerer.

    The same contract as :class:`DeferrableCustomJobOperator` (find-or-create by the run's label, so a retry
    reattaches; cancel on timeout or kill; fail with the job's error). Returns the trials and the best one
    by the study's metric and goal, with ``model_dir``: ``<baseOutputDirectory>/<trial id>/model``, where
    Vertex points each trial's ``AIP_MODEL_DIR``.

    The provider's ``CreateHyperparameterTuningJobOperator`` goes through the aiplatform SDK and, deferred,
    its gRPC-only async client: neither honours the connection's ``api_endpoint`` / ``api_transport``
    (apache/airflow#53596), so this operator uses the same configurable JobService client as the others.

    :param hyperparameter_tuning_job: the ``HyperparameterTuningJob`` resource (``study_spec``,
        ``max_trial_count``, ``parallel_trial_count``, ``trial_job_spec``, ``labels``).
    """

    template_fields = (*_DeferrableVertexOperator.template_fields, "hyperparameter_tuning_job")
    job_type = "hyperparameter_tuning_job"

    def __init__(self, *, hyperparameter_tuning_job: dict, **kwargs):
        super().__init__(**kwargs)
        self.hyperparameter_tuning_job = hyperparameter_tuning_job

    @staticmethod
    def trigger_class():
        from vertex.triggers import VertexHyperparameterTuningJobTrigger

        return VertexHyperparameterTuningJobTrigger

    def finish(self, response: dict, context) -> dict:
        job = self._client().get_hyperparameter_tuning_job(name=self.job_name)
        (metric,) = job.study_spec.metrics
        trials = [
            {
                "id": trial.id,
                "state": trial.state.name,
                "parameters": {p.parameter_id: p.value for p in trial.parameters},
                "value": trial.final_measurement.metrics[0].value if trial.final_measurement.metrics else None,
            }
            for trial in job.trials
        ]
        done = [t for t in trials if t["state"] == "SUCCEEDED" and t["value"] is not None]
        if not done:
            raise VertexOperationFailed(f"{self.job_name}: no trial reported {metric.metric_id!r}")
        sign = 1 if metric.goal.name == "MAXIMIZE" else -1
        best = max(done, key=lambda t: sign * t["value"])
        base = job.trial_job_spec.base_output_directory.output_uri_prefix.rstrip("/")
        return {
            "job": self.job_name,
            "state": job.state.name,
            "metric": metric.metric_id,
            "trials": trials,
            "best_trial": best,
            "model_dir": f"{base}/{best['id']}/model",
        }
