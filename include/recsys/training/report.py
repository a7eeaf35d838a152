"""The model card (markdown) and the training plot (PNG) written next to each model."""

from __future__ import annotations

from pathlib import Path

from recsys.training.evaluate import DEFAULT_KS
from recsys.training.gate import BASELINES

NO_HISTORY = {
    "model": "the model's no-history query",
    "prior": "the first-event prior (the items users most often start with)",
    "popular": "popular items",
}


def _policies(metrics: dict) -> list[str]:
    """The evaluated policies in table order: the two-stage policy, the model, the baselines, the champion."""
    return [name for name in ("two_stage", "model", *BASELINES, "champion") if metrics.get(name)]


def _row(name: str, metrics: dict | None) -> str:
    if not metrics:
        return f"| {name} | " + " | ".join("–" for _ in DEFAULT_KS) + " |"
    return f"| {name} | " + " | ".join(f"{metrics[f'top_{k}_accuracy']:.4f}" for k in DEFAULT_KS) + " |"


def _policy_lines(policy: dict | None) -> list[str]:
    if not policy:
        return []
    no_history = NO_HISTORY[policy["no_history"]]
    return [
        f"Measured as served: history = the user's newest {policy['history_length']} earlier events "
        f"(window snapshot + earlier holdout events); seen items "
        f"{'excluded' if policy['exclude_seen'] else 'not excluded'}; new users without history get {no_history}.",
        "",
    ]


def _segment_table(metrics: dict) -> list[str]:
    """Top-10 / top-100 hit rate per user segment for each evaluated policy."""
    policies = [(name, metrics[name]) for name in _policies(metrics)]
    if "segments" not in metrics["model"]:
        return []
    lines = [
        "## Metrics per user segment (top-10 / top-100 hit rate, holdout pairs)",
        "",
        "| segment | pairs | " + " | ".join(name for name, _ in policies) + " |",
        "|---" * (len(policies) + 2) + "|",
    ]
    for segment, counts in metrics["model"]["segments"].items():
        cells = []
        for _, m in policies:
            seg = m.get("segments", {}).get(segment)
            cells.append(f"{seg['top_10_accuracy']:.4f} / {seg['top_100_accuracy']:.4f}" if seg else "–")
        lines.append(f"| {segment.replace('_', ' ')} | {counts['pairs']} | " + " | ".join(cells) + " |")
    return lines


