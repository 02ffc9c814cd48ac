"""The stopping rule of multi-pass training: held-out users, checked at every pass's end.

With trainer.epochs > 1 a share of users (trainer.validation_share, by a hash of the user id,
the same users every pass and every run) is kept out of training. At the end of each pass the
headline head's loss (the first configured head's) on those users is measured; when it is no
better than the best pass's, the best pass's weights come back and training stops. So more
passes never make the model worse on users it has not seen; one pass (the default, as the daily
job trains) holds nothing out and needs no rule.

A run that stopped records it in run.json (`stopped`), and is finished: a resume trains no more.
A resume in the middle of a pass forgets the earlier passes' best loss (it is not checkpointed),
so the first check after a resume only records.
"""
from __future__ import annotations

from contextlib import nullcontext

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf
import tf_keras as keras

HASH_BUCKETS = 1000


def held_out(user_id: tf.Tensor, share: float) -> tf.Tensor:
    """[B] bool: whether each user (string ids) is among the held-out share."""
    return tf.strings.to_hash_bucket_fast(user_id, HASH_BUCKETS) < int(round(share * HASH_BUCKETS))


def keep_rows(dataset: tf.data.Dataset, share: float, held: bool) -> tf.data.Dataset:
    """The (inputs, labels) batches restricted to held-out users (held) or to the others; a batch
    left without rows is dropped (examples come grouped by user: a batch may hold no held-out
    user, and an empty batch is no batch to a model's per-row ops)."""
    def restrict(inputs, labels):
        mask = held_out(inputs["user_id"], share)
        mask = mask if held else tf.logical_not(mask)
        return ({k: tf.boolean_mask(v, mask) for k, v in inputs.items()},
                {k: tf.boolean_mask(v, mask) for k, v in labels.items()})
    return dataset.map(restrict).filter(lambda inputs, labels: tf.size(inputs["user_id"]) > 0)


def loss_function(model, task: str):
    """A compiled function (inputs, labels) -> (summed loss of `task`'s rows, rows). Batches of
    held-out users vary in size, hence reduce_retracing."""
    @tf.function(reduce_retracing=True)
    def batch_loss(inputs, labels):
        loss, count = model.head_losses(labels, model.head_logits(inputs, training=False))[task]
        return loss * count, count
    return batch_loss


def validation_loss(batch_loss, dataset: tf.data.Dataset) -> float:
    """Mean loss over the rows of a finite dataset by loss_function's batch_loss (NaN without any)."""
    total, rows = 0.0, 0.0
    for inputs, labels in dataset:
        loss, count = batch_loss(inputs, labels)
        total, rows = total + float(loss), rows + float(count)
    return total / rows if rows else float("nan")


class StopWhenWorse(keras.callbacks.Callback):
    """At every pass's end (the run's step count crossing a multiple of steps_per_pass; batch
    callbacks come every steps_per_execution steps), measures the validation loss; stops and
    restores the best pass's weights when it did not improve. Put it first among the callbacks,
    so a checkpoint saved at the same step holds the restored weights.

    Args:
      checkpoints: the run's RunCheckpoints (its step count).
      steps_per_pass: steps of one pass over the training samples.
      validation: a finite dataset of the held-out users.
      task: the head whose loss decides (the headline task).
      log: a function of one message.

    With a weight average (checkpoints.average) the rule judges the averaged weights, those the
    run would publish, and a stop keeps the best pass's average.
    """

    def __init__(self, checkpoints, steps_per_pass: int, validation, task: str, log):
        super().__init__()
        self.checkpoints, self.steps_per_pass = checkpoints, steps_per_pass
        self.validation, self.task, self.log = validation, task, log
        self.best, self.best_weights, self.losses, self.stopped = None, None, [], None
        self.passes = checkpoints.steps_done // steps_per_pass
        self.batch_loss = None

    def on_train_batch_end(self, batch, logs=None):
        passes = self.checkpoints.steps_done // self.steps_per_pass
        if passes <= self.passes:
            return
        self.passes = passes
        if self.batch_loss is None:
            self.batch_loss = loss_function(self.model, self.task)
        average = self.checkpoints.average
        judged = (average.applied(self.model.trainable_variables) if average is not None
                  else nullcontext())
        with judged:
            loss = validation_loss(self.batch_loss, self.validation)
            improved = self.best is None or loss < self.best
            weights = [np.copy(w) for w in self.model.get_weights()] if improved else None
        self.losses.append(round(loss, 6))
        if not improved:
            self.model.set_weights(self.best_weights)
            if average is not None:
                average.reset(self.model.trainable_variables)
            self.stopped = {"after_pass": passes, "kept_pass": passes - 1,
                            "validation_losses": self.losses}
            self.log(f"pass {passes}: held-out {self.task} loss {loss:.4f}, no better than "
                     f"{self.best:.4f}: stopped, the previous pass's weights kept")
            self.model.stop_training = True
            return
        self.log(f"pass {passes}: held-out {self.task} loss {loss:.4f}")
        self.best, self.best_weights = loss, weights
