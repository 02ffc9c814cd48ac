"""Exact id matches of the candidate with the history, counted by the behaviours' properties, with
the serving split kept: per-step ids and weights in the user part, the counting in the item part.

User part, once per request (`history`): every behaviour t carries its item, shop, brand and
category ids, its tag ids, and K weights
    w_t = softplus(W p_t + b)       (p_t, the behaviour's type, scene and time bucket; without
                                     properties, softplus(b): every behaviour alike)
or, signed (`signed=True`),
    w_t = (S p_t + s) * softplus(W p_t + b)   a strength of either sign times a positive decay
flattened at the end of the user representation (ids modulo a prime below 2^24, so float32
holds them exactly whatever the id range: two ids then collide once in 16.8 million pairs).
Item part, per candidate (`match`): for each field f (item, shop, brand, category, tags)
    count_{f,k} = Σ_t m_{f,t} w_{t,k},   m_{f,t} = 1 if the step's id equals the candidate's
                                         (tags: the number of tags they share)
and the head reads log1p(count) [5K] (signed: asinh(count), log-like for either sign): "has the
user carted this shop lately", "how many recent clicks in this category", learnt as K
property-weighted counts. A positive weight can only add; the signed one lets a recent buy count
against the candidate's category while a recent cart counts for it, in one sum. A learnt
attention finds such identities only after its embeddings have separated the ids; the counts
give them at the first step, and the weights let a recent cart count more than an old click (or
a buy count against).
Cost per candidate: N (4 + T²) compares, N·5K multiply-adds; in serving, where one user's
history meets many candidates, the history's weights are totalled per (field, id) once, in one
table, and each candidate's 4 + T ids are looked up in it (a binary search each).
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

ID_FIELDS = ("item_id", "shop_id", "brand_id", "category_id")   # then the tags
ID_MODULUS = 16_777_213      # the largest prime below 2^24: float32 holds its residues exactly


@keras.saving.register_keras_serializable(package="dupn")
class IdMatch(keras.layers.Layer):
    """Property-weighted counts of the history's behaviours that share an id with the candidate.

    Args:
      weightings: K, how many weightings of the behaviours count each field.
      steps: N, the sequence length.
      tags: T, tag slots per item.
      l2: L2 penalty on the weighting's kernel.
      signed: each weight times a signed strength of the properties, counts squashed by asinh.
    """

    def __init__(self, weightings: int, steps: int, tags: int, l2: float = 0.0,
                 signed: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.weightings = weightings
        self.steps = steps
        self.tags = tags
        self.l2 = l2
        self.signed = signed
        reg = keras.regularizers.L2(l2) if l2 else None
        self.weigh = keras.layers.Dense(weightings, kernel_regularizer=reg, name="weigh")
        # Bias 1: the strength starts near 1 (exactly 1 without properties), the counts near the
        # unsigned ones.
        self.strength = (keras.layers.Dense(weightings, kernel_regularizer=reg, name="strength",
                                            bias_initializer="ones") if signed else None)

    @property
    def step_width(self) -> int:
        return len(ID_FIELDS) + self.tags + self.weightings

    @property
    def width(self) -> int:
        """Width of the flattened per-step ids and weights in the user representation."""
        return self.steps * self.step_width

    @property
    def output_width(self) -> int:
        return (len(ID_FIELDS) + 1) * self.weightings

    def history(self, seq: dict, valid, properties=None) -> tf.Tensor:
        """[B, N * (4 + T + K)]: each step's ids, tag ids and weights (0 at padding).

        Args:
          seq: the time-major sequence features (models.dupn.time_major): ids [N, B], tags [N, B, T];
          valid: [N, B]; properties: p [N, B, Dp] or None.
        """
        ids = tf.stack([exact_float(seq[f"seq_{f}"]) for f in ID_FIELDS], -1)          # [N, B, 4]
        tags = exact_float(seq["seq_tags"])                                              # [N, B, T]
        x = properties if properties is not None else tf.zeros_like(valid)[..., None]
        weights = tf.nn.softplus(self.weigh(x)) * valid[..., None]                      # [N, B, K]
        if self.signed:
            weights = weights * self.strength(x)
        steps = tf.transpose(tf.concat([ids, tags, weights], -1), [1, 0, 2])           # [B, N, W]
        return tf.reshape(steps, [-1, self.width])

    def match(self, flat, candidate: dict, serving: bool = False) -> tf.Tensor:
        """[B, 5K]: log1p (signed: asinh) of each field's weighted count of matching behaviours.

        Args:
          flat: [B, N * (4 + T + K)] from history(), or [1, ...]: one user's for every candidate;
          candidate: the batch's item_id, shop_id, brand_id, category_id [B] and tags [B, T].
          serving: scoring candidates (MultiTaskModel.score_items): one user's history [1, ...]
            is then looked up, not compared. Off in training, whose graph then holds no lookup.
        """
        fields, t = len(ID_FIELDS), self.tags
        steps = tf.reshape(flat, [-1, self.steps, self.step_width])          # [B or 1, N, W]
        ids, tags, weights = (steps[..., :fields], steps[..., fields:fields + t],
                              steps[..., fields + t:])
        wanted = tf.stack([exact_float(candidate[f]) for f in ID_FIELDS], -1)          # [B, 4]
        wanted_tags = exact_float(candidate["tags"])                         # [B, T]
        if serving:
            # One user's history against many candidates: a lookup of each candidate id in that
            # history's per-id totals, not a compare of every candidate with every step.
            counts = tf.cond(tf.equal(tf.shape(steps)[0], 1),
                             lambda: self._looked_up(ids[0], tags[0], weights[0], wanted, wanted_tags),
                             lambda: self._compared(ids, tags, weights, wanted, wanted_tags))
        else:
            counts = self._compared(ids, tags, weights, wanted, wanted_tags)
        squash = tf.math.asinh if self.signed else tf.math.log1p
        return tf.reshape(squash(counts), [-1, self.output_width])

    @staticmethod
    def _compared(ids, tags, weights, wanted, wanted_tags) -> tf.Tensor:
        """[B, 5, K]: every candidate compared with every step of its own row's history."""
        # Padding steps have id 0 and weight 0; a candidate's id 0 (none) matches nothing.
        same = tf.cast(tf.equal(ids, wanted[:, None]) & tf.not_equal(wanted[:, None], 0.0),
                       tf.float32)                                            # [B, N, 4]
        shared = tf.equal(tags[..., :, None], wanted_tags[:, None, None, :]) & tf.not_equal(
            wanted_tags[:, None, None, :], 0.0)
        shared = tf.reduce_sum(tf.cast(shared, tf.float32), [-2, -1])        # [B, N]
        matches = tf.concat([same, shared[..., None]], -1)                   # [B, N, 5]
        return weighted_counts(matches, weights)

    def _looked_up(self, ids, tags, weights, wanted, wanted_tags) -> tf.Tensor:
        """[B, 5, K] from one history (ids [N, 4], tags [N, T], weights [N, K]): the candidates'
        ids looked up in that history's weight totals per (field, id), all fields in one table
        (tags: summed over the candidate's tags, as many times as a step holds each). The same
        sums as _compared's."""
        fields, t = len(ID_FIELDS), self.tags
        columns = list(range(fields)) + [fields] * t                        # the tags: field 4
        keys = tf.concat([tf.reshape(tf.transpose(field_keys(ids, columns[:fields])), [-1]),
                          tf.reshape(field_keys(tags, columns[fields:]), [-1])], 0)
        key_weights = tf.concat([tf.tile(weights, [fields, 1]),              # field-major
                                 tf.repeat(weights, t, axis=0)], 0)          # step-major tags
        queries = field_keys(tf.concat([wanted, wanted_tags], 1), columns)   # [B, 4 + T]
        found = id_totals(keys, key_weights, queries)                        # [B, 4 + T, K]
        return tf.concat([found[:, :fields], tf.reduce_sum(found[:, fields:], 1, keepdims=True)], 1)

    def get_config(self):
        return {**super().get_config(), "weightings": self.weightings, "steps": self.steps,
                "tags": self.tags, "l2": self.l2, "signed": self.signed}


