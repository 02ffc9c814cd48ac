"""Numpy metrics of the evaluation: AUC, log loss, accuracy, per-class precision and recall.

Plain numpy on whole arrays (no TensorFlow), so evaluation, experiments and tests agree on one
definition. Undefined values follow one rule: an AUC with no positive or no negative sample is
NaN (there is no pair to rank), and precision or recall of a class with an empty denominator is
`zero_division` (0.0 by default, as a class never predicted is never predicted right).
"""
from __future__ import annotations

import numpy as np

from pipeline.layout import write_json

EPSILON = 1e-7   # log loss clips probabilities to [EPSILON, 1 - EPSILON]


def _weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.shape[0] != n:
        raise ValueError(f"weights: {w.shape[0]} values for {n} samples")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights: must be finite and non-negative")
    return w


def auc(labels, scores, weights=None) -> float:
    """Area under the ROC curve: the chance a positive is scored above a negative.

    Rank based (Mann-Whitney): a tied positive/negative pair counts one half. With weights, each
    pair counts the product of its two weights.

    Args:
      labels: [n] 0/1 (any value > 0 is a positive).
      scores: [n] real scores; only their order matters.
      weights: optional [n] non-negative sample weights.
    Returns:
      AUC in [0, 1]; NaN when there is no positive or no negative (with weight > 0).
    """
    y = np.asarray(labels, dtype=np.float64).ravel() > 0
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"auc: {y.shape[0]} labels but {s.shape[0]} scores")
    if np.any(np.isnan(s)):
        raise ValueError("auc: scores contain NaN")
    w = _weights(weights, y.shape[0])
    pos_total, neg_total = w[y].sum(), w[~y].sum()
    if pos_total == 0 or neg_total == 0:
        return float("nan")
    # Group equal scores: per distinct score, the positive and negative weight it holds.
    distinct, group = np.unique(s, return_inverse=True)
    pos = np.bincount(group, weights=w * y, minlength=distinct.size)
    neg = np.bincount(group, weights=w * ~y, minlength=distinct.size)
    neg_below = np.cumsum(neg) - neg          # negative weight strictly below each score
    won = np.sum(pos * (neg_below + 0.5 * neg))
    return float(won / (pos_total * neg_total))


def log_loss(labels, probabilities, weights=None) -> float:
    """Mean cross-entropy (natural log), weighted if weights are given.

    Args:
      labels: [n] 0/1 for a binary task, or [n] class indices when probabilities are [n, k].
      probabilities: [n] probability of the positive class, or [n, k] class probabilities.
      weights: optional [n] sample weights.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).ravel()
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"log_loss: {y.shape[0]} labels but {p.shape[0]} predictions")
    if y.shape[0] == 0:
        return float("nan")
    w = _weights(weights, y.shape[0])
    p = np.clip(p, EPSILON, 1.0 - EPSILON)
    if p.ndim == 1:
        yb = y.astype(np.float64)
        losses = -(yb * np.log(p) + (1.0 - yb) * np.log(1.0 - p))
    else:
        classes = y.astype(np.int64)
        if classes.min() < 0 or classes.max() >= p.shape[1]:
            raise ValueError(f"log_loss: class labels must lie in 0..{p.shape[1] - 1}")
        losses = -np.log(p[np.arange(y.shape[0]), classes])
    return float(np.sum(w * losses) / np.sum(w))


def accuracy(labels, predicted) -> float:
    """Share of samples whose predicted class equals the label; NaN with no samples."""
    y, yhat = np.asarray(labels).ravel(), np.asarray(predicted).ravel()
    if y.shape != yhat.shape:
        raise ValueError(f"accuracy: {y.shape[0]} labels but {yhat.shape[0]} predictions")
    return float(np.mean(y == yhat)) if y.size else float("nan")


def confusion_matrix(labels, predicted, num_classes: int) -> np.ndarray:
    """[num_classes, num_classes] counts: row = true class, column = predicted class."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    yhat = np.asarray(predicted, dtype=np.int64).ravel()
    if y.shape != yhat.shape:
        raise ValueError(f"confusion_matrix: {y.shape[0]} labels but {yhat.shape[0]} predictions")
    for name, v in (("labels", y), ("predictions", yhat)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"confusion_matrix: {name} must lie in 0..{num_classes - 1}")
    return np.bincount(y * num_classes + yhat, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def precision_recall(labels, predicted, num_classes: int, zero_division: float = 0.0):
    """Per-class precision and recall.

    precision[c] = right predictions of c / predictions of c;
    recall[c] = right predictions of c / samples of class c. A class never predicted (precision)
    or never present (recall) gets `zero_division` instead of dividing by zero.

    Returns:
      (precision [num_classes], recall [num_classes]) as float64 arrays.
    """
    cm = confusion_matrix(labels, predicted, num_classes).astype(np.float64)
    right = np.diag(cm)
    predicted_count, true_count = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_count > 0, right / predicted_count, zero_division)
        recall = np.where(true_count > 0, right / true_count, zero_division)
    return precision, recall


def write_metrics(path, result) -> None:
    """Writes metrics as JSON atomically, NaN as null (nan_to_none)."""
    write_json(path, nan_to_none(result))


def nan_to_none(value):
    """JSON has no NaN: floats that are NaN become None, recursively through dicts and lists."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
