"""One two-tower training job as a pipeline of named steps: load -> split -> tune -> fit -> evaluate -> export.

The window splits in time order into train and holdout (the newest ``holdout_days``), and train into a
fit part and a validation split (its newest ``validation_fraction``). Every choice is made on
validation: the baselines' parameters (:mod:`recsys.training.baselines`), the model's parameters,
epochs and no-history policy (:mod:`recsys.training.tuning`). The chosen model and baselines are then
refitted on the whole train part and the holdout is read once, to evaluate them for the gate.

Each step is a function with its own inputs and outputs; :func:`train_and_export` runs them in order and
times each (``metrics.json`` ``stage_seconds``). The model card is written later, by the gate, which
needs the champion's figures on the same holdout. The command line is :mod:`recsys.training.train`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from recsys.storage import upload_dir
from recsys.training import MIN_INTERACTIONS

log = logging.getLogger(__name__)
VALIDATION_FRACTION = 0.1  # the newest share of the training rows where choices are made
POPULAR_ITEMS = 5000  # popular items exported for the fallback (enough to survive any exclusion)
MAX_EVAL_CELLS = 2_000_000_000  # holdout rows x catalog items scored per policy (a seeded row sample beyond)


@dataclass
class Split:
    """The window (users, items, days) and its interactions in time order: train (= fit part, then
    validation), then holdout."""

    window: Any  # recsys.training.data.Window
    train: Any  # pandas.DataFrame
    holdout: Any  # pandas.DataFrame
    holdout_days: int
    fit: Any = None  # pandas.DataFrame: train minus validation, what tuning fits on
    validation: Any = None  # pandas.DataFrame: the newest part of train, where choices are made

    @property
    def catalog(self) -> list[str]:
        return sorted(set(self.window.items["item_id"].astype(str)) | set(self.train["item_id"].astype(str)))


@dataclass
class Choices:
    """What the validation split chose: the model's parameters, the baselines, the ranker, the served policy."""

    params: Any  # TrainParams
    baselines: dict  # name -> recsys.training.baselines.Baseline
    tuning: dict
    prior_first_events: int
    ranking: Any = None  # recsys.training.rank.RankerChoice (None: no two-stage policy this run)
    retrievers: Any = None  # recsys.training.rank.Retrievers
    validation: dict = dataclasses.field(default_factory=dict)  # candidate policy -> validation objective
    pinned: str = "best"  # an operator's choice of the served policy ("best": the validation winner)

    @property
    def served(self) -> str:
        """The candidate with the best validation objective (ties: the first of SERVED_ORDER), unless an
        operator pinned one that this run built."""
        if self.pinned != "best" and self.pinned in self.validation:
            return self.pinned
        return served_choice(self.validation)


SERVED_ORDER = ("two_stage", "model")  # then the baselines: what wins a tie on validation
SERVED_POLICIES = ("best", *SERVED_ORDER)  # what an operator may ask to serve (recsys_two_tower's served_policy)


def served_choice(validation: dict) -> str:
    """The policy to serve: the best validation objective; ``model`` when nothing was measured."""
    if not validation:
        return "model"
    order = [*SERVED_ORDER, *(name for name in validation if name not in SERVED_ORDER)]
    present = [name for name in order if name in validation]
    return max(present, key=lambda name: (validation[name], -present.index(name)))


@dataclass
class Evaluation:
    """What evaluation measured and what export reuses: the catalog, its embeddings, the popular order,
    the history snapshot, the rows evaluated and the metrics per policy."""

    catalog: list[str]
    item_embeddings: Any  # numpy array, one row per catalog item
    popular: list[str]
    history: Any  # pandas.DataFrame: every user's newest events of the training part
    evaluated: Any  # the holdout rows evaluated (all, or a seeded sample)
    metrics: dict
    prior: list[str]  # the first-event prior: what users without history get when no_history="prior"
    two_stage: Any = None  # recsys.policy.TwoStagePolicy fitted on the train part (None: not built this run)
    ranking: dict = dataclasses.field(default_factory=dict)  # its final fit's report and holdout pool recall


