"""Native ScaNN vs exact search over 1M candidates, as the server searches them.

Candidates are built like the TFRS efficient-serving tutorial: the real item embeddings of a model
trained on MovieLens 100K, repeated to ``--candidates`` rows with Gaussian noise added (noise std =
``--noise`` x the per-dimension std of the real embeddings), not pure random vectors. Queries are
the real MovieLens users' query embeddings.

Measured in one run: the export's ScaNN grid (build time, recall@10/@100 vs exact, single-query
latency) through the project's index chooser; the chosen native searcher saved, reloaded and timed
per single query (k=10) against exact numpy search (BLAS thread count reported), the headline
speedup; then, for reference, the portable TF SavedModels (brute force and ScaNN, query tower
included) reloaded and timed. Writes ``bench/results/bench_index.json``.

    .venv/bin/python bench/bench_index.py [--candidates 1000000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]


def _dir_mib(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def _time_single(serve, singles: list[dict], repeats: int = 3) -> dict:
    import numpy as np

    serve(**singles[0])
    timings = []
    for _ in range(repeats):
        for query in singles:
            started = time.perf_counter()
            serve(**query)
            timings.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(float(np.percentile(timings, 50)), 3),
        "p99_ms": round(float(np.percentile(timings, 99)), 3),
    }


def _throughput(serve, batch: dict, repeats: int = 3) -> float:
    serve(**batch)
    started = time.perf_counter()
    for _ in range(repeats):
        serve(**batch)
    return round(repeats * len(batch["user_id"]) / (time.perf_counter() - started), 1)


def main() -> int:
    from bench_quality import DEFAULT_DATA, load
    from results_file import write_results

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--candidates", type=int, default=1_000_000)
    parser.add_argument("--noise", type=float, default=0.5)
    args = parser.parse_args()
    if not (Path(args.data) / "u.data").exists():
        print(f"MovieLens 100K not found at {args.data}", file=sys.stderr)
        return 2

    import numpy as np
    import scann  # noqa: F401  (registers the ScaNN ops for the reloaded SavedModel)
    import tensorflow as tf

    import recsys.training  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
    from recsys import index
    from recsys.history import snapshot
    from recsys.training import export
    from recsys.training.features import query_features
    from recsys.training.fit import TrainParams, fit

    interactions, users, items = load(args.data)
    fitted = fit(interactions, users, items, TrainParams())
    real_ids = sorted(set(interactions["item_id"]))
    real = fitted.candidate_embeddings(real_ids, items)
    rng = np.random.default_rng(42)
    repeat = np.arange(args.candidates) % len(real)
    embeddings = real[repeat] + rng.normal(0, args.noise, (args.candidates, real.shape[1])) * real.std(axis=0)
    embeddings = embeddings.astype(np.float32)
    item_ids = [f"{real_ids[r]}#{i}" for i, r in enumerate(repeat)]
    history = snapshot(interactions, TrainParams().history_length).groupby("user_id")["item_id"].agg(list)
    user_ids = users["user_id"].astype(str)
    features = query_features(user_ids, [history.get(u, []) for u in user_ids], users, TrainParams().history_length)
    queries = {k: tf.constant(v) for k, v in features.items()}
    print(f"{args.candidates:,} candidates x {real.shape[1]} dims, {len(users)} real queries", flush=True)

    started = time.perf_counter()
    brute, scann_index, native, report = export.choose_index(
        fitted.model.query_tower, item_ids, embeddings, queries, k=100, latency_queries=100
    )
    print(f"grid done in {time.perf_counter() - started:.0f} s", flush=True)
    for row in report["grid"]:
        print(
            f"  leaves {row['num_leaves']} search {row['num_leaves_to_search']:>4} reorder "
            f"{row['num_reordering_candidates']:>5}: build {row['build_s']:6.1f}s recall@10 {row['recall@10']:.4f} "
            f"recall@100 {row['recall@100']:.4f} p50 {row['latency_ms']['p50']:.4f} ms"
        )
    if native is None:
        print(f"no ScaNN configuration qualified: {report.get('reason')}")
    query_embeddings = np.asarray(fitted.model.query_tower(queries), dtype=np.float32)
    exact = index.exact_search(embeddings)
    native_figures = {"brute_force_blas_threads": index.blas_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        if native is not None:
            config = index.config_of(report["scann"])
            index.save(native, Path(tmp) / "native", item_ids)
            loaded, _ = index.load(Path(tmp) / "native")
            search = index.native_search(loaded, config)
            singles = query_embeddings[:300]
            native_figures |= {
                "size_mib": _dir_mib(Path(tmp) / "native"),
                "exact_search_ms": index.latency_ms(exact, singles, 10),
                "scann_search_ms": index.latency_ms(search, singles, 10),
                "recall@10": report["scann"]["recall@10"],  # on the queries the configuration was chosen on
                "held_out_recall@10": report["scann"]["held_out"]["recall@10"],
            }
            speedup = native_figures["exact_search_ms"]["p50"] / native_figures["scann_search_ms"]["p50"]
            native_figures["single_query_p50_speedup"] = round(speedup, 1)
            print(
                f"native ScaNN (reloaded), k=10: {native_figures['scann_search_ms']} vs exact "
                f"{native_figures['exact_search_ms']} -> {speedup:.1f}x at held-out recall@10 "
                f"{native_figures['held_out_recall@10']} "
                f"(BLAS threads {native_figures['brute_force_blas_threads']})",
                flush=True,
            )
        exported = {}
        to_save = {"brute_force": (brute, False)}
        if scann_index is not None:
            to_save["scann"] = (scann_index, True)
        singles = [{k: v[i : i + 1] for k, v in queries.items()} for i in range(200)]
        batch = {k: v[:1000] for k, v in queries.items()}
        for name, (layer, is_scann) in to_save.items():
            path = Path(tmp) / name
            export.save_retrieval_model(layer, path, True, TrainParams().history_length, scann=is_scann)
            serve = tf.saved_model.load(str(path)).signatures["serving_default"]
            exported[name] = {
                "size_mib": _dir_mib(path),
                "single_query": _time_single(serve, singles),
                "batch_1000_queries_per_s": _throughput(serve, batch),
            }
            print(f"TF SavedModel {name:<12} reloaded (query tower included): {exported[name]}", flush=True)
    write_results(
        "bench_index",
        {
            "candidates": args.candidates,
            "noise": args.noise,
            "dims": int(real.shape[1]),
            "queries": len(users),
            "evaluator": report,
            "native": native_figures,
            "tf_savedmodels": exported,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
