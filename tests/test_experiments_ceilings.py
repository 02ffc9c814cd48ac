"""The properties world's ceilings: the behaviours an example shows, bucket middles, and a small run."""
import types

import numpy as np

from features.contract import time_bucket
from pipeline.experiments.ceilings import MIDDLES, ceilings, seen

DAY = 86400


def test_an_example_shows_the_newest_n_since_the_lookbacks_first_day():
    # One request at noon of day 10; behaviours newest first, the last slot invalid.
    ts = np.array([10 * DAY + 12 * 3600])
    age = np.array([[60.0, 3600.0, 13 * 3600.0, 3.4 * DAY, 3.6 * DAY, 0.0]])
    recent = types.SimpleNamespace(age=age, valid=np.array([[1, 1, 1, 1, 1, 0]], bool))
    # Lookback 3 days: from the start of day 7, i.e. ages up to 3.5 days.
    np.testing.assert_array_equal(seen(recent, ts, 10, 3), [[1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(seen(recent, ts, 2, 3), [[1, 1, 0, 0, 0, 0]])


def test_each_bucket_middle_falls_in_its_own_bucket():
    buckets = np.arange(1, len(MIDDLES))
    np.testing.assert_array_equal(time_bucket(MIDDLES[1:]), buckets)


def test_a_small_world_gives_ceilings_below_the_oracle():
    found = ceilings(users=150, seed=3, sequence_length=20, days=5)
    assert set(found) == {"oracle", "visible", "ordered"}
    assert all(0.5 < v < 1.0 for v in found.values())
    # Types and ages known beat order alone; neither sees more than the oracle by much.
    assert found["ordered"] < found["visible"] < found["oracle"] + 0.01
