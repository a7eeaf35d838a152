"""The TensorFlow Recommenders two-tower retrieval model.

Query tower: user id embedding + the user's last N items (time-respecting, see ``recsys.history``),
read by recency-weighted pooling (``query_tower="pooling"``) or by causal self-attention
(``"attention"``, SASRec-style: learned position encodings, the newest position's output) + gender,
occupation, age bucket embeddings when the data has them.
Candidate tower: item id embedding (+ a multi-hot genre projection when the data has genres).
Both towers take raw strings, so the exported models need no vocabulary outside themselves; training
feeds the same lookups' indices instead (``<name>_index``, see ``features.TrainingExamples``), so no
string is hashed per training step.

The loss is ``tfrs.tasks.Retrieval``'s: in-batch negatives, the log-frequency (logQ) correction (each
example carries its item's training-set sampling probability), summed over the batch; computed in its
log-sum-exp form (:func:`in_batch_softmax_loss`: the positives are the diagonal, so no ``[batch, batch]``
label matrix is built or read). No top-k metric runs during training steps.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys.training.features import QueryConfig, Vocabularies

AGE_BOUNDARIES = [18.0, 25.0, 35.0, 45.0, 50.0, 56.0]
USER_FEATURES = ("gender", "occupation", "age")
ITEM_FEATURES = ("genres",)


class IdEmbedding(tf.keras.layers.Layer):
    """A string id's embedding: ``lookup`` (the vocabulary index, 0 for unknown) then ``table``.

    ``index(features, name)`` takes ``<name>_index`` when the features carry it (training) and looks the raw
    strings up otherwise (serving), so both paths meet at the same table."""

    def __init__(self, vocabulary: list[str], dim: int, **kwargs):
        super().__init__(**kwargs)
        self.lookup = tf.keras.layers.StringLookup(vocabulary=vocabulary, mask_token=None, name=f"{self.name}_lookup")
        self.table = tf.keras.layers.Embedding(len(vocabulary) + 1, dim, name=f"{self.name}_embedding")

    def index(self, features: dict, name: str) -> tf.Tensor:
        given = features.get(f"{name}_index")
        return self.lookup(features[name]) if given is None else given

    def call(self, index: tf.Tensor) -> tf.Tensor:
        return self.table(index)


class HistoryPooling(tf.keras.layers.Layer):
    """Pools a ``[batch, N]`` history of item indices (oldest first, 0 = PAD or unknown, no item).

    ``mean``: plain average. ``recency``: weights ``0.5 ** (age / half_life)`` with age 0 for the
    newest item, so the latest events dominate. Rows without history give zeros.

    Only the known items are embedded, each distinct item of the batch once: a training step's sparse
    gradient for the item table has a row per distinct item, not one per history slot (about half of
    which are padding), which is most of the step's optimizer and gradient cost."""

    def __init__(self, pooling: str, half_life: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.pooling, self.half_life = pooling, half_life

    def call(self, history: tf.Tensor, embed) -> tf.Tensor:
        """``embed``: item indices -> their embeddings (the item table)."""
        known = history > 0
        weights = tf.cast(known, tf.float32)
        if self.pooling == "recency":
            length = tf.shape(history)[1]
            age = tf.cast(tf.range(length - 1, -1, -1), tf.float32)
            weights *= tf.pow(0.5, age / self.half_life)[None, :]
        weights /= tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1e-6)
        slots = tf.where(known)  # [known slots, 2]: (row, position)
        items, item_of_slot = tf.unique(tf.gather_nd(history, slots))
        shape = tf.stack([tf.shape(history, out_type=tf.int64)[0], tf.size(items, out_type=tf.int64)])
        indices = tf.stack([slots[:, 0], tf.cast(item_of_slot, tf.int64)], axis=1)
        pooling = tf.SparseTensor(indices, tf.gather_nd(weights, slots), shape)
        return tf.sparse.sparse_dense_matmul(pooling, embed(items))


