"""The trainer's command line: one two-tower model version (the pipeline: :mod:`recsys.training.pipeline`).

    python -m recsys.training.train --extract-root file:///.../extract --end-day 2026-11-22 \\
        --window-days 30 --holdout-days 1 --model-dir file:///.../models/<version>

The same entrypoint runs in the Airflow worker and inside the trainer container on Vertex AI, where
``AIP_MODEL_DIR`` (output), ``AIP_CHECKPOINT_DIR`` (per-epoch weights) and
``AIP_TENSORBOARD_LOG_DIR`` (TensorBoard logs) are honoured when set. Several workers in ``TF_CONFIG`` or
Vertex's ``CLUSTER_SPEC`` train together with ``MultiWorkerMirroredStrategy``
(:mod:`recsys.training.distribution`); only the chief writes. As a trial of a Vertex AI
hyperparameter tuning job (``CLOUD_ML_TRIAL_ID`` set, the trial's values as ``--name=value`` args), it
reports the validation objective of its parameters (``--tuning-trials 1``: the given values, measured
on the validation split) through ``cloudml-hypertune`` as ``validation_objective``.

Output (``--model-dir``): ``query_model/``, ``index_brute_force/``, ``index_scann/`` and
``index_scann_native/`` (the native searcher + ``item_ids.json``, when ScaNN qualified),
``candidates.parquet`` (item embeddings), ``history.parquet`` (each user's newest events of the
window: the server's history snapshot), ``vocabularies.json``, ``items.parquet``,
``users.parquet``, ``holdout.parquet`` (the evaluation set, for the champion gate),
``metadata.json``, ``index.json`` and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from recsys.training import MIN_INTERACTIONS

VERTEX_METRIC = "validation_objective"  # the metric a Vertex AI tuning trial reports (cloudml-hypertune)


def build_parser() -> argparse.ArgumentParser:
    from recsys.training.fit import TrainParams
    from recsys.training.tuning import TuningConfig

    parser = argparse.ArgumentParser(prog="python -m recsys.training.train")
    parser.add_argument("--extract-root", required=True, help="root of the extraction partitions")
    parser.add_argument("--end-day", type=date.fromisoformat, default=datetime.now(UTC).date() - timedelta(days=1))
    parser.add_argument("--window-days", type=int, default=30)
    parser.add_argument("--holdout-days", type=int, default=1)
    parser.add_argument("--min-interactions", type=int, default=MIN_INTERACTIONS)
    parser.add_argument(
        "--model-dir", default=os.environ.get("AIP_MODEL_DIR"), help="output folder (default: $AIP_MODEL_DIR)"
    )
    parser.add_argument("--tuning-trials", type=int, default=0, help="trials on the validation split (0 = none)")
    parser.add_argument("--tuning-budget-minutes", type=float, default=10.0)
    parser.add_argument(
        "--baseline-budget-minutes",
        type=float,
        default=TuningConfig.baseline_budget_minutes,
        help="choosing the baselines' parameters",
    )
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--candidates-per-retriever", type=_integer, default=100, help="the two-stage policy's pool")
    parser.add_argument(
        "--served-policy", choices=["best", "two_stage", "model"], default="best", help="best: the validation winner"
    )
    for name, default in TrainParams().as_dict().items():
        kind = (lambda v: v.lower() in {"1", "true", "yes"}) if isinstance(default, bool) else type(default)
        kind = _integer if kind is int else kind
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    return parser


def _integer(value: str) -> int:
    """An integer flag; Vertex AI sends a discrete tuning parameter as a double (``--embedding-dim=32.0``)."""
    number = float(value)
    if not number.is_integer():
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer")
    return int(number)


def main(argv: list[str] | None = None) -> int:
    from recsys.training import distribution, pipeline
    from recsys.training.data import NotEnoughDataError
    from recsys.training.fit import TrainParams
    from recsys.training.rank import RankingConfig
    from recsys.training.tuning import TuningConfig

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    if not args.model_dir:
        print("train failed: --model-dir or AIP_MODEL_DIR is required", file=sys.stderr)
        return 2
    place = distribution.topology()
    if place.workers > 1 and args.tuning_trials:
        print(
            "train failed: tuning trials run in one process; a several-worker job trains given values", file=sys.stderr
        )
        return 2
    strategy = distribution.strategy_for(place)  # before any other TensorFlow operation
    model_dir = args.model_dir if place.chief else Path(tempfile.mkdtemp(prefix="recsys-worker-")).as_uri()
    if not place.chief:  # trains beside the chief; writes nothing shared
        for variable in ("AIP_CHECKPOINT_DIR", "AIP_TENSORBOARD_LOG_DIR"):
            os.environ.pop(variable, None)
    try:
        params = TrainParams(**{k: getattr(args, k) for k in TrainParams().as_dict()})
        started = time.perf_counter()
        result = pipeline.train_and_export(
            args.extract_root,
            args.end_day,
            args.window_days,
            args.holdout_days,
            model_dir,
            params,
            min_interactions=args.min_interactions,
            tuning=TuningConfig(
                args.tuning_trials, args.tuning_budget_minutes, baseline_budget_minutes=args.baseline_budget_minutes
            ),
            validation_fraction=args.validation_fraction,
            strategy=strategy,
            distribution=place.describe(),
            ranking=RankingConfig(candidates_per_retriever=args.candidates_per_retriever),
            serve=args.served_policy,
        )
    except (NotEnoughDataError, ValueError) as exc:
        print(f"train failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if not place.chief:
            shutil.rmtree(model_dir.removeprefix("file://"), ignore_errors=True)
    if os.environ.get("CLOUD_ML_TRIAL_ID"):
        if "validation" not in result["tuning"]:
            print("train failed: a tuning trial needs --tuning-trials >= 1 to measure validation", file=sys.stderr)
            return 2
        import hypertune

        hypertune.HyperTune().report_hyperparameter_tuning_metric(VERTEX_METRIC, result["tuning"]["validation"])
    print(
        json.dumps(
            {
                "model_dir": args.model_dir if place.chief else None,  # a worker wrote nothing shared
                "distribution": place.describe(),
                "seconds": round(time.perf_counter() - started, 1),
                "model": result["metrics"]["model"],
                "baselines_tuned": sorted(result["baselines"]),  # none on a non-chief worker
                "index": result["index"]["serving"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