def _choices(result: dict) -> list[str]:
    """What the validation split chose: the baselines' parameters and the model's tuning trials."""
    from recsys.training.validation import OBJECTIVE

    window, baselines, tuning = result["window"], result.get("baselines", {}), result.get("tuning", {})
    if not baselines:
        return []
    lines = [
        "## Choices made on the validation split (the holdout was read once, after them)",
        "",
        f"Objective: {OBJECTIVE}; {window.get('fit_rows')} fit rows, {window.get('validation_rows')} validation rows.",
        "",
        "| baseline | chosen parameters | validation | configurations tried | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, chosen in baselines.items():
        if chosen.get("skipped"):
            lines.append(f"| {name} | skipped: {chosen['skipped']} | – | – | – |")
        else:
            params = ", ".join(f"{k}={v}" for k, v in chosen["params"].items()) or "–"
            tried = f"{len(chosen['tried'])}" + (
                f" ({chosen['untried']} left: time budget)" if chosen.get("untried") else ""
            )
            lines.append(f"| {name} | {params} | {chosen['validation']:.4f} | {tried} | {chosen['seconds']} |")
    trials = tuning.get("trials", [])
    summary = tuning.get("note") or f"{len(trials)} trials in {tuning.get('seconds')} s"
    lines += ["", f"Model tuning: {summary}"]
    if trials:
        lines[-1] += (
            f" (budget {tuning['budget_minutes']} min); best trial {tuning['best_trial']}, validation "
            f"{tuning['validation']:.4f}; chosen: " + ", ".join(f"`{k}`={v}" for k, v in tuning["chosen"].items())
        )
        lines += [
            "",
            "| trial | state | validation | best epoch | seconds | parameters |",
            "|---|---|---|---|---|---|",
        ]
        for trial in trials:
            params = ", ".join(f"{k}={round(v, 5) if isinstance(v, float) else v}" for k, v in trial["params"].items())
            lines.append(
                f"| {trial['number']} | {trial['state']} | {trial['value']:.4f} | {trial['best_epoch']} | "
                f"{trial['seconds']} | {params} |"
            )
        lines += ["", "Search space: " + "; ".join(f"`{k}` {v}" for k, v in tuning["space"].items())]
    return [*lines, ""]


def _served(result: dict, decision: dict) -> list[str]:
    """Which policy is served, why (validation objective of every candidate) and by how much it won."""
    served = result.get("served")
    if not served or not served.get("validation"):
        return []
    validation = served["validation"]
    ordered = sorted(validation.items(), key=lambda pair: -pair[1])
    runner_up = next((value for name, value in ordered if name != served["policy"]), None)
    lines = [
        f"## Served policy: **{served['policy']}**",
        "",
        f"Chosen on validation among the two-stage policy (retrieval + LightGBM ranking), the two-tower model and "
        f"every tuned baseline; it leads the next best by "
        f"{validation[served['policy']] - (runner_up or 0.0):.4f}.",
    ]
    if served.get("pinned"):
        lines += ["", f"**Pinned by the operator** (`served_policy={served['pinned']}`): {served['note']}."]
    if decision.get("served_is_baseline"):
        lines += [
            "",
            f"**A baseline is served**: neither the two-tower model nor the two-stage policy beat "
            f"{served['policy']} on validation (an alert was sent where alerts are configured).",
        ]
    lines += ["", "| candidate | validation objective |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in ordered]
    ranking = result.get("ranking")
    if ranking:
        final = ranking.get("final", {})
        lines += [
            "",
            f"Ranking stage: LightGBM lambdarank {ranking['params']}, {ranking['rounds']} rounds (chosen on "
            f"validation); pool recall (share of held-out items in the candidate pool) "
            f"{ranking['validation'].get('pool_recall')} on validation, {final.get('holdout_pool_recall')} on the "
            f"holdout; ranker fit {final.get('ranker_fit_seconds')} s on {final.get('pairs')} pairs.",
        ]
    return [*lines, ""]


def model_card(version: str, result: dict, decision: dict, champion: dict | None) -> str:
    window, params, index = result["window"], result["params"], result["index"]
    metrics = result["metrics"]
    outages = ", ".join(window["outage_days"]) or "none"
    missing = ", ".join(window["missing_days"]) or "none"
    lines = [
        f"# Recommender `{version}`: serving {result.get('served', {}).get('policy', 'model')}",
        "",
        f"**Gate decision: {'BLESSED' if decision['blessed'] else 'NOT BLESSED'}**"
        + (" (forced)" if decision["forced"] and decision["blessed"] else ""),
        "",
        *[f"- {reason}" for reason in decision["reasons"]],
        "",
        "## Data",
        f"- Window: {window['window_days']} days ending {window['end_day']} "
        f"({len(window['days'])} days with data); holdout: last {window['holdout_days']} day(s)",
        f"- Interactions: {window['interactions']} ({window['train_rows']} train / {window['holdout_rows']} holdout);"
        f" users {window['users']}, items {window['items']}",
        f"- **Outage days (no data) in the window: {outages}**; days never extracted: {missing}",
        *[f"- Extraction warning: {w}" for w in window["warnings"]],
        "",
        "## Parameters",
        *[f"- `{k}`: {v}" for k, v in params.items()],
        f"- Training time: {result['train_seconds']} s; loss per epoch: {result['loss_per_epoch']}",
        f"- Distribution: {_distribution(result.get('distribution'))}",
        "",
        "## Holdout metrics (top-k hit rate over the whole catalog, as served)",
        "",
        "| model | " + " | ".join(f"top-{k}" for k in DEFAULT_KS) + " |",
        "|---" * (len(DEFAULT_KS) + 1) + "|",
        *[_row(name, metrics[name]) for name in ("two_stage",) if metrics.get(name)],
        _row("two-tower model", metrics["model"]),
        *[_row(name, metrics[name]) for name in BASELINES if metrics.get(name)],
        _row("champion" + (f" `{champion['version']}`" if champion else ""), metrics.get("champion")),
        "",
        f"The gate's bar: **{decision.get('baseline', 'popularity')}** "
        f"(`gate_baseline={decision.get('gate_baseline', 'popularity')}`).",
        "",
        f"Recall@10 {metrics['model']['recall@10']:.4f}, recall@100 {metrics['model']['recall@100']:.4f} "
        f"(per-user average over {metrics['model']['users']} users).",
        "",
        *_policy_lines(result.get("policy")),
        *_served(result, decision),
        *_segment_table(metrics),
        "",
        *_choices(result),
        "## Serving index",
        f"- Serving export: **{index['serving']}**" + (f" ({index['reason']})" if index.get("reason") else ""),
        f"- Exact search single-query latency p50 {index['brute_force_latency_ms']['p50']} ms"
        + (f" (BLAS threads: {index['brute_force_blas_threads']})" if index.get("brute_force_blas_threads") else ""),
    ]
    if index.get("scann"):
        s = index["scann"]
        lines.append(
            f"- ScaNN settings: leaves {s['num_leaves']}, search {s['num_leaves_to_search']}, "
            f"reorder {s['num_reordering_candidates']}; recall@10 {s['recall@10']}, "
            f"recall@100 {s['recall@100']} on the queries it was chosen on"
            + (
                f", {s['held_out']['recall@10']} / {s['held_out']['recall@100']} on held-out queries"
                if "held_out" in s
                else ""
            )
            + f", p50 {s['latency_ms']['p50']} ms"
            + (f" ({index['speedup_p50']}x exact search)" if index.get("speedup_p50") else "")
        )
    lines += ["", "![training plot](training_plot.png)", ""]
    return "\n".join(lines)


def training_plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, topk_ax, trials_ax) = plt.subplots(1, 3, figsize=(15, 4))
    losses = result["loss_per_epoch"]
    loss_ax.plot(range(1, len(losses) + 1), losses, marker="o")
    loss_ax.set(title="Training loss per epoch (final fit)", xlabel="epoch", ylabel="loss")
    loss_ax.set_xticks(range(1, len(losses) + 1))
    styles = {"model": "o-", "champion": "^:"}
    for name in _policies(result["metrics"]):
        metrics = result["metrics"][name]
        topk_ax.plot(DEFAULT_KS, [metrics[f"top_{k}_accuracy"] for k in DEFAULT_KS], styles.get(name, "--"), label=name)
    topk_ax.set(title="Holdout top-k accuracy", xlabel="k", ylabel="accuracy", xscale="log", ylim=(0, 1))
    topk_ax.set_xticks(DEFAULT_KS, [str(k) for k in DEFAULT_KS])
    topk_ax.legend(fontsize="small")
    trials = result.get("tuning", {}).get("trials", [])
    for trial in trials:
        curve = trial["validation_per_epoch"]
        trials_ax.plot(range(1, len(curve) + 1), curve, alpha=0.7, label=f"trial {trial['number']} ({trial['state']})")
    trials_ax.set(title="Validation objective per epoch, per tuning trial", xlabel="epoch", ylabel="validation")
    if trials:
        trials_ax.legend(fontsize="x-small", ncol=2)
    else:
        trials_ax.text(0.5, 0.5, "no tuning trials", ha="center", va="center", transform=trials_ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _distribution(place: dict | None) -> str:
    """Where the model trained (``recsys.training.distribution``), in words."""
    if not place or place["strategy"] == "default":  # models trained before it was recorded: one device
        return "one process, one device (default strategy)"
    return f"{place['strategy']} strategy: {place['replicas']} replicas on {place['workers']} worker(s)"
