"""Attention pooling of DUPN: which behaviours matter, given the query, the user and their properties.

    score_t = vᵀ tanh(W_h h_t + W_p p_t + W_q q + W_u u + b),  a = softmax over real steps,
    representation = Σ_t a_t h_t

With heads K > 1 the layer scores each step K times (v_1..v_K on the same tanh layer) and returns
K weightings; the first pools the states, the others are for DUPN's interests (model.interest_heads).
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras


@keras.saving.register_keras_serializable(package="dupn")
class AttentionPooling(keras.layers.Layer):
    """Pools LSTM outputs into one vector, weighting each step by a query- and user-aware score.

    Padded steps get weight exactly 0 and the real steps' weights sum to 1; a sequence with no
    real step gets all-zero weights and a zero representation.

    Args:
      units: width of the scoring layer (the paper's attention size).
      use_property: score steps by their properties p_t too (dupn-all, dupn-bpatt).
      l2: L2 penalty on the kernels.
      time_major: states, properties and valid are [N, B, ...]; weights are [B, N] either way.
      heads: K weightings of the steps (1: the paper's attention).
    Call args:
      states: h [B, N, U]; properties: p [B, N, Dp] (when use_property); context: the query
      and profile, already concatenated [B, Dq + Du]; valid: [B, N] 1 for real steps.
    Returns:
      (representation [B, U], weights [B, N]); with heads K > 1 weights are [B, K, N], and the
      representation is pooled by weights[:, 0].
    """

    def __init__(self, units: int, use_property: bool = True, l2: float = 0.0,
                 time_major: bool = False, heads: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.heads = heads
        self.use_property = use_property
        self.l2 = l2
        self.time_major = time_major
        reg = keras.regularizers.L2(l2) if l2 else None
        # W_h h_t + W_p p_t as one projection of [h_t, p_t]; W_q q + W_u u + b as one of [q, u].
        self.step_projection = keras.layers.Dense(units, use_bias=False, kernel_regularizer=reg,
                                                  name="step_projection")
        self.context_projection = keras.layers.Dense(units, kernel_regularizer=reg,
                                                     name="context_projection")
        self.score = keras.layers.Dense(heads, use_bias=False, kernel_regularizer=reg, name="score")

    def call(self, states, properties=None, context=None, valid=None):
        if self.use_property:
            if properties is None:
                raise ValueError(f"{self.name}: use_property=True but called without properties")
            steps = tf.concat([states, tf.cast(properties, states.dtype)], axis=-1)
        else:
            steps = states
        hidden = self.step_projection(steps)                          # [B, N, A] or [N, B, A]
        if context is not None:
            c = self.context_projection(context)                      # [B, A]
            hidden += c[None] if self.time_major else c[:, None]
        scores = self.score(tf.tanh(hidden))                          # [B, N, K] or [N, B, K]
        scores = tf.transpose(scores, [1, 2, 0] if self.time_major else [0, 2, 1])   # [B, K, N]
        if valid is not None:
            valid = (tf.transpose(valid) if self.time_major else valid)[:, None, :]
        weights = masked_softmax(scores, valid)
        first = weights[:, 0]
        # A broadcast multiply and a sum: cheaper here than einsum's batched matmul and
        # transposes (measured, forward and backward).
        if self.time_major:
            representation = tf.reduce_sum(tf.transpose(first)[:, :, None] * states, axis=0)
        else:
            representation = tf.reduce_sum(first[:, :, None] * states, axis=1)
        return representation, (first if self.heads == 1 else weights)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "use_property": self.use_property,
                "l2": self.l2, "time_major": self.time_major, "heads": self.heads}


def masked_softmax(scores: tf.Tensor, valid: tf.Tensor | None) -> tf.Tensor:
    """Softmax over the last axis restricted to valid positions (exact zeros elsewhere).

    Args:
      scores: [..., N]; valid: 1/0, broadcastable to scores (None: all valid).
    Returns:
      weights of scores' shape; a row with no valid position is all zeros.
    """
    if valid is None:
        return tf.nn.softmax(scores, axis=-1)
    valid = tf.cast(valid, scores.dtype)
    # Padded scores are lowered before the softmax so they cannot dominate its max, then zeroed
    # and the rest renormalised, which keeps rows without any valid step at zero, not NaN.
    shifted = scores - 1e9 * (1.0 - valid)
    weights = tf.nn.softmax(shifted, axis=-1) * valid
    return tf.math.divide_no_nan(weights, tf.reduce_sum(weights, axis=-1, keepdims=True))
