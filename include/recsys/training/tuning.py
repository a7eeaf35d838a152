"""Tuning the two-tower model inside every run, on the validation split, within a budget.

Optuna's TPE sampler proposes parameters (the space: :data:`SPACE`); each trial fits on the fit part
of the training window and is scored on the validation split after every epoch
(:data:`recsys.training.validation.OBJECTIVE`), as served. A trial stops when it has not improved for
``patience`` epochs, when Optuna's median pruner says it is worse than the trials before it at the
same epoch, or when the budget runs out. The first trial is always the given parameters, so tuning
never picks something that measured worse on validation than the defaults. The winner's best epoch
becomes ``epochs``; its no-history policy is chosen among the model's query, the first-event prior
and popularity, on validation too. The holdout is never read here.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

from recsys.training.fit import TrainParams

log = logging.getLogger(__name__)

SPACE = {
    "query_tower": "pooling | attention",
    "embedding_dim": "32 | 64",
    "optimizer": "adagrad | adam",
    "learning_rate": "adagrad: 0.01-0.3 (log); adam: 0.0005-0.01 (log)",
    "half_life": "1-20 items (log), pooling",
    "dropout": "0-0.4, attention",
    "user_id_dropout": "0-0.8",
    "epochs": "1..epochs (the given value is the most a trial runs), the best epoch on validation",
}

TUNED = (
    "query_tower",
    "optimizer",
    "embedding_dim",
    "learning_rate",
    "half_life",
    "dropout",
    "user_id_dropout",
    "epochs",
    "no_history",
)


VERTEX_PARAMETERS = [  # the same space for a Vertex AI tuning job (flat: Adagrad only), StudySpec.ParameterSpec
    {"parameter_id": "query-tower", "categorical_value_spec": {"values": ["pooling", "attention"]}},
    {"parameter_id": "embedding-dim", "discrete_value_spec": {"values": [32, 64]}},
    {
        "parameter_id": "learning-rate",
        "double_value_spec": {"min_value": 0.01, "max_value": 0.3},
        "scale_type": "UNIT_LOG_SCALE",
    },
    {
        "parameter_id": "half-life",
        "double_value_spec": {"min_value": 1.0, "max_value": 20.0},
        "scale_type": "UNIT_LOG_SCALE",
    },
    {"parameter_id": "dropout", "double_value_spec": {"min_value": 0.0, "max_value": 0.4}},
    {"parameter_id": "user-id-dropout", "double_value_spec": {"min_value": 0.0, "max_value": 0.8}},
]


@dataclass(frozen=True)
class TuningConfig:
    trials: int = 0  # 0 = use the given parameters
    budget_minutes: float = 10.0
    patience: int = 3  # epochs without a better validation score before a trial stops
    seed: int = 42
    baseline_budget_minutes: float = 10.0  # choosing the baselines' parameters (baselines.tune)

    def __post_init__(self) -> None:
        if self.trials < 0 or self.budget_minutes <= 0 or self.patience < 1 or self.baseline_budget_minutes < 0:
            raise ValueError(f"invalid tuning settings: {self}")

    @classmethod
    def from_params(cls, params: dict) -> TuningConfig:
        """From a DAG run's Params ``tuning_trials`` / ``tuning_budget_minutes`` (absent: no tuning)."""
        return cls(int(params.get("tuning_trials", 0)), float(params.get("tuning_budget_minutes", 10.0)))


def suggest(trial, base: TrainParams, max_epochs: int) -> TrainParams:
    """The trial's parameters (define-by-run: the learning rate's range depends on the optimizer)."""
    tower = trial.suggest_categorical("query_tower", ["pooling", "attention"])
    optimizer = trial.suggest_categorical("optimizer", ["adagrad", "adam"])
    low, high = (0.01, 0.3) if optimizer == "adagrad" else (0.0005, 0.01)
    values = {
        "query_tower": tower,
        "optimizer": optimizer,
        "embedding_dim": trial.suggest_categorical("embedding_dim", [32, 64]),
        "learning_rate": trial.suggest_float(f"learning_rate_{optimizer}", low, high, log=True),
        "user_id_dropout": trial.suggest_float("user_id_dropout", 0.0, 0.8),
    }
    if tower == "pooling":
        values["half_life"] = trial.suggest_float("half_life", 1.0, 20.0, log=True)
    else:
        values["dropout"] = trial.suggest_float("dropout", 0.0, 0.4)
    return dataclasses.replace(base, **values, epochs=max_epochs)


