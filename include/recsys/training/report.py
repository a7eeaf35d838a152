"""The model card (markdown) and the training plot (PNG) written next to each model."""

from __future__ import annotations

from pathlib import Path

from recsys.training.evaluate import DEFAULT_KS


def _row(name: str, metrics: dict | None) -> str:
    if not metrics:
        return f"| {name} | " + " | ".join("–" for _ in DEFAULT_KS) + " |"
    return f"| {name} | " + " | ".join(f"{metrics[f'top_{k}_accuracy']:.4f}" for k in DEFAULT_KS) + " |"


def _policy_lines(policy: dict | None) -> list[str]:
    if not policy:
        return []
    no_history = "the model's no-history query" if policy["no_history"] == "model" else "popular items"
    return [
        f"Measured as served: history = the user's newest {policy['history_length']} earlier events "
        f"(window snapshot + earlier holdout events); seen items "
        f"{'excluded' if policy['exclude_seen'] else 'not excluded'}; new users without history get {no_history}.",
        "",
    ]


def _segment_table(metrics: dict) -> list[str]:
    """Top-10 / top-100 hit rate per user segment for each evaluated policy."""
    policies = [(name, metrics[name]) for name in ("model", "popularity", "champion") if metrics.get(name)]
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


def model_card(version: str, result: dict, decision: dict, champion: dict | None) -> str:
    window, params, index = result["window"], result["params"], result["index"]
    metrics = result["metrics"]
    outages = ", ".join(window["outage_days"]) or "none"
    missing = ", ".join(window["missing_days"]) or "none"
    lines = [
        f"# Two-tower retrieval model `{version}`",
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
        "",
        "## Holdout metrics (top-k hit rate over the whole catalog, as served)",
        "",
        "| model | " + " | ".join(f"top-{k}" for k in DEFAULT_KS) + " |",
        "|---" * (len(DEFAULT_KS) + 1) + "|",
        _row("this model", metrics["model"]),
        _row("popularity baseline", metrics["popularity"]),
        _row("champion" + (f" `{champion['version']}`" if champion else ""), metrics.get("champion")),
        "",
        f"Recall@10 {metrics['model']['recall@10']:.4f}, recall@100 {metrics['model']['recall@100']:.4f} "
        f"(per-user average over {metrics['model']['users']} users).",
        "",
        *_policy_lines(result.get("policy")),
        *_segment_table(metrics),
        "",
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
            f"recall@100 {s['recall@100']}, p50 {s['latency_ms']['p50']} ms"
            + (f" ({index['speedup_p50']}x exact search)" if index.get("speedup_p50") else "")
        )
    lines += ["", "![training plot](training_plot.png)", ""]
    return "\n".join(lines)


def training_plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, topk_ax) = plt.subplots(1, 2, figsize=(10, 4))
    losses = result["loss_per_epoch"]
    loss_ax.plot(range(1, len(losses) + 1), losses, marker="o")
    loss_ax.set(title="Training loss per epoch", xlabel="epoch", ylabel="loss")
    loss_ax.set_xticks(range(1, len(losses) + 1))
    for name, style in (("model", "o-"), ("popularity", "s--"), ("champion", "^:")):
        metrics = result["metrics"].get(name)
        if metrics:
            topk_ax.plot(DEFAULT_KS, [metrics[f"top_{k}_accuracy"] for k in DEFAULT_KS], style, label=name)
    topk_ax.set(title="Holdout top-k accuracy", xlabel="k", ylabel="accuracy", xscale="log", ylim=(0, 1))
    topk_ax.set_xticks(DEFAULT_KS, [str(k) for k in DEFAULT_KS])
    topk_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