def load(extract_root: str, end_day: date, window_days: int):
    """The window's committed partitions (interactions, users, items, outage days)."""
    from recsys.training.data import load_window

    return load_window(extract_root, end_day, window_days)


def split(
    window,
    end_day: date,
    holdout_days: int,
    min_interactions: int = MIN_INTERACTIONS,
    validation_fraction: float = VALIDATION_FRACTION,
) -> Split:
    """Train = everything before the newest ``holdout_days``; holdout = those days; validation = the newest
    ``validation_fraction`` of train. Too little data raises
    :class:`~recsys.training.data.NotEnoughDataError` with the reason."""
    from recsys.training.data import NotEnoughDataError, temporal_split
    from recsys.training.validation import validation_split

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
    fit_part, validation = validation_split(train, validation_fraction)
    if fit_part.empty or validation.empty:
        raise NotEnoughDataError(f"the {len(train)} training interactions span too little time for a validation split")
    return Split(window, train, holdout, holdout_days, fit_part, validation)


def choose(data: Split, params, tuning_config, with_baselines: bool = True, ranking=None) -> Choices:
    """Every choice, on the validation split: the baselines' parameters, the ranker's (``ranking``: a
    :class:`~recsys.training.rank.RankingConfig`, default settings), the model's (tuning), and so the policy
    to serve: the best of them all on validation. ``with_baselines=False`` (a non-chief worker of a
    several-worker job, whose metrics nobody reads): no baseline or ranker is tuned, the first-event prior
    takes its default and the model is served."""
    from recsys.training import baselines, rank, tuning
    from recsys.training.validation import Validation

    catalog = data.catalog
    validation = Validation.of(data.fit, data.validation, data.window.users, len(catalog))
    chosen = {}
    if with_baselines:
        budget = tuning_config.baseline_budget_minutes * 60
        chosen = baselines.tune(data.fit, catalog, params.policy_config(), validation.score, budget)
    first_events = chosen["first_event_prior"].params["first_events"] if chosen else baselines.FIRST_EVENTS
    prior = baselines.first_event_prior(data.fit, first_events)
    tuned, report = tuning.tune(
        data.fit, validation, catalog, data.window.users, data.window.items, params, tuning_config, prior
    )
    choices = Choices(tuned, chosen, report | {"validation_rows": len(validation)}, first_events)
    if not with_baselines:
        return choices
    ranking = ranking or rank.RankingConfig()
    two_tower = functools.partial(_two_tower_on, data=data, params=tuned, first_events=first_events)
    on_fit = None  # the two-tower fitted on the fit part, when this run fits it anyway
    if "validation" not in report:  # no trials: the given parameters are measured once, fitted on the fit part
        on_fit = two_tower(data.fit)
        report["validation"] = validation.score(on_fit)
    choices.retrievers = rank.Retrievers.of(
        chosen, first_events, ranking.candidates_per_retriever, two_tower if ranking.two_tower else None
    )
    choices.ranking = rank.choose(
        data.fit,
        validation,
        catalog,
        params.policy_config(),
        choices.retrievers,
        ranking,
        data.window.users,
        on_fit if ranking.two_tower else None,
    )
    choices.validation = {
        "two_stage": choices.ranking.validation,
        "model": report["validation"],
        **{name: b.validation for name, b in chosen.items() if not b.skipped},
    }
    log.info("validation objective per candidate policy: %s; serving %s", choices.validation, choices.served)
    return choices


def _two_tower_on(log, data: Split, params, first_events: int):
    """The two-tower with the chosen ``params`` fitted on ``log`` (a retriever of the two-stage policy), as served."""
    from recsys.training import baselines
    from recsys.training.evaluate import popularity_order
    from recsys.training.fit import fit
    from recsys.training.tuning import served_model

    fitted = fit(log, data.window.users, data.window.items, params)
    prior = baselines.first_event_prior(log, first_events)
    return served_model(fitted, params, data.catalog, data.window.items, popularity_order(log), prior)