# Each row's matches weighed by its own history's weights (a batched product). One history for
# many candidates is served by IdMatch._looked_up; here it is only copied to the rows.
def weighted_counts(matches: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """matches [B, N, F] by weights [B or 1, N, K] summed over the steps -> [B, F, K]."""
    rows = tf.concat([tf.shape(matches)[:1], tf.shape(weights)[1:]], 0)
    return tf.einsum("bnf,bnk->bfk", matches, tf.broadcast_to(weights, rows))


def field_keys(ids: tf.Tensor, fields) -> tf.Tensor:
    """Float ids [..., C] (exact_float's residues) of the fields [C] (indices) -> int64 keys unique
    across fields; id 0 (none) stays 0."""
    keys = tf.cast(ids, tf.int64) + tf.constant(fields, tf.int64) * (ID_MODULUS + 1)
    return keys * tf.cast(tf.not_equal(ids, 0.0), tf.int64)


def id_totals(keys: tf.Tensor, weights: tf.Tensor, queries: tf.Tensor) -> tf.Tensor:
    """[B, Q, K]: for each of queries [B, Q], the summed weights [M, K] of the keys [M] equal to it
    (a query 0, none, finds nothing; a key found twice counts twice)."""
    unique, index = tf.unique(keys)
    totals = tf.math.unsorted_segment_sum(weights, index, tf.size(unique))   # [U, K]
    order = tf.argsort(unique)
    unique, totals = tf.gather(unique, order), tf.gather(totals, order)
    flat = tf.reshape(queries, [-1])
    at = tf.minimum(tf.searchsorted(unique, flat), tf.size(unique) - 1)
    found = tf.equal(tf.gather(unique, at), flat) & tf.not_equal(flat, 0)
    # A multiply, not tf.where: a select that broadcasts [B * Q, 1] took a tenth of the item part.
    counts = tf.gather(totals, at) * tf.cast(found, totals.dtype)[:, None]   # [B * Q, K]
    return tf.reshape(counts, [tf.shape(queries)[0], -1, tf.shape(weights)[1]])


def exact_float(ids: tf.Tensor) -> tf.Tensor:
    """Integer ids as float32 residues modulo ID_MODULUS (0, padding, stays 0; ids are >= 0)."""
    return tf.cast(tf.math.floormod(tf.cast(ids, tf.int64), ID_MODULUS), tf.float32)
