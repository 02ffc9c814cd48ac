"""Numpy metrics of the evaluation: AUC, GAUC, NDCG@k, log loss, accuracy, per-class precision and recall.

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


def group_auc(groups, labels, scores) -> dict:
    """GAUC: the mean of per-group (per-user) AUCs, each weighted by its group's sample count.

    A group whose samples are all of one class has no AUC and is left out (as in EasyRec's gauc).

    Args:
      groups: [n] group keys (user ids); labels: [n] 0/1; scores: [n].
    Returns:
      {"gauc": value (NaN when no group has both classes), "gauc_users": groups that count,
       "gauc_users_excluded": single-class groups left out, "gauc_se": standard error of the
       weighted mean over the counted groups (0 with fewer than two)}.
    """
    g = np.asarray(groups).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel() > 0
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not g.shape == y.shape == s.shape:
        raise ValueError(f"group_auc: {g.shape[0]} groups, {y.shape[0]} labels, {s.shape[0]} scores")
    values, sizes, excluded = [], [], 0
    for rows in _group_rows(g):
        positives = int(y[rows].sum())
        if positives == 0 or positives == rows.size:
            excluded += 1
            continue
        values.append(auc(y[rows], s[rows]))
        sizes.append(rows.size)
    mean, se = _weighted_mean_and_se(values, sizes)
    return {"gauc": mean, "gauc_users": len(values), "gauc_users_excluded": excluded, "gauc_se": se}


def ndcg(groups, relevance, scores, k: int = 10) -> dict:
    """Mean NDCG@k over groups (requests): the scores rank each request's candidates.

    DCG@k = sum over the top k of gain / log2(position + 1), positions from 1, with linear gains
    (the relevance); NDCG divides by the DCG of the ideal order. Ties in score keep the input
    order (a stable sort), so a model that scores everything the same gets the input order's
    NDCG. A request with no relevant candidate has no NDCG and is left out and counted.

    Args:
      groups: [n] request ids; relevance: [n] non-negative gains; scores: [n].
    Returns:
      {"ndcg_at_<k>": mean (NaN with no request left), "ndcg_requests", "ndcg_requests_excluded",
       "ndcg_at_<k>_se": standard error of the mean over requests (0 with fewer than two)}.
    """
    g = np.asarray(groups).ravel()
    rel = np.asarray(relevance, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not g.shape == rel.shape == s.shape:
        raise ValueError(f"ndcg: {g.shape[0]} groups, {rel.shape[0]} relevances, {s.shape[0]} scores")
    if np.any(rel < 0):
        raise ValueError("ndcg: relevance must be non-negative")
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    values, excluded = [], 0
    for rows in _group_rows(g):
        gains = rel[rows]
        ideal = np.sort(gains)[::-1][:k]
        best = float(np.sum(ideal * discount[:ideal.size]))
        if best == 0.0:
            excluded += 1
            continue
        ranked = gains[np.argsort(-s[rows], kind="stable")][:k]
        values.append(float(np.sum(ranked * discount[:ranked.size])) / best)
    mean, se = _weighted_mean_and_se(values, [1] * len(values))
    return {f"ndcg_at_{k}": mean, "ndcg_requests": len(values), "ndcg_requests_excluded": excluded,
            f"ndcg_at_{k}_se": se}


def _group_rows(groups: np.ndarray):
    """The row indices of each distinct key, keys in sorted order, rows in input order."""
    if groups.size == 0:
        return
    order = np.argsort(groups, kind="stable")
    keys = groups[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    yield from np.split(order, starts[1:])


def _weighted_mean_and_se(values, weights) -> tuple[float, float]:
    """(weighted mean, its standard error) of per-group values; (NaN, 0) without any.

    The standard error treats the groups as independent draws: sqrt(sum w^2 (v - mean)^2) / sum w,
    what the publish gate compares a drop with.
    """
    if not values:
        return float("nan"), 0.0
    v, w = np.asarray(values, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    mean = float(np.sum(w * v) / np.sum(w))
    if v.size < 2:
        return mean, 0.0
    # The n / (n - 1) correction makes it the usual s / sqrt(n) when the weights are equal.
    se = float(np.sqrt(np.sum(w ** 2 * (v - mean) ** 2) * v.size / (v.size - 1)) / np.sum(w))
    return mean, se


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
