"""The `interests` world: a click follows the candidate's category against fixed interests.

What decides a click: each user has three fixed category interests (weights never drift, no
slot switches). The click logit is INTERESTS_BIAS (-4.0) + 1.6 x the user's interest share in the
candidate's category + 0.7 x log1p(count of the last 50 behaviours in that category, any type
and age) + 0.8 x item quality (the one informative ranking feature: features[4] shows it with
noise 0.7) - 0.5 / 0.9 outside the query's category (same group / elsewhere) - 0.08 per
position. Item, shop and brand identity do not enter, and neither do behaviour type and age,
so the blind oracle equals the oracle.
Click rate about 20 %. Noise: the behaviour-count ranking feature (features[2]) is shown with
noise 0.6; the latent interest is seen only through the history.
"""
from __future__ import annotations

import numpy as np

from pipeline.rawlogs.synth_world import RELEVANCE_PENALTY, World
from pipeline.rawlogs.worlds.recent import Recent

INTERESTS_BIAS = -4.0
FIXED_SLOTS = 3


def interest_terms(world: World, users, qcat, items, recent: Recent) -> tuple[np.ndarray, np.ndarray]:
    """Interest share and history category count of the shown items: the logit part and the count."""
    count = recent.count(recent.same_cat)
    logit = (1.6 * world.interest_share(users, world.item_cat[items]) + 0.7 * np.log1p(count)
             - np.take(RELEVANCE_PENALTY, world._relevance(qcat, items)))
    return logit, count


class InterestsWorld(World):
    """Fixed interests; clicks by category interest, history category counts, quality, position."""

    click_rate = (0.10, 0.28)      # share of impressions clicked, small worlds to 12 days
    match_feature_noise = 0.6

    def _build_users(self, s, rng) -> None:
        super()._build_users(s, rng)
        self.interest_w[:, FIXED_SLOTS:] = 0.0

    def drift(self, rng) -> None:
        """Interests stay as built."""

    def _click_logits(self, users, ts, qcat, items, log_price, history):
        recent = Recent(self, users, ts, items, history)
        terms, count = interest_terms(self, users, qcat, items, recent)
        logit = (INTERESTS_BIAS + terms + 0.8 * self.item_quality[items]
                 - 0.08 * np.arange(items.shape[1])[None, :])
        return logit, logit, count
