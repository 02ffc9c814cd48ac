"""`dupn synth`: synthetic raw logs (all six tables of docs/RAW_LOGS.md) with planted, documented structure.

    dupn synth --out RAW --start 2026-11-01 --days 11 --users 2000 --seed 1 [--format parquet]
               [--world taobao|interests|properties|revisits|price|mixed] [--items N]

Writes RAW/<table>/dt=YYYY-MM-DD/part-00000.<ext> for behaviors, items, users, impressions, follows
and shop_prefs (items and users: one full snapshot per day), and the true click probability of every
impression at RAW/_oracle/impressions/dt=D/part-00000.parquet (request_id, item_id, click_prob,
and blind_prob: the world's best score without behaviour type and age). The same arguments give
the same bytes. --world picks the planted click model (pipeline/rawlogs/worlds/ lists them); what
follows describes the default, `taobao`. Ids are strings with a prefix naming their kind (u, i, s,
b, c, t); timestamps are Unix seconds UTC inside their partition's day. The simulation lives in
pipeline/rawlogs/synth_world.py (constants named below are defined there).

Scale: like the public Taobao UserBehavior set, about 11 behaviours per user and day (~100 per
user over 9 days), mix click 89.6 % / cart 5.5 % / fav 2.9 % / buy 2.0 %, long-tail (Zipf-like)
popularity of items, categories and talents. Entity counts follow the number of users:
categories users/20 (40..3000) in groups of ~10, items 3 x users (at least 800), shops items/12,
brands items/20. A user is active on 85 % of days; 3 % of items are 15 % cheaper on a given day
(the items snapshot of that day shows it).

Planted structure, and the part of DUPN each piece needs:
- Catalogue. Every category belongs to a group; an item has a shop and a brand that sell in its
  group, 1-4 tags drawn from its category's own tags and its group's tags (so tags generalise
  across a group), and a log-normal price centred on its category, shifted by shop tier, brand
  tier and the item's quality. Query terms: 4 per category and 3 per group.
- Users. Gender m/f/u tilts which groups a user favours; age (8 % empty) shifts purchasing power
  1..7 (4 % written empty, the power task's label). A user's browsing and buying prices sit
  POWER_PRICE_STEP x (power - 4) above their categories' centres, so prices in the behaviour
  sequence (the price token of item tags) reveal the power level. Interests: 6 weighted category
  slots, mostly from two favourite groups; every day the weights wander and 10 % of slots switch.
- Behaviours (scenes recommend / search / promo / other): sessions of visits within one category
  drawn from today's interests; each visit is a click, followed by cart / fav / buy with a
  probability that grows with the fit of price to power level and with quality (scaled so the mix
  matches Taobao's). A buy sates: visits in the same category in the next hours are mostly
  dropped (half-life SATIATION_HALF_LIFE_S).
- Impressions (search pages of PAGE_SIZE = 10): a request's query (1-3 terms) names one category
  (75 % from today's interests); the page holds items of that category, a few of its group, a few
  of the user's other interests and often one item the user saw lately, ranked by the engine.
  The true click logit (World.click_logits) is CLICK_BIAS plus:
  * w_j = TYPE_WEIGHT (click 0.5, cart 4, fav 3, buy 6) x SCENE_WEIGHT (search 1, recommend 0.6,
    promo 0.15, other 0.4) x 2^(-age / 12 h) x query weight (1 in the query's category,
    OFF_QUERY_WEIGHT 0.1 outside) for each of the user's last 50 behaviours j before the request,
    and sim_j = what its item shares with the shown one (category 1, shop 0.5, brand 0.3,
    the item itself 2, 0.15 per tag); MATCH_WEIGHT x log1p(sum w_j sim_j) (how much the recent
    behaviour points at the item) + FOCUS_WEIGHT x sum w_j sim_j / (1 + sum w_j) (how much of
    it does). So type, scene and time (the property gates) and the query (query-aware
    attention: without it other categories' behaviours dilute the focus) all matter;
  * minus SATIATION_WEIGHT x the count of buys in the item's category, halved every 8 h (a
    recent buy lowers clicks there for hours; later its positive weight remains);
  * INTEREST_WEIGHT x today's latent interest in the item's category (not fully observable);
  * minus a relevance penalty for items outside the query's category (0.5 same group, 0.9 other);
  * minus PRICE_WEIGHT x squared distance of log price from the user's power-level price;
  * item quality and popularity; minus POSITION_WEIGHT per position (position bias).
  About 10 % of impressions are clicked; the oracle's AUC is about 0.82, and dropping any one
  term above from the true logit costs it 0.003-0.015. A click becomes a search-scene click
  behaviour seconds later (so samples and sequences agree) and may be followed by a buy (the
  impression's buy, never without a click), cart or fav.
  Ranking features (8 floats): popularity, query relevance, the behaviour-match score, price
  within category (exact), quality, shop quality (all but one noisy), the engine's score, noise.
- Follows: talents (type from their group, 2-4 tags of one of its categories) are shown, half
  from the user's favourite groups; followed with logit -2.4 + 1.3 log1p(sum over recent
  behaviours of type weight x 2^(-age / 2 days) x shared tags) + 0.3 x talent popularity.
- Shop preferences: shops offered, half from the user's last 50 behaviours; label 1 with logit
  -1.9 + 1.4 log1p(sum of type weight x 2^(-age / 3 days) over behaviours in that shop)
  + 0.4 x shop quality.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.layout import days_between, shift
from pipeline.rawlogs.landing import mark_complete
from pipeline.rawlogs.schema import ORACLE, ORACLE_SCHEMA, SCHEMAS, TABLES, table_dir
from pipeline.rawlogs.synth_world import (BEHAVIOR_TYPES, DAY_S, SCENES, TALENT_TYPES, TARGET_MIX, History,
                                  World)
from pipeline.rawlogs.worlds import DEFAULT_WORLD, WORLDS, make_world

FORMATS = ("parquet", "jsonl", "csv")
PART = "part-00000"
FEATURE_DECIMALS = 4
WRITE_BATCH_ROWS = 200_000        # text formats are built this many rows at a time

_STR, _INT, _FLOAT = pa.string(), pa.int64(), pa.float64()


def _names(prefix: str, n: int, rng: np.random.Generator | None = None) -> pa.Array:
    """Id strings prefix + number; numbers shuffled when rng is given (internal order hidden)."""
    numbers = rng.permutation(n) + 1 if rng is not None else np.arange(1, n + 1)
    return pa.array([f"{prefix}{k}" for k in numbers], _STR)


def _lists(index: np.ndarray, names: pa.Array) -> pa.ListArray:
    """A list of names per row of a (rows, k) index matrix; negative entries are padding."""
    present = index >= 0
    offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), names.take(pa.array(index[present])))


class Namer:
    """The string ids and names of one world's entities."""

    def __init__(self, world: World, seed: int):
        s = world.sizes
        rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
        self.user = _names("u", s.users, rng)
        self.item = _names("i", s.items, rng)
        self.shop = _names("s", s.shops, rng)
        self.brand = _names("b", s.brands, rng)
        self.category = _names("c", s.categories, rng)
        self.talent = _names("t", s.talents, rng)
        self.tag = _names("tag", world.n_tags, rng)
        n_terms = world.group_terms.max() + 1
        self.term = _names("kw", n_terms, rng)
        self.type = pa.array(BEHAVIOR_TYPES, _STR)
        self.scene = pa.array(SCENES, _STR)
        self.talent_type = pa.array(TALENT_TYPES, _STR)


