"""Beam, columnar: join each day's item snapshot onto blocks of behaviours and impressions.

Blocks are split by (day, item shard) and grouped; in a group the items' last row of the day
wins (file, then row order) and events take their item's features by a vectorised lookup (an
item without a row that day gets empty features and is counted, as in join.py). The joined
blocks leave split by user shard. Behaviours of lookback-only days (before the window) are cut
to each user's last N of the group first: no more crosses the next shuffle than a sample sees.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import item_tag_slots
from pipeline.beam import blocks
from pipeline.beam.dedup import drop_duplicates
from pipeline.beam.split import SplitByTag
from pipeline.beam.join import item_features
from pipeline.rawlogs.schema import VALID_SCHEMAS

BEHAVIOR, IMPRESSION = "b", "i"
JOINED, SNAPSHOT, COUNTS = "joined", "snapshot", "counts"
KINDS = (JOINED, SNAPSHOT, COUNTS)
ITEM_COLUMNS = ("shop_id", "brand_id", "category_id", "tags")
ORDER = [("user_id", "ascending"), ("ts", "ascending"), ("type", "ascending"),
         ("scene", "ascending"), ("item_id", "ascending")]


def snapshot(items: pa.Table, tag_slots: int) -> list[tuple]:
    """The day's item features (join.item_features), the last row of each item winning."""
    items = items.sort_by([("path", "ascending"), ("row", "ascending")])
    rows = zip(*(items.column(n).to_pylist() for n in ("item_id", "shop_id", "brand_id",
                                                        "category_id", "tags", "price")))
    last = {row[0]: row for row in rows}
    return [item_features(item_id, (None, row[1], row[2], row[3], row[4], row[5]), tag_slots)
            for item_id, row in sorted(last.items())]


def with_items(events: pa.Table, features: list[tuple], tag_slots: int) -> tuple[pa.Table, int]:
    """Events with their item's shop, brand, category and tag slots; and how many had no item."""
    ids = pa.array([f[0] for f in features], pa.string())
    at = pc.index_in(events.column("item_id"), value_set=ids)
    empty = tuple(item_tag_slots((), None, tag_slots))
    columns = {"shop_id": pa.array([f[1] for f in features], pa.string()),
               "brand_id": pa.array([f[2] for f in features], pa.string()),
               "category_id": pa.array([f[3] for f in features], pa.string()),
               "tags": pa.array([list(f[4]) for f in features], pa.list_(pa.string()))}
    fill = {"shop_id": "", "brand_id": "", "category_id": "",
            "tags": pa.scalar(list(empty), pa.list_(pa.string()))}
    for name, values in columns.items():
        events = events.append_column(name, pc.fill_null(values.take(at), fill[name]))
    return events, at.null_count


def last_n_per_user(behaviors: pa.Table, n: int) -> pa.Table:
    """Each user's last n behaviours by (ts, type, scene, item): what a later day's tail keeps."""
    behaviors = behaviors.sort_by(ORDER)
    users = behaviors.column("user_id").to_numpy(zero_copy_only=False)
    if len(users) == 0:
        return behaviors
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    keep = np.arange(len(users)) >= np.repeat(ends, ends - starts) - n
    return behaviors.filter(pa.array(keep))


class JoinBlocksFn(beam.DoFn):
    """((day, item shard), [(table, packed block)]) -> tagged tuples, split by SplitByTag:
    (JOINED, (user shard, (BEHAVIOR | IMPRESSION, day, packed block))), (SNAPSHOT, (day, item
    features)) when asked, (COUNTS, (day, {"missing_items": n, "duplicates": {table: n}})).

    Exact duplicate rows are dropped first (dedup.py): every copy of a row has its item's shard.
    count_items False: a later user pass (beam/passes.py) joins the same items as the first, which
    alone counts their duplicates."""

    def __init__(self, start: str, tag_slots: int, sequence_length: int, user_shards: int,
                 emit_snapshot: bool, count_items: bool = True):
        self.start, self.tag_slots, self.n = start, tag_slots, sequence_length
        self.user_shards, self.emit_snapshot = user_shards, emit_snapshot
        self.count_items = count_items

    def process(self, element):
        (day, _), values = element
        parts = {"items": [], "behaviors": [], "impressions": []}
        for table, blob in values:
            parts[table].append(blocks.unpack(blob))
        counts = {}
        for table in parts:
            rows, dropped = drop_duplicates(blocks.concat(parts[table], VALID_SCHEMAS[table]))
            parts[table] = [rows] if rows.num_rows else []
            if dropped and (table != "items" or self.count_items):
                beam.metrics.Metrics.counter("dupn.duplicates", table).inc(dropped)
                counts.setdefault("duplicates", {})[table] = dropped
        features = snapshot(blocks.concat(parts["items"], VALID_SCHEMAS["items"]), self.tag_slots)
        if self.emit_snapshot:
            for item in features:
                yield SNAPSHOT, (day, item)
        missing = 0
        for table, kind in (("behaviors", BEHAVIOR), ("impressions", IMPRESSION)):
            if not parts[table]:
                continue
            events, lacking = with_items(blocks.concat(parts[table], VALID_SCHEMAS[table]),
                                         features, self.tag_slots)
            missing += lacking
            if kind == BEHAVIOR and day < self.start:
                events = last_n_per_user(events, self.n)
            for shard, rows in blocks.split(events, "user_id", self.user_shards):
                yield JOINED, (shard, (kind, day, blocks.pack(rows)))
        if missing:
            beam.metrics.Metrics.counter("dupn.join", "missing_items").inc(missing)
            counts["missing_items"] = missing
        if counts:
            yield COUNTS, (day, counts)


class JoinBlocks(beam.PTransform):
    """Item blocks and event blocks (table, day, packed) -> {kind: PCollection} in KINDS."""

    def __init__(self, start: str, tag_slots: int, sequence_length: int, item_shards: int,
                 user_shards: int, emit_snapshot: bool = False, count_items: bool = True):
        super().__init__()
        self.start, self.tag_slots, self.n = start, tag_slots, sequence_length
        self.item_shards, self.user_shards = item_shards, user_shards
        self.emit_snapshot, self.count_items = emit_snapshot, count_items

    def expand(self, table_blocks):
        shards = self.item_shards

        def by_item_shard(element):
            table, day, blob = element
            for shard, rows in blocks.split(blocks.unpack(blob), "item_id", shards):
                yield (day, shard), (table, blocks.pack(rows))

        tagged = (table_blocks
                  | "ByDayItemShard" >> beam.FlatMap(by_item_shard)
                  | "GroupByDayItemShard" >> beam.GroupByKey()
                  | "Join" >> beam.ParDo(JoinBlocksFn(self.start, self.tag_slots, self.n,
                                                      self.user_shards, self.emit_snapshot,
                                                      self.count_items)))
        return tagged | "ByKind" >> SplitByTag(KINDS)
