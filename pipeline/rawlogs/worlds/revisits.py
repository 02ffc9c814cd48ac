"""The `revisits` world: users come back to items and shops they saw; popularity has a long tail.

What decides a click: the click logit is REVISITS_BIAS (-4.9) + 1.1 x log1p(faded count of the shown
item among the last 50 behaviours) + 0.5 x log1p(faded count of its shop), each behaviour
fading as 2^(-age / 3 days), - 1.5 x a buy of the same item (fading over 2 days: bought items
are not bought again), + 0.5 x item popularity (z-scored log, Zipf exponent 1.3 instead of
1.0), - 0.3 / 0.6 outside the query's category (same group / elsewhere), - 0.05 per position.
Every page holds an item the user saw lately when there is one (taobao: 70 %).
Blind oracle: the same counts at the mean fade and buy share of the requests' behaviours.
Click rate about 9 %. Noise: features[2] shows log1p(item + shop count) with noise 1.5;
popularity (features[0]) with noise 0.3.
"""
from __future__ import annotations

import numpy as np

from pipeline.rawlogs.synth_world import World
from pipeline.rawlogs.worlds.recent import Recent, revisit_pull

REVISITS_BIAS = -4.9
REVISIT_WEIGHTS = {"item_weight": 1.1, "shop_weight": 0.5, "bought_weight": 1.5}
REVISIT_RELEVANCE = np.array([0.0, 0.3, 0.6])       # in the query's category / its group / elsewhere


class RevisitsWorld(World):
    """Clicks by revisits of items and shops and by popularity."""

    click_rate = (0.04, 0.14)      # share of impressions clicked, small worlds to 12 days
    item_zipf = 1.3
    lately_share = 1.0
    match_feature_noise = 1.5

    def _click_logits(self, users, ts, qcat, items, log_price, history):
        recent = Recent(self, users, ts, items, history)
        true, blind = revisit_pull(recent, **REVISIT_WEIGHTS)
        base = (REVISITS_BIAS + 0.5 * self.item_pop_z[items]
                - REVISIT_RELEVANCE[self._relevance(qcat, items)]
                - 0.05 * np.arange(items.shape[1])[None, :])
        return base + true, base + blind, recent.count(recent.same_item) + recent.count(recent.same_shop)
