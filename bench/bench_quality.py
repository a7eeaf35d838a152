"""Retrieval quality on MovieLens 100K, with every choice made on a validation split.

**Protocol.** Ratings in source order (timestamp, then the file's line order for events of the same
second: the source's event order, never item ids); the oldest 80% train, the newest 20% test. The
newest 10% of the training rows are the validation split: the baselines' parameters and the model's
(tuning: Optuna TPE + median pruning within a budget, both query towers, epochs, no-history policy)
are chosen there, exactly as every pipeline run chooses them (:func:`recsys.training.pipeline.choose`).
The chosen configurations are refitted on the whole train part and the test split is read once. Each
test interaction is one query whose history is the user's earlier events; the whole catalog is ranked
with seen items excluded (:class:`recsys.policy.Policy`, the code the server answers with); top-k hit
rate and per-user recall, overall and per segment.

Reported: the served policy (the best on validation among the two-stage policy, the two-tower model and
every baseline), the two-stage policy (retrieval + LightGBM ranking, :mod:`recsys.training.rank`) with its
pool recall, ranker rounds and seconds and an ablation (retrieval only: the same pool by reciprocal-rank
fusion), the two-tower chosen by validation, the best trial of each query tower (each refitted), every
baseline, tuning and fit seconds, peak RSS, and the ratios against the best baseline.

    .venv/bin/python bench/bench_quality.py [--data DIR] [--trials 20] [--budget-minutes 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = os.environ.get("MOVIELENS_100K_DIR", str(ROOT.parent / "shared" / "datasets" / "movielens-100k"))
KS = (10, 100)


def load(directory: str):
    """Interactions in source order (the file's), users and items of MovieLens 100K."""
    import pandas as pd

    from recsys_devtools.movielens import load_ml100k

    data = load_ml100k(Path(directory))
    rows = [r for chunk in data.interaction_chunks() for r in chunk]
    interactions = pd.DataFrame(
        {
            "user_id": [r["user_id"] for r in rows],
            "item_id": [r["item_id"] for r in rows],
            "timestamp": [int(r["occurred_at"].timestamp()) for r in rows],
        }
    )
    return interactions, pd.DataFrame(data.users), pd.DataFrame(data.items)


def temporal_split(interactions, users, items, validation_fraction: float):
    """The pipeline's :class:`Split` over the newest-20% protocol."""
    from recsys.training.data import Window
    from recsys.training.pipeline import Split
    from recsys.training.validation import validation_split

    ordered = interactions.sort_values("timestamp", kind="stable").reset_index(drop=True)
    cut = int(len(ordered) * 0.8)
    train, test = ordered.iloc[:cut].reset_index(drop=True), ordered.iloc[cut:].reset_index(drop=True)
    fit_part, validation = validation_split(train, validation_fraction)
    return Split(Window(ordered, users, items), train, test, 0, fit_part, validation)


def best_of_tower(tuning: dict, tower: str) -> dict | None:
    trials = [t for t in tuning["trials"] if t["state"] == "complete" and t["params"]["query_tower"] == tower]
    return max(trials, key=lambda t: t["value"]) if trials else None


def refit(data, choices, base, trial: dict):
    """The final fit of one trial's parameters (its best epoch, its best no-history policy), on the test split."""
    import optuna

    from recsys.training.pipeline import evaluate, fit_model
    from recsys.training.tuning import suggest

    params = suggest(optuna.trial.FixedTrial(trial["params"]), base, trial["best_epoch"])
    params = dataclasses.replace(params, no_history=max(trial["no_history"], key=trial["no_history"].get))
    started = time.perf_counter()
    fitted = fit_model(data, params)
    fit_seconds = time.perf_counter() - started
    only_model = dataclasses.replace(choices, params=params, baselines={})
    metrics = evaluate(data, fitted, only_model).metrics["model"]
    return {"params": params.as_dict(), "validation": trial["value"], "fit_seconds": round(fit_seconds, 1)} | {
        "metrics": metrics
    }


def run(args) -> dict:
    import recsys.training  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
    from recsys.training.fit import TrainParams
    from recsys.training.pipeline import choose, evaluate, fit_model
    from recsys.training.tuning import TuningConfig

    if args.dataset == "longtail":
        from recsys_devtools.longtail import frames

        interactions, users, items = frames(users=args.longtail_users, items=args.longtail_items)
    else:
        interactions, users, items = load(args.data)
    data = temporal_split(interactions, users, items, args.validation_fraction)
    base = TrainParams(epochs=args.max_epochs)
    started = time.perf_counter()
    choices = choose(data, base, TuningConfig(args.trials, args.budget_minutes))
    choose_seconds = time.perf_counter() - started
    started = time.perf_counter()
    fitted = fit_model(data, choices.params)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    evaluation = evaluate(data, fitted, choices)
    evaluate_seconds = time.perf_counter() - started
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    metrics = evaluation.metrics
    baselines = {name: metrics[name] for name in choices.baselines if name in metrics}
    out = {
        "split": "temporal: oldest 80% train (newest 10% of it = validation), newest 20% test",
        "rows": {"fit": len(data.fit), "validation": len(data.validation), "test": len(data.holdout)},
        "chosen_model": {
            "params": choices.params.as_dict(),
            "metrics": metrics["model"],
            "fit_seconds": round(fit_seconds, 1),
        },
        "baselines": {
            name: {**dataclasses.asdict(choices.baselines[name]), "metrics": metrics[name]} for name in baselines
        },
        "tuning": choices.tuning,
        "choose_seconds": round(choose_seconds, 1),
        "tune_and_train_seconds": round(choose_seconds + fit_seconds, 1),
        "peak_rss_mib": round(peak_rss, 1),
    }
    out["towers"] = {}
    for tower in ("pooling", "attention"):
        trial = best_of_tower(choices.tuning, tower)
        if trial is None:
            out["towers"][tower] = {"note": "no complete trial within the budget"}
        elif choices.params.query_tower == tower and trial["number"] == choices.tuning["best_trial"]:
            out["towers"][tower] = {"same_as": "chosen_model", "validation": trial["value"]}
        else:
            out["towers"][tower] = refit(data, choices, base, trial)
    best = max(baselines, key=lambda name: baselines[name]["top_100_accuracy"])
    out["best_baseline"] = {
        f"top_{k}": max(baselines, key=lambda name, k=k: baselines[name][f"top_{k}_accuracy"]) for k in KS
    }
    out["ratios_vs_best_baseline"] = {
        f"top_{k}": round(
            metrics["model"][f"top_{k}_accuracy"] / baselines[out["best_baseline"][f"top_{k}"]][f"top_{k}_accuracy"], 3
        )
        for k in KS
    }
    out["gate_bar"] = best
    out |= two_stage_rows(data, choices, evaluation, baselines, out["best_baseline"], evaluate_seconds)
    return out


def two_stage_rows(data, choices, evaluation, baselines: dict, best: dict, evaluate_seconds: float) -> dict:
    """The served policy (chosen on validation), the two-stage policy and its ablation (retrieval only:
    the same pool by reciprocal-rank fusion), pool recall, ranker seconds, ratios against the best baseline."""
    from recsys.training.evaluate import evaluate_holdout

    metrics = evaluation.metrics
    retrieval_only = evaluation.two_stage
    ranker, retrieval_only.ranker = retrieval_only.ranker, None
    ablation = evaluate_holdout(
        {"retrieval_only": retrieval_only},
        evaluation.evaluated,
        evaluation.history,
        data.window.users,
        sorted(set(data.train["user_id"].astype(str))),
    )["retrieval_only"]
    retrieval_only.ranker = ranker
    served = choices.served

    def ratios(name: str) -> dict:
        return {
            f"top_{k}": round(metrics[name][f"top_{k}_accuracy"] / baselines[best[f"top_{k}"]][f"top_{k}_accuracy"], 3)
            for k in KS
        }

    return {
        "served": {"policy": served, "validation": choices.validation, "metrics": metrics[served]},
        "ratios_served_vs_best_baseline": ratios(served),
        "two_stage": {
            "params": choices.ranking.params,
            "rounds": choices.ranking.rounds,
            "metrics": metrics["two_stage"],
            "ratios_vs_best_baseline": ratios("two_stage"),
            "validation": {k: v for k, v in choices.ranking.report.items() if k != "tried"},
            "tried": [{k: v for k, v in t.items() if k != "metrics"} for t in choices.ranking.report["tried"]],
            "final": evaluation.ranking,
            "evaluate_seconds": round(evaluate_seconds, 1),
        },
        "ablation": {
            "retrieval_only": {k: ablation[k] for k in ("top_10_accuracy", "top_100_accuracy", "segments")},
            "full": {k: metrics["two_stage"][k] for k in ("top_10_accuracy", "top_100_accuracy")},
            "without_two_tower_score": "the same as full: the two-tower is not yet a retriever or a feature",
        },
    }


def print_run(result: dict) -> None:
    print(f"\n{result['split']}: {result['rows']}")
    columns = ("top_1_accuracy", "top_10_accuracy", "top_100_accuracy", "recall@10", "recall@100")
    print(f"{'policy':<28}" + "".join(f"{c.replace('_accuracy', ''):>12}" for c in columns))
    rows = [("two-stage", result["two_stage"]["metrics"]), ("two-tower (chosen)", result["chosen_model"]["metrics"])]
    rows += [(f"two-tower ({tower} best)", r["metrics"]) for tower, r in result["towers"].items() if "metrics" in r]
    rows += [(name, b["metrics"]) for name, b in result["baselines"].items()]
    for name, m in rows:
        print(f"{name:<28}" + "".join(f"{m[c]:>12.4f}" for c in columns))
    print("per segment, top-10 / top-100 hit rate:")
    for segment, counts in result["chosen_model"]["metrics"]["segments"].items():
        cells = "  ".join(
            f"{name.split(' ')[0]}: {m['segments'][segment]['top_10_accuracy']:.3f}/"
            f"{m['segments'][segment]['top_100_accuracy']:.3f}"
            for name, m in rows
        )
        print(f"  {segment} ({counts['pairs']} pairs)  {cells}")
    print(
        f"chosen: { ({k: result['tuning']['chosen'][k] for k in result['tuning'].get('chosen', {})}) }\n"
        f"ratios vs the best baseline: {result['ratios_vs_best_baseline']} (best: {result['best_baseline']}); "
        f"tune + train {result['tune_and_train_seconds']} s; peak RSS {result['peak_rss_mib']} MiB\n"
        f"served: {result['served']['policy']} (validation {result['served']['validation']}); ratios vs the best "
        f"baseline {result['ratios_served_vs_best_baseline']}; retrieval only "
        f"{result['ablation']['retrieval_only']['top_10_accuracy']}/{result['ablation']['retrieval_only']['top_100_accuracy']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--budget-minutes", type=float, default=7.0)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument(
        "--dataset",
        choices=["movielens", "longtail"],
        default="movielens",
        help="longtail: recsys_devtools.longtail (drifting popularity, series, no demographics); its section is "
        "kept beside the other one's in the results file",
    )
    parser.add_argument("--longtail-items", type=int, default=50_000)
    parser.add_argument("--longtail-users", type=int, default=20_000)
    args = parser.parse_args()
    if args.dataset == "movielens" and not (Path(args.data) / "u.data").exists():
        print(f"MovieLens 100K not found at {args.data}", file=sys.stderr)
        return 2
    import json

    from results_file import RESULTS_DIR, measured_commit, write_results

    result = run(args)
    print_run(result)
    section = "longtail" if args.dataset == "longtail" else "temporal"
    result["commit"] = measured_commit()
    result["settings"] = vars(args) | {"data": args.dataset}
    path = RESULTS_DIR / "bench_quality.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    other = "temporal" if section == "longtail" else "longtail"
    write_results(
        "bench_quality",
        {
            "data": "MovieLens 100K (u.data; this copy's u.item lacks item 267); longtail: "
            "recsys_devtools.longtail (50k items, drifting popularity, generated)",
            "settings": kept.get("settings", {}) if section == "longtail" else vars(args) | {"data": "movielens-100k"},
            "targets": {"ratio_vs_best_baseline": 1.05, "tune_and_train_seconds": 600},
            section: result,
            **({other: kept[other]} if other in kept else {}),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
