"""Write the measured figures into README.md and docs/benchmarks.md from ``bench/results/*.json``.

Figures are never typed by hand: each one is read from the benchmark's JSON (:data:`FIGURES`) and
rendered between ``<!-- figures:<block> -->`` and ``<!-- /figures:<block> -->`` markers.
``tests/unit/test_figures.py`` fails when a committed file differs from what this writes.

    python -m recsys_devtools.figures       # rewrite the blocks
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
TARGETS = {"README.md": ("headline",), "docs/benchmarks.md": ("quality", "benchmarks")}
POLICY_COLUMNS = ("top_1_accuracy", "top_10_accuracy", "top_100_accuracy", "recall@10", "recall@100")


def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _serving(run: str, concurrency: str, key: str) -> Callable[[dict], float]:
    return lambda d: d["runs"][run]["http"][concurrency][key]


def _quality(d: dict) -> dict:
    return d["temporal"]


# (benchmark, what, value from its JSON, format)
FIGURES: list[tuple[str, str, Callable[[dict], object], str]] = [
    (
        "bench_quality",
        "served policy (chosen on validation) / best baseline, top-10 hit rate (ML-100K temporal)",
        lambda d: _quality(d)["ratios_served_vs_best_baseline"]["top_10"],
        "{:.3f}x",
    ),
    (
        "bench_quality",
        "served policy / best baseline, top-100 hit rate",
        lambda d: _quality(d)["ratios_served_vs_best_baseline"]["top_100"],
        "{:.3f}x",
    ),
    (
        "bench_quality",
        "two-stage policy (retrieval + LightGBM ranking) / best baseline, top-10 / top-100",
        lambda d: "{top_10:.3f}x / {top_100:.3f}x".format(**_quality(d)["two_stage"]["ratios_vs_best_baseline"]),
        "{}",
    ),
    (
        "bench_quality",
        "two-tower (chosen on validation) / best baseline, top-10 hit rate (ML-100K temporal)",
        lambda d: _quality(d)["ratios_vs_best_baseline"]["top_10"],
        "{:.3f}x",
    ),
    (
        "bench_quality",
        "two-tower / best baseline, top-100 hit rate",
        lambda d: _quality(d)["ratios_vs_best_baseline"]["top_100"],
        "{:.3f}x",
    ),
    (
        "bench_quality",
        "tuning + final training on ML-100K (s)",
        lambda d: _quality(d)["tune_and_train_seconds"],
        "{:.0f}",
    ),
    (
        "bench_extract",
        "Arrow extraction / `COPY` rows per second at 1M rows",
        lambda d: d["runs"][0]["recsys_arrow"]["vs_copy_rows_per_s"],
        "{:.2f}x",
    ),
    (
        "bench_extract",
        "Arrow extraction / `COPY` rows per second at 5M rows",
        lambda d: d["runs"][1]["recsys_arrow"]["vs_copy_rows_per_s"],
        "{:.2f}x",
    ),
    (
        "bench_extract",
        "Arrow extraction at 1M rows: client CPU (all threads) / `COPY` wall time",
        lambda d: d["runs"][0]["recsys_arrow"]["cpu_seconds"] / d["runs"][0]["baseline_copy"]["seconds"],
        "{:.2f}x",
    ),
    (
        "bench_scale",
        "training epoch at 10M interactions (s)",
        lambda d: d["runs"][1]["train"]["epoch_seconds"],
        "{:.0f}",
    ),
    (
        "bench_train_step",
        "training step as it is / as at issue 24 (strings, Retrieval task), examples/s",
        lambda d: d["step"]["now_vs_strings_retrieval"],
        "{:.2f}x",
    ),
    (
        "bench_train_step",
        "fit() examples/s, 100k items, full 50-item histories (one process, 2 cores)",
        lambda d: d["fit"]["examples_per_s"],
        "{:,.0f}",
    ),
    (
        "bench_scale",
        "training job peak RSS at 10M interactions (MiB)",
        lambda d: d["runs"][1]["train"]["peak_rss_mib"],
        "{:,.0f}",
    ),
    (
        "bench_serving",
        "serving, brute force, c=32: micro-batched req/s",
        _serving("brute_force/user_id/micro_batched", "32", "requests_per_s"),
        "{:,.0f}",
    ),
    (
        "bench_serving",
        "serving, brute force, c=32: one model call per request, req/s",
        _serving("brute_force/user_id/one_per_call", "32", "requests_per_s"),
        "{:,.0f}",
    ),
    (
        "bench_serving",
        "serving, brute force, c=32: micro-batched p99 (ms)",
        _serving("brute_force/user_id/micro_batched", "32", "p99_ms"),
        "{:.1f}",
    ),
    (
        "bench_serving",
        "serving the two-stage policy (retrieval + ranking) / retrieval only (brute force), user id: p99 at c=8 (ms)",
        lambda d: "{two_stage[p99_c8_ms]:.1f} / {retrieval_brute_force[p99_c8_ms]:.1f}".format(
            **d["two_stage_vs_retrieval_only"]["user_id"]
        ),
        "{}",
    ),
    (
        "bench_serving",
        "serving the two-stage policy / retrieval only (brute force), user id: req/s at c=32",
        lambda d: "{two_stage[requests_per_s_c32]:,.0f} / {retrieval_brute_force[requests_per_s_c32]:,.0f}".format(
            **d["two_stage_vs_retrieval_only"]["user_id"]
        ),
        "{}",
    ),
    (
        "bench_index",
        "native ScaNN single query p50 at 1M candidates (ms)",
        lambda d: d["evaluator"]["scann"]["latency_ms"]["p50"],
        "{:.3f}",
    ),
    (
        "bench_index",
        "exact search single query p50 at 1M candidates (ms)",
        lambda d: d["evaluator"]["brute_force_latency_ms"]["p50"],
        "{:.2f}",
    ),
    (
        "bench_index",
        "ScaNN recall@10 at 1M candidates (held-out queries)",
        lambda d: d["evaluator"]["scann"]["held_out"]["recall@10"],
        "{:.3f}",
    ),
    (
        "bench_delivery",
        "batch delivery, brute force, users/s (batch 256)",
        lambda d: d["runs"]["brute_force"]["batched"][1]["users_per_second"],
        "{:,.0f}",
    ),
    (
        "bench_delivery",
        "batch delivery / one user per call",
        lambda d: d["runs"]["brute_force"]["batched"][1]["vs_one_user_per_call"],
        "{:.1f}x",
    ),
    (
        "bench_vertex_wait",
        "Vertex deploy wait (20 s operation): worker-slot seconds, synchronous",
        lambda d: d["runs"][1]["synchronous"]["worker_slot_s"],
        "{:.1f}",
    ),
    (
        "bench_vertex_wait",
        "Vertex deploy wait (20 s operation): worker-slot seconds, deferrable",
        lambda d: d["runs"][1]["deferrable"][0]["worker_slot_s"],
        "{:.3f}",
    ),
    (
        "bench_personalize_wait",
        "Personalize job (20 s): detection delay, Step Functions `Wait 600 s` loop (s, worst case)",
        lambda d: d["runs"][1]["step_functions"]["detection_delay_s"],
        "{:.0f}",
    ),
    (
        "bench_personalize_wait",
        "Personalize job (20 s): detection delay, deferrable (s)",
        lambda d: d["runs"][1]["deferrable"][0]["detection_delay_s"],
        "{:.2f}",
    ),
    (
        "bench_chaos",
        "chaos suite: faults injected / survived",
        lambda d: f"{d['faults_injected']} / {d['faults_survived']}",
        "{}",
    ),
    (
        "bench_chaos",
        "chaos suite: rows lost, duplicates",
        lambda d: f"{d['data_lost_rows']}, {d['duplicates']}",
        "{}",
    ),
    (
        "bench_export",
        "export of a run's 3 SavedModels, Keras traces / signature only (s / s)",
        lambda d: d["save_speedup"],
        "{:.1f}x",
    ),
    (
        "bench_train_step",
        "training step as it is / as at the last stop (log-sum-exp, history slot by slot), examples/s",
        lambda d: d["step"]["now_vs_indices_logsumexp"],
        "{:.2f}x",
    ),
]
HEADLINE = {0, 1, 2, 5, 7, 9, 12, 15, 16, 26}  # rows of FIGURES shown in the README


def _when(name: str) -> str:
    """The run's date, and its commit where the benchmark recorded one."""
    record = load(name)
    return ", ".join(filter(None, [record["when"][:10], record.get("commit")]))


