"""The `mixed` world: a blend of the interests, properties, revisits and price worlds.

What decides a click: the click logit is MIXED_BIAS (-5.0) + 0.3 x the interests world's category terms
(interest share, history category count, relevance) + 0.7 x the properties world's type-and-age
pull + 0.4 x the revisits world's item and shop revisits + 0.3 x the price world's price fit
+ 0.3 x popularity - 0.05 per position. Interests drift as in `taobao`; follow-ups are as common
as in `properties`; power moves prices as in `price`.
Blind oracle: the properties and revisits terms at their mean type and age effects.
Click rate about 6 %, the lowest of the worlds. Noise: features[2] (category count) with noise
1.2; many weaker terms, none dominant.
"""
from __future__ import annotations

import numpy as np

from pipeline.rawlogs.synth_world import World
from pipeline.rawlogs.worlds.interests import interest_terms
from pipeline.rawlogs.worlds.price import PriceWorld, price_fit
from pipeline.rawlogs.worlds.properties import PropertiesWorld
from pipeline.rawlogs.worlds.recent import Recent, property_pull, revisit_pull
from pipeline.rawlogs.worlds.revisits import REVISIT_WEIGHTS

MIXED_BIAS = -5.0


class MixedWorld(World):
    """Every other world's click terms at once, each weaker."""

    click_rate = (0.03, 0.09)      # share of impressions clicked, small worlds to 12 days
    follow_up_rate = PropertiesWorld.follow_up_rate
    power_price_step = PriceWorld.power_price_step
    match_feature_noise = 1.2

    def _click_logits(self, users, ts, qcat, items, log_price, history):
        recent = Recent(self, users, ts, items, history)
        interests, count = interest_terms(self, users, qcat, items, recent)
        pull, blind_pull = property_pull(recent)
        revisit, blind_revisit = revisit_pull(recent, **REVISIT_WEIGHTS)
        base = (MIXED_BIAS + 0.3 * interests + 0.3 * price_fit(self, users, items, log_price)
                + 0.3 * self.item_pop_z[items] - 0.05 * np.arange(items.shape[1])[None, :])
        return (base + 0.7 * pull + 0.4 * revisit, base + 0.7 * blind_pull + 0.4 * blind_revisit,
                count)
