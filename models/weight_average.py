"""A moving average of the trainable weights, taken after every training step.

One pass of Adam at a high rate ends wherever the last batches pushed the weights; their average
over the last hundred or so steps is a better model (Polyak averaging; docs/QUALITY.md measures
it on every world). The average is what training publishes: `swap_in` at the end of a run.

It is kept apart from the model and the optimizer: their checkpoint keys, slot order and
exported variables stay as they were, so older checkpoints still restore and warm-start.
The decay is min(momentum, (1 + t) / (10 + t)) at the run's step t (as TensorFlow's
ExponentialMovingAverage with num_updates): a short run averages over its last few steps, not
over its random start.
"""
from __future__ import annotations

import contextlib

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf


def _parts(variable) -> list:
    """A variable's shards (a ShardedVariable under parameter servers), or the variable."""
    return list(getattr(variable, "variables", [variable]))


class WeightAverage(tf.Module):
    """Averages of `variables` (each shard its own), created where the variables are placed.

    Create it inside the strategy's scope, after the model is built.
    """

    def __init__(self, variables, momentum: float, name: str = "weight_average"):
        super().__init__(name=name)
        self.momentum = float(momentum)
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")
        sources = [p for v in variables for p in _parts(v)]
        self.averages = []
        for source in sources:
            with tf.device(source.device):
                self.averages.append(tf.Variable(tf.convert_to_tensor(source), trainable=False,
                                                 name=source.name.split(":")[0] + "/average"))

    def _pairs(self, variables):
        sources = [p for v in variables for p in _parts(v)]
        if len(sources) != len(self.averages):
            raise ValueError(f"{len(sources)} variables against {len(self.averages)} averages")
        return zip(sources, self.averages)

    def update(self, variables) -> None:
        """One step: average <- decay * average + (1 - decay) * variable."""
        t = tf.cast(self.updates.assign_add(1), tf.float32)
        decay = tf.minimum(self.momentum, (1.0 + t) / (10.0 + t))
        for source, average in self._pairs(variables):
            average.assign(decay * average + (1.0 - decay) * tf.cast(source, average.dtype))

    def reset(self, variables) -> None:
        """Starts the average at the variables' values (a new run, e.g. from a warm start)."""
        self.updates.assign(0)
        for source, average in self._pairs(variables):
            average.assign(source)

    def swap_in(self, variables) -> None:
        """The variables take their averages' values."""
        for source, average in self._pairs(variables):
            source.assign(average)

    @contextlib.contextmanager
    def applied(self, variables):
        """The averages in the variables for the block's duration; the weights come back after."""
        pairs = list(self._pairs(variables))
        saved = [tf.identity(source) for source, _ in pairs]
        for source, average in pairs:
            source.assign(average)
        try:
            yield
        finally:
            for (source, _), value in zip(pairs, saved):
                source.assign(value)
