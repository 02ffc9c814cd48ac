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


def _zeros_like(variable):
    def zeros():
        return tf.zeros(variable.shape, variable.dtype)
    return zeros


class WeightAverage(tf.Module):
    """Averages of `variables` (a model's trainable variables), each beside its variable.

    Under parameter servers a table's shards come as variables of their own: each gets an average
    on its server, and the checkpoint saves a table's averages as one sharded variable (as the
    optimizer saves its slots), so a run's checkpoint restores in one process or on a cluster.
    Create it inside the strategy's scope, after the model is built.
    """

    def __init__(self, variables, momentum: float, name: str = "weight_average"):
        super().__init__(name=name)
        self.momentum = float(momentum)
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")
        strategy = tf.distribute.get_strategy()
        own, saved, tables = [], [], {}
        for variable in variables:
            with strategy.extended.colocate_vars_with(variable):    # never partitioned again
                average = tf.Variable(_zeros_like(variable), shape=variable.shape,
                                      dtype=variable.dtype, trainable=False,
                                      name=variable.name.split(":")[0] + "_average")
            own.append(average)
            container = getattr(variable, "_sharded_container", None)
            if container is None:
                saved.append(average)
                continue
            table = container()
            shards = tables.setdefault(id(table), [None] * len(table.variables))
            shards[[v is variable for v in table.variables].index(True)] = average
            if all(shard is not None for shard in shards):
                saved.append(tf.__internal__.distribute.ShardedVariable(shards))
        self._own = self._no_dependency(own)      # one per variable, in the variables' order
        self.averages = saved                      # what the checkpoint holds
        self.reset(variables)

    def _pairs(self, variables):
        """(variable, its average) of every variable."""
        if len(variables) != len(self._own):
            raise ValueError(f"{len(variables)} variables against {len(self._own)} averages")
        for variable, average in zip(variables, self._own):
            if variable.shape != average.shape:
                raise ValueError(f"{variable.name}: shape {variable.shape} against its average's "
                                 f"{average.shape}")
        return list(zip(variables, self._own))

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