def _take(names: pa.Array, index: np.ndarray) -> pa.Array:
    return names.take(pa.array(np.asarray(index, np.int64)))


class Tables:
    """Turns the simulation's index arrays into the raw-log tables (pyarrow) of one day."""

    def __init__(self, world: World, seed: int):
        self.world, self.names = world, Namer(world, seed)
        w, n = world, self.names
        self.items_static = {"item_id": n.item, "shop_id": _take(n.shop, w.item_shop),
                             "brand_id": _take(n.brand, w.item_brand),
                             "category_id": _take(n.category, w.item_cat),
                             "tags": _lists(w.item_tags, n.tag)}
        gender = np.array(["m", "f", "u"], object)[w.user_gender]
        self.users = pa.table({
            "user_id": n.user,
            "age": pa.array(w.user_age, _INT, mask=w.user_age < 0),
            "gender": pa.array(gender, _STR),
            "power_level": pa.array(w.user_power, _INT, mask=~w.user_power_shown)}, schema=SCHEMAS["users"])
        self.talent_tags = _lists(w.talent_tags, n.tag)
        self.talent_type = _take(n.talent_type, w.talent_group % len(TALENT_TYPES))

    def day(self, date: dt.date, rows: dict) -> dict[str, pa.Table]:
        """The six tables and the oracle of one simulated day."""
        n = self.names
        b = rows["behaviors"]
        order = np.lexsort((b["user"], b["ts"]))
        behaviors = pa.table({"user_id": _take(n.user, b["user"][order]),
                              "item_id": _take(n.item, b["item"][order]),
                              "ts": pa.array(b["ts"][order], _INT),
                              "type": _take(n.type, b["type"][order]),
                              "scene": _take(n.scene, b["scene"][order])}, schema=SCHEMAS["behaviors"])
        items = pa.table({**self.items_static, "price": pa.array(rows["price"], _FLOAT)},
                         schema=SCHEMAS["items"])
        impressions, oracle = self._impressions(date, rows["impressions"])
        f = rows["follows"]
        order = np.lexsort((f["user"], f["ts"]))
        talents = pa.array(f["talent"][order])
        follows = pa.table({"user_id": _take(n.user, f["user"][order]),
                            "talent_id": n.talent.take(talents), "ts": pa.array(f["ts"][order], _INT),
                            "talent_type": self.talent_type.take(talents),
                            "talent_tags": self.talent_tags.take(talents),
                            "followed": pa.array(f["followed"][order].astype(np.int64))},
                           schema=SCHEMAS["follows"])
        s = rows["shop_prefs"]
        order = np.lexsort((s["user"], s["ts"]))
        shop_prefs = pa.table({"user_id": _take(n.user, s["user"][order]),
                               "shop_id": _take(n.shop, s["shop"][order]),
                               "ts": pa.array(s["ts"][order], _INT),
                               "label": pa.array(s["label"][order].astype(np.int64))},
                              schema=SCHEMAS["shop_prefs"])
        return {"behaviors": behaviors, "items": items, "users": self.users,
                "impressions": impressions, "follows": follows, "shop_prefs": shop_prefs,
                "_oracle": oracle}

    def _impressions(self, date: dt.date, imp: dict) -> tuple[pa.Table, pa.Table]:
        n = self.names
        requests = np.lexsort((imp["user"], imp["ts"]))          # request ids in time order
        rank = np.empty(len(requests), np.int64)
        rank[requests] = np.arange(len(requests))
        request_ids = pa.array([f"{date:%Y%m%d}-{k:07d}" for k in range(len(requests))], _STR)
        terms = [pa.array(imp["terms"][:, k], mask=imp["terms"][:, k] < 0) for k in range(3)]
        queries = pc.binary_join_element_wise(*[n.term.take(t) for t in terms], " ",
                                              null_handling="skip")
        row, slot = np.nonzero(imp["valid"])
        order = np.lexsort((slot, rank[row]))
        row, slot = row[order], slot[order]
        request = pa.array(rank[row])
        item_ids = _take(n.item, imp["items"][row, slot])
        features = np.round(imp["features"][row, slot], FEATURE_DECIMALS).reshape(-1)
        width = imp["features"].shape[-1]
        offsets = pa.array(np.arange(0, len(row) * width + 1, width, dtype=np.int32))
        table = pa.table({
            "request_id": request_ids.take(request),
            "user_id": _take(n.user, imp["user"][row]),
            "ts": pa.array(imp["ts"][row], _INT),
            "query": queries.take(pa.array(row)),
            "item_id": item_ids,
            "position": pa.array(slot + 1, _INT),
            "features": pa.ListArray.from_arrays(offsets, pa.array(features + 0.0, _FLOAT)),
            "click": pa.array(imp["click"][row, slot].astype(np.int64)),
            "buy": pa.array(imp["buy"][row, slot].astype(np.int64))}, schema=SCHEMAS["impressions"])
        oracle = pa.table({"request_id": request_ids.take(request), "item_id": item_ids,
                           "click_prob": pa.array(imp["click_prob"][row, slot], _FLOAT),
                           "blind_prob": pa.array(imp["blind_prob"][row, slot], _FLOAT)},
                          schema=ORACLE_SCHEMA)
        return table, oracle


