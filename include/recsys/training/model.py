"""The TensorFlow Recommenders two-tower retrieval model.

Query tower: user id embedding (+ gender, occupation, age bucket embeddings when the data has them).
Candidate tower: item id embedding (+ a multi-hot genre projection when the data has genres).
Both towers take raw strings, so the exported models need no vocabulary outside themselves.

The loss is ``tfrs.tasks.Retrieval`` with in-batch negatives and the log-frequency (logQ)
correction: each example carries its item's training-set sampling probability, passed as
``candidate_sampling_probability``. No top-k metric runs during training steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf
import tensorflow_recommenders as tfrs

AGE_BOUNDARIES = [18.0, 25.0, 35.0, 45.0, 50.0, 56.0]
USER_FEATURES = ("gender", "occupation", "age")
ITEM_FEATURES = ("genres",)


@dataclass(frozen=True)
class Vocabularies:
    """Everything the towers must know about the data, taken from the training set."""

    user_ids: list[str]
    item_ids: list[str]
    genders: list[str]
    occupations: list[str]
    genres: list[str]

    @property
    def has_user_features(self) -> bool:
        return bool(self.genders or self.occupations)

    @property
    def has_item_features(self) -> bool:
        return bool(self.genres)


def _id_embedding(vocabulary: list[str], dim: int, name: str) -> tf.keras.Model:
    return tf.keras.Sequential(
        [
            tf.keras.layers.StringLookup(vocabulary=vocabulary, mask_token=None, name=f"{name}_lookup"),
            tf.keras.layers.Embedding(len(vocabulary) + 1, dim, name=f"{name}_embedding"),
        ],
        name=name,
    )


class QueryTower(tf.keras.Model):
    """User id (+ demographic features) -> query embedding."""

    def __init__(self, vocab: Vocabularies, dim: int):
        super().__init__(name="query_tower")
        self.use_features = vocab.has_user_features
        self.user = _id_embedding(vocab.user_ids, dim, "user_id")
        if self.use_features:
            self.gender = _id_embedding(vocab.genders, 4, "gender")
            self.occupation = _id_embedding(vocab.occupations, 8, "occupation")
            self.age = tf.keras.Sequential(
                [tf.keras.layers.Discretization(AGE_BOUNDARIES), tf.keras.layers.Embedding(len(AGE_BOUNDARIES) + 1, 4)]
            )
            self.project = tf.keras.layers.Dense(dim, name="query_projection")

    def call(self, features: dict) -> tf.Tensor:
        embedding = self.user(features["user_id"])
        if not self.use_features:
            return embedding
        extra = [self.gender(features["gender"]), self.occupation(features["occupation"]),
                 self.age(tf.cast(features["age"], tf.float32))]  # fmt: skip
        return self.project(tf.concat([embedding, *extra], axis=1))


class CandidateTower(tf.keras.Model):
    """Item id (+ genres) -> candidate embedding."""

    def __init__(self, vocab: Vocabularies, dim: int):
        super().__init__(name="candidate_tower")
        self.use_features = vocab.has_item_features
        self.item = _id_embedding(vocab.item_ids, dim, "item_id")
        if self.use_features:
            self.genres = tf.keras.layers.StringLookup(vocabulary=vocab.genres, output_mode="multi_hot")
            self.genre_projection = tf.keras.layers.Dense(dim, use_bias=False, name="genre_projection")

    def call(self, features: dict) -> tf.Tensor:
        embedding = self.item(features["item_id"])
        if not self.use_features:
            return embedding
        genres = self.genres(tf.strings.split(features["genres"], "|"))
        return embedding + self.genre_projection(genres)


class TwoTowerModel(tfrs.Model):
    def __init__(self, vocab: Vocabularies, dim: int, logq_correction: bool = True):
        super().__init__()
        self.query_tower = QueryTower(vocab, dim)
        self.candidate_tower = CandidateTower(vocab, dim)
        self.logq_correction = logq_correction
        self.task = tfrs.tasks.Retrieval()  # no metrics: top-k is computed only at evaluation

    def compute_loss(self, features: dict, training: bool = False) -> tf.Tensor:
        query = self.query_tower(features)
        candidate = self.candidate_tower(features)
        return self.task(
            query,
            candidate,
            candidate_sampling_probability=features["item_probability"] if self.logq_correction else None,
            compute_metrics=False,
            compute_batch_metrics=False,
        )
