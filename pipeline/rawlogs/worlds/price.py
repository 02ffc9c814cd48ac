"""The `price` world: purchasing power shapes the price of what is clicked and bought.

What decides a click: the click logit is PRICE_BIAS (-0.2) - 0.8 x the squared distance (capped at 9)
of the item's log price from the user's price level (its category's centre + 0.5 x (power - 4);
width 0.45) + 0.6 x log1p(count of the last 50 behaviours in the item's category)
- 0.5 / 0.9 outside the query's category (same group / elsewhere) + 0.2 x quality - 0.04 per
position. A power level moves prices 0.5 in log (taobao: 0.35), so the prices of the behaviour
sequence reveal power (users.power_level, the power task's label) and the price ranking feature
(features[3], exact price within the category) only helps against that level.
Behaviour type and age do not enter: the blind oracle equals the oracle.
Click rate about 30 %. Noise: features[2] shows the category count with noise 0.8.
"""
from __future__ import annotations

import numpy as np

from pipeline.rawlogs.synth_world import RELEVANCE_PENALTY, World
from pipeline.rawlogs.worlds.recent import Recent

PRICE_BIAS = -0.2
PRICE_WIDTH = 0.45


def price_fit(world: World, users, items, log_price) -> np.ndarray:
    """Minus the squared distance of each shown item's log price from its user's level. (n, P)"""
    return -world.price_misfit(users, items, log_price, PRICE_WIDTH)


class PriceWorld(World):
    """Clicks by price fit to purchasing power and the history's categories."""

    click_rate = (0.22, 0.38)      # share of impressions clicked, small worlds to 12 days
    power_price_step = 0.5
    match_feature_noise = 0.8

    def _click_logits(self, users, ts, qcat, items, log_price, history):
        recent = Recent(self, users, ts, items, history)
        count = recent.count(recent.same_cat)
        logit = (PRICE_BIAS + 0.8 * price_fit(self, users, items, log_price) + 0.6 * np.log1p(count)
                 - np.take(RELEVANCE_PENALTY, self._relevance(qcat, items))
                 + 0.2 * self.item_quality[items] - 0.04 * np.arange(items.shape[1])[None, :])
        return logit, logit, count
