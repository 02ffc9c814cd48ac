"""The `properties` world: the type and age of recent behaviours in the candidate's category decide.

What decides a click: the click logit is PROPERTIES_BIAS (-2.9) + the pull of the user's last 50
behaviours in the candidate's category, each PROPERTY_EFFECT[type] x 2^(-age / half life):
a cart (+1.6, half life 24 h) or fav (+1.2, 36 h) pulls, a buy satiates (-2.2, 20 h), a click
pulls weakly (+0.35, 12 h); the sum is capped at +-3 (pipeline/rawlogs/worlds/recent.py).
Plus 0.2 x item quality, -0.5 / 0.9 outside the query's category (same group / elsewhere) and
-0.06 per position. Carts, favs and buys are twice to three times as common as in `taobao`
(cart 15 %, fav 9 %, buy 5 % of visits before the price-fit scaling), so types carry signal.
Blind oracle: every behaviour in the category counts the mean effect of the same requests'
behaviours (type and age unknown); it trails the oracle by about 0.05 AUC.
Click rate about 15 %. Noise: the ranking features carry only the category count (features[2],
noise 1.0), never the types or ages.
"""
from __future__ import annotations

import numpy as np

from pipeline.rawlogs.synth_world import BUY, CART, FAV, RELEVANCE_PENALTY, World
from pipeline.rawlogs.worlds.recent import Recent, property_pull

PROPERTIES_BIAS = -2.9


class PropertiesWorld(World):
    """Clicks pulled by recent carts and favs in the category, pushed away by recent buys."""

    click_rate = (0.10, 0.22)      # share of impressions clicked, small worlds to 12 days
    follow_up_rate = {CART: 0.15, FAV: 0.09, BUY: 0.05}
    match_feature_noise = 1.0

    def _click_logits(self, users, ts, qcat, items, log_price, history):
        recent = Recent(self, users, ts, items, history)
        true, blind = property_pull(recent)
        base = self.base_logits(qcat, items)
        return base + true, base + blind, recent.count(recent.same_cat)

    def base_logits(self, qcat, items) -> np.ndarray:
        """(n, P) the click logit without the pull: bias, quality, relevance and position."""
        return (PROPERTIES_BIAS + 0.2 * self.item_quality[items]
                - np.take(RELEVANCE_PENALTY, self._relevance(qcat, items))
                - 0.06 * np.arange(items.shape[1])[None, :])
