"""Fitting the two-tower model: deterministic given a seed."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from recsys.training.data import build_vocabularies, item_features, make_dataset, training_columns, user_features


@dataclass(frozen=True)
class TrainParams:
    # Chosen on MovieLens 100K (bench/bench_quality.py): top-100 0.40 in ~6 s on 2 cores.
    epochs: int = 2
    embedding_dim: int = 32
    learning_rate: float = 0.05
    batch_size: int = 2048
    optimizer: str = "adagrad"
    logq_correction: bool = True
    use_features: bool = True
    seed: int = 42

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.embedding_dim < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(f"invalid training parameters: {self}")
        if self.optimizer not in {"adagrad", "adam"}:
            raise ValueError(f"optimizer must be adagrad or adam, got {self.optimizer!r}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Fitted:
    model: object  # TwoTowerModel
    vocab: object  # Vocabularies
    loss_per_epoch: list[float]
    seconds: float

    def query_embeddings(self, user_ids: np.ndarray, users: pd.DataFrame) -> np.ndarray:
        import tensorflow as tf

        features = user_features(pd.Series(user_ids), users if self.vocab.has_user_features else pd.DataFrame())
        return self.model.query_tower({k: tf.constant(v) for k, v in features.items()}).numpy()

    def candidate_embeddings(self, item_ids: list[str], items: pd.DataFrame, batch: int = 65536) -> np.ndarray:
        import tensorflow as tf

        features = item_features(pd.Series(item_ids), items if self.vocab.has_item_features else pd.DataFrame())
        parts = [self.model.candidate_tower({k: tf.constant(v[s : s + batch]) for k, v in features.items()}).numpy()
                 for s in range(0, len(item_ids), batch)]  # fmt: skip
        return np.concatenate(parts) if parts else np.zeros((0, self.model.query_tower.user.layers[1].output_dim))


def fit(train: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, params: TrainParams, callbacks=()) -> Fitted:
    """Train on ``train`` interactions; ``users``/``items`` give features when ``use_features``."""
    import tensorflow as tf

    from recsys.training.model import TwoTowerModel

    tf.keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()
    if not params.use_features:
        users, items = pd.DataFrame(columns=["user_id"]), pd.DataFrame(columns=["item_id"])
    vocab = build_vocabularies(train, users, items)
    model = TwoTowerModel(vocab, params.embedding_dim, logq_correction=params.logq_correction)
    optimizer = (tf.keras.optimizers.Adagrad(params.learning_rate) if params.optimizer == "adagrad"
                 else tf.keras.optimizers.Adam(params.learning_rate))  # fmt: skip
    model.compile(optimizer=optimizer)
    dataset = make_dataset(training_columns(train, users, items), params.batch_size, params.seed)
    started = time.perf_counter()
    history = model.fit(dataset, epochs=params.epochs, verbose=0, callbacks=list(callbacks))
    seconds = time.perf_counter() - started
    losses = [round(float(v), 5) for v in history.history["loss"]]
    return Fitted(model=model, vocab=vocab, loss_per_epoch=losses, seconds=seconds)
