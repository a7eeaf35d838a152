"""The champion gate: compare the run's served policy with the current champion on the same rows.

Training chose the policy to serve on validation (:func:`recsys.training.pipeline.served_choice`): the
two-stage policy, the two-tower model or a cheap baseline, whichever scored best there; a baseline that
wins is exported and served like any model, so a first run always serves at least the best cheap
recommender. Every policy is measured as it is served (:mod:`recsys.policy`); the champion is loaded
exactly as the server loads it and scored on the holdout rows the candidate was scored on
(``evaluated.parquet``: the seeded sample when the holdout was sampled). The champion pointer
``<models_root>/champion.json`` names the blessed model directory; it is replaced atomically.

The served policy is blessed unless it is worse than the champion by more than ``tolerance`` (absolute,
on ``top_{k}_accuracy``); an operator may force it. The bar — the best baseline on the holdout
(``baseline="best"``) or popularity — is reported beside it, never a second choice: the holdout is read
once, for the card and the champion. ``<models_root>/gate_streak.json`` counts the runs since the last
new champion (the alert after ``alert_after_runs_without_champion``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from recsys.storage import as_path, atomic_write_text

CHAMPION = "champion.json"
BASELINES = ("popularity", "first_event_prior", "item_knn", "rp3beta", "ease")
GATE_BASELINES = ("best", "popularity")


@dataclass(frozen=True)
class GatePolicy:
    k: int = 100
    tolerance: float = 0.01
    force: bool = False
    baseline: str = "best"  # the bar: the best baseline on the gate metric, or popularity only

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance <= 1:
            raise ValueError(f"tolerance must be in [0, 1], got {self.tolerance}")
        if self.baseline not in GATE_BASELINES:
            raise ValueError(f"baseline must be one of {GATE_BASELINES}, got {self.baseline!r}")


def read_champion(models_root: str) -> dict | None:
    path = as_path(models_root) / CHAMPION
    return json.loads(path.read_text()) if path.exists() else None


def promote(models_root: str, pointer: dict) -> None:
    atomic_write_text(as_path(models_root) / CHAMPION, json.dumps(pointer, indent=2))


def evaluate_exported(model_dir: str, holdout, history, users, training_users, local_cache: Path) -> dict:
    """Metrics of an exported model's served policy (as the server loads it) on ``holdout``."""
    from recsys.policy import load_policy
    from recsys.storage import download_dir
    from recsys.training.evaluate import evaluate_holdout

    policy = load_policy(download_dir(model_dir, local_cache))
    return evaluate_holdout({"champion": policy}, holdout, history, users, training_users)["champion"]


def bar(metrics: dict, policy: GatePolicy) -> tuple[str, dict]:
    """The baseline the candidate must beat: ``(name, metrics)`` of popularity, or of the best baseline
    on the gate metric among those evaluated on this holdout."""
    key = f"top_{policy.k}_accuracy"
    if policy.baseline == "popularity":
        return "popularity", metrics["popularity"]
    evaluated = [name for name in BASELINES if metrics.get(name)]
    best = max(evaluated, key=lambda name: metrics[name][key])
    return best, metrics[best]


