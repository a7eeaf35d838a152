"""Fitting the two-tower model: deterministic given a seed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from recsys.training.features import (
    build_vocabularies,
    item_features,
    make_dataset,
    query_features,
    training_examples,
)

QUERY_TOWERS = ("pooling", "attention")


@dataclass(frozen=True)
class TrainParams:
    """The model's parameters: the given values, or the starting point and bounds of tuning
    (:mod:`recsys.training.tuning`), which chooses them on the validation split of every run."""

    epochs: int = 8
    embedding_dim: int = 32
    learning_rate: float = 0.05
    batch_size: int = 2048
    optimizer: str = "adagrad"
    logq_correction: bool = True
    use_features: bool = True
    history_length: int = 50
    query_tower: str = "pooling"  # "pooling" (recency-weighted) or "attention" (causal self-attention)
    pooling: str = "recency"
    half_life: float = 3.0
    attention_blocks: int = 2
    dropout: float = 0.2
    user_id_dropout: float = 0.5
    # the served policy (recsys.policy), evaluated with the model and exported with it
    exclude_seen: bool = True
    no_history: str = "model"
    seed: int = 42

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.embedding_dim < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(f"invalid training parameters: {self}")
        if self.optimizer not in {"adagrad", "adam"}:
            raise ValueError(f"optimizer must be adagrad or adam, got {self.optimizer!r}")
        if self.query_tower not in QUERY_TOWERS or self.attention_blocks < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"invalid query tower parameters: {self}")
        if self.query_tower == "attention" and self.embedding_dim % 2:
            raise ValueError(f"the attention tower needs an even embedding_dim, got {self.embedding_dim}")
        if (
            self.history_length < 1
            or self.pooling not in {"mean", "recency"}
            or not 0 <= self.user_id_dropout < 1
            or self.half_life <= 0
        ):
            raise ValueError(f"invalid history parameters: {self}")
        self.policy_config()  # validates the policy fields

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict) -> TrainParams:
        """The training parameters among a DAG run's Params (the others keep their defaults)."""
        return cls(**{name: params[name] for name in cls().as_dict() if name in params})

    def policy_config(self):
        from recsys.policy import PolicyConfig

        return PolicyConfig(self.history_length, self.exclude_seen, self.no_history)

    def make_optimizer(self):
        """Adagrad is Keras' ``legacy`` one: its sparse update is one fused kernel per embedding table
        (``ResourceSparseApplyAdagradV2``), where the current one runs two single-threaded ``scatter_add``s and
        a gather, ~10% of a training step on 2 cores. Adam stays the current one: the legacy Adam updates its
        moments over the whole table at every step."""
        import tensorflow as tf

        if self.optimizer == "adagrad":
            return tf.keras.optimizers.legacy.Adagrad(self.learning_rate)
        return tf.keras.optimizers.Adam(self.learning_rate)

    def query_config(self):
        from recsys.training.features import QueryConfig

        return QueryConfig(
            self.history_length,
            self.pooling,
            self.half_life,
            self.user_id_dropout,
            query_tower=self.query_tower,
            attention_blocks=self.attention_blocks,
            dropout=self.dropout,
        )


@dataclass
class Fitted:
    model: object  # TwoTowerModel
    vocab: object  # Vocabularies
    loss_per_epoch: list[float]
    seconds: float

    history_length: int

    def encode_queries(self, features: dict[str, np.ndarray], batch: int = 8192) -> np.ndarray:
        """Query embeddings for :func:`query_features` columns (the exported query model's inputs)."""
        import tensorflow as tf

        if not self.vocab.has_user_features:
            features = {k: features[k] for k in ("user_id", "history")}
        size = len(features["user_id"])
        parts = [
            self.model.query_tower({k: tf.constant(v[s : s + batch]) for k, v in features.items()}).numpy()
            for s in range(0, size, batch)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.model.query_tower.project.units), np.float32)

    def query_embeddings(self, user_ids, histories, users: pd.DataFrame) -> np.ndarray:
        return self.encode_queries(query_features(user_ids, histories, users, self.history_length))

    def candidate_embeddings(self, item_ids: list[str], items: pd.DataFrame, batch: int = 65536) -> np.ndarray:
        import tensorflow as tf

        features = item_features(pd.Series(item_ids), items if self.vocab.has_item_features else pd.DataFrame())
        parts = [
            self.model.candidate_tower({k: tf.constant(v[s : s + batch]) for k, v in features.items()}).numpy()
            for s in range(0, len(item_ids), batch)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.model.query_tower.project.units), np.float32)


def fit(
    train: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    params: TrainParams,
    callbacks=(),
    after_epoch: Callable[[int, Fitted], bool] | None = None,
    strategy=None,
) -> Fitted:
    """Train on ``train`` interactions; ``users``/``items`` give features when ``use_features``.
    ``after_epoch(epoch, fitted)`` runs after every epoch (1-based) and stops training by returning True.
    ``strategy``: a ``tf.distribute.Strategy`` (:mod:`recsys.training.distribution`; default: one device)."""
    import tensorflow as tf

    from recsys.training.model import TwoTowerModel

    strategy = strategy or tf.distribute.get_strategy()
    tf.keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()
    if not params.use_features:
        users, items = pd.DataFrame(columns=["user_id"]), pd.DataFrame(columns=["item_id"])
    vocab = build_vocabularies(train, users, items)
    examples = training_examples(train, users, items, params.history_length, vocab)
    examples._variables()  # the gathers' variables, made outside the strategy's scope
    with strategy.scope():
        model = TwoTowerModel(
            vocab, params.embedding_dim, params.query_config(), params.logq_correction, gather=examples.columns
        )
        model.compile(optimizer=params.make_optimizer())
    dataset, steps = _dataset(examples, params, strategy)
    fitted = Fitted(model, vocab, [], 0.0, params.history_length)
    callbacks = list(callbacks) + ([_after_epoch_callback(after_epoch, fitted)] if after_epoch else [])
    started = time.perf_counter()
    history = model.fit(dataset, epochs=params.epochs, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
    fitted.seconds = time.perf_counter() - started
    fitted.loss_per_epoch = [round(float(v), 5) for v in history.history["loss"]]
    return fitted


def _dataset(examples, params: TrainParams, strategy) -> tuple:
    """(batches, steps per epoch): split among the strategy's replicas when there are several, repeated
    with the number of steps given (Keras needs it for a distributed dataset)."""
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return make_dataset(examples, params.batch_size, params.seed), None

    def per_pipeline(context):
        pipeline = (context.input_pipeline_id, context.num_input_pipelines)
        return make_dataset(examples, params.batch_size, params.seed, replicas, pipeline).repeat()

    full, rest = divmod(len(examples), params.batch_size)
    return strategy.distribute_datasets_from_function(per_pipeline), full + (rest >= replicas)


def _after_epoch_callback(after_epoch: Callable[[int, Fitted], bool], fitted: Fitted):
    import tensorflow as tf

    class AfterEpoch(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if after_epoch(epoch + 1, fitted):
                self.model.stop_training = True

    return AfterEpoch()
