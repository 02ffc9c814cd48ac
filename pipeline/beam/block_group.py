"""Columns of the block path: one user-shard group's tables and its samples in the row path's order.

Every row gets a key code, user * days + day (users and days numbered within the group). The
samples of every (user, day) of the window form one table sorted as samples.user_day_examples
sorts its sample tuples: by key, ts, kind name, then the tuple's fields. Arrow sorts by the first
two fields of each kind (request and item, talent id and type, shop); rows equal in all sort
columns (a true tie) are re-sorted by the row path's whole tuples, built for those rows only.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import BEHAVIOR_INDEX
from pipeline.beam import blocks
from pipeline.beam.block_windows import run_starts
from pipeline.beam.samples import draw_negatives, shop_sample, talent_sample
from pipeline.layout import shift
from pipeline.rawlogs.rows import DAY_SECONDS, day_start

# sample kinds, numbered in the order of their names (the row path's order of ties in time)
BCTR, IMP, POWER, SHOP, TALENT = range(5)
BEHAVIOR_ORDER = [("key", "ascending"), ("ts", "ascending"), ("type", "ascending"),
                  ("scene", "ascending"), ("item_id", "ascending")]
SAMPLE_ORDER = [("key", "ascending"), ("ts", "ascending"), ("kind", "ascending"),
                ("s1", "ascending"), ("s2", "ascending")]
SORT_COLUMNS = {IMP: ("request_id", "item_id"), TALENT: ("talent_id", "talent_type"),
                SHOP: ("shop_id", None), POWER: (None, None), BCTR: ("item_id", None)}


class Group:
    """The tables of one group ('b', 'i' joined events; follows, shop_prefs, users), keyed.

    Args:
      values: [(kind, day, packed block)]; window: the sample days; spec: the SampleSpec;
      pool: day -> item features for behaviour-made CTR negatives.
    """

    def __init__(self, values, window: list[str], spec, pool=None):
        self.spec, self.pool = spec, pool or {}
        parts = {}
        for kind, day, blob in values:
            parts.setdefault(kind, []).append((day, blocks.unpack(blob)))
        self.days = sorted({day for _, day, _ in values} | set(window))
        self.day_code = {d: i for i, d in enumerate(self.days)}
        self.window = np.array([self.day_code[d] for d in window], np.int64)
        tables = {kind: pa.concat_tables([t.append_column("day", pa.array(
            np.full(t.num_rows, self.day_code[d], np.int64))) for d, t in found])
            for kind, found in parts.items()}
        ids = [t.column("user_id") for t in tables.values() if t.num_rows]
        self.users = (pc.unique(pa.chunked_array(ids, pa.string()).combine_chunks()) if ids
                      else pa.array([], pa.string()))
        self.tables = {kind: self._keyed(t) for kind, t in tables.items()}
        behaviors = self.table("b")
        self.behaviors = behaviors.sort_by(BEHAVIOR_ORDER) if behaviors is not None else None
        self.impressions = self.table("i", in_window=True)
        self.follows = self.table("follows", in_window=True)
        self.shops = self.table("shop_prefs", in_window=True)
        self.profiles = self._profiles(self.table("users", in_window=True))
        self._python = {}

    def _keyed(self, table: pa.Table) -> pa.Table:
        user = pc.index_in(table.column("user_id"), value_set=self.users).to_numpy(zero_copy_only=False)
        day = table.column("day").to_numpy()
        return table.append_column("key", pa.array(user.astype(np.int64) * len(self.days) + day))

    def table(self, kind: str, in_window: bool = False) -> pa.Table | None:
        table = self.tables.get(kind)
        if table is not None and in_window:
            table = table.filter(pa.array(np.isin(table.column("day").to_numpy(), self.window)))
        return table if table is not None and table.num_rows else None

    def user(self, key: int) -> str:
        return self.users[int(key) // len(self.days)].as_py()

    def earlier(self) -> np.ndarray:
        """For each day code, the codes of its lookback days, oldest first (-1: not read)."""
        back = self.spec.lookback_days
        return np.array([[self.day_code.get(shift(d, -k), -1) for k in range(back, 0, -1)]
                         for d in self.days], np.int64).reshape(len(self.days), back)

    def _profiles(self, users: pa.Table | None) -> dict:
        """The day's last users row (file, then row order) of each key: key, age, gender, power."""
        if users is None:
            return {"key": np.zeros(0, np.int64), "age": pa.array([], pa.int64()),
                    "gender": np.zeros(0, np.int64), "power": np.zeros(0, np.int64)}
        users = users.sort_by([("key", "ascending"), ("path", "ascending"), ("row", "ascending")])
        key = users.column("key").to_numpy()
        last = np.r_[run_starts(key)[1:] - 1, len(key) - 1]
        users = users.take(pa.array(last))
        return {"key": key[last], "age": users.column("age").combine_chunks(),
                "gender": users.column("gender").to_numpy(),
                "power": users.column("power_level").fill_null(0).to_numpy()}

    def profile_of(self, keys: np.ndarray) -> np.ndarray:
        """Each key's row in self.profiles, -1 without a profile."""
        at = np.searchsorted(self.profiles["key"], keys)
        found = at < len(self.profiles["key"])
        found[found] = self.profiles["key"][at[found]] == keys[found]
        return np.where(found, at, -1)

    # ---- samples ---------------------------------------------------------------------------

    def sources(self) -> dict:
        """kind -> the table whose rows are its samples (power: the profiles with a level)."""
        found = {IMP: self.impressions, TALENT: self.follows, SHOP: self.shops}
        with_power = np.flatnonzero(self.profiles["power"] != 0)
        days = self.profiles["key"][with_power] % len(self.days)
        with_power = with_power[np.isin(days, self.window)]
        if len(with_power):
            ends = np.array([day_start(d) + DAY_SECONDS for d in self.days], np.int64)
            keys = self.profiles["key"][with_power]
            found[POWER] = pa.table({"key": keys, "ts": ends[keys % len(self.days)],
                                     "power": self.profiles["power"][with_power]})
        if self.spec.ctr_from_behaviors and self.behaviors is not None:
            found[BCTR] = self.table_in_window(self.behaviors)
        return {kind: t for kind, t in found.items() if t is not None and t.num_rows}

    def table_in_window(self, table: pa.Table) -> pa.Table:
        return table.filter(pa.array(np.isin(table.column("day").to_numpy(), self.window)))

    def samples(self):
        """(key, ts, kind, row) numpy columns of every sample, in the row path's order; None if none."""
        self.sample_tables = self.sources()
        parts = []
        for kind, table in self.sample_tables.items():
            n = table.num_rows
            blank = pa.array([""] * n, pa.string())
            columns = {"key": table.column("key"), "ts": table.column("ts"),
                       "kind": pa.array(np.full(n, kind, np.int8)),
                       "row": pa.array(np.arange(n, dtype=np.int64))}
            for name, source in zip(("s1", "s2"), SORT_COLUMNS[kind]):
                columns[name] = table.column(source).cast(pa.string()) if source else blank
            parts.append(pa.table(columns))
        if not parts:
            return None
        table = pa.concat_tables(parts).sort_by(SAMPLE_ORDER)
        key, ts = table.column("key").to_numpy(), table.column("ts").to_numpy()
        kind, row = table.column("kind").to_numpy(), table.column("row").to_numpy().copy()
        if ts.min() < 0:
            raise ValueError("a sample's ts is negative: the block path's keys need ts >= 0")
        same = (key[1:] == key[:-1]) & (ts[1:] == ts[:-1]) & (kind[1:] == kind[:-1])
        for name in ("s1", "s2"):
            column = table.column(name).combine_chunks()
            same &= pc.equal(column.slice(1), column.slice(0, len(column) - 1)).to_numpy(
                zero_copy_only=False)
        self._resort_ties(same, key, kind, row)
        return key, ts, kind, row

    def _resort_ties(self, same: np.ndarray, key, kind, row) -> None:
        tied = np.flatnonzero(same)                     # sample i + 1 ties with sample i
        if len(tied) == 0:
            return
        run = np.cumsum(np.r_[True, np.diff(tied) != 1])
        for r in np.unique(run):
            at = tied[run == r]
            span = np.r_[at[0], at + 1]
            user = self.user(key[span[0]])
            whole = {i: self.sample_tuple(int(kind[i]), int(row[i]), user) for i in span}
            row[span] = row[sorted(span, key=lambda i: whole[i])]

    def columns(self, kind: int) -> dict:
        """Python columns of a kind's sample table (built once per group)."""
        found = self._python.get(kind)
        if found is None:
            table = self.sample_tables[kind]
            found = self._python[kind] = {c: table.column(c).to_pylist() for c in table.column_names}
        return found

    def sample_tuple(self, kind: int, row: int, user: str) -> tuple:
        """The row path's sample tuple (samples.user_day_examples) of one sample."""
        spec = self.spec
        if kind == IMP:       # many rows: read the one asked for
            r = self.sample_tables[IMP].slice(row, 1).to_pylist()[0]
            return (r["ts"], "imp", r["request_id"],
                    (r["item_id"], r["shop_id"], r["brand_id"], r["category_id"], tuple(r["tags"])),
                    tuple(r["query"].split()[:spec.query_terms]), tuple(r["features"]), r["click"],
                    r["buy"])
        c = self.columns(kind)
        if kind == TALENT:
            return talent_sample((user, c["talent_id"][row], c["ts"][row], c["talent_type"][row],
                                  tuple(c["talent_tags"][row]), c["followed"][row]), spec.tag_slots)
        if kind == SHOP:
            return shop_sample((user, c["shop_id"][row], c["ts"][row], c["label"][row]))
        if kind == POWER:
            return (c["ts"][row], "power", c["power"][row])
        item = (c["item_id"][row], c["shop_id"][row], c["brand_id"][row], c["category_id"][row],
                tuple(c["tags"][row]))
        ts, day = c["ts"][row], self.days[c["day"][row]]
        return (ts, "bctr", item, draw_negatives(self.pool.get(day, ()), user, ts, item[0],
                                                 spec.ctr_negatives, spec.seed),
                c["type"][row] == BEHAVIOR_INDEX["buy"])
