"""The stopping rule of multi-pass training: held-out users, checked at every pass's end.

With trainer.epochs > 1 a share of users (trainer.validation_share, by a hash of the user id,
the same users every pass and every run) is kept out of training. At the end of each pass the
headline head's loss (the first configured head's) on those users is measured, row by row. A
pass counts as better only when its rows' losses are lower than the best pass's on the same rows
by more than twice the standard error of that paired difference (SIGNIFICANCE): a gain the
held-out share is too small to tell from noise is no reason to train on. When a pass is not
better, the best pass's weights come back and training stops. So more passes never make the
model worse on users it has not seen; one pass (the default, as the daily job trains) holds
nothing out and needs no rule.

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


# A pass is better when the held-out rows' losses fall by more than this many standard errors of
# their paired difference. On `interests` seed 2 a second pass lowered the mean by 0.11 % and the
# test AUC by 0.003 (docs/QUALITY.md, "The stopping rule").
SIGNIFICANCE = 2.0


def loss_function(model, task: str):
    """A compiled function (inputs, labels) -> [rows of `task`] each row's loss. Batches of
    held-out users vary in size, hence reduce_retracing."""
    head = next(h for h in model.heads if h.task == task)

    @tf.function(reduce_retracing=True)
    def batch_losses(inputs, labels):
        losses, rows = head.row_losses(labels, model.head_logits(inputs, training=False)[task])
        return tf.boolean_mask(losses, rows > 0)
    return batch_losses


def validation_losses(batch_losses, dataset: tf.data.Dataset) -> np.ndarray:
    """[rows] each row's loss over a finite dataset, in its (deterministic) order."""
    parts = [batch_losses(inputs, labels).numpy() for inputs, labels in dataset]
    return np.concatenate(parts) if parts else np.zeros([0], np.float32)


def improves(best: np.ndarray, new: np.ndarray) -> bool:
    """Whether the losses `new` are lower than `best` (the same rows) beyond SIGNIFICANCE standard
    errors of the paired difference; means compared plainly when the rows differ or are too few."""
    if len(best) != len(new) or len(new) < 2:
        return float(np.mean(new)) < float(np.mean(best))
    gain = best.astype(np.float64) - new
    return gain.mean() > SIGNIFICANCE * gain.std(ddof=1) / np.sqrt(len(gain))


class StopWhenWorse(keras.callbacks.Callback):
    """At every pass's end (the run's step count crossing a multiple of steps_per_pass; batch
    callbacks come every steps_per_execution steps), measures the validation loss row by row;
    stops and restores the best pass's weights when it did not improve significantly
    (`improves`). Put it first among the callbacks, so a checkpoint saved at the same step holds
    the restored weights.

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
        self.batch_losses = None

    def on_train_batch_end(self, batch, logs=None):
        passes = self.checkpoints.steps_done // self.steps_per_pass
        if passes <= self.passes:
            return
        self.passes = passes
        if self.batch_losses is None:
            self.batch_losses = loss_function(self.model, self.task)
        average = self.checkpoints.average
        judged = (average.applied(self.model.trainable_variables) if average is not None
                  else nullcontext())
        with judged:
            rows = validation_losses(self.batch_losses, self.validation)
            improved = self.best is None or improves(self.best, rows)
            weights = [np.copy(w) for w in self.model.get_weights()] if improved else None
        loss = float(np.mean(rows)) if len(rows) else float("nan")
        self.losses.append(round(loss, 6))
        if not improved:
            self.model.set_weights(self.best_weights)
            if average is not None:
                average.reset(self.model.trainable_variables)
            self.stopped = {"after_pass": passes, "kept_pass": passes - 1,
                            "validation_losses": self.losses}
            self.log(f"pass {passes}: held-out {self.task} loss {loss:.4f}, not significantly "
                     f"better than {np.mean(self.best):.4f}: stopped, the best pass's weights kept")
            self.model.stop_training = True
            return
        self.log(f"pass {passes}: held-out {self.task} loss {loss:.4f}")
        self.best, self.best_weights = rows, weights