class HistoryAttention(tf.keras.layers.Layer):
    """Causal self-attention over a ``[batch, N]`` history (oldest first, left-padded): ``blocks`` of
    multi-head attention + feed-forward with residuals and layer norms (SASRec); the output is the
    newest known item's position, which has attended to every earlier item. Rows without history give zeros."""

    def __init__(self, dim: int, length: int, blocks: int = 2, heads: int = 2, dropout: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.positions = tf.keras.layers.Embedding(length, dim, name="position_embedding")
        self.attention = [
            tf.keras.layers.MultiHeadAttention(heads, dim // heads, dropout=dropout) for _ in range(blocks)
        ]
        self.feed_forward = [
            tf.keras.Sequential([tf.keras.layers.Dense(dim, activation="relu"), tf.keras.layers.Dense(dim)])
            for _ in range(blocks)
        ]
        self.norms = [tf.keras.layers.LayerNormalization(epsilon=1e-6) for _ in range(2 * blocks + 1)]
        self.dropout = tf.keras.layers.Dropout(dropout)

    def call(self, embeddings: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tf.Tensor:
        length = tf.shape(embeddings)[1]
        valid = tf.cast(mask, tf.float32)[:, :, None]
        x = self.dropout((embeddings + self.positions(tf.range(length))[None]) * valid, training=training)
        causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)[None]
        # a padded row attends to itself only, so no softmax runs over an all-masked row
        attend = (causal & mask[:, None, :]) | tf.eye(length, dtype=tf.bool)[None]
        newest = length - 1 - tf.argmax(tf.reverse(tf.cast(mask, tf.int32), axis=[1]), axis=1, output_type=tf.int32)
        last = len(self.attention) - 1
        sequence = x
        for block, (attention, feed_forward) in enumerate(zip(self.attention, self.feed_forward, strict=True)):
            queries, allowed = sequence, attend
            if block == last:  # only the newest known position's output is used: one query, not N
                queries = tf.gather(sequence, newest, batch_dims=1)[:, None, :]
                allowed = tf.gather(attend, newest, batch_dims=1)[:, None, :]
            out = queries + attention(
                self.norms[2 * block](queries), sequence, attention_mask=allowed, training=training
            )
            out = out + self.dropout(feed_forward(self.norms[2 * block + 1](out)), training=training)
            sequence = out * valid if block < last else out
        has_history = tf.cast(tf.reduce_any(mask, axis=1, keepdims=True), tf.float32)
        return self.norms[-1](sequence[:, 0, :]) * has_history


class QueryTower(tf.keras.Model):
    """User id + the user's recent items (+ demographics) -> query embedding.

    The history items are looked up in the candidate tower's item embedding table (shared weights),
    pooled, and combined with the user id embedding, a "has history" flag and the demographic
    embeddings by a small MLP. A user unknown at training time maps to the out-of-vocabulary id, so
    a new user with one event is already personalised through the history.
    """

    def __init__(self, vocab: Vocabularies, dim: int, item_embedding: IdEmbedding, config: QueryConfig):
        super().__init__(name="query_tower")
        self.use_features = vocab.has_user_features
        self.config = config
        self.user = IdEmbedding(vocab.user_ids, dim, name="user_id")
        self.item_embedding = item_embedding  # shared with the candidate tower
        if config.query_tower == "attention":
            self.pool = HistoryAttention(
                dim, config.history_length, config.attention_blocks, dropout=config.dropout, name="history_attention"
            )
        else:
            self.pool = HistoryPooling(config.pooling, config.half_life, name="history_pooling")
        if self.use_features:
            self.gender = IdEmbedding(vocab.genders, 4, name="gender")
            self.occupation = IdEmbedding(vocab.occupations, 8, name="occupation")
            self.age = tf.keras.Sequential(
                [tf.keras.layers.Discretization(AGE_BOUNDARIES), tf.keras.layers.Embedding(len(AGE_BOUNDARIES) + 1, 4)]
            )
        self.hidden = tf.keras.layers.Dense(config.hidden_units, activation="relu", name="query_hidden")
        self.project = tf.keras.layers.Dense(dim, name="query_projection")

    def call(self, features: dict, training: bool = False) -> tf.Tensor:
        user = self.user.index(features, "user_id")
        if training and self.config.user_id_dropout > 0:
            # train the out-of-vocabulary id too: users new since training query with it
            drop = tf.random.uniform(tf.shape(user)) < self.config.user_id_dropout
            user = tf.where(drop, tf.zeros_like(user), user)
        history = self.item_embedding.index(features, "history")
        known = history > 0  # PAD and unknown items are no history
        if self.config.query_tower == "attention":
            pooled = self.pool(self.item_embedding(history), known, training=training)
        else:
            pooled = self.pool(history, self.item_embedding)
        has_history = tf.cast(tf.reduce_any(known, axis=1, keepdims=True), tf.float32)
        parts = [self.user(user), pooled, has_history]
        if self.use_features:
            parts += [
                self.gender(self.gender.index(features, "gender")),
                self.occupation(self.occupation.index(features, "occupation")),
                self.age(tf.cast(features["age"], tf.float32)),
            ]
        return self.project(self.hidden(tf.concat(parts, axis=1)))


class CandidateTower(tf.keras.Model):
    """Item id (+ genres) -> candidate embedding."""

    def __init__(self, vocab: Vocabularies, dim: int):
        super().__init__(name="candidate_tower")
        self.use_features = vocab.has_item_features
        self.item = IdEmbedding(vocab.item_ids, dim, name="item_id")
        if self.use_features:
            self.genres = tf.keras.layers.StringLookup(vocabulary=vocab.genres, output_mode="multi_hot")
            self.genre_projection = tf.keras.layers.Dense(dim, use_bias=False, name="genre_projection")

    def call(self, features: dict) -> tf.Tensor:
        embedding = self.item(self.item.index(features, "item_id"))
        if not self.use_features:
            return embedding
        genres = features.get("genres_multi_hot")
        if genres is None:
            genres = self.genres(tf.strings.split(features["genres"], "|"))
        return embedding + self.genre_projection(genres)


def in_batch_softmax_loss(query: tf.Tensor, candidate: tf.Tensor, sampling_probability=None) -> tf.Tensor:
    """``tfrs.tasks.Retrieval()(query, candidate, candidate_sampling_probability=...)``, written as
    ``sum_i logsumexp(scores_i) - scores_ii``: row i's positive is candidate i, every other candidate of the
    batch a negative. The same loss and gradients as the task's cross-entropy against an identity label
    matrix, at a fraction of its CPU time: no label matrix, the logQ correction is a column of the scores'
    matmul, and the gradients are two matmuls with the softmax's exponentials (no pass over the
    ``[batch, batch]`` scores of their own)."""
    batch = tf.shape(query)[0]
    correction = tf.zeros([batch], query.dtype)
    if sampling_probability is not None:  # Retrieval's SamplingProbablityCorrection
        correction = tf.math.log(tf.clip_by_value(sampling_probability, 1e-6, 1.0))
    return _in_batch_softmax_loss(query, candidate, correction)


@tf.custom_gradient
def _in_batch_softmax_loss(query: tf.Tensor, candidate: tf.Tensor, correction: tf.Tensor):
    ones = tf.ones([tf.shape(query)[0], 1], query.dtype)
    scores = tf.linalg.matmul(
        tf.concat([query, ones], axis=1), tf.concat([candidate, -correction[:, None]], axis=1), transpose_b=True
    )
    peak = tf.stop_gradient(tf.reduce_max(scores, axis=1, keepdims=True))
    exponentials = tf.exp(scores - peak)
    total = tf.reduce_sum(exponentials, axis=1, keepdims=True)
    positives = tf.reduce_sum(query * candidate, axis=1) - correction
    loss = tf.reduce_sum(peak[:, 0] + tf.math.log(total[:, 0]) - positives)

    def gradients(upstream):
        # d loss / d scores = softmax(scores) - I, with softmax = exponentials / total per row
        d_query = tf.linalg.matmul(exponentials, candidate) / total - candidate
        # (query/total)^T @ exponentials, transposed: the same product as exponentials^T @ (query/total), but
        # Eigen's CPU matmul packs a transposed [batch, batch] left operand ~6x slower than this form
        d_candidate = tf.transpose(tf.linalg.matmul(query / total, exponentials, transpose_a=True)) - query
        return upstream * d_query, upstream * d_candidate, tf.zeros_like(correction)

    return loss, gradients


class TwoTowerModel(tfrs.Model):
    """``gather``: training example indices -> their features (``TrainingExamples.columns``). With it the
    training batches are the examples' indices and their features are gathered inside the training step,
    which costs less than gathering them in the input pipeline's threads beside the step on 2 cores."""

    def __init__(self, vocab: Vocabularies, dim: int, query: QueryConfig, logq_correction: bool = True, gather=None):
        super().__init__()
        self.candidate_tower = CandidateTower(vocab, dim)
        self.query_tower = QueryTower(vocab, dim, self.candidate_tower.item, query)
        self.logq_correction = logq_correction
        self.gather = gather

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        features = inputs if self.gather is None else self.gather(inputs)
        query = self.query_tower(features, training=training)
        candidate = self.candidate_tower(features)
        probability = features["item_probability"] if self.logq_correction else None
        return in_batch_softmax_loss(query, candidate, probability)
