"""A world's view of each search request's recent behaviours, and the click-logit terms built on it."""
from __future__ import annotations

import numpy as np

from pipeline.rawlogs.synth_world import BUY, HISTORY_DEPTH, History, mean_over

HOUR_S = 3600.0


class Recent:
    """The last HISTORY_DEPTH behaviours of n requests, against their pages' items (n, P).

    Attributes are (n, H) arrays: item, type, age (seconds before the request), valid; and
    (n, P, H) masks of the shown item against each behaviour: same_cat, same_item, same_shop.
    """

    def __init__(self, world, users, ts, items, history: History):
        idx, self.valid = history.before(users, ts, HISTORY_DEPTH)
        self.item = history.item[idx]
        self.type = history.type[idx]
        self.age = (ts[:, None] - history.ts[idx]).astype(np.float64)
        valid = self.valid[:, None, :]
        self.same_cat = (world.item_cat[items][:, :, None] == world.item_cat[self.item][:, None, :]) & valid
        self.same_item = (items[:, :, None] == self.item[:, None, :]) & valid
        self.same_shop = (world.item_shop[items][:, :, None]
                          == world.item_shop[self.item][:, None, :]) & valid

    def fade(self, half_life_s) -> np.ndarray:
        """2^(-age / half life) of every behaviour (n, H); half_life_s a scalar or (n, H)."""
        return np.exp2(-self.age / half_life_s)

    def count(self, mask: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        """Sum over behaviours matching the shown item (mask (n, P, H)) of weight (n, H), or of 1."""
        if weight is None:
            return mask.sum(axis=2).astype(np.float64)
        return np.einsum("nph,nh->np", mask.astype(np.float64), weight)

    def blind(self, effect: np.ndarray) -> np.ndarray:
        """A per-behaviour effect (n, H) as seen without type and age: its mean, on every behaviour."""
        return np.full(effect.shape, mean_over(effect, self.valid))


# How a recent behaviour of each type in the candidate's category moves the click (the
# `properties` world): cart and fav pull, a buy satiates, clicks pull weakly; all fade.
PROPERTY_EFFECT = np.array([0.35, 1.6, 1.2, -2.2])       # by type code: click, cart, fav, buy
PROPERTY_HALF_LIFE_S = np.array([12.0, 24.0, 36.0, 20.0]) * HOUR_S
PROPERTY_CAP = 3.0


def property_pull(recent: Recent) -> tuple[np.ndarray, np.ndarray]:
    """The type-and-age pull of the user's behaviours in the candidate's category, true and blind.

    Returns:
      (true, blind), each (n, P), capped at +-PROPERTY_CAP.
    """
    effect = PROPERTY_EFFECT[recent.type] * recent.fade(PROPERTY_HALF_LIFE_S[recent.type])
    true = recent.count(recent.same_cat, effect)
    blind = recent.count(recent.same_cat, recent.blind(effect))
    return np.clip(true, -PROPERTY_CAP, PROPERTY_CAP), np.clip(blind, -PROPERTY_CAP, PROPERTY_CAP)


REVISIT_HALF_LIFE_S = 3 * 24 * HOUR_S
BOUGHT_HALF_LIFE_S = 2 * 24 * HOUR_S


def revisit_pull(recent: Recent, item_weight: float, shop_weight: float,
                 bought_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Revisits of the shown item and its shop (fading over days), minus a recent buy of the item.

    Returns:
      (true, blind), each (n, P); blind counts behaviours at their mean fade and buy share.
    """
    fade = recent.fade(REVISIT_HALF_LIFE_S)
    bought = (recent.type == BUY) * recent.fade(BOUGHT_HALF_LIFE_S)

    def pull(fade, bought):
        return (item_weight * np.log1p(recent.count(recent.same_item, fade))
                + shop_weight * np.log1p(recent.count(recent.same_shop, fade))
                - bought_weight * recent.count(recent.same_item, bought))
    return pull(fade, bought), pull(recent.blind(fade), recent.blind(bought))