# ---- writing --------------------------------------------------------------------------------------
def _check_plain(column: pa.ChunkedArray, name: str) -> None:
    """Text formats are built without escaping: our ids and words must not need it."""
    values = column if pa.types.is_string(column.type) else pc.list_flatten(column)
    if len(values) and pc.any(pc.match_substring_regex(values, r'[",;\\\n\r]')).as_py():
        raise ValueError(f"column {name} holds a value with a character that would need escaping")


def _text(column: pa.ChunkedArray, fmt: str) -> pa.ChunkedArray:
    """The column's values as JSON or CSV text (lists: JSON arrays, or ';'-joined for CSV)."""
    kind = column.type
    if pa.types.is_list(kind):
        strings = pa.types.is_string(kind.value_type)
        values = column if strings else pc.cast(column, pa.list_(_STR))
        if fmt == "csv":
            return pc.binary_join(values, ";")
        sep, left, right = ('","', '["', '"]') if strings else (",", "[", "]")
        joined = pc.binary_join_element_wise(left, pc.binary_join(values, sep), right, "")
        return pc.if_else(pc.equal(pc.list_value_length(values), 0), "[]", joined)
    if pa.types.is_string(kind):
        text = column if fmt == "csv" else pc.binary_join_element_wise('"', column, '"', "")
    else:
        text = pc.cast(column, _STR)
    return pc.fill_null(text, "" if fmt == "csv" else "null")


