"""Towers: what maps a head's inputs to its logits (MLP, rank-features dot, wide, cosine), apart from the task.

A tower is a plain object. The head that holds it keeps its layers and weights as the head's
own attributes (Tower.attach), so their checkpoint paths are those of the heads before towers
and tasks were apart (heads/<i>/hidden/<j>, out, feature_weights, tower_out, ...): `slot`
prefixes the attributes of a second tower in the same head (ESMM's cvr_hidden, cvr_out, ...).
A tower of width 1 returns logits [B], a wider one [B, width].
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from models.head_inputs import column_product, columns


def _regularizer(l2: float):
    return keras.regularizers.L2(l2) if l2 else None


def mlp(hidden_units, dropout: float, l2: float, prefix: str, joined: bool = False) -> list:
    """Dense(relu) + Dropout layers for the given widths; joined: the first layer takes
    [left, right] (JoinedDense)."""
    reg = _regularizer(l2)
    layers = []
    for i, units in enumerate(hidden_units):
        dense = JoinedDense if joined and i == 0 else keras.layers.Dense
        layers.append(dense(units, activation="relu", kernel_regularizer=reg,
                            name=f"{prefix}_dense_{i}"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout, name=f"{prefix}_dropout_{i}"))
    return layers


@keras.saving.register_keras_serializable(package="dupn")
class JoinedDense(keras.layers.Dense):
    """Dense over [left, right] joined on the last axis, computed without joining them:
    left W_left + right W_right + b. left may be one row for all of right's rows (one user's
    representation for every candidate in serving): its product is then computed once, not once
    per candidate. The kernel is Dense's, [left + right, units], under the same name."""

    def __init__(self, units, **kwargs):
        super().__init__(units, **kwargs)
        self.input_spec = None          # two inputs, of widths known at build

    def build(self, input_shape):
        left, right = (tf.TensorShape(s) for s in input_shape)
        self.left_width = int(left[-1])
        super().build(tf.TensorShape([None, self.left_width + int(right[-1])]))
        self.input_spec = None

    def call(self, inputs):
        left, right = inputs
        out = (tf.matmul(left, self.kernel[:self.left_width])
               + column_product(right, self.kernel[self.left_width:]))
        if self.use_bias:
            out = out + self.bias
        return self.activation(out) if self.activation is not None else out


def apply(layers, x, training):
    for layer in layers:
        x = layer(x, training=training)
    return x


def _squeezed(logits: tf.Tensor, width: int) -> tf.Tensor:
    return logits[:, 0] if width == 1 else logits


class Tower:
    """Maps (representation, candidate) to logits; subclasses fill self.layers in order."""

    width = 1

    def __init__(self, slot: str = ""):
        self.slot = slot
        self.layers: dict = {}

    def attach(self, head: keras.layers.Layer) -> None:
        """Makes the layers attributes of `head` (its checkpoint children, in this order)."""
        for name, layer in self.layers.items():
            setattr(head, self.slot + name, layer)

    def __call__(self, representation, candidate=None, training=None) -> tf.Tensor:
        raise NotImplementedError


class MLPTower(Tower):
    """An MLP over the user representation joined with the candidate inputs (if any).

    Args:
      width: logits per row (1, or a multi-class task's classes).
      prefix: of the layers' names (the task's, or cvr for ESMM's conversion tower).
    """

    def __init__(self, width: int, hidden_units, dropout: float = 0.0, l2: float = 0.0,
                 prefix: str = "head", slot: str = "", candidate: bool = True):
        super().__init__(slot)
        self.width = width
        # With a candidate, the first layer reads the representation and the candidate apart:
        # one user's representation [1, D] meets its kernel once for all the candidates.
        joined = candidate and bool(hidden_units)
        self.hidden = mlp(list(hidden_units), dropout, l2, prefix, joined=joined)
        self.out = (JoinedDense if candidate and not joined else keras.layers.Dense)(
            width, kernel_regularizer=_regularizer(l2), name=f"{prefix}_logits")
        self.layers = {"hidden": self.hidden, "out": self.out}

    def __call__(self, representation, candidate=None, training=None):
        layers = [*self.hidden, self.out]
        if isinstance(layers[0], JoinedDense):
            if candidate is None:
                raise ValueError(f"{layers[0].name} reads a candidate; none was given")
            x, layers = layers[0]((representation, candidate)), layers[1:]
        else:
            x = (representation if candidate is None
                 else tf.concat([representation, columns(candidate)], -1))
        return _squeezed(apply(layers, x, training), self.width)