def figures_table(rows: list[int] | None = None) -> str:
    lines = ["| figure | value | from |", "|---|---|---|"]
    for number, (bench, label, value, form) in enumerate(FIGURES):
        if rows is None or number in rows:
            lines.append(f"| {label} | {form.format(value(load(bench)))} | `{bench}.json` ({_when(bench)}) |")
    return "\n".join(lines)


def quality_tables() -> str:
    """The ML-100K quality tables: every policy overall, then per segment, plus the choices."""
    d = load("bench_quality")
    q = _quality(d)
    served = q["served"]["policy"]
    policies = [(f"**served: {served}** (best on validation)", q["served"]["metrics"])]
    policies += [("two-stage (retrieval + LightGBM ranking)", q["two_stage"]["metrics"])]
    policies += [("two-stage, retrieval only (rank fusion)", q["ablation"]["retrieval_only"])]
    policies += [("two-tower (chosen on validation)", q["chosen_model"]["metrics"])]
    policies += [(f"two-tower, best {tower} trial", r["metrics"]) for tower, r in q["towers"].items() if "metrics" in r]
    policies += [(name, b["metrics"]) for name, b in q["baselines"].items()]
    header = "| policy | " + " | ".join(c.replace("_accuracy", "").replace("_", "-") for c in POLICY_COLUMNS) + " |"
    lines = [
        f"`bench/results/bench_quality.json` ({d['when'][:10]}, {d['machine']['cpus']} cores). {q['split']}: "
        f"{q['rows']['fit']} fit / {q['rows']['validation']} validation / {q['rows']['test']} test rows. "
        "Every parameter below was chosen on validation; the test split was read once.",
        "",
        header,
        "|---" * (len(POLICY_COLUMNS) + 1) + "|",
    ]
    lines += [
        f"| {name} | " + " | ".join(f"{m[c]:.4f}" if c in m else "–" for c in POLICY_COLUMNS) + " |"
        for name, m in policies
    ]
    segments = q["chosen_model"]["metrics"]["segments"]
    lines += [
        "",
        "Per segment, top-10 / top-100 hit rate:",
        "",
        "| policy | " + " | ".join(f"{s.replace('_', ' ')} ({segments[s]['pairs']})" for s in segments) + " |",
        "|---" * (len(segments) + 1) + "|",
    ]
    for name, m in policies:
        cells = [
            f"{m['segments'][s]['top_10_accuracy']:.3f} / {m['segments'][s]['top_100_accuracy']:.3f}" for s in segments
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    chosen = q["tuning"].get("chosen", {})
    ratios, best = q["ratios_vs_best_baseline"], q["best_baseline"]
    lines += [
        "",
        f"Chosen by tuning ({len(q['tuning'].get('trials', []))} trials, budget "
        f"{d['settings']['budget_minutes']} min): " + ", ".join(f"`{k}`={v}" for k, v in chosen.items()) + ".",
        "Baselines' parameters: "
        + "; ".join(
            f"{name} " + (", ".join(f"{k}={v}" for k, v in b["params"].items()) or "–")
            for name, b in q["baselines"].items()
        )
        + ".",
        "",
        "Validation objective per candidate: "
        + ", ".join(f"{name} {value:.4f}" for name, value in q["served"]["validation"].items())
        + f"; served: **{served}**.",
        "",
        f"Served policy / best baseline: top-10 **{q['ratios_served_vs_best_baseline']['top_10']}x** "
        f"({best['top_10']}), top-100 **{q['ratios_served_vs_best_baseline']['top_100']}x** ({best['top_100']}); "
        f"two-stage policy {q['two_stage']['ratios_vs_best_baseline']['top_10']}x / "
        f"{q['two_stage']['ratios_vs_best_baseline']['top_100']}x; two-tower {ratios['top_10']}x / "
        f"{ratios['top_100']}x; target {d['targets']['ratio_vs_best_baseline']}x. "
        f"Pool recall: {q['two_stage']['validation']['pool_recall']} on validation, "
        f"{q['two_stage']['final']['holdout_pool_recall']} on the test split; ranker "
        f"{q['two_stage']['params']}, {q['two_stage']['rounds']} rounds, fit "
        f"{q['two_stage']['final']['ranker_fit_seconds']} s on {q['two_stage']['final']['pairs']:,} pairs. "
        f"Tuning + final training {q['tune_and_train_seconds']} s (target ≤ {d['targets']['tune_and_train_seconds']}), "
        f"peak RSS {q['peak_rss_mib']:,.0f} MiB (commit {q.get('commit') or d.get('commit')}).",
    ]
    if "longtail" in d:
        lines += ["", *longtail_table(d)]
    return "\n".join(lines)


def longtail_table(d: dict) -> list[str]:
    """The same protocol on the generated long-tail data set (recsys_devtools.longtail)."""
    q = d["longtail"]
    rows = [("served: " + q["served"]["policy"], q["served"]["metrics"]), ("two-stage", q["two_stage"]["metrics"])]
    rows += [("two-tower", q["chosen_model"]["metrics"])]
    rows += [(name, b["metrics"]) for name, b in q["baselines"].items()]
    skipped = [name for name, b in q["baselines"].items() if b.get("skipped")]
    lines = [
        f"Long-tail data set (`recsys_devtools.longtail`: {q['settings']['longtail_items']:,} items, "
        f"{q['settings']['longtail_users']:,} users, drifting popularity, commit {q['commit']}): "
        f"{q['rows']['fit']} fit / {q['rows']['validation']} validation / {q['rows']['test']} test rows, the same "
        "protocol" + (f"; skipped: {', '.join(skipped)}" if skipped else "") + ".",
        "",
        "| policy | top-10 | top-100 |",
        "|---|---|---|",
        *[f"| {name} | {m['top_10_accuracy']:.4f} | {m['top_100_accuracy']:.4f} |" for name, m in rows],
        "",
        f"Served / best baseline: top-10 {q['ratios_served_vs_best_baseline']['top_10']}x, top-100 "
        f"{q['ratios_served_vs_best_baseline']['top_100']}x; tuning + training {q['tune_and_train_seconds']} s.",
    ]
    return lines


def blocks() -> dict[str, str]:
    return {
        "headline": figures_table(sorted(HEADLINE)),
        "quality": quality_tables(),
        "benchmarks": figures_table(),
    }


def render(text: str, rendered: dict[str, str], names: tuple[str, ...]) -> str:
    """``text`` with each named block's content replaced (the markers must be there)."""
    for name in names:
        pattern = re.compile(rf"(<!-- figures:{name} -->\n)(?:.*?\n)?(<!-- /figures:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"no <!-- figures:{name} --> ... <!-- /figures:{name} --> block")
        text = pattern.sub(lambda m, name=name: m.group(1) + rendered[name] + "\n" + m.group(2), text)
    return text


def main() -> int:
    rendered = blocks()
    for target, names in TARGETS.items():
        path = ROOT / target
        path.write_text(render(path.read_text(), rendered, names))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
