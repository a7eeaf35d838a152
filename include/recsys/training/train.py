"""The trainer's command line: one two-tower model version (the pipeline: :mod:`recsys.training.pipeline`).

    python -m recsys.training.train --extract-root file:///.../extract --end-day 2026-11-22 \\
        --window-days 30 --holdout-days 1 --model-dir file:///.../models/<version>

The same entrypoint runs in the Airflow worker and inside the trainer container on Vertex AI, where
``AIP_MODEL_DIR`` (output), ``AIP_CHECKPOINT_DIR`` (per-epoch weights) and
``AIP_TENSORBOARD_LOG_DIR`` (TensorBoard logs) are honoured when set.

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
import sys
import time
from datetime import UTC, date, datetime, timedelta

from recsys.training import MIN_INTERACTIONS


def build_parser() -> argparse.ArgumentParser:
    from recsys.training.fit import TrainParams

    parser = argparse.ArgumentParser(prog="python -m recsys.training.train")
    parser.add_argument("--extract-root", required=True, help="root of the extraction partitions")
    parser.add_argument("--end-day", type=date.fromisoformat, default=datetime.now(UTC).date() - timedelta(days=1))
    parser.add_argument("--window-days", type=int, default=30)
    parser.add_argument("--holdout-days", type=int, default=1)
    parser.add_argument("--min-interactions", type=int, default=MIN_INTERACTIONS)
    parser.add_argument(
        "--model-dir", default=os.environ.get("AIP_MODEL_DIR"), help="output folder (default: $AIP_MODEL_DIR)"
    )
    for name, default in TrainParams().as_dict().items():
        kind = (lambda v: v.lower() in {"1", "true", "yes"}) if isinstance(default, bool) else type(default)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    return parser


def main(argv: list[str] | None = None) -> int:
    from recsys.training import pipeline
    from recsys.training.data import NotEnoughDataError
    from recsys.training.fit import TrainParams

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    if not args.model_dir:
        print("train failed: --model-dir or AIP_MODEL_DIR is required", file=sys.stderr)
        return 2
    try:
        params = TrainParams(**{k: getattr(args, k) for k in TrainParams().as_dict()})
        started = time.perf_counter()
        result = pipeline.train_and_export(
            args.extract_root,
            args.end_day,
            args.window_days,
            args.holdout_days,
            args.model_dir,
            params,
            min_interactions=args.min_interactions,
        )
    except (NotEnoughDataError, ValueError) as exc:
        print(f"train failed: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "model_dir": args.model_dir,
                "seconds": round(time.perf_counter() - started, 1),
                "model": result["metrics"]["model"],
                "index": result["index"]["serving"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
