"""What the Personalize API calls its long-lived resources, in one table.

Every resource follows one naming pattern on the client (``create_<kind>``, ``describe_<kind>``,
``delete_<kind>``, ``list_<kind>s``) and in the custom waiters (``<kind>_active``, ``<kind>_deleted``);
only the ARN key, the response key, the List* key and the List* parent filter differ.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    kind: str  # dataset_group, schema, ...: the client's method suffix
    arn_key: str  # the Describe/Delete call's ARN parameter
    response_key: str  # the described resource's key in the Describe answer
    list_key: str  # the summaries' key in the List answer
    parent_key: str | None = None  # the List call's filter, e.g. datasetGroupArn
    has_status: bool = True  # a schema exists at once

    def parent_of(self, config: dict) -> str | None:
        """The List filter value for a create call's ``config`` (a campaign lists under its solution)."""
        if self.kind == "campaign":
            return config["solutionVersionArn"].rsplit("/", 1)[0]
        return config.get(self.parent_key) if self.parent_key else None


RESOURCES = {
    r.kind: r
    for r in (
        Resource("dataset_group", "datasetGroupArn", "datasetGroup", "datasetGroups"),
        Resource("schema", "schemaArn", "schema", "schemas", has_status=False),
        Resource("dataset", "datasetArn", "dataset", "datasets", "datasetGroupArn"),
        Resource("solution", "solutionArn", "solution", "solutions", "datasetGroupArn"),
        Resource("campaign", "campaignArn", "campaign", "campaigns", "solutionArn"),
        Resource("event_tracker", "eventTrackerArn", "eventTracker", "eventTrackers", "datasetGroupArn"),
        Resource("filter", "filterArn", "filter", "Filters", "datasetGroupArn"),
    )
}
# Deleting in this order never meets ResourceInUseException from a dependent resource.
TEARDOWN_ORDER = ("campaign", "event_tracker", "filter", "solution", "dataset", "schema", "dataset_group")
