"""The Personalize fake's real-time side: personalize-events (PutEvents / PutUsers / PutItems),
personalize-runtime (GetRecommendations) — both REST-JSON services — and dataset export jobs.

- ``POST /events``: at most 10 events a call, ``trackingId`` of an ACTIVE event tracker (else 404),
  ``eventType`` and ``sentAt`` required; the events land in the group's interactions dataset.
- ``POST /users`` / ``POST /items``: at most 10 records a call into an ACTIVE users / items dataset;
  ``properties`` must be a JSON object string.
- ``POST /recommendations``: the campaign's (ACTIVE) recommendations: the most interacted items of the
  catalog (items dataset, if any), minus what the user interacted with when the filter's expression
  excludes interactions. ``break_version(arn)`` (default: the next version trained) makes campaigns
  serving that version answer items that are not in the catalog (a bad model, for smoke tests).
- ``CreateDatasetExportJob`` (``ingestionMode`` BULK | PUT | ALL): once ACTIVE, the records are under
  ``<path>/<jobName>/AMZN_Personalize/<DATASET TYPE>/part-00000.csv`` — for interactions the columns
  ``timestamp,session_id,event_type,user_id,item_id,impression,recommendation_id`` (timestamp in ms).
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid

EXPORT_COLUMNS = ["timestamp", "session_id", "event_type", "user_id", "item_id", "impression", "recommendation_id"]
EXCLUDES_INTERACTED = re.compile(r"^\s*EXCLUDE\s+ItemID\s+WHERE\s+Interactions\.EVENT_TYPE\s+IN", re.IGNORECASE)
MAX_PER_CALL = 10


class RealtimeOperations:
    """Mixed into ``PersonalizeFake``."""

    def break_version(self, solution_version_arn: str | None = None) -> None:
        """Campaigns serving this version (default: the next version created) answer non-catalog items."""
        self._broken.add(solution_version_arn or "next")

    # ---- personalize-events ------------------------------------------------------------------------
    def PutEvents(self, p: dict) -> dict:  # noqa: N802 - the API's operation names
        events = self._batch(p, "eventList")
        tracker = next((j for j in self._live("event_tracker") if j.fields["trackingId"] == p.get("trackingId")), None)
        if tracker is None or self.status(tracker) != "ACTIVE":
            raise self.error(
                "ResourceNotFoundException", f"no ACTIVE event tracker with id {p.get('trackingId')!r}", 404
            )
        for event in events:
            missing = [k for k in ("eventType", "sentAt", "itemId") if event.get(k) in (None, "")]
            if missing:
                raise self.error("InvalidInputException", f"event {event.get('eventId')!r} lacks {missing}")
        dataset = self._group_dataset(tracker.fields["datasetGroupArn"], "interactions")
        for event in events:
            record = {
                "timestamp": int(float(event["sentAt"]) * 1000),
                "session_id": p["sessionId"],
                "event_type": event["eventType"],
                "user_id": p.get("userId", ""),
                "item_id": event["itemId"],
                "impression": "|".join(event.get("impression", [])),
                "recommendation_id": event.get("recommendationId", ""),
            }
            dataset["events"].append(record)
            self._interacted(dataset, record["user_id"], record["item_id"])
        return {}

    def PutUsers(self, p: dict) -> dict:  # noqa: N802
        return self._put_records(p, "users", "userId")

    def PutItems(self, p: dict) -> dict:  # noqa: N802
        return self._put_records(p, "items", "itemId")

    def _put_records(self, p: dict, kind: str, id_key: str) -> dict:
        records = self._batch(p, kind)
        job = self._resource(p["datasetArn"], "dataset", active=True)
        dataset = self.datasets[job.arn]
        if dataset["type"] != kind:
            raise self.error("InvalidInputException", f"{job.arn} is a {dataset['type']} dataset, not {kind}")
        for record in records:
            try:
                properties = json.loads(record.get("properties") or "{}")
            except ValueError as exc:
                raise self.error("InvalidInputException", f"{record[id_key]}: properties is not JSON: {exc}") from exc
            if not isinstance(properties, dict):
                raise self.error("InvalidInputException", f"{record[id_key]}: properties must be a JSON object")
            dataset["records"][record[id_key]] = properties
            dataset["puts"] = dataset.get("puts", 0) + 1
        return {}

    def _batch(self, p: dict, key: str) -> list:
        records = p.get(key) or []
        if not 1 <= len(records) <= MAX_PER_CALL:
            raise self.error(
                "InvalidInputException", f"{key} must have 1 to {MAX_PER_CALL} members, got {len(records)}"
            )
        return records

    def _group_dataset(self, group_arn: str, kind: str) -> dict:
        found = [j for j in self._live("dataset", datasetGroupArn=group_arn) if self.datasets[j.arn]["type"] == kind]
        if not found:
            raise self.error("ResourceNotFoundException", f"{group_arn} has no {kind} dataset", 404)
        return self.datasets[found[0].arn]

    @staticmethod
    def _interacted(dataset: dict, user: str, item: str) -> None:
        dataset["items"][item] += 1
        if user:
            dataset["seen"].setdefault(user, set()).add(item)

    # ---- personalize-runtime -----------------------------------------------------------------------
    def GetRecommendations(self, p: dict) -> dict:  # noqa: N802
        campaign = self._resource(p.get("campaignArn", ""), "campaign", active=True)
        if not (p.get("userId") or p.get("itemId")):
            raise self.error("InvalidInputException", "userId or itemId is required")
        wanted = int(p.get("numResults", 25))
        if not 0 <= wanted <= 500:
            raise self.error("InvalidInputException", f"numResults must be at most 500, got {wanted}")
        version = self._campaign_version(campaign.arn)
        items = self.recommend(campaign.fields["solutionArn"], p.get("userId", ""), wanted, p.get("filterArn"))
        if version in self._broken:
            items = [f"not-in-catalog-{i}" for i in range(len(items) or wanted)]
        return {
            "itemList": [{"itemId": i, "score": round(1 / (r + 1), 4)} for r, i in enumerate(items)],
            "recommendationId": f"RID-{uuid.uuid4()}",
        }

    def recommend(self, solution_arn: str, user: str, count: int, filter_arn: str | None = None) -> list[str]:
        """The fake model: the most interacted catalog items, without the user's when the filter says so."""
        group = self._resource(solution_arn, "solution").fields["datasetGroupArn"]
        interactions = self._group_dataset(group, "interactions")
        try:
            catalog = set(self._group_dataset(group, "items")["records"])
        except Exception:  # noqa: BLE001 - no items dataset: every item is in the catalog
            catalog = set()
        exclude = set()
        if filter_arn:
            expression = self._resource(filter_arn, "filter", active=True).fields["filterExpression"]
            if EXCLUDES_INTERACTED.match(expression):
                exclude = interactions["seen"].get(user, set())
        ranked = (i for i, _ in interactions["items"].most_common())
        return [i for i in ranked if i not in exclude and (not catalog or i in catalog)][:count]

    # ---- dataset export ----------------------------------------------------------------------------
    def CreateDatasetExportJob(self, p: dict) -> dict:  # noqa: N802
        self._resource(p["datasetArn"], "dataset", active=True)
        mode = p.get("ingestionMode", "PUT")
        if mode not in ("BULK", "PUT", "ALL"):
            raise self.error("InvalidInputException", f"ingestionMode must be BULK, PUT or ALL, not {mode!r}")
        path = p["jobOutput"]["s3DataDestination"]["path"]
        if not path.startswith("s3://"):
            raise self.error("InvalidInputException", f"jobOutput path must be s3://..., not {path!r}")
        fields = {k: p[k] for k in ("jobName", "datasetArn", "roleArn", "jobOutput")} | {"ingestionMode": mode}
        job = self._new_job("export", p["jobName"], self.arn("dataset-export-job", p["jobName"]), fields)
        job.on_active = lambda: self._write_export(job)
        return {"datasetExportJobArn": job.arn}

    def _write_export(self, job) -> None:
        dataset = self.datasets[job.fields["datasetArn"]]
        mode, kind = job.fields["ingestionMode"], dataset["type"]
        if kind == "interactions":
            rows = (dataset["imported"] if mode in ("BULK", "ALL") else []) + (
                dataset["events"] if mode in ("PUT", "ALL") else []
            )
            header = EXPORT_COLUMNS
        else:
            rows = [{"id": k, **v} for k, v in dataset["records"].items()]
            header = sorted({key for row in rows for key in row})
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=header, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        bucket, _, prefix = job.fields["jobOutput"]["s3DataDestination"]["path"].removeprefix("s3://").partition("/")
        key = f"{prefix.rstrip('/')}/{job.name}/AMZN_Personalize/{kind.upper()}/part-00000.csv".lstrip("/")
        self._s3().put_object(Bucket=bucket, Key=key, Body=text.getvalue().encode())

    def DescribeDatasetExportJob(self, p: dict) -> dict:  # noqa: N802
        return {
            "datasetExportJob": self._describe(self._job(p["datasetExportJobArn"], "export"), "datasetExportJobArn")
        }

    def ListDatasetExportJobs(self, p: dict) -> dict:  # noqa: N802
        keep = ("jobName", "status", "creationDateTime", "lastUpdatedDateTime", "failureReason")
        return {"datasetExportJobs": self._summaries("export", "datasetExportJobArn", "datasetArn", p, keep)}