def _given(base: TrainParams) -> dict:
    """The given parameters as a trial of :func:`suggest` (enqueued first)."""
    out = {
        "query_tower": base.query_tower,
        "optimizer": base.optimizer,
        "embedding_dim": base.embedding_dim,
        f"learning_rate_{base.optimizer}": base.learning_rate,
        "user_id_dropout": base.user_id_dropout,
    }
    out |= {"half_life": base.half_life} if base.query_tower == "pooling" else {"dropout": base.dropout}
    return out


def tune(fit_part, validation, catalog, users, items, base: TrainParams, config: TuningConfig, prior) -> tuple:
    """``(chosen parameters, report)``: the report (trials, chosen values, space, seconds) goes into
    ``metrics.json`` and the model card. Each trial runs at most ``base.epochs`` epochs.
    ``config.trials == 0`` returns ``base`` untouched."""
    if config.trials == 0:
        return base, {"trials": [], "note": "tuning_trials=0: the given parameters"}
    import optuna

    from recsys.training.evaluate import popularity_order

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    popular = popularity_order(fit_part)
    deadline = time.monotonic() + config.budget_minutes * 60
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    study.enqueue_trial(_given(base))
    records: list[dict] = []

    def objective(trial) -> float:
        from recsys.training.fit import fit

        params = suggest(trial, base, base.epochs)
        curve: list[float] = []
        state = {"pruned": False, "fitted": None}

        def after_epoch(epoch: int, fitted) -> bool:
            curve.append(validation.score(served_model(fitted, params, catalog, items, popular, prior)))
            trial.report(curve[-1], epoch)
            best = max(range(len(curve)), key=curve.__getitem__)
            if trial.should_prune():
                state["pruned"] = True
                return True
            return epoch - 1 - best >= config.patience or time.monotonic() > deadline

        started = time.perf_counter()
        fitted = fit(fit_part, users, items, params, after_epoch=after_epoch)
        best_epoch = max(range(len(curve)), key=curve.__getitem__) + 1
        record = {
            "number": trial.number,
            "params": dict(trial.params),
            "validation_per_epoch": curve,
            "best_epoch": best_epoch,
            "value": curve[best_epoch - 1],
            "seconds": round(time.perf_counter() - started, 1),
            "state": "pruned" if state["pruned"] else "complete",
        }
        if not state["pruned"]:  # the no-history policy, measured with this trial's model
            record["no_history"] = {
                name: validation.score(
                    served_model(fitted, dataclasses.replace(params, no_history=name), catalog, items, popular, prior)
                )
                for name in ("model", "prior", "popular")
            }
        records.append(record)
        trial.set_user_attr("best_epoch", best_epoch)
        log.info("tuning trial %d: %s", trial.number, {k: record[k] for k in ("params", "value", "best_epoch")})
        if state["pruned"]:
            raise optuna.TrialPruned()
        return record["value"]

    started = time.perf_counter()
    study.optimize(objective, n_trials=config.trials, timeout=config.budget_minutes * 60)
    best = max((r for r in records if r["state"] == "complete"), key=lambda r: r["value"])
    chosen = suggest(optuna.trial.FixedTrial(best["params"]), base, best["best_epoch"])
    chosen = dataclasses.replace(chosen, no_history=max(best["no_history"], key=best["no_history"].get))
    report = {
        "trials": records,
        "best_trial": best["number"],
        "chosen": {name: getattr(chosen, name) for name in TUNED},
        "validation": best["value"],
        "space": SPACE,
        "budget_minutes": config.budget_minutes,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return chosen, report


def served_model(fitted, params: TrainParams, catalog, items, popular, prior):
    """The fitted two-tower as served (:class:`recsys.policy.Policy`)."""
    from recsys.policy import Policy

    return Policy(
        catalog,
        popular,
        params.policy_config(),
        encoder=fitted.encode_queries,
        item_embeddings=fitted.candidate_embeddings(catalog, items),
        known_users=fitted.vocab.user_ids,
        prior=prior,
    )
