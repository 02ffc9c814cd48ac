"""Beam: join the day's item snapshot onto behaviours and impression targets by (day, item_id).

Items of day D describe the events of day D (point in time). Within a day the last row of an
item wins (file name order, then row order). An event whose item has no row that day gets empty
shop, brand, category and tags, and is counted as a missing item of its day.

The join is a GroupByKey on (day, item_id) read in two passes (first the item's rows, then the
events), so a hot item's events stream through and are never held in one list.
"""
from __future__ import annotations

import typing

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from features.contract import item_tag_slots

ITEM, BEHAVIOR, IMPRESSION = 0, 1, 2
BEHAVIORS, IMPRESSIONS, SNAPSHOT, MISSING = "behaviors", "impressions", "snapshot", "missing"
KV = typing.Tuple[typing.Any, typing.Any]


def item_features(item_id: str, row, tag_slots: int) -> tuple:
    """(item_id, shop_id, brand_id, category_id, tags) of an item; tags are its tag slots.

    Args:
      row: the item's valid items tuple, or None when the day's snapshot lacks the item.
      tag_slots: T, tags kept plus the price token (features.contract.item_tag_slots).
    """
    if row is None:
        return (item_id, "", "", "", tuple(item_tag_slots((), None, tag_slots)))
    _, shop, brand, category, tags, price = row
    return (item_id, shop, brand, category, tuple(item_tag_slots(tags, price, tag_slots)))


def enriched_behavior(behavior: tuple, item: tuple) -> tuple:
    """A behaviour as sequences need it, ordered by time first:
    (ts, type_index, scene_index, item_id, shop_id, brand_id, category_id, tags)."""
    _, _, ts, type_index, scene_index = behavior
    return (ts, type_index, scene_index) + item


def impression_sample(impression: tuple, item: tuple, query_terms: int) -> tuple:
    """The CTR/L2R sample of an impression, ordered by time first:
    (ts, 'imp', request_id, item features, query terms (first Q), rank features, click, buy)."""
    request_id, _, ts, query, _, _, features, click, buy = impression
    terms = tuple(query.split()[:query_terms])
    return (ts, "imp", request_id, item, terms, features, click, buy)


# Tagged outputs defeat Beam's type inference of the main output: declare it.
@beam.typehints.with_output_types(typing.Any)
class JoinFn(beam.DoFn):
    """((day, item_id), tagged values) -> enriched behaviours and impression samples.

    Main output BEHAVIORS: ((user_id, day), enriched behaviour). IMPRESSIONS: ((user_id, day),
    impression sample). SNAPSHOT: (day, item features) of every item with a row that day.
    MISSING: (day, {"missing_items": n}) per bundle.
    """

    def __init__(self, tag_slots: int, query_terms: int, emit_snapshot: bool = False):
        self.tag_slots = tag_slots
        self.query_terms = query_terms
        self.emit_snapshot = emit_snapshot
        self.missing_counter = Metrics.counter("dupn.join", "missing_items")

    def start_bundle(self):
        self.missing = {}

    def process(self, element):
        (day, item_id), values = element
        best = None                     # first pass: the item's last row of the day
        for value in values:
            if value[0] == ITEM and (best is None or value[1] > best[0]):
                best = (value[1], value[2])
        item = item_features(item_id, best and best[1], self.tag_slots)
        if best is not None and self.emit_snapshot:
            yield beam.pvalue.TaggedOutput(SNAPSHOT, (day, item))
        missing = 0
        for value in values:            # second pass: the events, streamed
            kind = value[0]
            if kind == BEHAVIOR:
                behavior = value[1]
                yield (behavior[0], day), enriched_behavior(behavior, item)
            elif kind == IMPRESSION:
                impression = value[1]
                yield beam.pvalue.TaggedOutput(IMPRESSIONS, (
                    (impression[1], day), impression_sample(impression, item, self.query_terms)))
            else:
                continue
            missing += best is None
        if missing:
            self.missing[day] = self.missing.get(day, 0) + missing
            self.missing_counter.inc(missing)

    def finish_bundle(self):
        for day, n in sorted(self.missing.items()):
            yield beam.pvalue.TaggedOutput(
                MISSING, GlobalWindows.windowed_value((day, {"missing_items": n})))


class JoinItems(beam.PTransform):
    """Joins items (day, order, row) onto behaviours (day, row) and impressions (day, row).

    Returns a DoOutputsTuple with BEHAVIORS (main), IMPRESSIONS, SNAPSHOT and MISSING (JoinFn).
    """

    def __init__(self, tag_slots: int, query_terms: int, emit_snapshot: bool = False):
        super().__init__()
        self.tag_slots = tag_slots
        self.query_terms = query_terms
        self.emit_snapshot = emit_snapshot

    def expand(self, inputs):
        items, behaviors, impressions = inputs
        # Explicit output types: Beam's inference from lambdas over tuples can pick wrong coders.
        keyed = (
            items | "KeyItems" >> beam.Map(
                lambda r: ((r[0], r[2][0]), (ITEM, r[1], r[2]))).with_output_types(KV),
            behaviors | "KeyBehaviors" >> beam.Map(
                lambda r: ((r[0], r[1][1]), (BEHAVIOR, r[1]))).with_output_types(KV),
            impressions | "KeyImpressions" >> beam.Map(
                lambda r: ((r[0], r[1][4]), (IMPRESSION, r[1]))).with_output_types(KV),
        )
        return (keyed
                | "Flatten" >> beam.Flatten()
                | "GroupByDayItem" >> beam.GroupByKey()
                | "Join" >> beam.ParDo(
                    JoinFn(self.tag_slots, self.query_terms, self.emit_snapshot)).with_outputs(
                    IMPRESSIONS, SNAPSHOT, MISSING, main=BEHAVIORS))
