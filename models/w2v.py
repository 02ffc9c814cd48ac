"""Skip-gram item embeddings learnt over behaviour sequences, in TensorFlow (the dupn-w2v table).

Items seen near each other in a user's sequence (within `window` steps) are pulled together,
items drawn at random pushed apart (negative sampling, Mikolov et al. 2013). Negatives are drawn
from the batch's own context items, i.e. from the items' frequency in the data.
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras


def skipgram_pairs(sequences: tf.Tensor, window: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(targets [P], contexts [P]) of every ordered pair of real items at most `window` apart.

    Args:
      sequences: [B, N] int64 item ids, 0 = padding.
    """
    targets, contexts = [], []
    for k in range(1, window + 1):
        a, b = sequences[:, :-k], sequences[:, k:]
        both = tf.logical_and(tf.not_equal(a, 0), tf.not_equal(b, 0))
        a, b = tf.boolean_mask(a, both), tf.boolean_mask(b, both)
        targets += [a, b]
        contexts += [b, a]
    return tf.concat(targets, 0), tf.concat(contexts, 0)


class SkipGram(tf.Module):
    """Target and context tables [buckets, dim] and the negative-sampling loss."""

    def __init__(self, buckets: int, dim: int, seed: int = 0):
        super().__init__()
        init = tf.random.stateless_uniform([buckets, dim], [seed, 0], -0.5 / dim, 0.5 / dim)
        self.target = tf.Variable(init, name="target")
        self.context = tf.Variable(tf.zeros([buckets, dim]), name="context")

    def pair_losses(self, targets, contexts, negatives: int, seed) -> tf.Tensor:
        """[P] negative-sampling loss of each (target, context) pair."""
        t = tf.gather(self.target, targets)                                   # [P, D]
        c = tf.gather(self.context, contexts)                                 # [P, D]
        picks = tf.random.stateless_uniform([tf.shape(contexts)[0], negatives], seed, 0,
                                            tf.shape(contexts)[0], dtype=tf.int32)
        n = tf.gather(self.context, tf.gather(contexts, picks))               # [P, K, D]
        positive = tf.math.log_sigmoid(tf.reduce_sum(t * c, -1))
        negative = tf.reduce_sum(tf.math.log_sigmoid(-tf.einsum("pd,pkd->pk", t, n)), -1)
        return -(positive + negative)


def train_item_embeddings(dataset, buckets: int, dim: int, window: int = 3, negatives: int = 5,
                          epochs: int = 1, learning_rate: float = 0.1, seed: int = 0,
                          max_steps: int | None = None) -> tuple[np.ndarray, list[float]]:
    """Learns item embeddings from the seq_item_id of a dataset.

    Args:
      dataset: tf.data of read_dataset's (inputs, labels), or of inputs dicts, or of [B, N] ids.
      buckets, dim: the contract's item_id table (contract.tables["item_id"]).
    Returns:
      (table [buckets, dim] float32 with row 0, the padding row, zero; every step's mean loss
      per pair).
    """
    model = SkipGram(buckets, dim, seed)
    optimizer = keras.optimizers.Adagrad(learning_rate)

    @tf.function(reduce_retracing=True)
    def step(sequences, step_seed):
        targets, contexts = skipgram_pairs(tf.cast(sequences, tf.int64), window)
        if tf.size(targets) == 0:
            return tf.constant(np.nan, tf.float32)
        with tf.GradientTape() as tape:
            pair_losses = model.pair_losses(targets, contexts, negatives, step_seed)
            # Summed, not averaged: every pair is one word2vec update, whatever the batch size
            # (AdaGrad keeps the frequent items' steps in check).
            total = tf.reduce_sum(pair_losses)
        variables = [model.target, model.context]
        optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        return tf.reduce_mean(pair_losses)

    losses = []
    for _ in range(epochs):
        for batch in dataset:
            if isinstance(batch, tuple):
                batch = batch[0]
            sequences = batch["seq_item_id"] if isinstance(batch, dict) else batch
            loss = float(step(sequences, tf.constant([seed, len(losses)], tf.int64)))
            if not np.isnan(loss):
                losses.append(loss)
            if max_steps is not None and len(losses) >= max_steps:
                break
    table = model.target.numpy()
    table[0] = 0.0
    return table, losses


def item_table_from_files(files, contract, batch_size: int = 256, epochs: int = 1,
                          seed: int = 0, **options) -> np.ndarray:
    """The dupn-w2v item table [buckets, dim] learnt from the behaviour sequences of example
    files (TFRecords or glob patterns, read by features.tfrecord.read_dataset).

    Pass it to models.dupn.build_model(config, contract, pretrained_item_table=table).
    """
    from features.tfrecord import read_dataset

    # Seeded: files are then read in a fixed order, so a seed gives one table.
    dataset = read_dataset(files, contract, batch_size, seed=seed)
    table, _ = train_item_embeddings(dataset, *contract.tables["item_id"], epochs=epochs,
                                     seed=seed, **options)
    return table
