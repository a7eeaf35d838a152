"""Compare a new solution version's offline metrics with the previous ACTIVE version's."""

from __future__ import annotations

METRIC = "normalized_discounted_cumulative_gain_at_10"


def metric_verdict(hook, version_arn: str, previous_arn: str | None, max_drop: float, metric: str = METRIC) -> dict:
    """``regressed`` when ``metric`` dropped by more than ``max_drop`` (relative) against the previous version."""
    new = hook.solution_metrics(version_arn)
    old = hook.solution_metrics(previous_arn) if previous_arn and previous_arn != version_arn else None
    drop = (old[metric] - new.get(metric, 0.0)) / old[metric] if old and old.get(metric) else 0.0
    summary = (
        f"{metric}: new {new.get(metric)} vs previous {old.get(metric) if old else 'none'} "
        f"(drop {drop:.1%}, allowed {max_drop:.1%})"
    )
    return {
        "metric": metric,
        "new": new,
        "previous": old,
        "drop": round(drop, 4),
        "regressed": drop > max_drop,
        "summary": summary,
    }
