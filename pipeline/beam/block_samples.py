"""Beam, columnar: build every task's examples from blocks grouped by user shard, encoded without TensorFlow.

One group holds a user shard's joined behaviours and impressions of every day read (lookback
days already cut to N per user) and its follows, shop preferences and profiles: about
rows / user_shards. Each (user, day) of the window goes through samples.user_day_examples, the
row path's own sample logic (so keys, order and shards are the same), with the context part
assembled from behaviours whose ids were encoded once (features/example_bytes.py).
"""
from __future__ import annotations

from collections import defaultdict

import apache_beam as beam
import numpy as np

from features.contract import time_bucket
from features.example_bytes import BYTES, INTS, encode_values, entries_example, entry, feature, \
    packed_ints, string_piece
from pipeline.beam import blocks
from pipeline.beam.split import SplitByTag
from pipeline.beam.samples import count_example, pack_batch, shop_sample, stable_hash, \
    talent_sample, user_day_examples
from pipeline.layout import days_between, shift

EXAMPLES, STATS = "examples", "stats"
KINDS = (EXAMPLES, STATS)
WITH_SEQUENCE = ("seq_item_id", "seq_shop_id", "seq_brand_id", "seq_category_id", "seq_tags",
                 "seq_type", "seq_scene", "seq_time_bucket", "age_bucket", "gender", "user_id")
PROFILE_ONLY = ("age_bucket", "gender", "user_id")


def _rows(blob: bytes, names) -> list[tuple]:
    table = blocks.unpack(blob)
    return list(zip(*(table.column(n).to_pylist() for n in names)))


class Pieces:
    """Encoded BytesList values of the ids a group's behaviours repeat (each encoded once)."""

    def __init__(self):
        self.strings, self.tags = {}, {}

    def of(self, value: str) -> bytes:
        piece = self.strings.get(value)
        if piece is None:
            piece = self.strings[value] = string_piece(value)
        return piece

    def of_tags(self, tags: tuple) -> bytes:
        piece = self.tags.get(tags)
        if piece is None:
            piece = self.tags[tags] = b"".join(map(string_piece, tags))
        return piece


class Contexts:
    """samples.dict_context's example bytes for one user's day, from behaviours that carry their
    encoded ids at index 8. The window's entries are kept while the window stays the same (it
    only grows or slides within a day, so its length and last behaviour name it): requests
    between two behaviours differ only in their time buckets."""

    def __init__(self):
        self.window_key, self.window_entries, self.times = None, None, None
        self.profile_for, self.profile_entries = None, None

    def __call__(self, window: list, ts: int, profile: dict) -> bytes:
        if profile is not self.profile_for:
            self.profile_for = profile
            self.profile_entries = {
                "age_bucket": entry("age_bucket", feature(INTS, packed_ints((profile["age_bucket"],)))),
                "gender": entry("gender", feature(INTS, packed_ints((profile["gender"],)))),
                "user_id": entry("user_id", feature(BYTES, string_piece(profile["user_id"])))}
        if not window:
            return entries_example(PROFILE_ONLY, self.profile_entries)
        key = (len(window), id(window[-1]))
        if key != self.window_key:
            self.window_key = key
            self.window_entries = self._window_entries(window)
            self.times = np.fromiter((b[0] for b in window), np.int64, len(window))
        buckets = time_bucket(ts - self.times).astype(np.uint8).tobytes()     # 1..8: one byte each
        return entries_example(WITH_SEQUENCE, {
            **self.window_entries, **self.profile_entries,
            "seq_time_bucket": entry("seq_time_bucket", feature(INTS, buckets))})

    @staticmethod
    def _window_entries(window: list) -> dict:
        pieces = [b[8] for b in window]
        features = {
            "seq_item_id": feature(BYTES, b"".join([p[0] for p in pieces])),
            "seq_shop_id": feature(BYTES, b"".join([p[1] for p in pieces])),
            "seq_brand_id": feature(BYTES, b"".join([p[2] for p in pieces])),
            "seq_category_id": feature(BYTES, b"".join([p[3] for p in pieces])),
            "seq_tags": feature(BYTES, b"".join([p[4] for p in pieces])),
            # type and scene are vocabulary indexes (1..4): one byte each
            "seq_type": feature(INTS, bytes([b[1] for b in window])),
            "seq_scene": feature(INTS, bytes([b[2] for b in window])),
        }
        return {name: entry(name, value) for name, value in features.items()}


