"""Export cost: the three SavedModels of a training run saved as they were and as they are, in the same run.

A model is trained once (2 epochs) on the synthetic lake the tests use (300 users, 150 items, 8 days), then
its query model, brute-force index and ScaNN index are saved ``--repeats`` times each way, alternating:

* ``traced``: ``tf.saved_model.save`` as before: Keras traces every sub-layer's call functions;
* ``signature_only``: :func:`recsys.training.export.save_signature_only` (``save_traces=False``): the
  variables, tables and the ``serving_default`` signature only.

Both exports of each model are loaded and answer the same queries: the figures are only written when the
answers are identical. Reports the median seconds of the three saves each way, their ratio, the SavedModel
sizes and the seconds to load and answer once (a serving container's cold start).

    .venv/bin/python bench/bench_export.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from results_file import write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
END = date(2026, 11, 9)


def lake(base: Path) -> str:
    from recsys_devtools.synthetic import extracted_lake

    return extracted_lake(base, [END - timedelta(days=7 - offset) for offset in range(8)]) + "/extract"


def savers(fitted, brute, scann, features: dict):
    """name -> (layer, serve function, options) for the three SavedModels of a run."""
    import tensorflow as tf

    from recsys.training.export import SCANN_SAVE_NAMESPACES

    signature = [{k: tf.TensorSpec([None, *v.shape[1:]], v.dtype, name=k) for k, v in features.items()}]
    tower = fitted.model.query_tower

    def retrieval(index):
        return tf.function(
            lambda f: dict(zip(("scores", "item_ids"), index(f), strict=True)), input_signature=signature
        )

    return {
        "query_model": (tower, tf.function(lambda f: {"embedding": tower(f)}, input_signature=signature), None),
        "index_brute_force": (brute, retrieval(brute), None),
        "index_scann": (scann, retrieval(scann), tf.saved_model.SaveOptions(namespace_whitelist=SCANN_SAVE_NAMESPACES)),
    }


def answers(path: Path, features: dict) -> tuple[float, dict]:
    """Seconds to load the SavedModel and answer ``features`` once, and the answer."""
    import scann  # noqa: F401 - registers the ScaNN ops the index_scann export holds
    import tensorflow as tf

    started = time.perf_counter()
    out = tf.saved_model.load(str(path)).signatures["serving_default"](**features)
    return time.perf_counter() - started, {k: v.numpy() for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import numpy as np
    import tensorflow as tf

    from recsys.index import ScannConfig
    from recsys.training import export as saved
    from recsys.training import pipeline
    from recsys.training.fit import TrainParams
    from recsys.training.tuning import TuningConfig

    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    data = pipeline.split(pipeline.load(lake(work), END, 8), END, 1, 500, pipeline.VALIDATION_FRACTION)
    choices = pipeline.choose(data, TrainParams(epochs=2, batch_size=512), TuningConfig())
    fitted = pipeline.fit_model(data, choices.params)
    evaluation = pipeline.evaluate(data, fitted, choices)
    queries = pipeline._index_queries(data, fitted, evaluation, choices.params)
    brute, scann, _, _ = saved.choose_index(
        fitted.model.query_tower, evaluation.catalog, evaluation.item_embeddings, queries, grid=[ScannConfig(4, 4, 150)]
    )
    assert scann is not None, "the bench needs a ScaNN export"
    features = {k: v[:64] for k, v in queries.items()}
    modes = {
        "traced": lambda layer, path, serve, options: tf.saved_model.save(
            layer, str(path), signatures={"serving_default": serve}, options=options
        ),
        "signature_only": saved.save_signature_only,
    }
    seconds = {mode: [] for mode in modes}
    for repeat in range(args.repeats):
        for mode, save in modes.items():
            started = time.perf_counter()
            for name, (layer, serve, options) in savers(fitted, brute, scann, features).items():
                save(layer, work / mode / str(repeat) / name, serve, options)
            seconds[mode].append(round(time.perf_counter() - started, 2))
    figures = {"models": ["query_model", "index_brute_force", "index_scann"], "repeats": args.repeats}
    for mode in modes:
        folder = work / mode / "0"
        loads = {name: answers(folder / name, features) for name in figures["models"]}
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        figures[mode] = {
            "save_seconds": statistics.median(seconds[mode]),
            "save_seconds_each": seconds[mode],
            "bytes": size,
            "load_and_answer_seconds": {name: round(s, 2) for name, (s, _) in loads.items()},
        }
        figures.setdefault("_answers", []).append({name: out for name, (_, out) in loads.items()})
    first, second = figures.pop("_answers")
    for name in first:
        for key in first[name]:
            assert np.array_equal(first[name][key], second[name][key]), f"{name}.{key} differs between the exports"
    figures["same_answers"] = True
    figures["save_speedup"] = round(figures["traced"]["save_seconds"] / figures["signature_only"]["save_seconds"], 2)
    traced, only = figures["traced"]["save_seconds"], figures["signature_only"]["save_seconds"]
    print(f"save (3 SavedModels): traced {traced} s, signature only {only} s: {figures['save_speedup']}x")
    write_results("bench_export", figures)


if __name__ == "__main__":
    main()
