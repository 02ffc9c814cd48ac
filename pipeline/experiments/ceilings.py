"""How much of the `properties` world's signal a model can reach from its examples.

The world's oracle sees the last 50 behaviours of a request with their exact ages; its blind oracle
sees the same behaviours as clicks of unknown age and order. An example carries less and more: the
last N behaviours of at most `lookback_days` days before the request's day, ages as time buckets,
in order. Two scores bound what a model of those examples can do, each scored on the world's own
clicks of the last day:
- visible: the oracle over the example's behaviours, each age replaced by its bucket's geometric
  middle (types known): what a model with properties can reach;
- ordered: the same behaviours with each one's pull replaced by the mean pull at its recency rank
  (type and age unknown, order known): what dupn-nobp, which sees the order, can reach.

    python -m pipeline.experiments.ceilings --users 1000 --seeds 1,2 --sequence-length 40
"""
from __future__ import annotations

import argparse
import datetime as dt
import tempfile

import numpy as np
import pyarrow.parquet as pq

from features.contract import TIME_BUCKET_EDGES_S, time_bucket
from pipeline import layout
from pipeline.evaluation.evaluate import read_oracle
from pipeline.evaluation.metrics import auc
from pipeline.experiments.worlds import START
from pipeline.rawlogs import synth
from pipeline.rawlogs.synth_world import DAY_S
from pipeline.rawlogs.worlds import WORLDS, recent as pulls
from pipeline.rawlogs.worlds.properties import PropertiesWorld
from pipeline.rawlogs.worlds.recent import Recent

EDGES = np.asarray(TIME_BUCKET_EDGES_S, float)
# Each time bucket's geometric middle (the last, open one's: twice its lower edge), by the bucket
# ids of features.contract.time_bucket (0 is padding).
MIDDLES = np.r_[0.0, np.sqrt(np.r_[1.0, EDGES] * np.r_[EDGES, 4 * EDGES[-1]])]


def seen(recent: Recent, ts: np.ndarray, sequence_length: int, lookback_days: int) -> np.ndarray:
    """(n, H) mask of the behaviours an example shows: the newest N since the lookback's first day."""
    first = ts - ts % DAY_S - lookback_days * DAY_S
    in_window = recent.valid & (ts[:, None] - recent.age >= first[:, None])
    return in_window & (np.cumsum(in_window, axis=1) <= sequence_length)   # newest first


def pull_of(recent: Recent, ages: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(n, H) each behaviour's pull at the given ages, 0 where not kept."""
    half_life = pulls.PROPERTY_HALF_LIFE_S[recent.type]
    return pulls.PROPERTY_EFFECT[recent.type] * np.exp2(-ages / half_life) * keep


def capped(recent: Recent, effect: np.ndarray) -> np.ndarray:
    return np.clip(recent.count(recent.same_cat, effect), -pulls.PROPERTY_CAP, pulls.PROPERTY_CAP)


def world_scoring(score: str, sequence_length: int, lookback_days: int):
    """A PropertiesWorld whose blind oracle is the `score` ceiling (visible or ordered)."""

    class Scored(PropertiesWorld):
        def _click_logits(self, users, ts, qcat, items, log_price, history):
            recent = Recent(self, users, ts, items, history)
            true, _ = pulls.property_pull(recent)
            base = self.base_logits(qcat, items)
            keep = seen(recent, ts, sequence_length, lookback_days)
            if score == "visible":
                effect = pull_of(recent, MIDDLES[time_bucket(recent.age)], keep)
            else:
                exact = pull_of(recent, recent.age, keep)
                rank = np.cumsum(keep, axis=1) - 1
                means = np.array([exact[keep & (rank == k)].mean() if (keep & (rank == k)).any()
                                  else 0.0 for k in range(sequence_length)])
                effect = np.where(keep, means[np.clip(rank, 0, sequence_length - 1)], 0.0)
            return base + true, base + capped(recent, effect), recent.count(recent.same_cat)

    return Scored


def ceilings(users: int, seed: int, sequence_length: int, lookback_days: int = 3,
             days: int = 12) -> dict:
    """{oracle, visible, ordered}: CTR AUCs on the last day's impressions (see the module)."""
    out = {}
    for score in ("visible", "ordered"):
        WORLDS["_ceiling"] = world_scoring(score, sequence_length, lookback_days)
        try:
            with tempfile.TemporaryDirectory() as raw:
                synth.generate(raw, start=START, days=days, users=users, seed=seed,
                               world="_ceiling", log=lambda *a: None)
                last = str(dt.date.fromisoformat(START) + dt.timedelta(days=days - 1))
                shown = pq.read_table(layout.raw_dir(raw, "impressions", last),
                                      columns=["request_id", "item_id", "click"]).to_pandas()
                joined = shown.merge(read_oracle(raw, last), on=["request_id", "item_id"])
        finally:
            del WORLDS["_ceiling"]
        out["oracle"] = auc(joined["click"], joined["click_prob"])
        out[score] = auc(joined["click"], joined["blind_prob"])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--sequence-length", type=int, default=40)
    parser.add_argument("--lookback-days", type=int, default=3)
    args = parser.parse_args(argv)
    for seed in (int(s) for s in args.seeds.split(",")):
        found = ceilings(args.users, seed, args.sequence_length, args.lookback_days)
        print(f"seed {seed}, N {args.sequence_length}: "
              + ", ".join(f"{k} {v:.4f}" for k, v in found.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