class BuildBlocksFn(beam.DoFn):
    """(user shard, [(kind, day, packed block)]) -> (EXAMPLES, ((task, day, shard), packed batch
    of (key, record))) and (STATS, (day, stats)): one tagged stream, split by SplitByTag."""

    def __init__(self, spec, contract):
        self.spec, self.contract = spec, contract

    def setup(self):
        self.labels = {}

    def process(self, element, pool=None):
        _, values = element
        spec = self.spec
        pieces = Pieces()
        self.strings = {}      # encoded string features of this group's targets
        window = days_between(spec.start, spec.end)
        behaviors, samples = defaultdict(list), defaultdict(list)
        profiles = {}
        for kind, day, blob in sorted(values, key=lambda v: (v[0], v[1])):
            if kind == "b":
                for user, ts, type_, scene, item, shop, brand, cat, tags in _rows(blob, (
                        "user_id", "ts", "type", "scene", "item_id", "shop_id", "brand_id",
                        "category_id", "tags")):
                    tags = tuple(tags)
                    behaviors[user, day].append((ts, type_, scene, item, shop, brand, cat, tags, (
                        pieces.of(item), pieces.of(shop), pieces.of(brand), pieces.of(cat),
                        pieces.of_tags(tags))))
            elif kind == "i":
                for request, user, ts, query, item, shop, brand, cat, tags, features, click, buy \
                        in _rows(blob, ("request_id", "user_id", "ts", "query", "item_id",
                                        "shop_id", "brand_id", "category_id", "tags", "features",
                                        "click", "buy")):
                    samples[user, day].append((ts, "imp", request, (item, shop, brand, cat, tuple(tags)),
                                               tuple(query.split()[:spec.query_terms]),
                                               tuple(features), click, buy))
            elif kind == "follows":
                for row in _rows(blob, ("user_id", "talent_id", "ts", "talent_type", "talent_tags",
                                        "followed")):
                    row = row[:4] + (tuple(row[4]),) + row[5:]
                    samples[row[0], day].append(talent_sample(row, spec.tag_slots))
            elif kind == "shop_prefs":
                for row in _rows(blob, ("user_id", "shop_id", "ts", "label")):
                    samples[row[0], day].append(shop_sample(row))
            else:   # users: the day's last row (file, row order) wins
                for user, age, gender, power, path, row in _rows(blob, (
                        "user_id", "age", "gender", "power_level", "path", "row")):
                    order = (path, row)
                    if (user, day) not in profiles or order > profiles[user, day][0]:
                        profiles[user, day] = (order, (age, gender, power))
        keys = {k for k in (*behaviors, *samples, *profiles) if k[1] in window}
        stats, pending = {}, defaultdict(list)
        for user, day in sorted(keys):
            tails = [(d, sorted(behaviors[user, d])[-spec.sequence_length:])
                     for d in (shift(day, -k) for k in range(spec.lookback_days, 0, -1))
                     if (user, d) in behaviors]
            profile = profiles.get((user, day))
            day_stats = stats.setdefault(day, {"tasks": {}, "examples_without_profile": 0})
            self._build(user, day, behaviors.get((user, day), []), tails, samples.get((user, day), []),
                        profile and profile[1], pool.get(day, ()) if pool else (), day_stats, pending)
        for key in sorted(pending):
            yield EXAMPLES, (key, pack_batch(pending[key]))
        for day in sorted(stats):
            yield STATS, (day, stats[day])

    def _build(self, user, day, behaviors, tails, samples, profile, pool, stats, pending):
        encoded_for, target_bytes = None, b""
        written = 0
        for task, key, length, (context, target, label) in user_day_examples(
                user, day, behaviors, tails, samples, profile, self.spec, pool,
                context_of=Contexts()):
            if target is not encoded_for:
                target_bytes = encode_values(target, self.contract, self.strings)
                encoded_for = target
            label_key = (label["task"], label["label"], label["weight"], label.get("label_buy"))
            label_bytes = self.labels.get(label_key)
            if label_bytes is None:
                label_bytes = self.labels[label_key] = encode_values(label, self.contract)
            shard = stable_hash(key) % self.spec.shards
            pending[task, day, shard].append((key, context + target_bytes + label_bytes))
            written += 1
            count_example(stats, task, label["label"], length, profile is None,
                          label.get("label_buy", 0.0), self.spec.sequence_length)
        beam.metrics.Metrics.counter("dupn.examples", "written").inc(written)


class BuildBlockSamples(beam.PTransform):
    """Joined blocks (user shard, (kind, day, packed)) and the read blocks of follows, shop_prefs
    and users (table, day, packed) -> {EXAMPLES: ((task, day, shard), packed batch), STATS:
    (day, stats)}. `pool`: (day, [item features]) when spec.ctr_from_behaviors."""

    def __init__(self, spec, contract, user_shards: int):
        super().__init__()
        self.spec, self.contract, self.user_shards = spec, contract, user_shards

    def expand(self, inputs):
        shards = self.user_shards

        def by_user_shard(element):
            table, day, blob = element
            for shard, rows in blocks.split(blocks.unpack(blob), "user_id", shards):
                yield shard, (table, day, blocks.pack(rows))

        side = {}
        if self.spec.ctr_from_behaviors:
            side["pool"] = beam.pvalue.AsDict(inputs["pool"])
        user_tables = inputs["user_tables"] | "ByUserShard" >> beam.FlatMap(by_user_shard)
        tagged = ((inputs["joined"], user_tables)
                  | "FlattenByUser" >> beam.Flatten()
                  | "GroupByUserShard" >> beam.GroupByKey()
                  | "Build" >> beam.ParDo(BuildBlocksFn(self.spec, self.contract), **side))
        return tagged | "ByKind" >> SplitByTag(KINDS)
