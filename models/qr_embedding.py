"""Quotient-remainder embedding: a unique pair of rows per id at the memory of a plain hashed table.

Shi et al., "Compositional Embeddings Using Complementary Partitions for Memory-Efficient
Recommendation Systems", KDD 2020. A table of `buckets` rows is kept as two tables, quotient
(Q) and remainder (R), that split the rows between them (features.contract.qr_rows); an id in
[0, |Q| x |R|) is embedded as Q[id // |R|] * R[id % |R|] (element-wise). Two ids in that range
never share both rows, so the parser can hash strings into |Q| x |R| ids (about buckets² / 4)
instead of `buckets`: far fewer ids collide at the same number of parameters.
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from features.contract import qr_rows

# Each factor's init range: U(-a, a) squared has variance a^4 / 9, equal to the plain tables'
# U(-0.05, 0.05) (variance 0.05^2 / 3) at a = (3 x 0.05^2)^(1/4), so a qr row starts at the scale
# of a plain one.
PLAIN_INIT = 0.05
FACTOR_INIT = (3 * PLAIN_INIT ** 2) ** 0.25


def _init():
    return keras.initializers.RandomUniform(-FACTOR_INIT, FACTOR_INIT)


def qr_pair(ids: tf.Tensor, remainder_rows: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(quotient row, remainder row) of every id; ids [...] int64 -> two [...] int64."""
    return ids // remainder_rows, ids % remainder_rows


@keras.saving.register_keras_serializable(package="dupn")
class QREmbedding(keras.layers.Layer):
    """ids [...] int64 in [0, quotient_rows x remainder_rows) -> [..., dim].

    Args:
      buckets: rows of the two tables together (the plain table's memory).
      dim: embedding width.
      l2: L2 penalty on the two rows each id looks up, per example (a plain table's is on its
        one row).
    """

    def __init__(self, buckets: int, dim: int, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.buckets = buckets
        self.dim = dim
        self.l2 = l2
        self.quotient_rows, self.remainder_rows = qr_rows(buckets)
        reg = keras.regularizers.L2(l2) if l2 else None
        # One initializer each: an unseeded Keras initializer called twice repeats its values,
        # and equal factors make Q[a] * R[b] == Q[b] * R[a] (two ids, one vector).
        self.quotient = keras.layers.Embedding(self.quotient_rows, dim, embeddings_initializer=_init(),
                                               activity_regularizer=reg, name=f"{self.name}_quotient")
        self.remainder = keras.layers.Embedding(self.remainder_rows, dim, embeddings_initializer=_init(),
                                                activity_regularizer=reg, name=f"{self.name}_remainder")
        self.built = True   # the tables build on first lookup

    @property
    def id_range(self) -> int:
        """Ids with a unique pair of rows: [0, id_range)."""
        return self.quotient_rows * self.remainder_rows

    def call(self, ids):
        quotient, remainder = qr_pair(ids, self.remainder_rows)
        return self.quotient(quotient) * self.remainder(remainder)

    def get_config(self):
        return {**super().get_config(), "buckets": self.buckets, "dim": self.dim, "l2": self.l2}
