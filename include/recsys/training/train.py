"""Train, evaluate and export one two-tower model version.

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
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from recsys.storage import copy_file
from recsys.training import MIN_INTERACTIONS

log = logging.getLogger(__name__)
POPULAR_ITEMS = 5000  # popular items exported for the fallback (enough to survive any exclusion)
MAX_EVAL_CELLS = 2_000_000_000  # holdout rows x catalog items scored per policy (a seeded row sample beyond)


def upload_dir(local: Path, target: str) -> None:
    """Copy a local folder to any ``ObjectStoragePath`` destination (file://, s3://, gs://)."""
    from airflow.sdk import ObjectStoragePath

    root = ObjectStoragePath(target)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            copy_file(path, root / path.relative_to(local).as_posix())


def download_dir(source: str, local: Path) -> Path:
    """Copy an ``ObjectStoragePath`` folder to ``local`` (a local path is used in place)."""
    from airflow.sdk import ObjectStoragePath

    root = ObjectStoragePath(source)
    if root.protocol in {"file", "local", ""}:
        return Path(root.path)
    for path in root.rglob("*"):
        if path.is_file():
            copy_file(path, local / str(path.relative_to(root)))
    return local


def _write_parquet(frame, path: Path) -> None:
    frame.reset_index(drop=True).to_parquet(path, index=False)


def train_and_export(
    extract_root: str,
    end_day: date,
    window_days: int,
    holdout_days: int,
    model_dir: str,
    params,
    *,
    min_interactions: int = MIN_INTERACTIONS,
    index_k: int = 100,
    min_index_recall: float = 0.95,
    scann_grid: list | None = None,
    max_eval_cells: int = MAX_EVAL_CELLS,
) -> dict:
    """The whole training job; returns the metrics written to ``metrics.json``.

    Evaluation ranks the whole catalog for every holdout row, so its cost grows with rows x items: when
    that product passes ``max_eval_cells`` the holdout is evaluated on a seeded sample of its rows (every
    policy on the same rows; ``window.evaluated_rows`` says how many; 20,000 rows at 100,000 items)."""
    import pandas as pd

    from recsys import index
    from recsys.history import snapshot
    from recsys.policy import Policy
    from recsys.training import export
    from recsys.training.data import NotEnoughDataError, load_window, temporal_split
    from recsys.training.evaluate import evaluate_holdout, popularity_order
    from recsys.training.features import demographics
    from recsys.training.fit import fit

    if holdout_days >= window_days:
        raise ValueError(f"holdout_days ({holdout_days}) must be smaller than window_days ({window_days})")
    clock = _StageClock()
    window = load_window(extract_root, end_day, window_days)
    holdout_start = datetime.combine(end_day - timedelta(days=holdout_days - 1), datetime.min.time(), tzinfo=UTC)
    train, holdout = temporal_split(window.interactions, int(holdout_start.timestamp()))
    if len(train) < min_interactions:
        raise NotEnoughDataError(
            f"only {len(train)} training interactions in the window ending {end_day} "
            f"({len(window.days)} days with data, outages: {window.outage_days or 'none'}, "
            f"missing: {window.missing_days or 'none'}); need at least {min_interactions}"
        )
    if holdout.empty:
        raise NotEnoughDataError(f"no interactions in the {holdout_days} holdout day(s) ending {end_day}")

    clock.lap("load")
    with tempfile.TemporaryDirectory(prefix="recsys-aip-") as aip_tmp:
        fitted = fit(train, window.users, window.items, params, callbacks=_aip_callbacks(Path(aip_tmp)))
    clock.lap("fit")
    catalog = sorted(set(window.items["item_id"].astype(str)) | set(train["item_id"].astype(str)))
    eval_rows = max(1, max_eval_cells // len(catalog))
    evaluated = holdout if len(holdout) <= eval_rows else holdout.sample(eval_rows, random_state=0).sort_index()
    candidate_embeddings = fitted.candidate_embeddings(catalog, window.items)
    config = params.policy_config()
    popular = popularity_order(train)
    history = snapshot(train)
    metrics = evaluate_holdout(
        {
            "model": Policy(
                catalog,
                popular,
                config,
                encoder=fitted.encode_queries,
                item_embeddings=candidate_embeddings,
                known_users=fitted.vocab.user_ids,
            ),
            "popularity": Policy(catalog, popular, config),
        },
        evaluated,
        history,
        window.users,
        fitted.vocab.user_ids,
    )

    clock.lap("evaluate")
    with tempfile.TemporaryDirectory(prefix="recsys-export-") as tmp:
        out = Path(tmp)
        use_user_features = fitted.vocab.has_user_features
        events = pd.concat([history, holdout], ignore_index=True)
        sample = Policy(catalog, popular, config).batch_from_log(
            holdout.drop_duplicates("user_id").head(1000), events, {}
        )
        queries = {"user_id": sample.user_ids, "history": sample.histories}
        if use_user_features:
            queries |= demographics(sample.user_ids, window.users)
        brute, scann, native, index_report = export.choose_index(
            fitted.model.query_tower,
            catalog,
            candidate_embeddings,
            _tensors(queries),
            k=index_k,
            min_recall=min_index_recall,
            grid=scann_grid,
        )
        length = params.history_length
        export.save_query_model(fitted.model.query_tower, out / "query_model", use_user_features, length)
        export.save_retrieval_model(brute, out / "index_brute_force", use_user_features, length, scann=False)
        if scann is not None:
            export.save_retrieval_model(scann, out / "index_scann", use_user_features, length, scann=True)
            index.save(native, out / index.NATIVE_DIR, catalog)
        _write_parquet(
            pd.DataFrame({"item_id": catalog, "embedding": list(candidate_embeddings)}), out / "candidates.parquet"
        )
        _write_parquet(window.items.astype({"item_id": str}), out / "items.parquet")
        _write_parquet(window.users.astype({"user_id": str}), out / "users.parquet")
        _write_parquet(holdout, out / "holdout.parquet")
        _write_parquet(history, out / "history.parquet")
        result = {
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "window": {
                **window.describe(),
                "extract_root": extract_root,
                "end_day": end_day.isoformat(),
                "window_days": window_days,
                "holdout_days": holdout_days,
                "train_rows": len(train),
                "holdout_rows": len(holdout),
                "evaluated_rows": len(evaluated),
            },
            "params": params.as_dict(),
            "policy": dataclasses.asdict(config),
            "loss_per_epoch": fitted.loss_per_epoch,
            "train_seconds": round(fitted.seconds, 2),
            "metrics": metrics,
            "index": index_report,
        }
        metadata = {
            "user_features": use_user_features,
            "item_features": fitted.vocab.has_item_features,
            "vocabulary_sizes": {"users": len(fitted.vocab.user_ids), "items": len(fitted.vocab.item_ids)},
            "embedding_dim": params.embedding_dim,
            "history_length": length,
            "policy": dataclasses.asdict(config),
            "popular_items": popular[:POPULAR_ITEMS],
            "serving_index": index_report["serving"],
            "k": index_k,
        }
        (out / "metadata.json").write_text(json.dumps(metadata, indent=2))
        (out / "vocabularies.json").write_text(json.dumps(dataclasses.asdict(fitted.vocab)))
        (out / "index.json").write_text(json.dumps(index_report, indent=2))
        clock.lap("export")
        result["stage_seconds"] = clock.laps
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        upload_dir(out, model_dir)
    log.info("exported model to %s: %s", model_dir, {k: v for k, v in metrics["model"].items() if k != "segments"})
    return result


class _StageClock:
    """Seconds per stage of the job (``metrics.json`` ``stage_seconds``)."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 2)
        self._last = now


def _tensors(columns: dict) -> dict:
    import tensorflow as tf

    return {k: tf.constant(v) for k, v in columns.items()}


def _aip_callbacks(local_root: Path) -> list:
    """Vertex AI conventions: per-epoch checkpoints and TensorBoard logs when the env asks for them.

    Keras writes to local disk; a remote ``gs://``/``s3://`` target is refreshed after every epoch.
    """
    import tensorflow as tf

    callbacks = []
    for variable, name in (("AIP_CHECKPOINT_DIR", "checkpoints"), ("AIP_TENSORBOARD_LOG_DIR", "logs")):
        target = os.environ.get(variable)
        if not target:
            continue
        local = Path(target) if "://" not in target else local_root / name
        if name == "checkpoints":
            path = str(local / "epoch-{epoch:03d}.weights.h5")
            callbacks.append(tf.keras.callbacks.ModelCheckpoint(path, save_weights_only=True))
        else:
            callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=str(local)))
        if "://" in target:
            callbacks.append(_UploadAfterEachEpoch(local, target))
    return callbacks


def _UploadAfterEachEpoch(local: Path, target: str):  # noqa: N802 - a class factory: tf is imported lazily
    import tensorflow as tf

    class UploadAfterEachEpoch(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            upload_dir(local, target)

    return UploadAfterEachEpoch()


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
        result = train_and_export(
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
