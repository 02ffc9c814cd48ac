"""Tasks: what a head learns, apart from its tower: the loss over the task's own rows, metrics and scores.

A batch mixes tasks; a row belongs to the task whose TASK_INDEX is in labels["task"]. A task's
loss is the mean over its own rows only (0, not NaN, when it has none), and every loss and
metric is named after the task: ctr_loss, ctr_auc, power_accuracy, power_precision_3, ...
A task is a plain object: the head that holds it keeps its metrics (Head.__init__), so their
checkpoint paths are the head's own (heads/<i>/auc, ...), as they were before tasks and towers
were apart.
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from features.contract import NUM_POWER_LEVELS, TASK_INDEX

# L2R rows carry a sample weight (a bought item counts more than a click).
WEIGHTED = {"l2r"}
CLASSES = {"power": NUM_POWER_LEVELS}     # every other task is binary


@keras.saving.register_keras_serializable(package="dupn")
class ClassRate(keras.metrics.Metric):
    """Precision or recall of one class of a multi-class head, from predicted class ids.

    precision_k = Σ w [pred = k ∧ true = k] / Σ w [pred = k];  recall_k: / Σ w [true = k].
    (Lighter than keras.metrics.Precision(class_id=k): two counters, no thresholds.)
    """

    def __init__(self, class_id: int, kind: str = "precision", **kwargs):
        super().__init__(**kwargs)
        if kind not in ("precision", "recall"):
            raise ValueError(f"ClassRate kind must be precision or recall, got {kind!r}")
        self.class_id = class_id
        self.kind = kind
        self.hits = self.add_weight("hits", initializer="zeros")
        self.total = self.add_weight("total", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        is_true = tf.cast(tf.equal(y_true, self.class_id), tf.float32)
        is_pred = tf.cast(tf.equal(y_pred, self.class_id), tf.float32)
        w = tf.ones_like(is_true) if sample_weight is None else tf.cast(sample_weight, tf.float32)
        self.hits.assign_add(tf.reduce_sum(w * is_true * is_pred))
        self.total.assign_add(tf.reduce_sum(w * (is_pred if self.kind == "precision" else is_true)))

    def result(self):
        return tf.math.divide_no_nan(self.hits, self.total)

    def reset_state(self):
        self.hits.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "class_id": self.class_id, "kind": self.kind}


class Task:
    """The rows, loss, metrics and scores of one task; subclasses fix the kind of label.

    Args:
      name: the task's name (one of features.contract.TASKS).
      weight: its weight in the multi-task loss.
    """

    def __init__(self, name: str, weight: float = 1.0):
        if name not in TASK_INDEX:
            raise ValueError(f"unknown head '{name}' (heads: {', '.join(TASK_INDEX)})")
        self.name = name
        self.weight = weight
        self.loss_tracker = keras.metrics.Mean(f"{name}_loss")

    # The logits' width: 1 (logits [B]) for a binary task.
    output_width = 1

    def metrics(self) -> dict:
        """{attribute: metric} in reporting order; the head keeps them under these attributes."""
        return {"loss_tracker": self.loss_tracker}

    @property
    def score_names(self) -> tuple[str, ...]:
        """The keys of scores(): the task alone (the entire-space task adds cvr and ctcvr)."""
        return (self.name,)

    def rows(self, labels: dict) -> tf.Tensor:
        """[B] float: 1 on this task's rows."""
        return tf.cast(tf.equal(tf.cast(labels["task"], tf.int64), TASK_INDEX[self.name]),
                       tf.float32)

    def labels(self, labels: dict, rows: tf.Tensor) -> tf.Tensor:
        # Other tasks' labels are replaced by 0 so they can never be out of range here.
        return tf.cast(labels["label"], tf.float32) * rows

    def probabilities(self, logits: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def scores(self, logits: tf.Tensor) -> dict:
        """{score name: probabilities} for serving and evaluation (score_names)."""
        return {self.name: self.probabilities(logits)}

    def per_row_loss(self, y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def row_losses(self, labels: dict, logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """([B] each row's loss as loss() weighs it, 0 on other tasks' rows; [B] rows()).

        Args:
          labels: {"task": [B] int, "label": [B] float, "weight": [B] float}.
          logits: [B] (binary) or [B, output_width].
        """
        rows = self.rows(labels)
        per_row = self.per_row_loss(self.labels(labels, rows), logits)
        weights = rows * tf.cast(labels["weight"], tf.float32) if self.name in WEIGHTED else rows
        return per_row * weights, rows

    def loss(self, labels: dict, logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(mean loss over this task's rows, number of rows); (0, 0) without rows."""
        per_row, rows = self.row_losses(labels, logits)
        count = tf.reduce_sum(rows)
        return tf.math.divide_no_nan(tf.reduce_sum(per_row), count), count

    def update_metrics(self, labels: dict, logits: tf.Tensor, loss: tf.Tensor,
                       count: tf.Tensor) -> None:
        self.loss_tracker.update_state(loss, sample_weight=count)


class BinaryTask(Task):
    """A click, a follow, a preferred shop: sigmoid cross-entropy, AUC."""

    def __init__(self, name: str, weight: float = 1.0):
        super().__init__(name, weight)
        self.auc = keras.metrics.AUC(name=f"{name}_auc")

    def metrics(self):
        return {**super().metrics(), "auc": self.auc}

    def probabilities(self, logits):
        """[B]."""
        return tf.sigmoid(logits)

    def per_row_loss(self, y, logits):
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)

    def update_metrics(self, labels, logits, loss, count):
        super().update_metrics(labels, logits, loss, count)
        rows = self.rows(labels)
        self.auc.update_state(self.labels(labels, rows), tf.sigmoid(logits), sample_weight=rows)


class MultiClassTask(Task):
    """Purchasing power's levels: softmax cross-entropy, accuracy, each class's precision and recall."""

    def __init__(self, name: str, weight: float = 1.0, classes: int = NUM_POWER_LEVELS):
        super().__init__(name, weight)
        self.output_width = classes
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(f"{name}_accuracy")
        self.precisions = [ClassRate(k, "precision", name=f"{name}_precision_{k}")
                           for k in range(classes)]
        self.recalls = [ClassRate(k, "recall", name=f"{name}_recall_{k}") for k in range(classes)]

    def metrics(self):
        return {**super().metrics(), "accuracy": self.accuracy, "precisions": self.precisions,
                "recalls": self.recalls}

    def probabilities(self, logits):
        """[B, classes]."""
        return tf.nn.softmax(logits, axis=-1)

    def per_row_loss(self, y, logits):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32),
                                                              logits=logits)

    def update_metrics(self, labels, logits, loss, count):
        super().update_metrics(labels, logits, loss, count)
        rows = self.rows(labels)
        y_int = tf.cast(self.labels(labels, rows), tf.int32)
        self.accuracy.update_state(y_int, logits, sample_weight=rows)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        for metric in (*self.precisions, *self.recalls):
            metric.update_state(y_int, predicted, sample_weight=rows)


def plain_task(name: str, weight: float = 1.0) -> Task:
    """The task of a head of that name: multi-class for power (CLASSES), binary otherwise."""
    if name in CLASSES:
        return MultiClassTask(name, weight, CLASSES[name])
    return BinaryTask(name, weight)
