"""The campaign smoke test after an update: GetRecommendations for the most active known users of the
newest partition and for one user nobody has seen must each return items, all of them in the catalog."""

from __future__ import annotations

from collections import Counter
from datetime import date

from recsys.data.partitions import PartitionStore

UNKNOWN_USER = "recsys-smoke-test-unknown-user"


def smoke_inputs(extract_root: str, day: date | None, known_users: int) -> tuple[list[str], set[str]]:
    """The ``known_users`` most active users of the newest committed day (up to ``day``) and its catalog."""
    import pyarrow.parquet as pq

    store = PartitionStore(extract_root)
    days = [d for d in store.committed_days() if day is None or d <= day]
    manifests = [m for m in (store.read_manifest(d) for d in reversed(days)) if m and m["status"] == "ok"]
    if not manifests:
        raise ValueError(f"no extracted partition with data under {extract_root}: nothing to test the campaign with")
    newest = manifests[0]
    with store.file_path(newest, "interactions").open("rb") as handle:
        users = Counter(pq.read_table(handle, columns=["user_id"]).column("user_id").to_pylist())
    with store.file_path(newest, "items").open("rb") as handle:
        catalog = set(pq.read_table(handle, columns=["item_id"]).column("item_id").to_pylist())
    return [u for u, _ in sorted(users.items(), key=lambda kv: (-kv[1], kv[0]))[:known_users]], catalog


def smoke_test(runtime_hook, campaign_arn: str, users: list[str], catalog: set[str], num_results: int = 10) -> dict:
    """``{"ok", "problems", "answers"}``: each user (and an unknown one) must get items from the catalog."""
    from botocore.exceptions import ClientError

    problems, answers = [], {}
    for user in [*users, UNKNOWN_USER]:
        try:
            items = runtime_hook.recommended_items(campaign_arn, user, num_results)
        except ClientError as exc:
            problems.append(f"{user}: GetRecommendations failed: {exc}")
            continue
        answers[user] = items
        outside = [i for i in items if i not in catalog]
        if not items:
            problems.append(f"{user}: no recommendations")
        elif outside:
            problems.append(f"{user}: {len(outside)} of {len(items)} items are not in the catalog, e.g. {outside[:3]}")
    return {"ok": not problems, "problems": problems, "answers": answers}
