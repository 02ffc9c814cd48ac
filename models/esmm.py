"""ESMM's entire-space task (Ma et al., SIGIR 2018): pCTCVR = pCTR × pCVR, learnt over every impression.

A buy is only seen after a click, so a conversion model trained on clicked rows alone learns
from a biased sample (sample-selection bias) that is also small. ESMM never fits pCVR on its
own: it fits pCTR to the click and pCTCVR = pCTR × pCVR to the buy, both over all ctr rows, so
the CVR tower learns from every impression, clicked or not.

The task reads logits [B, 2]: (click logit a, conversion logit b), each from its own tower (any
tower of models/towers.py: two MLPs, two cosines, or one wide regression two wide).
model(inputs)["ctr"] stays the click probability σ(a); `scores` adds cvr = σ(b) and
ctcvr = σ(a)·σ(b) (what a serving ranker orders by). Loss over the ctr rows:

  BCE(click, σ(a)) + BCE(click · buy, σ(a)·σ(b))

The conversion target is click · buy: ESMM's conversion is post-click, so a buy the logs hold
without a click counts as none. The product's cross-entropy is computed in log space, exact for
any logits (no clipping, never log 0):
  log pCTCVR       = log σ(a) + log σ(b)
  log(1 - pCTCVR)  = logsumexp(log σ(-a), log σ(a) + log σ(-b))      since 1 - pq = (1 - p) + p(1 - q)
with log σ(x) = -softplus(-x).
"""
from __future__ import annotations

import features  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from models.tasks import BinaryTask

BUY = "label_buy"                  # the labels entry of the impression's buy
SCORES = ("ctr", "cvr", "ctcvr")


def log_sigmoid(x: tf.Tensor) -> tf.Tensor:
    return -tf.nn.softplus(-x)


def ctcvr_log_probabilities(logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(log pCTCVR, log(1 - pCTCVR)) [B] of logits [B, 2] = (click logit, conversion logit)."""
    a, b = logits[:, 0], logits[:, 1]
    log_yes = log_sigmoid(a) + log_sigmoid(b)
    log_no = tf.reduce_logsumexp(tf.stack([log_sigmoid(-a), log_sigmoid(a) + log_sigmoid(-b)]), 0)
    return log_yes, log_no


class EntireSpaceTask(BinaryTask):
    """ESMM's loss, metrics and scores over logits [B, 2] (click, conversion).

    Metrics: ctr_auc (click vs pCTR, every ctr row), ctcvr_auc (click·buy vs pCTCVR, every ctr
    row) and cvr_auc (buy vs pCVR over clicked rows only: what pCVR means).
    """

    output_width = 2

    def __init__(self, name: str = "ctr", weight: float = 1.0):
        if name != "ctr":
            raise ValueError(f"ESMM is a ctr head (click, then buy), not '{name}'")
        super().__init__(name, weight)
        self.ctcvr_auc = keras.metrics.AUC(name="ctcvr_auc")
        self.cvr_auc = keras.metrics.AUC(name="cvr_auc")

    def metrics(self):
        return {**super().metrics(), "ctcvr_auc": self.ctcvr_auc, "cvr_auc": self.cvr_auc}

    @property
    def score_names(self) -> tuple[str, ...]:
        return SCORES

    def probabilities(self, logits: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(logits[:, 0])

    def scores(self, logits: tf.Tensor) -> dict:
        ctr, cvr = tf.sigmoid(logits[:, 0]), tf.sigmoid(logits[:, 1])
        return {"ctr": ctr, "cvr": cvr, "ctcvr": ctr * cvr}

    def targets(self, labels: dict, rows: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(click, click · buy) [B], 0 on other tasks' rows."""
        if BUY not in labels:
            raise ValueError(f"the ESMM ctr head needs labels['{BUY}'] (features.tfrecord.read_dataset "
                             "yields it)")
        click = self.labels(labels, rows)
        return click, click * tf.cast(labels[BUY], tf.float32)

    def row_losses(self, labels: dict, logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """([B] BCE(click, pCTR) + BCE(click·buy, pCTCVR) on the ctr rows, 0 elsewhere; [B] rows);
        loss() is their mean over the ctr rows."""
        rows = self.rows(labels)
        click, bought = self.targets(labels, rows)
        ctr = tf.nn.sigmoid_cross_entropy_with_logits(labels=click, logits=logits[:, 0])
        log_yes, log_no = ctcvr_log_probabilities(logits)
        ctcvr = -(bought * log_yes + (1.0 - bought) * log_no)
        return (ctr + ctcvr) * rows, rows

    def update_metrics(self, labels: dict, logits: tf.Tensor, loss: tf.Tensor,
                       count: tf.Tensor) -> None:
        rows = self.rows(labels)
        click, bought = self.targets(labels, rows)
        scores = self.scores(logits)
        self.loss_tracker.update_state(loss, sample_weight=count)
        self.auc.update_state(click, scores["ctr"], sample_weight=rows)
        self.ctcvr_auc.update_state(bought, scores["ctcvr"], sample_weight=rows)
        self.cvr_auc.update_state(bought, scores["cvr"], sample_weight=click)
