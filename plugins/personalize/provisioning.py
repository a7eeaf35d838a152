"""Provisioning operators: describe-or-create a long-lived Personalize resource, or delete one, and wait.

Same contract as :mod:`personalize.operators` (one flow in ``_PersonalizeJobOperator``): the resource
is looked up by its name first (``List*`` under its parent), so re-running creates nothing; a new
resource is waited on until ACTIVE in the triggerer (``<kind>_active`` waiter), a deleted one until
``Describe*`` answers ``ResourceNotFoundException`` (``<kind>_deleted``). Personalize resources are
immutable: when an existing one differs from the requested settings, the difference is logged (delete
it to change it) and the existing one is kept. ``ResourceInUseException`` on delete (a dependent
resource still being deleted) is waited out like any busy answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from personalize import triggers
from personalize.names import attempt_name
from personalize.operators import _PersonalizeJobOperator
from personalize.resources import RESOURCES

NOT_COMPARED = ("solutionVersionArn",)  # a campaign's version moves with every update


def _comparable(value):
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class PersonalizeCreateResourceOperator(_PersonalizeJobOperator):
    """Find ``name`` of ``kind`` (dataset_group, schema, dataset, solution, campaign, event_tracker, filter)
    or create it with ``config`` (the Create call's arguments besides ``name``); return its ARN.

    :param kind: the resource kind (a key of :data:`personalize.resources.RESOURCES`).
    :param name: its name.
    :param config: the Create call's other arguments; a found resource that differs is logged as drift.
    """

    template_fields: Sequence[str] = aws_template_fields("waiter_delay", "name", "config")
    trigger_class = triggers.ResourceTrigger

    def __init__(self, *, kind: str, name: str, config: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.kind, self.name, self.config = kind, name, config if config is not None else {}
        self.resource = RESOURCES[kind]

    def trigger_kwargs(self) -> dict:
        return {"kind": self.kind, "action": "create"}

    def execute(self, context, event=None, busy_since: float | None = None):
        if self.resource.has_status:
            return super().execute(context, event, busy_since)
        arn, attempt = self.find()
        return arn or self.create(attempt)

    def find(self):
        arn, attempt = self.hook.find_resource(self.kind, self.name, self.resource.parent_of(self.config))
        if arn:
            self._log_drift(arn)
        return arn, attempt

    def create(self, attempt: int) -> str:
        create = getattr(self.hook.conn, f"create_{self.kind}")
        return create(name=attempt_name(self.name, attempt), **self.config)[self.resource.arn_key]

    def _log_drift(self, arn: str) -> None:
        described = self.hook.describe_resource(self.kind, arn) or {}
        drift = {
            key: {"existing": described[key], "requested": value}
            for key, value in self.config.items()
            if key in described and key not in NOT_COMPARED and _comparable(described[key]) != _comparable(value)
        }
        if drift:
            self.log.warning(
                "%s exists with other settings than requested; Personalize resources are immutable, "
                "delete it to change them: %s",
                arn,
                drift,
            )


class PersonalizeDeleteResourceOperator(_PersonalizeJobOperator):
    """Delete ``resource_arn`` of ``kind`` and wait until it is gone; nothing to do when it does not exist.

    :param kind: the resource kind (a key of :data:`personalize.resources.RESOURCES`).
    :param resource_arn: what to delete; empty = nothing.
    """

    template_fields: Sequence[str] = aws_template_fields("waiter_delay", "resource_arn")
    trigger_class = triggers.ResourceTrigger

    def __init__(self, *, kind: str, resource_arn: str | None, **kwargs):
        kwargs.setdefault("busy_retry_seconds", 30)
        super().__init__(**kwargs)
        self.kind, self.resource_arn = kind, resource_arn
        self.resource = RESOURCES[kind]
        self.deleting = False  # set from the Describe each execute starts with

    def trigger_kwargs(self) -> dict:
        return {"kind": self.kind, "action": "delete"}

    def execute(self, context, event=None, busy_since: float | None = None):
        described = self.hook.describe_resource(self.kind, self.resource_arn) if self.resource_arn else None
        if described is None:
            self.log.info("%s %s does not exist: nothing to delete", self.kind, self.resource_arn or "(none)")
            return None
        self.deleting = described.get("status", "").startswith("DELETE")
        return super().execute(context, event, busy_since)

    def find(self):
        """A deletion already in progress (an earlier try's) is waited on, not requested again."""
        return (self.resource_arn if self.deleting else None), 1

    def create(self, attempt: int) -> str:
        getattr(self.hook.conn, f"delete_{self.kind}")(**{self.resource.arn_key: self.resource_arn})
        return self.resource_arn
