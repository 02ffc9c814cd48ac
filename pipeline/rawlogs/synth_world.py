"""The simulated marketplace behind `dupn synth`: catalogue, users, talents and one day of their lives.

Everything here works on integer indices and numpy arrays; pipeline/rawlogs/synth.py turns a day into the
raw-log tables. The planted structure is described in pipeline/rawlogs/synth.py's docstring; the constants
below are its knobs. Loops run over world entities at build time (categories) or over search
rounds within a day, never over behaviour rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY_S = 86400
BEHAVIOR_TYPES = ("click", "cart", "fav", "buy")      # codes 0..3
SCENES = ("search", "recommend", "promo", "other")     # codes 0..3
CLICK, CART, FAV, BUY = range(4)
SEARCH, RECOMMEND, PROMO, OTHER = range(4)
TALENT_TYPES = ("fashion", "beauty", "digital", "home", "sports", "food", "baby", "pets",
                "travel", "books", "outdoor", "auto")

# Taobao UserBehavior mix (click 89.6 %, cart 5.5 %, fav 2.9 %, buy 2.0 %): every visit is a
# click, followed by a cart, fav or buy with these mean probabilities per visit.
TARGET_MIX = {"click": 0.896, "cart": 0.055, "fav": 0.029, "buy": 0.020}
FOLLOW_UP_RATE = {CART: 0.055 / 0.896, FAV: 0.029 / 0.896, BUY: 0.020 / 0.896}

# How much one past behaviour says about the user's interest now (the property gates' targets).
TYPE_WEIGHT = np.array([0.5, 4.0, 3.0, 6.0])           # click, cart, fav, buy
SCENE_WEIGHT = np.array([1.0, 0.6, 0.15, 0.4])          # search, recommend, promo, other
MATCH_HALF_LIFE_S = 12 * 3600                           # interest in a behaviour fades ...
SATIATION_HALF_LIFE_S = 8 * 3600                        # ... and a buy satiates, for a shorter time
TALENT_HALF_LIFE_S = 2 * DAY_S
SHOP_HALF_LIFE_S = 3 * DAY_S
HISTORY_DEPTH = 50                                      # behaviours the oracle looks back at
HISTORY_KEEP_S = 5 * DAY_S                              # older behaviours are forgotten

# Click model of a search impression: logit = sum of these terms (see click_logits).
CLICK_BIAS = -3.2
MATCH_WEIGHT = 0.5              # x log1p(weighted similarity to recent behaviours)
FOCUS_WEIGHT = 1.0              # x that similarity as a share of the recent (query-weighted) weight
OFF_QUERY_WEIGHT = 0.1          # behaviours outside the query's category count this much
# How alike a past behaviour's item and the shown item are: a sum over what they share.
SIMILARITY = {"category": 1.0, "shop": 0.5, "brand": 0.3, "item": 2.0, "tag": 0.15}
SATIATION_WEIGHT = 3.0          # x decayed count of recent buys in the item's category
INTEREST_WEIGHT = 0.5           # x share of today's (latent) interest in the item's category
RELEVANCE_PENALTY = (0.0, 0.5, 0.9)     # item in the query's category / its group / elsewhere
PRICE_WEIGHT = 0.3              # x squared distance of log price from the user's price level
QUALITY_WEIGHT = 0.2
POPULARITY_WEIGHT = 0.15
POSITION_WEIGHT = 0.05          # per position down the page
PAGE_SIZE = 10
RANK_FEATURES = 8

POWER_LEVELS = 7
POWER_PRICE_STEP = 0.35         # log-price shift of one purchasing-power level
PRICE_TASTE_WIDTH = 0.55        # how far from their price level users still browse
PRICE_BUY_WIDTH = 0.45          # ... and buy
INTEREST_SLOTS = 6
HOUR_WEIGHTS = np.array([2.0, 1.2, 0.8, 0.5, 0.4, 0.5, 0.9, 1.6, 2.5, 3.2, 3.6, 3.8,
                         3.8, 3.6, 3.5, 3.6, 3.8, 4.0, 4.3, 4.8, 5.6, 6.3, 5.8, 3.9])


@dataclass(frozen=True)
class Sizes:
    """Entity counts of a world, derived from the number of users."""
    users: int
    groups: int
    categories: int
    items: int
    shops: int
    brands: int
    talents: int

    @classmethod
    def for_users(cls, users: int, items: int | None = None) -> "Sizes":
        """items: the catalogue's size (shops and brands follow it); None: 3 per user, 800 at least."""
        categories = int(np.clip(users // 20, 40, 3000))
        groups = max(4, categories // 10)
        items = max(800, 3 * users) if items is None else items
        return cls(users=users, groups=groups, categories=categories, items=items,
                   shops=max(3 * groups, items // 12), brands=max(3 * groups, items // 20),
                   talents=max(2 * groups, users // 20))


class SegmentSampler:
    """Weighted draws of an element inside a segment (e.g. an item of a category), vectorised.

    Elements must be sorted by segment and every segment non-empty. One cumulative array holds
    `segment + (running weight within the segment) / (segment total)`, so a draw for segment s is
    one searchsorted of s + u.
    """

    def __init__(self, segment_of: np.ndarray, weights: np.ndarray, segments: int):
        counts = np.bincount(segment_of, minlength=segments)
        if (counts == 0).any():
            raise ValueError("every segment needs at least one element")
        self.start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.end = self.start + counts
        running = np.cumsum(weights)
        before = np.concatenate([[0.0], running])[self.start]
        totals = np.add.reduceat(weights, self.start)
        self.cum = segment_of + (running - before[segment_of]) / totals[segment_of]

    def draw(self, segments: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        picked = np.searchsorted(self.cum, segments + rng.random(len(segments)), side="right")
        return np.clip(picked, self.start[segments], self.end[segments] - 1)


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Long-tail weights 1/rank^exponent in a random order."""
    return (rng.permutation(n) + 1.0) ** -exponent


def _draw_tags(pools: np.ndarray, pool_weights: np.ndarray, counts: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """counts[i] distinct tags from row i of pools (weighted, without replacement); -1 pads to 4."""
    keys = np.log(pool_weights)[None, :] + rng.gumbel(size=pools.shape)
    order = np.argsort(-keys, axis=1, kind="stable")[:, :4]
    tags = np.take_along_axis(pools, order, axis=1)
    tags[np.arange(4)[None, :] >= counts[:, None]] = -1
    return tags


def _choose(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column index per row of a (rows, k) weight matrix."""
    cum = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), weights.shape[1] - 1)


def _day_seconds(n: int, rng: np.random.Generator) -> np.ndarray:
    """Seconds into the day, following the hour-of-day activity profile."""
    hours = rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    return hours * 3600 + rng.integers(0, 3600, size=n)


class History:
    """Behaviours sorted by (user, ts): the point-in-time look-ups of the simulation.

    Row 0 is a sentinel of user -1 (it sorts first and matches nobody), so look-ups that find no
    behaviour still index valid rows and come back with valid = False.
    """

    FIELDS = ("user", "ts", "item", "type", "scene")

    def __init__(self, origin_ts: int):
        self.origin = origin_ts
        self.user = np.array([-1], np.int64)
        self.ts = np.array([origin_ts], np.int64)
        self.item = np.zeros(1, np.int64)
        self.type = np.zeros(1, np.int8)
        self.scene = np.zeros(1, np.int8)
        self.key = self._keys(self.user, self.ts)

    def __len__(self) -> int:
        return len(self.user) - 1

    def _keys(self, user, ts):
        return user.astype(np.int64) * (1 << 32) + (ts - self.origin)

    def add(self, rows: dict) -> None:
        merged = {f: np.concatenate([getattr(self, f), rows[f].astype(getattr(self, f).dtype)])
                  for f in self.FIELDS}
        key = self._keys(merged["user"], merged["ts"])
        order = np.argsort(key, kind="stable")
        for f in self.FIELDS:
            setattr(self, f, merged[f][order])
        self.key = key[order]

    def forget_before(self, ts: int) -> None:
        keep = self.ts >= ts
        keep[0] = True
        for f in self.FIELDS + ("key",):
            setattr(self, f, getattr(self, f)[keep])

    def before(self, user: np.ndarray, ts: np.ndarray, depth: int):
        """The last `depth` behaviours of each user strictly before ts, most recent first.

        Returns:
          idx (n, depth) indices into this history (0, the sentinel, where invalid) and
          valid (n, depth) bool; valid entries come first in each row.
        """
        end = np.searchsorted(self.key, self._keys(user, ts), side="left")
        idx = np.maximum(end[:, None] - 1 - np.arange(depth)[None, :], 0)
        valid = self.user[idx] == user[:, None]
        return np.where(valid, idx, 0), valid


class World:
    """Catalogue, users and talents of one seed, and the daily simulation over them.

    This is the `taobao` world; the others (pipeline/rawlogs/worlds/) subclass it and change the
    knobs below and the click model (_click_logits), keeping catalogue, users, talents, shops
    and the tables.
    """

    follow_up_rate = FOLLOW_UP_RATE     # cart / fav / buy per visit (mean)
    item_zipf = 1.0                     # long tail of item popularity
    power_price_step = POWER_PRICE_STEP
    lately_share = 0.7                  # pages holding one item the user saw lately
    match_feature_noise = 1.2           # noise of the behaviour-match ranking feature
    click_rate = (0.06, 0.13)           # share of impressions clicked, small worlds to 12 days

    def __init__(self, users: int, seed: int, items: int | None = None):
        self.sizes = s = Sizes.for_users(users, items)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
        self._build_catalogue(s, rng)
        self._build_users(s, rng)
        self._build_talents(s, rng)
        self.follow_up_norm = None

    # ---- build ----------------------------------------------------------------------------
    def _build_catalogue(self, s: Sizes, rng) -> None:
        # Categories are numbered group by group, so a group's categories form one segment.
        self.cat_group = np.sort(rng.permutation(np.arange(s.categories) % s.groups))
        self.cat_pop = _zipf(s.categories, 0.9, rng)
        group_price = rng.normal(np.log(60.0), 0.7, s.groups)
        self.cat_mu = group_price[self.cat_group] + rng.normal(0.0, 0.4, s.categories)
        self.group_gender_bias = rng.normal(0.0, 0.8, s.groups)
        self.cat_in_group = SegmentSampler(self.cat_group, self.cat_pop, s.groups)
        self.cat_prior = self.cat_pop / self.cat_pop.sum()

        # Tags: 8 per group, 3 per category; a category's pool is its own tags and its group's.
        group_tags = np.arange(s.groups * 8).reshape(s.groups, 8)
        cat_tags = s.groups * 8 + np.arange(s.categories * 3).reshape(s.categories, 3)
        self.tag_pools = np.concatenate([cat_tags, group_tags[self.cat_group]], axis=1)
        self.tag_pool_weights = np.array([2.0] * 3 + [0.6] * 8)
        self.n_tags = s.groups * 8 + s.categories * 3
        # Query terms: 4 per category, 3 per group.
        self.cat_terms = np.arange(s.categories * 4).reshape(s.categories, 4)
        self.group_terms = s.categories * 4 + np.arange(s.groups * 3).reshape(s.groups, 3)

        # Items, numbered category by category; at least 3 per category.
        extra = s.items - 3 * s.categories
        cats = np.concatenate([np.repeat(np.arange(s.categories), 3),
                               rng.choice(s.categories, extra, p=_normal(self.cat_pop))])
        self.item_cat = np.sort(cats)
        self.item_quality = rng.normal(0.0, 1.0, s.items)
        self.item_shop = self._assign_sellers(s.shops, s, rng, per_cat=(2, 7))
        self.item_brand = self._assign_sellers(s.brands, s, rng, per_cat=(2, 6))
        self.shop_tier = rng.normal(0.0, 0.4, s.shops)
        self.shop_quality = rng.normal(0.0, 1.0, s.shops)
        brand_tier = rng.normal(0.0, 0.3, s.brands)
        self.item_log_price = (self.cat_mu[self.item_cat] + 0.6 * self.shop_tier[self.item_shop]
                               + 0.5 * brand_tier[self.item_brand] + 0.25 * self.item_quality
                               + rng.normal(0.0, 0.3, s.items))
        self.item_price = np.maximum(np.round(np.exp(self.item_log_price), 2), 0.5)
        self.item_log_price = np.log(self.item_price)
        n_tags = rng.choice([1, 2, 3, 4], size=s.items, p=[0.2, 0.35, 0.3, 0.15])
        self.item_tags = _draw_tags(self.tag_pools[self.item_cat], self.tag_pool_weights, n_tags, rng)
        self.item_tag_bits = self._tag_bits(s)
        self.item_pop = _zipf(s.items, self.item_zipf, rng) * np.exp(0.4 * self.item_quality)
        log_pop = np.log(self.item_pop)
        self.item_pop_z = (log_pop - log_pop.mean()) / log_pop.std()
        self.shop_pop = np.bincount(self.item_shop, weights=self.item_pop, minlength=s.shops) + 1e-9

        # Samplers: items of a category by popularity (the search engine) and by popularity and
        # price taste of each purchasing-power level (what users browse).
        self.item_sampler = SegmentSampler(self.item_cat, self.item_pop, s.categories)
        self.item_sampler_by_power = []
        for level in range(1, POWER_LEVELS + 1):
            z = (self.item_log_price - self.cat_mu[self.item_cat] - self.power_shift(level)) \
                / PRICE_TASTE_WIDTH
            taste = self.item_pop * np.exp(-0.5 * z * z) + 1e-12
            self.item_sampler_by_power.append(SegmentSampler(self.item_cat, taste, s.categories))

    def _tag_bits(self, s: Sizes) -> np.ndarray:
        """Each item's tags as bits of one uint64, numbered within its group (all of an item's
        tags belong to its group): shared tags of two items of a group = popcount(a & b)."""
        first_cat = np.searchsorted(self.cat_group, np.arange(s.groups))
        local = np.arange(s.categories) - first_cat[self.cat_group]
        if 8 + 3 * (local.max() + 1) > 64:
            raise ValueError("a group has too many categories for 64 tag bits")
        bit = np.empty(self.n_tags, np.uint64)
        bit[:s.groups * 8] = np.tile(np.arange(8), s.groups)
        bit[s.groups * 8:] = (8 + 3 * local[:, None] + np.arange(3)[None, :]).reshape(-1)
        ones = np.where(self.item_tags >= 0, np.left_shift(np.uint64(1), bit[self.item_tags]), 0)
        return np.bitwise_or.reduce(ones.astype(np.uint64), axis=1)

    def _assign_sellers(self, n: int, s: Sizes, rng, per_cat: tuple[int, int]) -> np.ndarray:
        """Shop (or brand) of every item: each category is sold by a few sellers of its group."""
        seller_group = rng.permutation(np.arange(n) % s.groups)
        by_group = [np.flatnonzero(seller_group == g) for g in range(s.groups)]
        out = np.empty(s.items, np.int64)
        starts = np.searchsorted(self.item_cat, np.arange(s.categories + 1))
        for c in range(s.categories):
            pool = by_group[self.cat_group[c]]
            sellers = rng.choice(pool, size=min(len(pool), rng.integers(*per_cat)), replace=False)
            weights = _normal(1.0 / np.arange(1, len(sellers) + 1))
            out[starts[c]:starts[c + 1]] = rng.choice(sellers, starts[c + 1] - starts[c], p=weights)
        return out

    def _build_users(self, s: Sizes, rng) -> None:
        self.user_gender = rng.choice(3, size=s.users, p=[0.42, 0.50, 0.08])      # m, f, u
        age = np.clip(np.round(rng.normal(33.0, 9.0, s.users)), 16, 70)
        latent = 0.045 * (age - 33.0) + rng.normal(0.0, 1.0, s.users)
        self.user_power = np.clip(np.round(4.0 + 1.3 * latent), 1, POWER_LEVELS).astype(np.int64)
        self.user_age = np.where(rng.random(s.users) < 0.08, -1, age).astype(np.int64)     # -1: empty
        self.user_power_shown = rng.random(s.users) >= 0.04                               # else empty
        self.user_activity = 10.6 * rng.lognormal(-0.245, 0.7, s.users)    # visits / active day
        self.user_search_rate = 1.2 * rng.lognormal(-0.125, 0.5, s.users)  # requests / active day
        # Favourite groups tilt with gender (some groups are mostly shopped by men or women).
        group_pop = np.bincount(self.cat_group, weights=self.cat_pop, minlength=s.groups)
        sign = np.array([1.0, -1.0, 0.0])[self.user_gender]
        self.user_fav_groups = np.empty((s.users, 2), np.int64)
        for value in (1.0, -1.0, 0.0):
            members = np.flatnonzero(sign == value)
            p = _normal(group_pop * np.exp(value * self.group_gender_bias))
            self.user_fav_groups[members] = rng.choice(s.groups, size=(len(members), 2), p=p)
        all_slots = np.repeat(np.arange(s.users), INTEREST_SLOTS)
        self.interest_cat = self._new_interest(all_slots, rng).reshape(s.users, INTEREST_SLOTS)
        self.interest_w = rng.gamma(0.7, 1.0, (s.users, INTEREST_SLOTS)) + 1e-3

    def _build_talents(self, s: Sizes, rng) -> None:
        self.talent_group = np.sort(rng.permutation(np.arange(s.talents) % s.groups))
        self.talent_pop = _zipf(s.talents, 0.8, rng)
        log_pop = np.log(self.talent_pop)
        self.talent_pop_z = (log_pop - log_pop.mean()) / log_pop.std()
        home_cat = self.cat_in_group.draw(self.talent_group, rng)
        n_tags = rng.integers(2, 5, s.talents)
        self.talent_tags = _draw_tags(self.tag_pools[home_cat], self.tag_pool_weights, n_tags, rng)
        self.talent_sampler = SegmentSampler(self.talent_group, self.talent_pop, s.groups)

    # ---- helpers ----------------------------------------------------------------------------
    def power_shift(self, level):
        return (np.asarray(level) - 4) * self.power_price_step

    def _new_interest(self, users: np.ndarray, rng) -> np.ndarray:
        """A category for each entry of users: mostly from the user's favourite groups."""
        from_fav = rng.random(len(users)) < 0.7
        group = self.user_fav_groups[users, rng.integers(0, 2, len(users))]
        in_group = self.cat_in_group.draw(group, rng)
        return np.where(from_fav, in_group, self._any_category(len(users), rng))

    def _todays_category(self, users: np.ndarray, rng, explore: float) -> np.ndarray:
        """Categories drawn from today's interest of each user (explore: share drawn from the prior)."""
        slot = _choose(self.interest_w[users], rng)
        cats = self.interest_cat[users, slot]
        return np.where(rng.random(len(users)) < explore, self._any_category(len(users), rng), cats)

    def _any_category(self, n: int, rng) -> np.ndarray:
        """n categories drawn by popularity alone."""
        return np.searchsorted(np.cumsum(self.cat_prior), rng.random(n) * 0.999999)

    def interest_share(self, users: np.ndarray, cats: np.ndarray) -> np.ndarray:
        """Share of today's interest weight of users (n,) on categories cats (n, k)."""
        w = self.interest_w[users]
        same = self.interest_cat[users][:, None, :] == cats[:, :, None]
        return (same * w[:, None, :]).sum(-1) / w.sum(-1, keepdims=True)

    def drift(self, rng) -> None:
        """Interests move a little every day: weights wander, some slots switch category."""
        n = self.sizes.users
        self.interest_w *= np.exp(rng.normal(0.0, 0.35, (n, INTEREST_SLOTS)))
        switch = rng.random((n, INTEREST_SLOTS)) < 0.10
        users = np.nonzero(switch)[0]
        self.interest_cat[switch] = self._new_interest(users, rng)
        self.interest_w[switch] = rng.gamma(0.7, 1.0, len(users)) + 1e-3

    def follow_up_weights(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """How likely a visit turns into cart / fav / buy (before scaling): a good price and quality."""
        z = (self.item_log_price[items] - self.cat_mu[self.item_cat[items]]
             - self.power_shift(self.user_power[users])) / PRICE_BUY_WIDTH
        return np.exp(-0.75 * z * z + 0.3 * self.item_quality[items])


    def follow_ups(self, users, items, ts, scenes, day_end, rng) -> dict:
        """Click rows for visits and the cart / fav / buy rows that follow some of them.

        Returns:
          History fields for all rows (clicks first), `visit` (the visit index of each row) and
          `bought` (per visit).
        """
        n = len(users)
        weights = self.follow_up_weights(users, items)
        parts = [{"user": users, "ts": ts, "item": items, "type": np.full(n, CLICK),
                  "scene": scenes, "visit": np.arange(n)}]
        bought = np.zeros(n, bool)
        for kind, delay in ((CART, 60.0), (FAV, 60.0), (BUY, 300.0)):
            p = np.minimum(self.follow_up_rate[kind] * weights / self.follow_up_norm, 0.9)
            hit = rng.random(n) < p
            when = np.minimum(ts + 5 + rng.exponential(delay, n).astype(np.int64), day_end - 1)
            parts.append({"user": users[hit], "ts": when[hit], "item": items[hit],
                          "type": np.full(hit.sum(), kind), "scene": scenes[hit],
                          "visit": np.flatnonzero(hit)})
            if kind == BUY:
                bought = hit
        rows = {f: np.concatenate([p[f] for p in parts]) for f in parts[0]}
        rows["bought"] = bought
        return rows

    # ---- one day ------------------------------------------------------------------------------
    def simulate_day(self, day: int, day_start: int, history: History, seed: int) -> dict:
        """Rows of every table for one day, as index arrays (synth.py names and writes them)."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1, day]))
        if day > 0:
            self.drift(rng)
        history.forget_before(day_start - HISTORY_KEEP_S)
        day_end = day_start + DAY_S
        weekend = (day_start // DAY_S + 3) % 7 >= 5          # 1970-01-01 was a Thursday
        active = rng.random(self.sizes.users) < 0.85
        # Promotions: a few items are cheaper today (the day's items snapshot shows it).
        price = np.where(rng.random(self.sizes.items) < 0.03,
                         np.round(self.item_price * 0.85, 2), self.item_price)

        organic = self._organic(active, 1.15 if weekend else 1.0, day_start, day_end, history, rng)
        history.add(organic)
        impressions, searched = self._search(active, day_start, day_end, history, np.log(price), rng)
        behaviors = {f: np.concatenate([organic[f], searched[f]]) for f in History.FIELDS}
        return {"behaviors": behaviors, "impressions": impressions,
                "follows": self._follows(active, day_start, history, rng),
                "shop_prefs": self._shop_prefs(active, day_start, history, rng), "price": price}

    def _organic(self, active, factor, day_start, day_end, history, rng) -> dict:
        """Browsing outside logged search pages: sessions of visits within one category each."""
        n_visits = rng.poisson(self.user_activity * factor) * active
        users = np.repeat(np.arange(self.sizes.users), n_visits)
        first = np.zeros(len(users), bool)
        first[(np.cumsum(n_visits) - n_visits)[n_visits > 0]] = True
        new_session = first | (rng.random(len(users)) < 0.22)
        session = np.cumsum(new_session) - 1
        session_users = users[new_session]
        session_cat = self._todays_category(session_users, rng, explore=0.06)
        session_start = _day_seconds(len(session_users), rng)
        session_scene = rng.choice([SEARCH, RECOMMEND, PROMO, OTHER], size=len(session_users),
                                   p=[0.15, 0.45, 0.12, 0.28])
        gaps = rng.exponential(75.0, len(users))
        gaps[new_session] = 0.0
        run = np.cumsum(gaps)
        offset = (run - run[new_session][session]).astype(np.int64)
        ts = np.minimum(day_start + session_start[session] + offset, day_end - 1)
        cats = session_cat[session]
        items = np.empty(len(users), np.int64)
        for level in range(1, POWER_LEVELS + 1):
            m = self.user_power[users] == level
            items[m] = self.item_sampler_by_power[level - 1].draw(cats[m], rng)
        # Users look at the item they just saw again now and then.
        again = ~new_session & (rng.random(len(users)) < 0.2)
        items = np.where(again, np.concatenate([[0], items[:-1]]), items)
        weights = self.follow_up_weights(users, items)
        self.follow_up_norm = weights.mean() if len(weights) else 1.0
        rows = self.follow_ups(users, items, ts, session_scene[session], day_end, rng)
        return self._satiate(rows, history, rng)

    def _satiate(self, rows: dict, history: History, rng) -> dict:
        """Drops visits (and their follow-ups) in a category the user bought in hours ago."""
        recent = History(history.origin)
        recent.add({f: getattr(history, f)[history.type == BUY] for f in History.FIELDS})
        recent.add({f: rows[f][rows["type"] == BUY] for f in History.FIELDS})
        visits = rows["type"] == CLICK            # click rows come first, one per visit
        user, ts, item = rows["user"][visits], rows["ts"][visits], rows["item"][visits]
        idx, valid = recent.before(user, ts, 8)
        same_cat = self.item_cat[recent.item[idx]] == self.item_cat[item][:, None]
        sated = (valid & same_cat) * np.exp2(-(ts[:, None] - recent.ts[idx]) / SATIATION_HALF_LIFE_S)
        dropped = rng.random(len(user)) < 1.0 - np.exp(-1.5 * sated.sum(axis=1))
        keep = ~dropped[rows["visit"]]
        return {f: rows[f][keep] for f in History.FIELDS}

    # ---- search -------------------------------------------------------------------------------
    def _search(self, active, day_start, day_end, history, log_price, rng):
        """Search requests, their result pages and clicks; clicks and buys join the history."""
        n_req = np.minimum(rng.poisson(self.user_search_rate) * active, 6)
        users = np.repeat(np.arange(self.sizes.users), n_req)
        secs = _day_seconds(len(users), rng)
        order = np.lexsort((secs, users))
        users, ts = users[order], day_start + secs[order]
        rounds = np.arange(len(users)) - np.repeat(np.cumsum(n_req) - n_req, n_req)
        qcat = self._todays_category(users, rng, explore=0.25)
        terms = self._query_terms(qcat, rng)
        items, valid, engine = self._result_pages(users, ts, qcat, history, rng)

        n, pages = len(users), items.shape[1]
        logits = np.zeros((n, pages))
        blind = np.zeros((n, pages))
        features = np.zeros((n, pages, RANK_FEATURES))
        clicks = np.zeros((n, pages), bool)
        buys = np.zeros((n, pages), bool)
        searched = []
        for r in range(int(rounds.max(initial=-1)) + 1):
            m = np.flatnonzero(rounds == r)
            logit, blind_logit, match = self.click_logits(users[m], ts[m], qcat[m], items[m],
                                                          log_price, history)
            logits[m] = logit
            blind[m] = blind_logit
            features[m] = self._rank_features(qcat[m], items[m], match, engine[m], log_price, rng)
            clicked = valid[m] & (rng.random(logit.shape) < _sigmoid(logit))
            clicks[m] = clicked
            row, slot = np.nonzero(clicked)
            reading = 3 + 4 * slot + rng.exponential(20.0, len(row)).astype(np.int64)
            click_ts = np.minimum(ts[m][row] + reading, day_end - 1)
            rows = self.follow_ups(users[m][row], items[m][row, slot], click_ts,
                                   np.full(len(row), SEARCH), day_end, rng)
            buys[m[row], slot] = rows.pop("bought")
            rows.pop("visit")
            history.add(rows)
            searched.append(rows)
        behaviors = {f: np.concatenate([s[f] for s in searched] or [np.zeros(0, np.int64)])
                     for f in History.FIELDS}
        impressions = {"user": users, "ts": ts, "qcat": qcat, "terms": terms, "items": items,
                       "valid": valid, "features": features, "click": clicks, "buy": buys,
                       "click_prob": _sigmoid(logits), "blind_prob": _sigmoid(blind)}
        return impressions, behaviors

    def _query_terms(self, qcat, rng) -> np.ndarray:
        """(n, 3) term ids, -1 padded: one or two of the category's terms, maybe one of its group's."""
        n = len(qcat)
        first = rng.integers(0, 4, n)
        second = (first + rng.integers(1, 4, n)) % 4
        terms = np.full((n, 3), -1, np.int64)
        terms[:, 0] = self.cat_terms[qcat, first]
        terms[:, 1] = np.where(rng.random(n) < 0.5, self.cat_terms[qcat, second], -1)
        terms[:, 2] = np.where(rng.random(n) < 0.35,
                               self.group_terms[self.cat_group[qcat], rng.integers(0, 3, n)], -1)
        return terms

    def _result_pages(self, users, ts, qcat, history, rng):
        """The engine's page for each request: mostly the query's category, some of its group,
        some of the user's other interests and often one item the user saw lately; ranked by
        relevance, popularity, quality and noise.

        Returns:
          items (n, PAGE_SIZE), valid (n, PAGE_SIZE) (pages of tiny categories may be shorter),
          engine score (n, PAGE_SIZE); slot j is position j + 1.
        """
        n = len(users)
        own = self.item_sampler.draw(np.repeat(qcat, 9), rng).reshape(n, 9)
        near_cats = self.cat_in_group.draw(np.repeat(self.cat_group[qcat], 2), rng)
        near = self.item_sampler.draw(near_cats, rng).reshape(n, 2)
        mine_cats = self._todays_category(np.repeat(users, 3), rng, explore=0.0)
        mine = self.item_sampler.draw(mine_cats, rng).reshape(n, 3)
        idx, seen = history.before(users, ts, HISTORY_DEPTH)
        n_seen = seen.sum(axis=1)                              # valid columns come first
        lately = history.item[idx[np.arange(n), (rng.random(n) * n_seen).astype(np.int64)]]
        mine[:, 0] = np.where((n_seen > 0) & (rng.random(n) < self.lately_share), lately, mine[:, 0])
        cand = np.concatenate([own, near, mine], axis=1)
        k = cand.shape[1]
        dup = ((cand[:, :, None] == cand[:, None, :]) & np.tri(k, k, -1, dtype=bool)[None]).any(axis=2)
        relevance = self._relevance(qcat, cand)
        score = (-0.8 * relevance + 0.3 * self.item_pop_z[cand] + 0.2 * self.item_quality[cand]
                 + rng.normal(0.0, 0.5, cand.shape))
        score = np.where(dup, -np.inf, score)
        order = np.argsort(-score, axis=1, kind="stable")[:, :PAGE_SIZE]
        score = np.take_along_axis(score, order, axis=1)
        items = np.take_along_axis(cand, order, axis=1)
        valid = np.isfinite(score)
        return items, valid, np.where(valid, score, 0.0)

    def _relevance(self, qcat, items) -> np.ndarray:
        """0: the item is in the query's category, 1: in its group, 2: elsewhere."""
        cat = self.item_cat[items]
        same_group = self.cat_group[cat] == self.cat_group[qcat][:, None]
        return np.where(cat == qcat[:, None], 0, np.where(same_group, 1, 2))

    def click_logits(self, users, ts, qcat, items, log_price, history, chunk: int = 2000):
        """The true click logit of each (request, item), the property-blind one and the
        behaviour-match score behind them (the world's informative ranking feature).

        The blind logit is the world's best score when every past behaviour is a click of unknown
        age: type and time gap replaced by their mean effect over the same requests' histories.

        Args:
          users, ts, qcat: (n,) the requests; items: (n, P) their pages; log_price: (items,) today.
        Returns:
          logits (n, P), blind logits (n, P) and match (n, P).
        """
        parts = [self._click_logits(users[lo:lo + chunk], ts[lo:lo + chunk], qcat[lo:lo + chunk],
                                    items[lo:lo + chunk], log_price, history)
                 for lo in range(0, len(users), chunk)]
        if not parts:
            return np.zeros(items.shape), np.zeros(items.shape), np.zeros(items.shape)
        return tuple(np.concatenate(column) for column in zip(*parts))

    def _click_logits(self, users, ts, qcat, items, log_price, history):
        idx, valid = history.before(users, ts, HISTORY_DEPTH)
        h_item = history.item[idx]
        h_type, h_scene = history.type[idx], history.scene[idx]
        age = (ts[:, None] - history.ts[idx]).astype(np.float64)
        h_cat = self.item_cat[h_item]
        # Each behaviour's weight: its type and scene, fading with age, mostly within the query.
        in_query = np.where(h_cat == qcat[:, None], 1.0, OFF_QUERY_WEIGHT)
        weight = (TYPE_WEIGHT[h_type] * SCENE_WEIGHT[h_scene] * np.exp2(-age / MATCH_HALF_LIFE_S)
                  * valid * in_query)
        recent_buys = (h_type == BUY) * valid * np.exp2(-age / SATIATION_HALF_LIFE_S)
        # Blind, type and age are unknown: every behaviour weighs their mean effect.
        blind_weight = (mean_over(TYPE_WEIGHT[h_type] * np.exp2(-age / MATCH_HALF_LIFE_S), valid)
                        * SCENE_WEIGHT[h_scene] * valid * in_query)
        blind_buys = mean_over((h_type == BUY) * np.exp2(-age / SATIATION_HALF_LIFE_S), valid) * valid
        cat = self.item_cat[items]
        interest = self.interest_share(users, cat)
        relevance = np.take(RELEVANCE_PENALTY, self._relevance(qcat, items))
        misfit = self.price_misfit(users, items, log_price, 0.6)
        similarity, same_cat = self._similarity(items, cat, h_item, h_cat)

        def logit(weight, buys):        # the terms in synth.py's order (same bytes as before)
            match = np.einsum("nph,nh->np", similarity, weight)
            focus = match / (weight.sum(axis=1, keepdims=True) + 1.0)
            satiation = np.einsum("nph,nh->np", same_cat, buys)
            return (CLICK_BIAS + MATCH_WEIGHT * np.log1p(match) + FOCUS_WEIGHT * focus
                    - SATIATION_WEIGHT * satiation + INTEREST_WEIGHT * interest - relevance
                    - PRICE_WEIGHT * misfit
                    + QUALITY_WEIGHT * self.item_quality[items] + POPULARITY_WEIGHT * self.item_pop_z[items]
                    - POSITION_WEIGHT * np.arange(items.shape[1])[None, :]), match
        true, match = logit(weight, recent_buys)
        blind, _ = logit(blind_weight, blind_buys)
        return true, blind, match

    def price_misfit(self, users, items, log_price, width: float) -> np.ndarray:
        """Squared distance (capped at 9) of each item's log price from its user's price level."""
        cat = self.item_cat[items]
        z = (log_price[items] - self.cat_mu[cat] - self.power_shift(self.user_power[users])[:, None]) / width
        return np.minimum(z * z, 9.0)

    def _similarity(self, items, cat, h_item, h_cat):
        """What each shown item (n, P) shares with each past behaviour's item (n, H): the
        similarity (n, P, H) of synth.py and whether they share the category (n, P, H)."""
        same_cat = cat[:, :, None] == h_cat[:, None, :]
        def same(attribute):        # (n, P, H): shown item and past item agree on attribute
            return attribute[items][:, :, None] == attribute[h_item][:, None, :]
        similarity = (SIMILARITY["category"] * same_cat + SIMILARITY["shop"] * same(self.item_shop)
                      + SIMILARITY["brand"] * same(self.item_brand)
                      + SIMILARITY["item"] * (items[:, :, None] == h_item[:, None, :]))
        same_group = same(self.cat_group[self.item_cat])
        shared = self.item_tag_bits[items][:, :, None] & self.item_tag_bits[h_item][:, None, :]
        similarity += SIMILARITY["tag"] * np.where(same_group, _popcount(shared), 0)
        return similarity, same_cat

    def _rank_features(self, qcat, items, match, engine, log_price, rng) -> np.ndarray:
        """The search engine's 8 ranking features: part of the click signal, with noise. (n, P, 8)"""
        cat = self.item_cat[items]
        noise = rng.normal(0.0, 1.0, items.shape + (RANK_FEATURES,))
        relevance = np.array([1.0, 0.5, 0.0])[self._relevance(qcat, items)]
        return np.stack([
            self.item_pop_z[items] + 0.3 * noise[..., 0],
            relevance + 0.2 * noise[..., 1],
            np.log1p(match) + self.match_feature_noise * noise[..., 2],
            log_price[items] - self.cat_mu[cat],
            self.item_quality[items] + 0.7 * noise[..., 4],
            self.shop_quality[self.item_shop[items]] + 0.5 * noise[..., 5],
            engine,
            noise[..., 7],
        ], axis=-1)

    # ---- talents and shops ----------------------------------------------------------------------
    def _follows(self, active, day_start, history, rng) -> dict:
        """Talents shown to users; following grows with their tags in the user's recent behaviours."""
        users = np.repeat(np.arange(self.sizes.users), rng.poisson(0.6, self.sizes.users) * active)
        n = len(users)
        ts = day_start + _day_seconds(n, rng)
        liked = self.talent_sampler.draw(self.user_fav_groups[users, rng.integers(0, 2, n)], rng)
        anyone = np.searchsorted(np.cumsum(_normal(self.talent_pop)), rng.random(n) * 0.999999)
        talents = np.where(rng.random(n) < 0.5, liked, anyone)
        idx, valid = history.before(users, ts, HISTORY_DEPTH)
        h_tags = self.item_tags[history.item[idx]]                     # (n, H, 4)
        t_tags = self.talent_tags[talents]                            # (n, 4)
        overlap = np.zeros(idx.shape)
        for a in range(4):
            overlap += ((t_tags[:, a][:, None, None] == h_tags) & (t_tags[:, a] >= 0)[:, None, None]).sum(-1)
        weight = (TYPE_WEIGHT[history.type[idx]] * valid
                  * np.exp2(-(ts[:, None] - history.ts[idx]) / TALENT_HALF_LIFE_S))
        logit = -2.4 + 1.3 * np.log1p((weight * overlap).sum(axis=1)) + 0.3 * self.talent_pop_z[talents]
        followed = rng.random(n) < _sigmoid(logit)
        return {"user": users, "ts": ts, "talent": talents, "followed": followed}

    def _shop_prefs(self, active, day_start, history, rng) -> dict:
        """Shops offered to users; preferred when the user's recent behaviours were in them."""
        users = np.repeat(np.arange(self.sizes.users), rng.poisson(0.4, self.sizes.users) * active)
        n = len(users)
        ts = day_start + _day_seconds(n, rng)
        idx, valid = history.before(users, ts, HISTORY_DEPTH)
        h_shop = self.item_shop[history.item[idx]]
        n_valid = valid.sum(axis=1)
        pick = (rng.random(n) * n_valid).astype(np.int64)               # valid columns come first
        seen = h_shop[np.arange(n), np.minimum(pick, idx.shape[1] - 1)]
        anyone = np.searchsorted(np.cumsum(_normal(self.shop_pop)), rng.random(n) * 0.999999)
        shops = np.where((rng.random(n) < 0.5) & (n_valid > 0), seen, anyone)
        weight = (TYPE_WEIGHT[history.type[idx]] * valid
                  * np.exp2(-(ts[:, None] - history.ts[idx]) / SHOP_HALF_LIFE_S))
        affinity = (weight * (h_shop == shops[:, None])).sum(axis=1)
        logit = -1.9 + 1.4 * np.log1p(affinity) + 0.4 * self.shop_quality[shops]
        label = rng.random(n) < _sigmoid(logit)
        return {"user": users, "ts": ts, "shop": shops, "label": label}


def mean_over(values: np.ndarray, valid: np.ndarray) -> float:
    """Mean of values over the valid entries (0 when none): a property's effect when unknown."""
    count = valid.sum()
    return float((values * valid).sum() / count) if count else 0.0


_POPCOUNT16 = np.array([bin(k).count("1") for k in range(1 << 16)], np.uint8)


def _popcount(bits: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy 1.26 has no bitwise_count)."""
    quarters = bits.view(np.uint16).reshape(bits.shape + (4,))
    return (_POPCOUNT16[quarters[..., 0]] + _POPCOUNT16[quarters[..., 1]]
            + _POPCOUNT16[quarters[..., 2]] + _POPCOUNT16[quarters[..., 3]])


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _normal(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()
