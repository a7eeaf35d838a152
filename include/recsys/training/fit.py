"""Fitting the two-tower model: deterministic given a seed."""

from __future__ import annotations

import time
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


@dataclass(frozen=True)
class TrainParams:
    # Chosen on MovieLens 100K, temporal protocol (bench/bench_quality.py).
    epochs: int = 8
    embedding_dim: int = 32
    learning_rate: float = 0.05
    batch_size: int = 2048
    optimizer: str = "adagrad"
    logq_correction: bool = True
    use_features: bool = True
    history_length: int = 50
    pooling: str = "recency"
    half_life: float = 3.0
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

    def query_config(self):
        from recsys.training.features import QueryConfig

        return QueryConfig(self.history_length, self.pooling, self.half_life, self.user_id_dropout)


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


def fit(train: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, params: TrainParams, callbacks=()) -> Fitted:
    """Train on ``train`` interactions; ``users``/``items`` give features when ``use_features``."""
    import tensorflow as tf

    from recsys.training.model import TwoTowerModel

    tf.keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()
    if not params.use_features:
        users, items = pd.DataFrame(columns=["user_id"]), pd.DataFrame(columns=["item_id"])
    vocab = build_vocabularies(train, users, items)
    model = TwoTowerModel(vocab, params.embedding_dim, params.query_config(), logq_correction=params.logq_correction)
    optimizer = (
        tf.keras.optimizers.Adagrad(params.learning_rate)
        if params.optimizer == "adagrad"
        else tf.keras.optimizers.Adam(params.learning_rate)
    )
    model.compile(optimizer=optimizer)
    examples = training_examples(train, users, items, params.history_length)
    dataset = make_dataset(examples, params.batch_size, params.seed)
    started = time.perf_counter()
    history = model.fit(dataset, epochs=params.epochs, verbose=0, callbacks=list(callbacks))
    seconds = time.perf_counter() - started
    losses = [round(float(v), 5) for v in history.history["loss"]]
    return Fitted(model, vocab, losses, seconds, params.history_length)
