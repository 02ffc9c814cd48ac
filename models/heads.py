"""Task heads: each scores one task, and owns that task's loss (over its own rows) and metrics.

A batch mixes tasks; a row belongs to the head whose TASK_INDEX is in labels["task"]. A head's
loss is the mean over its own rows only (0, not NaN, when it has none), and every loss and
metric is named after the head: ctr_loss, ctr_auc, power_accuracy, power_precision_3, ...
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from features.contract import NUM_POWER_LEVELS, TASK_INDEX

# What each head scores besides the user (see FeatureEmbeddings.candidate), and how its rows
# are weighted: L2R rows carry a sample weight (a bought item counts more than a click).
CANDIDATES = {"ctr": "item", "l2r": "rank_features", "talent": "talent", "power": None,
              "shop": "shop"}
WEIGHTED = {"l2r"}
CLASSES = {"power": NUM_POWER_LEVELS}     # every other head is binary


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


class TaskHead(keras.layers.Layer):
    """The loss and metrics of one task; subclasses add the network (call -> logits).

    Args:
      task: the task's name (one of features.contract.TASKS); also the layer's name.
      weight: the head's weight in the multi-task loss.
    """

    def __init__(self, task: str, weight: float = 1.0, **kwargs):
        kwargs.setdefault("name", task)
        super().__init__(**kwargs)
        if task not in TASK_INDEX:
            raise ValueError(f"unknown head '{task}' (heads: {', '.join(TASK_INDEX)})")
        self.task = task
        self.weight = weight
        self.classes = CLASSES.get(task, 1)
        self.loss_tracker = keras.metrics.Mean(f"{task}_loss")
        if self.classes == 1:
            self.auc = keras.metrics.AUC(name=f"{task}_auc")
        else:
            self.accuracy = keras.metrics.SparseCategoricalAccuracy(f"{task}_accuracy")
            self.precisions = [ClassRate(k, "precision", name=f"{task}_precision_{k}")
                               for k in range(self.classes)]
            self.recalls = [ClassRate(k, "recall", name=f"{task}_recall_{k}")
                            for k in range(self.classes)]

    @property
    def output_width(self) -> int:
        return self.classes

    @property
    def score_names(self) -> tuple[str, ...]:
        """The keys of scores(): the task alone (the ESMM ctr head adds cvr and ctcvr)."""
        return (self.task,)

    def rows(self, labels: dict) -> tf.Tensor:
        """[B] float: 1 on this head's rows."""
        return tf.cast(tf.equal(tf.cast(labels["task"], tf.int64), TASK_INDEX[self.task]),
                       tf.float32)

    def probabilities(self, logits: tf.Tensor) -> tf.Tensor:
        """[B] for a binary head, [B, classes] for a multi-class one."""
        return tf.sigmoid(logits) if self.classes == 1 else tf.nn.softmax(logits, axis=-1)

    def scores(self, logits: tf.Tensor) -> dict:
        """{score name: probabilities} for serving and evaluation (score_names)."""
        return {self.task: self.probabilities(logits)}

    def _labels(self, labels: dict, rows: tf.Tensor) -> tf.Tensor:
        # Other tasks' labels are replaced by 0 so they can never be out of range here.
        return tf.cast(labels["label"], tf.float32) * rows

    def loss(self, labels: dict, logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(mean loss over this head's rows, number of rows); (0, 0) without rows.

        Args:
          labels: {"task": [B] int, "label": [B] float, "weight": [B] float}.
          logits: [B] (binary) or [B, classes].
        """
        rows = self.rows(labels)
        y = self._labels(labels, rows)
        if self.classes == 1:
            per_row = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)
        else:
            per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(y, tf.int32), logits=logits)
        weights = rows * tf.cast(labels["weight"], tf.float32) if self.task in WEIGHTED else rows
        count = tf.reduce_sum(rows)
        return tf.math.divide_no_nan(tf.reduce_sum(per_row * weights), count), count

    def update_metrics(self, labels: dict, logits: tf.Tensor, loss: tf.Tensor,
                       count: tf.Tensor) -> None:
        rows = self.rows(labels)
        y = self._labels(labels, rows)
        self.loss_tracker.update_state(loss, sample_weight=count)
        if self.classes == 1:
            self.auc.update_state(y, tf.sigmoid(logits), sample_weight=rows)
            return
        y_int = tf.cast(y, tf.int32)
        self.accuracy.update_state(y_int, logits, sample_weight=rows)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        for metric in (*self.precisions, *self.recalls):
            metric.update_state(y_int, predicted, sample_weight=rows)

    def get_config(self):
        return {**super().get_config(), "task": self.task, "weight": self.weight}


def mlp(hidden_units, dropout: float, l2: float, prefix: str) -> list:
    """Dense(relu) + Dropout layers for the given widths."""
    reg = keras.regularizers.L2(l2) if l2 else None
    layers = []
    for i, units in enumerate(hidden_units):
        layers.append(keras.layers.Dense(units, activation="relu", kernel_regularizer=reg,
                                         name=f"{prefix}_dense_{i}"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout, name=f"{prefix}_dropout_{i}"))
    return layers


@keras.saving.register_keras_serializable(package="dupn")
class MLPHead(TaskHead):
    """An MLP over the user representation joined with the candidate's embedding (if any).

    Call args:
      representation: [B, D]; candidate: [B, C] or None.
    Returns:
      logits [B] (binary) or [B, classes].
    """

    def __init__(self, task: str, weight: float = 1.0, hidden_units=(128, 64), dropout: float = 0.0,
                 l2: float = 0.0, **kwargs):
        super().__init__(task, weight, **kwargs)
        self.hidden_units = list(hidden_units)
        self.dropout = dropout
        self.l2 = l2
        self.hidden = mlp(self.hidden_units, dropout, l2, task)
        self.out = keras.layers.Dense(self.classes, kernel_regularizer=keras.regularizers.L2(l2)
                                      if l2 else None, name=f"{task}_logits")

    def call(self, representation, candidate=None, training=None):
        x = representation if candidate is None else tf.concat([representation, candidate], -1)
        for layer in self.hidden:
            x = layer(x, training=training)
        logits = self.out(x)
        return logits[:, 0] if self.classes == 1 else logits

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "dropout": self.dropout, "l2": self.l2}


@keras.saving.register_keras_serializable(package="dupn")
class RankHead(TaskHead):
    """Learning to rank: the representation becomes per-user weights of the ranking features.

    logit = (W_R mlp(r)) · rank_features + b: the user decides how much each ranking feature
    (price, sales, relevance, ...) matters to them. hidden_units [128] gives the paper's two
    layers (128 wide, then R wide).

    Call args:
      representation: [B, D]; candidate: rank_features [B, R].
    """

    def __init__(self, task: str = "l2r", weight: float = 1.0, hidden_units=(128,),
                 rank_features: int = 8, dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(task, weight, **kwargs)
        self.hidden_units = list(hidden_units)
        self.rank_features = rank_features
        self.dropout = dropout
        self.l2 = l2
        self.hidden = mlp(self.hidden_units, dropout, l2, task)
        reg = keras.regularizers.L2(l2) if l2 else None
        self.feature_weights = keras.layers.Dense(rank_features, kernel_regularizer=reg,
                                                  name=f"{task}_feature_weights")
        self.bias = self.add_weight(f"{task}_bias", [], initializer="zeros")

    def call(self, representation, candidate=None, training=None):
        if candidate is None:
            raise ValueError(f"{self.task}: the ranking head needs rank_features")
        x = representation
        for layer in self.hidden:
            x = layer(x, training=training)
        return tf.reduce_sum(self.feature_weights(x) * candidate, axis=-1) + self.bias

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "rank_features": self.rank_features, "dropout": self.dropout, "l2": self.l2}


def make_head(head: dict, rank_features: int, dropout: float, l2: float) -> TaskHead:
    """A DUPN head from its configuration {name, weight, hidden_units, esmm (ctr only, optional)}."""
    if head.get("esmm"):
        from models.esmm import ESMMHead   # models.esmm builds on this module's heads
        return ESMMHead(head["name"], head["weight"], head["hidden_units"], dropout, l2)
    if head["name"] == "l2r":
        return RankHead("l2r", head["weight"], head["hidden_units"], rank_features, dropout, l2)
    return MLPHead(head["name"], head["weight"], head["hidden_units"], dropout, l2)
