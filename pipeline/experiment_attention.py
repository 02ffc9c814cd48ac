"""The attention experiment: where the query-aware attention looks in a behaviour sequence.

Two views of a trained DUPN model on one day's CTR examples: the mean attention weight by
behaviour type × time bucket (a heatmap), and one user's attention over its history under
different queries (the same history, only the query changed).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import BEHAVIOR_TYPES, NUM_TIME_BUCKETS, TIME_BUCKET_EDGES_S

TIME_BUCKET_LABELS = ("<1m", "<5m", "<30m", "<2h", "<1d", "<3d", "<7d", "older")
assert len(TIME_BUCKET_LABELS) == NUM_TIME_BUCKETS - 1 == len(TIME_BUCKET_EDGES_S) + 1


def mean_attention_by_type_and_bucket(weights: np.ndarray, types: np.ndarray,
                                      buckets: np.ndarray) -> pd.DataFrame:
    """Mean attention on the behaviours of each (type, time bucket) over many sequences.

    Because a sequence's weights sum to 1 over its real behaviours, a short history gets larger
    weights; `relative_weight` (weight × the sequence's length, 1 = uniform attention) compares
    sequences of any length, and is what the heatmap shows.

    Args:
      weights: [n, N] attention weights (0 on padding).
      types: [n, N] behaviour type ids (1..4, 0 = padding).
      buckets: [n, N] time buckets (1..8, 0 = padding).
    Returns:
      one row per type and bucket: behaviour, time_bucket, mean_weight, relative_weight, count
      (NaN weights where no behaviour fell in the cell).
    """
    weights, types, buckets = (np.asarray(a) for a in (weights, types, buckets))
    valid = types > 0
    length = valid.sum(axis=1, keepdims=True)
    relative = weights * np.maximum(length, 1)
    rows = []
    for t, name in enumerate(BEHAVIOR_TYPES, start=1):
        for b, label in enumerate(TIME_BUCKET_LABELS, start=1):
            cell = valid & (types == t) & (buckets == b)
            count = int(cell.sum())
            rows.append({"behaviour": name, "time_bucket": label,
                         "mean_weight": float(weights[cell].mean()) if count else float("nan"),
                         "relative_weight": float(relative[cell].mean()) if count else float("nan"),
                         "count": count})
    return pd.DataFrame(rows)


def heatmap_matrix(cells: pd.DataFrame, value: str = "relative_weight") -> np.ndarray:
    """[4 behaviour types, 8 time buckets] of one column of mean_attention_by_type_and_bucket."""
    table = cells.pivot(index="behaviour", columns="time_bucket", values=value)
    return table.loc[list(BEHAVIOR_TYPES), list(TIME_BUCKET_LABELS)].to_numpy(dtype=np.float64)