def _text_lines(table: pa.Table, fmt: str) -> bytes:
    """JSON Lines or CSV rows (no header) of a table, built with Arrow string kernels."""
    parts = []
    for i, name in enumerate(table.column_names):
        prefix = ("{" if i == 0 else ",") + f'"{name}":' if fmt == "jsonl" else ("" if i == 0 else ",")
        parts += [prefix, _text(table.column(i), fmt)]
    parts.append("}\n" if fmt == "jsonl" else "\n")
    lines = pc.binary_join_element_wise(*parts, "")
    out = []
    for chunk in lines.chunks:
        if len(chunk):     # the rows' text lies back to back in the data buffer
            _, offsets, data = chunk.buffers()
            bounds = np.frombuffer(offsets, np.int32)[chunk.offset:chunk.offset + len(chunk) + 1]
            out.append(memoryview(data)[bounds[0]:bounds[-1]])
    return b"".join(out)


def write_table(table: pa.Table, path: Path, fmt: str) -> None:
    """One table in one of the contract's formats; lists are ';'-joined in CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, path)
        return
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_string(column.type) or pa.types.is_list(column.type) and \
                pa.types.is_string(column.type.value_type):
            _check_plain(column, name)
    with open(path, "wb") as out:
        if fmt == "csv":
            out.write((",".join(table.column_names) + "\n").encode())
        for start in range(0, table.num_rows, WRITE_BATCH_ROWS):
            out.write(_text_lines(table.slice(start, WRITE_BATCH_ROWS), fmt))


def _partition(out: Path, table: str, date: dt.date, fmt: str) -> Path:
    """The day's file of a table; other formats' files of the same name there are removed, so a
    rerun in another format never leaves two copies of a day for readers to pick up."""
    folder = table_dir(out, table, date.isoformat())
    for old in folder.glob(f"{PART}.*"):
        if old.name != f"{PART}.{fmt}" and old.name.removesuffix(".gz").split(".")[-1] in FORMATS:
            old.unlink()
    return folder / f"{PART}.{fmt}"


def generate(out, start: str = "2026-11-01", days: int = 11, users: int = 2000, seed: int = 1,
             fmt: str = "parquet", log=print, world: str = DEFAULT_WORLD,
             items: int | None = None) -> dict:
    """Simulates `days` days from `start` and writes every table; returns a summary.

    Returns:
      {"rows": {table: rows written}, "seconds": float, "click_rate", "mean_click_prob",
       "behavior_mix": {type: share}}
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if days < 1 or users < 1 or (items is not None and items < 1):
        raise ValueError("days, users and items must be at least 1")
    started = time.monotonic()
    out = Path(out)
    first = dt.date.fromisoformat(start)
    first_ts = int(dt.datetime.combine(first, dt.time(), dt.timezone.utc).timestamp())
    name, world = world, make_world(world, users, seed, items)
    tables = Tables(world, seed)
    history = History(first_ts - 30 * DAY_S)
    rows = {name: 0 for name in TABLES}
    clicks = prob = 0.0
    types = np.zeros(len(BEHAVIOR_TYPES))
    for day in range(days):
        date = first + dt.timedelta(days=day)
        simulated = world.simulate_day(day, first_ts + day * DAY_S, history, seed)
        written = tables.day(date, simulated)
        for name, table in written.items():
            if name == "_oracle":
                write_table(table, _partition(out, str(ORACLE), date, "parquet"), "parquet")
            else:
                write_table(table, _partition(out, name, date, fmt), fmt)
                rows[name] += table.num_rows
        clicks += pc.sum(written["impressions"].column("click")).as_py() or 0
        prob += pc.sum(written["_oracle"].column("click_prob")).as_py() or 0.0
        types += np.bincount(simulated["behaviors"]["type"], minlength=len(BEHAVIOR_TYPES))
        if log:
            log(f"  {date}: {written['behaviors'].num_rows} behaviours, "
                f"{written['impressions'].num_rows} impressions")
    shown = max(rows["impressions"], 1)
    return {"world": name, "rows": rows, "seconds": time.monotonic() - started, "click_rate": clicks / shown,
            "mean_click_prob": prob / shown,
            "behavior_mix": dict(zip(BEHAVIOR_TYPES, (types / max(types.sum(), 1)).tolist()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dupn synth", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="raw-log root to write")
    parser.add_argument("--start", default="2026-11-01", help="first day, YYYY-MM-DD (UTC)")
    parser.add_argument("--days", type=int, default=11)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--format", default="parquet", choices=FORMATS)
    parser.add_argument("--world", default=DEFAULT_WORLD, choices=tuple(WORLDS),
                        help="planted click model (pipeline/rawlogs/worlds/)")
    parser.add_argument("--items", type=int, default=None,
                        help="catalogue size (default: 3 per user, at least 800)")
    args = parser.parse_args(argv)
    try:
        dt.date.fromisoformat(args.start)
    except ValueError:
        parser.error(f"--start {args.start!r} is not a date YYYY-MM-DD")
    if args.days < 1 or args.users < 1 or (args.items is not None and args.items < 1):
        parser.error("--days, --users and --items must be at least 1")
    summary = generate(args.out, args.start, args.days, args.users, args.seed, args.format,
                       world=args.world, items=args.items)
    for day in days_between(args.start, shift(args.start, args.days - 1)):
        mark_complete(args.out, day)     # every day written is whole: say so as producers do
    seconds = summary["seconds"]
    items = "" if args.items is None else f"{args.items} items, "
    print(f"dupn synth: world {args.world}, {args.users} users, {items}{args.days} days from {args.start}, "
          f"seed {args.seed}, "
          f"{args.format} -> {args.out}")
    for name, count in summary["rows"].items():
        print(f"  {name:<12} {count:>10,} rows")
    mix = ", ".join(f"{k} {v:.1%}" for k, v in summary["behavior_mix"].items())
    target = ", ".join(f"{k} {v:.1%}" for k, v in TARGET_MIX.items())
    print(f"  behaviour mix {mix} (Taobao: {target})")
    print(f"  impressions clicked {summary['click_rate']:.1%} (mean true click probability "
          f"{summary['mean_click_prob']:.1%})")
    print(f"  {seconds:.1f} s, {summary['rows']['behaviors'] / max(seconds, 1e-9):,.0f} behaviour rows/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