def fit_model(data: Split, params, strategy=None):
    """Train the two-tower model on the training part (Vertex AI checkpoints / TensorBoard when asked)."""
    from recsys.training.fit import fit

    with tempfile.TemporaryDirectory(prefix="recsys-aip-") as aip_tmp:
        callbacks = _aip_callbacks(Path(aip_tmp))
        return fit(data.train, data.window.users, data.window.items, params, callbacks, strategy=strategy)


def evaluate(data: Split, fitted, choices: Choices, max_eval_cells: int = MAX_EVAL_CELLS, ranking=None) -> Evaluation:
    """The model, the two-stage policy and every baseline (refitted on the whole train part with their
    chosen parameters), each as served (:mod:`recsys.policy`), on the holdout.

    Evaluation ranks the whole catalog for every holdout row, so its cost grows with rows x items: when
    that product passes ``max_eval_cells`` the holdout is evaluated on a seeded sample of its rows (every
    policy on the same rows; ``window.evaluated_rows`` says how many; 20,000 rows at 100,000 items)."""
    from recsys.history import snapshot, users_log
    from recsys.policy import Policy
    from recsys.training import baselines, rank
    from recsys.training.evaluate import evaluate_holdout, popularity_order

    window, train, holdout, params = data.window, data.train, data.holdout, choices.params
    catalog = data.catalog
    eval_rows = max(1, max_eval_cells // len(catalog))
    evaluated = holdout if len(holdout) <= eval_rows else holdout.sample(eval_rows, random_state=0).sort_index()
    embeddings = fitted.candidate_embeddings(catalog, window.items)
    config, popular, history = params.policy_config(), popularity_order(train), snapshot(train)
    prior = baselines.first_event_prior(train, choices.prior_first_events)
    policies = {
        "model": Policy(
            catalog,
            popular,
            config,
            encoder=fitted.encode_queries,
            item_embeddings=embeddings,
            known_users=fitted.vocab.user_ids,
            prior=prior,
        )
    }
    shared = {"popular": popular, ("prior", choices.prior_first_events): prior}  # computed once for all

    def baseline(name: str, params: dict) -> Policy:
        policy = baselines.build(name, train, catalog, config, params, shared)
        baselines.release(shared, name)  # the policy holds its weights until evaluated
        return policy

    two_stage, ranking_report = None, {}
    if choices.ranking is not None:
        ranking = ranking or rank.RankingConfig()
        two_stage, ranking_report = rank.fit(
            train, catalog, config, choices.retrievers, ranking, choices.ranking, window.users, policies["model"]
        )
        policies["two_stage"] = two_stage
        features = rank.query_demographics(evaluated, window.users)
        queries = two_stage.batch_from_log(evaluated, users_log(evaluated, history, evaluated), features)
        ranking_report["holdout_pool_recall"] = rank.pool_recall(two_stage, queries, evaluated["item_id"])
    for name, chosen in choices.baselines.items():
        if not chosen.skipped:
            policies[name] = functools.partial(baseline, name, chosen.params)
    metrics = evaluate_holdout(policies, evaluated, history, window.users, fitted.vocab.user_ids)
    return Evaluation(catalog, embeddings, popular, history, evaluated, metrics, prior, two_stage, ranking_report)


def served_policy(data: Split, choices: Choices, evaluation: Evaluation):
    """The policy object to export for a served choice other than the two-tower model."""
    from recsys.training import baselines

    name = choices.served
    if name == "two_stage":
        return evaluation.two_stage
    shared = {"popular": evaluation.popular, ("prior", choices.prior_first_events): evaluation.prior}
    return baselines.build(
        name, data.train, evaluation.catalog, choices.params.policy_config(), choices.baselines[name].params, shared
    )


def _index_queries(data: Split, fitted, evaluation: Evaluation, params) -> dict:
    """Real queries (the holdout's users with their histories) to tune and check the retrieval index on."""
    import tensorflow as tf

    from recsys.history import users_log
    from recsys.policy import Policy
    from recsys.training.features import demographics

    rows = data.holdout.drop_duplicates("user_id").head(1000)
    policy = Policy(evaluation.catalog, evaluation.popular, params.policy_config())
    sample = policy.batch_from_log(rows, users_log(rows, evaluation.history, data.holdout), {})
    queries = {"user_id": sample.user_ids, "history": sample.histories}
    if fitted.vocab.has_user_features:
        queries |= demographics(sample.user_ids, data.window.users)
    return {k: tf.constant(v) for k, v in queries.items()}


def export(
    data: Split,
    fitted,
    evaluation: Evaluation,
    params,
    out: Path,
    *,
    index_k: int = 100,
    min_index_recall: float = 0.95,
    scann_grid: list | None = None,
    served: tuple[str, Any] = ("model", None),
) -> dict:
    """Write the servable model into the local folder ``out``: query model, retrieval indexes (brute force;
    ScaNN when it reaches ``min_index_recall``), candidates, history snapshot, tables, metadata, and the
    served policy when validation chose another than the two-tower model (``served``: its name and the
    policy, written to ``served/``). Returns the index report."""
    import pandas as pd

    from recsys import index
    from recsys.policy import SERVED_DIR, save_policy
    from recsys.training import export as saved

    catalog, embeddings, length = evaluation.catalog, evaluation.item_embeddings, params.history_length
    use_user_features = fitted.vocab.has_user_features
    brute, scann, native, index_report = saved.choose_index(
        fitted.model.query_tower,
        catalog,
        embeddings,
        _index_queries(data, fitted, evaluation, params),
        k=index_k,
        min_recall=min_index_recall,
        grid=scann_grid,
    )
    saved.save_query_model(fitted.model.query_tower, out / "query_model", use_user_features, length)
    saved.save_retrieval_model(brute, out / "index_brute_force", use_user_features, length, scann=False)
    if scann is not None:
        saved.save_retrieval_model(scann, out / "index_scann", use_user_features, length, scann=True)
        index.save(native, out / index.NATIVE_DIR, catalog)
    tables = {
        "candidates": pd.DataFrame({"item_id": catalog, "embedding": list(embeddings)}),
        "items": data.window.items.astype({"item_id": str}),
        "users": data.window.users.astype({"user_id": str}),
        "holdout": data.holdout,
        "evaluated": evaluation.evaluated,  # the holdout rows every policy was scored on: the gate re-scores these
        "history": evaluation.history,
    }
    for name, frame in tables.items():
        frame.reset_index(drop=True).to_parquet(out / f"{name}.parquet", index=False)
    config = dataclasses.asdict(params.policy_config())
    metadata = {
        "user_features": use_user_features,
        "item_features": fitted.vocab.has_item_features,
        "vocabulary_sizes": {"users": len(fitted.vocab.user_ids), "items": len(fitted.vocab.item_ids)},
        "embedding_dim": params.embedding_dim,
        "history_length": length,
        "policy": config,
        "popular_items": evaluation.popular[:POPULAR_ITEMS],
        "prior_items": evaluation.prior[:POPULAR_ITEMS],
        "serving_index": index_report["serving"],
        "k": index_k,
        "served": {"policy": served[0]},
    }
    if served[0] != "model":
        metadata["served"]["described"] = save_policy(served[1], out / SERVED_DIR)
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2))
    (out / "vocabularies.json").write_text(json.dumps(dataclasses.asdict(fitted.vocab)))
    (out / "index.json").write_text(json.dumps(index_report, indent=2))
    return index_report


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
    tuning=None,
    validation_fraction: float = VALIDATION_FRACTION,
    strategy=None,
    distribution: dict | None = None,
    ranking=None,
    serve: str = "best",
) -> dict:
    """The whole job (load -> split -> choose -> fit -> evaluate -> export) into ``model_dir`` (any object
    store); ``tuning`` is a :class:`~recsys.training.tuning.TuningConfig` (default: no trials); ``strategy``
    and ``distribution`` (what metrics.json records of it): :mod:`recsys.training.distribution` (default:
    one device). ``serve``: the served policy, ``best`` (the validation winner) unless an operator pins
    ``two_stage`` or ``model``. Returns what it writes to ``metrics.json``."""
    from recsys.training.distribution import ONE_DEVICE
    from recsys.training.tuning import TuningConfig

    if holdout_days >= window_days:
        raise ValueError(f"holdout_days ({holdout_days}) must be smaller than window_days ({window_days})")
    clock = _StageClock()
    window = load(extract_root, end_day, window_days)
    data = split(window, end_day, holdout_days, min_interactions, validation_fraction)
    clock.lap("load")
    # a non-chief worker trains beside the chief (and saves beside it: saving may need collectives) but its
    # metrics go nowhere: it skips the baselines, the choose stage's largest cost
    chief = (distribution or {}).get("chief", True)
    if serve not in SERVED_POLICIES:
        raise ValueError(f"serve must be one of {SERVED_POLICIES}, got {serve!r}")
    choices = choose(data, params, tuning or TuningConfig(), with_baselines=chief, ranking=ranking)
    choices.pinned = serve
    params = choices.params
    clock.lap("choose")
    fitted = fit_model(data, params, strategy)
    clock.lap("fit")
    evaluation = evaluate(data, fitted, choices, max_eval_cells, ranking)
    clock.lap("evaluate")
    served = choices.served
    with tempfile.TemporaryDirectory(prefix="recsys-export-") as tmp:
        out = Path(tmp)
        index_report = export(
            data,
            fitted,
            evaluation,
            params,
            out,
            index_k=index_k,
            min_index_recall=min_index_recall,
            scann_grid=scann_grid,
            served=(served, None if served == "model" else served_policy(data, choices, evaluation)),
        )
        clock.lap("export")
        result = {
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "window": {
                **data.window.describe(),
                "extract_root": extract_root,
                "end_day": end_day.isoformat(),
                "window_days": window_days,
                "holdout_days": holdout_days,
                "train_rows": len(data.train),
                "fit_rows": len(data.fit),
                "validation_rows": len(data.validation),
                "holdout_rows": len(data.holdout),
                "evaluated_rows": len(evaluation.evaluated),
            },
            "params": params.as_dict(),
            "policy": dataclasses.asdict(params.policy_config()),
            "loss_per_epoch": fitted.loss_per_epoch,
            "train_seconds": round(fitted.seconds, 2),
            "distribution": distribution or ONE_DEVICE.describe(),
            "metrics": evaluation.metrics,
            "served": {
                "policy": served,
                "validation": choices.validation,
                "pinned": serve if serve != "best" else None,
                "note": "chosen on validation among the two-stage policy, the two-tower model and the baselines"
                if serve == "best"
                else f"pinned by the operator (served_policy={serve}); validation's winner: "
                f"{served_choice(choices.validation)}",
            },
            "ranking": None
            if choices.ranking is None
            else {
                "params": choices.ranking.params,
                "rounds": choices.ranking.rounds,
                "validation": choices.ranking.report,
                "final": evaluation.ranking,
            },
            "baselines": {name: chosen.as_dict() for name, chosen in choices.baselines.items()},
            "tuning": choices.tuning,
            "index": index_report,
            "stage_seconds": clock.laps,
        }
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        upload_dir(out, model_dir)
    model = {k: v for k, v in evaluation.metrics[served].items() if k != "segments"}
    log.info("exported model to %s, serving %s: %s", model_dir, served, model)
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