def decide(
    candidate: dict,
    baseline: tuple[str, dict],
    champion: dict | None,
    policy: GatePolicy,
    served: str = "model",
    pinned: bool = False,
) -> dict:
    """Bless or not, with reasons. Metric dicts are ``evaluate_*`` outputs on the same holdout rows;
    ``candidate`` is the served policy's (``served``: its name), ``baseline`` :func:`bar`'s ``(name, metrics)``."""
    key = f"top_{policy.k}_accuracy"
    name, base = baseline
    why = "pinned by the operator (served_policy)" if pinned else "the best policy on validation"
    reasons, blessed = [f"serving {served}: {why}"], True
    if served in BASELINES:
        reasons.append(f"the two-tower model and the two-stage policy did not beat {served} on validation")
    label = f"the {'best ' if policy.baseline == 'best' else ''}baseline ({name})"
    if served == name:
        reasons.append(f"{key} {candidate[key]:.4f}: {served} is also {label} on the holdout")
    elif candidate[key] >= base[key]:
        reasons.append(f"{key} {candidate[key]:.4f} beats {label} {base[key]:.4f} by {candidate[key] - base[key]:.4f}")
    else:
        reasons.append(
            f"{key} {candidate[key]:.4f} is below {label} {base[key]:.4f} on the holdout by "
            f"{base[key] - candidate[key]:.4f} (the choice was made on validation)"
        )
    if champion is None:
        reasons.append("no champion yet")
    elif candidate[key] >= champion[key] - policy.tolerance:
        reasons.append(
            f"{key} {candidate[key]:.4f} is within {policy.tolerance} of the champion's {champion[key]:.4f} or better"
        )
    else:
        blessed = False
        reasons.append(
            f"{key} {candidate[key]:.4f} is worse than the champion's {champion[key]:.4f} "
            f"by more than {policy.tolerance}"
        )
    if policy.force and not blessed:
        reasons.append("forced by the operator")
        blessed = True
    return {
        "blessed": blessed,
        "forced": policy.force,
        "metric": key,
        "served": served,
        "served_is_baseline": served in BASELINES,
        "beats_bar": served == name or candidate[key] >= base[key],
        "baseline": name,
        "gate_baseline": policy.baseline,
        "tolerance": policy.tolerance,
        "reasons": reasons,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def run_gate(model_dir: str, models_root: str, version: str, policy: GatePolicy) -> dict:
    """Evaluate the champion on this model's holdout, decide, write the card and plot, promote."""
    import tempfile

    import pandas as pd

    from recsys.storage import download_dir, upload_dir
    from recsys.training.report import model_card, training_plot

    with tempfile.TemporaryDirectory(prefix="recsys-gate-") as tmp:
        local = download_dir(model_dir, Path(tmp) / "candidate")
        result = json.loads((local / "metrics.json").read_text())
        evaluated = local / "evaluated.parquet"  # the rows the candidate was scored on (older exports: all)
        holdout = pd.read_parquet(evaluated if evaluated.exists() else local / "holdout.parquet")
        history = pd.read_parquet(local / "history.parquet")
        users = pd.read_parquet(local / "users.parquet")
        training_users = json.loads((local / "vocabularies.json").read_text())["user_ids"]
        champion = read_champion(models_root)
        result["metrics"].pop("champion", None)  # a model gated before (a retry, a re-gate) keeps no stale figures
        if champion is not None:
            result["metrics"]["champion"] = evaluate_exported(
                champion["model_dir"], holdout, history, users, training_users, Path(tmp) / "champion"
            )
        metrics = result["metrics"]
        served, pinned = result.get("served", {}).get("policy", "model"), bool(result.get("served", {}).get("pinned"))
        decision = decide(metrics[served], bar(metrics, policy), metrics.get("champion"), policy, served, pinned)
        result["gate"] = {**decision, "champion": champion}
        report = Path(tmp) / "report"
        report.mkdir()
        (report / "metrics.json").write_text(json.dumps(result, indent=2))
        (report / "model_card.md").write_text(model_card(version, result, decision, champion))
        training_plot(result, report / "training_plot.png")
        upload_dir(report, model_dir)
    if decision["blessed"]:
        promote(
            models_root,
            {
                "version": version,
                "model_dir": model_dir,
                "promoted_at": decision["decided_at"],
                "served": served,
                "metrics": result["metrics"][served],
                "previous": champion and champion["version"],
            },
        )
    return {
        "version": version,
        "model_dir": model_dir,
        **decision,
        "model": result["metrics"][served],
        "two_tower": result["metrics"]["model"],
        "champion_metrics": result["metrics"].get("champion"),
        "runs_without_new_champion": record_streak(models_root, decision["blessed"], version),
    }


STREAK = "gate_streak.json"


def record_streak(models_root: str, replaced: bool, version: str) -> int:
    """Runs in a row whose served policy did not replace an existing champion (0 after one that did, or after a
    first champion); kept in ``<models_root>/gate_streak.json``."""
    path = as_path(models_root) / STREAK
    previous = json.loads(path.read_text()) if path.exists() else {"runs_without_new_champion": 0}
    count = 0 if replaced else previous["runs_without_new_champion"] + 1
    atomic_write_text(path, json.dumps({"runs_without_new_champion": count, "last_version": version}))
    return count
