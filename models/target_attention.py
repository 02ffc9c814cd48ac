"""Candidate-aware (target) attention that keeps the serving split: keys and values per step in the
user part, the candidate's query and the pooling in the item part.

User part, once per request (`keys`): every behaviour becomes a key and a value
    x_t = relu(W_x [e_t, p_t] + b_x),  k_t = W_k x_t + b_k,  v_t = W_v x_t + b_v
(p_t, the behaviour's properties, only when given), carried, flattened, at the end of the user
representation with the step's valid flag.
Item part, per candidate (`match`): the candidate c becomes a query q = W_q c, and
    s_t = q · k_t / sqrt(d)
    focus     = Σ_t softmax(s)_t v_t                 what the behaviours most like the candidate say
    mass      = Σ_t σ(s_t + b_s) v_t                 the same summed, not normalised (DIN's pooling)
    intensity = log1p(Σ_t σ(s_t + b_s))              how many behaviours resemble it (a soft count)
    peak      = max_t s_t                            the single closest behaviour
The head reads [focus, mass, intensity, peak]. The softmax alone cannot tell one matching
behaviour from ten (it normalises); the sum can, and its value vectors let each matching
behaviour count by its type and age (a recent cart pulling, a recent buy sating). Cost per
candidate: N·2d multiply-adds, no recurrence.
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras


@keras.saving.register_keras_serializable(package="dupn")
class TargetAttention(keras.layers.Layer):
    """Keys of a behaviour sequence (user side) and their attention from a candidate (item side).

    Args:
      units: d, width of keys and queries.
      steps: N, the sequence length (the flattened keys and values are N * (2d + 1) wide).
      l2: L2 penalty on the kernels.
    """

    def __init__(self, units: int, steps: int, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.steps = steps
        self.l2 = l2
        reg = keras.regularizers.L2(l2) if l2 else None
        self.step = keras.layers.Dense(2 * units, activation="relu", kernel_regularizer=reg,
                                       name="step")
        self.key = keras.layers.Dense(units, kernel_regularizer=reg, name="key")
        self.value = keras.layers.Dense(units, kernel_regularizer=reg, name="value")
        self.query = keras.layers.Dense(units, kernel_regularizer=reg, name="query")
        # Starts the soft count's threshold below 0, so an unrelated step counts little at first.
        self.count_bias = self.add_weight("count_bias", [], initializer=keras.initializers.Constant(-2.0))

    @property
    def width(self) -> int:
        """Width of the flattened keys and values in the user representation."""
        return self.steps * (2 * self.units + 1)

    @property
    def output_width(self) -> int:
        """Width of match()'s output."""
        return 2 * self.units + 2

    def keys(self, embedded, valid, properties=None) -> tf.Tensor:
        """[B, N * (2d + 1)]: each step's key and value, zero at padding, then the valid flags.

        Args:
          embedded: e [N, B, De] (time-major); valid: [N, B]; properties: p [N, B, Dp] or None.
        """
        x = embedded if properties is None else tf.concat([embedded, properties], axis=-1)
        hidden = self.step(x)
        kv = tf.concat([self.key(hidden), self.value(hidden)], -1) * valid[..., None]   # [N, B, 2d]
        kv = tf.transpose(kv, [1, 0, 2])                                    # [B, N, 2d]
        return tf.concat([tf.reshape(kv, [-1, self.steps * 2 * self.units]), tf.transpose(valid)],
                         -1)

    def match(self, flat_keys, candidate) -> tf.Tensor:
        """[B, 2d + 2]: focus, mass, intensity, peak (see the module docstring).

        Args:
          flat_keys: [B, N * (2d + 1)] from keys(), or [1, ...]: one user's for every candidate;
          candidate: [B, C].
        """
        d, n = self.units, self.steps
        kv = tf.reshape(flat_keys[:, :n * 2 * d], [-1, n, 2 * d])           # [B, N, 2d]
        k, v = kv[..., :d], kv[..., d:]
        valid = flat_keys[:, n * 2 * d:]                                    # [B, N]
        q = self.query(candidate) * (d ** -0.5)                             # [B, d]
        # s_t, and -1e9 at padding: the softmax and the sigmoid then give padding exactly 0.
        masked = per_step(q, k, -1e9 * (1.0 - valid))                       # [B, N]
        any_valid = tf.reduce_max(valid, -1, keepdims=True)                 # [B or 1, 1]
        # Without any valid step the softmax is uniform; any_valid zeroes its pooling.
        focus = pooled(tf.nn.softmax(masked, -1), v) * any_valid            # [B, d]
        gate = tf.sigmoid(masked + self.count_bias)                         # [B, N]
        mass = pooled(gate, v)                                              # [B, d]
        intensity = tf.math.log1p(tf.reduce_sum(gate, -1, keepdims=True))
        peak = tf.reduce_max(masked, -1, keepdims=True) * any_valid         # 0 with no history
        return tf.concat([focus, mass, intensity, peak], -1)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "steps": self.steps, "l2": self.l2}


# Serving scores one user's history ([1, N, d]) against B candidates: there one matrix product
# does it, with no copy of the keys per candidate; training pairs each row with its own history.
def per_step(q: tf.Tensor, k: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """q [B, d] against keys k [B or 1, N, d], plus bias [B or 1, N] -> [B, N] dot products."""
    return tf.cond(tf.equal(tf.shape(k)[0], 1),
                   lambda: tf.nn.bias_add(tf.matmul(q, k[0], transpose_b=True), bias[0]),
                   lambda: tf.reduce_sum(q[:, None] * k, -1) + bias)


def pooled(weights: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """weights [B, N] over values v [B or 1, N, d] -> [B, d]."""
    return tf.cond(tf.equal(tf.shape(v)[0], 1),
                   lambda: tf.matmul(weights, v[0]),
                   lambda: tf.reduce_sum(weights[..., None] * v, 1))
