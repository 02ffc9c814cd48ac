"""TensorBoard scalars of training runs and evaluations, and the progress display of a fit.

Training: MODEL_DIR/tensorboard/ holds the loss, each task's loss, metrics and loss-balancing
weight (the Keras logs: `ctr_auc` is written as `ctr/auc`), the learning rate and examples per
second, at the run's global step, so a daily fine-tune continues its warm start's curve.
Evaluation: WORK/tensorboard/eval/ holds each evaluated date's metrics (tags task/metric) at
step = days since 1970-01-01, so `tensorboard --logdir WORK` shows a work directory's history in
one view.
"""
from __future__ import annotations

import datetime as dt
import math
import sys
import time
from pathlib import Path

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from features.contract import TASKS

TRAIN_DIR = "tensorboard"
EVAL_DIR = Path("tensorboard") / "eval"


def progress_verbosity(stream=None) -> int:
    """Keras' fit verbosity: 1 (its progress bar) on a terminal, 0 (our log lines only) otherwise,
    as under cron or CI, where a bar redrawn with carriage returns fills the log."""
    stream = stream or sys.stdout
    return 1 if getattr(stream, "isatty", lambda: False)() else 0


def tag(name: str) -> str:
    """A Keras log name as a TensorBoard tag grouped by task: ctr_auc -> ctr/auc, loss -> loss."""
    for task in TASKS:
        if name.startswith(task + "_"):
            return f"{task}/{name[len(task) + 1:]}"
    return name


def learning_rate(optimizer) -> float | None:
    """The optimizer's current learning rate (a schedule evaluated at its step), or None."""
    rate = getattr(optimizer, "learning_rate", None)
    if rate is None:
        return None
    if callable(rate) and not isinstance(rate, tf.Variable):
        rate = rate(optimizer.iterations)
    return float(tf.convert_to_tensor(rate).numpy())


class TensorBoardLog(keras.callbacks.Callback):
    """Writes the fit's logs as scalars at the optimizer's step.

    Args:
      log_dir: the event files' folder.
      batch_size: examples per step, for examples_per_second.
      per_batch: write at every batch end (one process: every steps_per_execution steps); False
        writes at epoch ends only (ParameterServerStrategy allows no batch-level callback).
    """

    def __init__(self, log_dir, batch_size: int, per_batch: bool = True):
        super().__init__()
        self.log_dir, self.batch_size, self.per_batch = str(log_dir), batch_size, per_batch
        self.writer = None
        self.last_step, self.last_time = None, None

    def on_train_begin(self, logs=None):
        self.writer = self.writer or tf.summary.create_file_writer(self.log_dir)
        self.last_step, self.last_time = self._step(), time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if self.per_batch:
            self._write(logs)

    def _implements_train_batch_hooks(self):
        # Keras refuses any callback with a batch hook under ParameterServerStrategy; declaring
        # none when per_batch is off is what lets the epoch-end writes run there.
        return self.per_batch

    def on_epoch_end(self, epoch, logs=None):
        self._write(logs)

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.flush()

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _write(self, logs) -> None:
        step, now = self._step(), time.monotonic()
        if step == self.last_step:   # the epoch end after the last batch end: nothing new
            return
        values = {tag(k): float(v) for k, v in (logs or {}).items()}
        values["examples_per_second"] = ((step - self.last_step) * self.batch_size
                                         / max(now - self.last_time, 1e-9))
        rate = learning_rate(self.model.optimizer)
        if rate is not None:
            values["learning_rate"] = rate
        write_scalars(self.writer, step, values)
        self.last_step, self.last_time = step, now


def write_scalars(writer, step: int, values: dict) -> None:
    """Writes the finite numbers of `values` (name -> value) at `step`; lists and None are skipped."""
    with writer.as_default(step=step):
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                tf.summary.scalar(name, value)


def date_step(date: str) -> int:
    """An evaluated date as a TensorBoard step: days since 1970-01-01."""
    return (dt.date.fromisoformat(date) - dt.date(1970, 1, 1)).days


def log_evaluation(work, name: str, result: dict) -> Path:
    """Writes one evaluation's metrics ({task: {metric: value}}) under WORK/tensorboard/eval, tags
    task/metric, at date_step of the date that begins `name` (a held-out evaluation, named
    D-holdout, goes to WORK/tensorboard/eval-holdout). Returns the folder."""
    holdout = name.endswith("-holdout")
    date = name.removesuffix("-holdout")
    folder = Path(work) / (f"{EVAL_DIR}-holdout" if holdout else EVAL_DIR)
    writer = tf.summary.create_file_writer(str(folder))
    write_scalars(writer, date_step(date),
                  {f"{task}/{metric}": value for task, metrics in result.items()
                   for metric, value in metrics.items()})
    writer.close()
    return folder
