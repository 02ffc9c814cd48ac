"""Columns of the block path: each (user, day)'s behaviour sequence and each sample's window in it.

Behaviours are sorted by (user, day, ts, type, scene, item) and numbered by a key code
user * days + day. A key's sequence is the last N of its lookback days' tails (each day's last N,
oldest day first), then the day's own behaviours; a sample at ts sees the N behaviours of the
sequence that end before the first of the day at or after ts (numpy.searchsorted), as
samples.user_day_examples does.
"""
from __future__ import annotations

import numpy as np

TS_BITS = 32      # (key, ts) packed into one int64 for one searchsorted: 0 <= ts < 2**32


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The indices start, start + 1, ... of every (start, length), concatenated."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(np.asarray(starts, np.int64) - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


def run_starts(sorted_codes: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted array starts."""
    if len(sorted_codes) == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])


class Sequences:
    """The behaviour sequences of a set of keys.

    Args:
      behavior_keys, behavior_ts: key code and ts of the behaviours, sorted by key then ts (and
        the row path's tie order).
      keys: the sample keys (user * days + day), sorted and unique.
      earlier: for each day code, the day codes of its lookback days, oldest first (-1: a day
        not read).
      days: the number of day codes; n: the sequence length N.
    """

    def __init__(self, behavior_keys, behavior_ts, keys, earlier: np.ndarray, days: int, n: int):
        if len(behavior_ts) and (behavior_ts.min() < 0 or behavior_ts.max() >= 1 << TS_BITS):
            raise ValueError("behaviour ts outside [0, 2**32): the block path packs (key, ts) in 64 bits")
        self.n, self.keys = n, keys
        self.packed = (behavior_keys.astype(np.int64) << TS_BITS) | behavior_ts.astype(np.int64)
        self.today = np.searchsorted(behavior_keys, keys, "left")
        today_end = np.searchsorted(behavior_keys, keys, "right")
        users, day = keys // days, keys % days
        starts, lengths = [], []
        for back in range(earlier.shape[1]):        # lookback days, oldest first
            prev = earlier[day, back]
            prev_keys = np.where(prev >= 0, users * days + prev, -1)
            hi = np.searchsorted(behavior_keys, prev_keys, "right")
            lo = np.maximum(np.searchsorted(behavior_keys, prev_keys, "left"), hi - n)
            lo[prev < 0] = hi[prev < 0]
            starts.append(lo)
            lengths.append(hi - lo)
        lengths = np.array(lengths, np.int64).reshape(-1, len(keys))
        starts = np.array(starts, np.int64).reshape(-1, len(keys))
        # keep the last n of the tails: drop from the oldest day first
        drop = np.maximum(lengths.sum(axis=0) - n, 0)
        for back in range(lengths.shape[0]):
            cut = np.minimum(drop, lengths[back])
            starts[back] += cut
            lengths[back] -= cut
            drop -= cut
        self.history = lengths.sum(axis=0)
        starts = np.vstack([starts, self.today[None, :]])
        lengths = np.vstack([lengths, (today_end - self.today)[None, :]])
        per_key = lengths.sum(axis=0)
        self.start = np.r_[0, np.cumsum(per_key)[:-1]].astype(np.int64)
        # behaviour rows of every key's sequence, key after key
        self.rows = ranges(starts.T.ravel(), lengths.T.ravel())

    def windows(self, key_index: np.ndarray, ts: np.ndarray):
        """(first, length) in self.rows of the window a sample at ts of key keys[key_index] sees."""
        before = np.searchsorted(self.packed, (self.keys[key_index] << TS_BITS) | ts, "left")
        seen = self.history[key_index] + before - self.today[key_index]
        length = np.minimum(seen, self.n)
        return self.start[key_index] + seen - length, length