class RankTower(Tower):
    """Learning to rank: the representation becomes per-user weights of the ranking features.

    logit = (W_R mlp(r)) · rank_features + b: the user decides how much each ranking feature
    (price, sales, relevance, ...) matters to them. hidden_units [128] gives the paper's two
    layers (128 wide, then R wide). The candidate input is rank_features [B, R].
    """

    def __init__(self, hidden_units, rank_features: int, dropout: float = 0.0, l2: float = 0.0,
                 prefix: str = "l2r"):
        super().__init__()
        self.prefix = prefix
        self.hidden = mlp(list(hidden_units), dropout, l2, prefix)
        self.feature_weights = keras.layers.Dense(
            rank_features, kernel_regularizer=_regularizer(l2), name=f"{prefix}_feature_weights")
        self.layers = {"hidden": self.hidden, "feature_weights": self.feature_weights}

    def attach(self, head):
        super().attach(head)
        self.bias = head.add_weight(f"{self.prefix}_bias", [], initializer="zeros")

    def __call__(self, representation, candidate=None, training=None):
        if candidate is None:
            raise ValueError(f"{self.prefix}: the ranking head needs rank_features")
        x = apply(self.hidden, representation, training)
        return tf.reduce_sum(self.feature_weights(x) * candidate, axis=-1) + self.bias


class CosineTower(Tower):
    """DSSM scoring: a candidate tower and a projection of the user, compared by scaled cosine.

    logit = s · cos(W_u r, tower(candidate)) + b, with s (from 5) and b learnt.
    """

    def __init__(self, hidden_units, dropout: float = 0.0, l2: float = 0.0, prefix: str = "head",
                 slot: str = ""):
        super().__init__(slot)
        self.prefix = prefix
        hidden_units = list(hidden_units)
        reg = _regularizer(l2)
        self.tower = mlp(hidden_units[:-1], dropout, l2, f"{prefix}_tower")
        self.tower_out = keras.layers.Dense(hidden_units[-1], kernel_regularizer=reg,
                                            name=f"{prefix}_tower_out")
        self.user_projection = keras.layers.Dense(hidden_units[-1], kernel_regularizer=reg,
                                                  name=f"{prefix}_user")
        self.layers = {"tower": self.tower, "tower_out": self.tower_out,
                       "user_projection": self.user_projection}

    def attach(self, head):
        super().attach(head)
        self.scale = head.add_weight(f"{self.prefix}_scale", [],
                                     initializer=keras.initializers.Constant(5.0))
        self.bias = head.add_weight(f"{self.prefix}_bias", [], initializer="zeros")

    def __call__(self, representation, candidate=None, training=None):
        item = tf.math.l2_normalize(self.tower_out(apply(self.tower, candidate, training)), axis=-1)
        user = tf.math.l2_normalize(self.user_projection(representation), axis=-1)
        return self.scale * tf.reduce_sum(user * item, axis=-1) + self.bias


@keras.saving.register_keras_serializable(package="dupn")
class WideLinear(keras.layers.Layer):
    """A linear model over hashed sparse ids plus the dense ranking features.

    Call args:
      ids: SparseTensor [B, ?] from models.baselines.wide_ids; rank_features: [B, R].
    Returns:
      logits [B, classes].
    """

    def __init__(self, classes: int, buckets: int, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.buckets = buckets
        self.l2 = l2
        reg = _regularizer(l2)
        self.table = keras.layers.Embedding(buckets, classes, embeddings_initializer="zeros",
                                            activity_regularizer=reg, name="weights")
        self.dense = keras.layers.Dense(classes, kernel_regularizer=reg, name="rank_features")

    def call(self, ids, rank_features):
        weights = self.table(ids.values)                                     # [nnz, classes]
        summed = tf.math.unsorted_segment_sum(weights, ids.indices[:, 0],
                                              tf.shape(rank_features)[0])
        return summed + self.dense(rank_features)

    def get_config(self):
        return {**super().get_config(), "classes": self.classes, "buckets": self.buckets,
                "l2": self.l2}


class WideTower(Tower):
    """One logistic (or softmax) regression over the wide features; `width` logits at once
    (ESMM's click and conversion are two outputs of the one regression).

    Call args: ids (SparseTensor from wide_ids), rank_features [B, R] in place of the
    representation and the candidate.
    """

    def __init__(self, width: int, buckets: int, l2: float = 0.0, prefix: str = "head"):
        super().__init__()
        self.width = width
        self.linear = WideLinear(width, buckets, l2, name=f"{prefix}_linear")
        self.layers = {"linear": self.linear}

    def __call__(self, ids, rank_features=None, training=None):
        return _squeezed(self.linear(ids, rank_features), self.width)


class Twin(Tower):
    """Two towers of one logit each, stacked: logits [B, 2] = (first, second) (ESMM's click
    and conversion over the same inputs)."""

    width = 2

    def __init__(self, first: Tower, second: Tower):
        super().__init__()
        if first.width != 1 or second.width != 1:
            raise ValueError("a Twin stacks two towers of one logit each")
        self.first, self.second = first, second

    def attach(self, head):
        self.first.attach(head)
        self.second.attach(head)

    def __call__(self, representation, candidate=None, training=None):
        return tf.stack([self.first(representation, candidate, training),
                         self.second(representation, candidate, training)], axis=-1)
