"""Beam: point-in-time samples of every task, each with the user's last N behaviours before it.

Samples and behaviours meet in a GroupByKey on (user, day), so one group holds one user's day,
never a whole history. History from earlier days arrives as day tails: the last N behaviours of
each (user, day), kept by a combiner (bounded, pre-combined before the shuffle), sent to the L
following days (L = lookback_days). A group therefore holds at most L tails of N behaviours plus
the day's own events, and a day's examples depend only on that day and its L days of lookback:
building a day alone or inside a longer window writes the same bytes.

Within a group, behaviours and samples are sorted by time and merged: a sample sees the last N
behaviours with a timestamp STRICTLY before its own (a behaviour at the sample's second is not
seen). Samples: ctr and l2r per impression, talent per follow row, shop per shop-preference row,
power once per user and day with a power_level (at the end of the day: it sees the whole day),
and, with ctr_from_behaviors, a positive CTR sample per behaviour (its item) with negatives
drawn from the day's items (seeded, deterministic). CTR examples carry the buy too (label_buy,
for the ESMM head): the impression's, or for a behaviour-made positive whether it was a buy.
"""
from __future__ import annotations

import heapq
import itertools
import pickle
import typing
import zlib
from collections import deque
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from features.contract import BEHAVIOR_INDEX, TASK_INDEX, age_bucket, time_bucket
from pipeline.layout import days_between, shift
from pipeline.rawlogs.rows import DAY_SECONDS, day_start

EXAMPLES, STATS = "examples", "stats"
KV = typing.Tuple[typing.Any, typing.Any]
BEHAVIOR, TAIL, SAMPLE, PROFILE = "b", "t", "s", "p"
BUY = BEHAVIOR_INDEX["buy"]


@dataclass(frozen=True)
class SampleSpec:
    """What the sample builder needs from the configuration, passed into the DoFns."""
    start: str
    end: str
    sequence_length: int
    lookback_days: int
    tag_slots: int
    query_terms: int
    shards: int
    l2r_weight_buy: float = 5.0
    l2r_weight_click: float = 1.0
    l2r_weight_none: float = 1.0
    ctr_from_behaviors: bool = False
    ctr_negatives: int = 4
    seed: int = 1

    @classmethod
    def from_config(cls, config, start: str, end: str, contract) -> "SampleSpec":
        d = config.data
        return cls(start=start, end=end, sequence_length=d.sequence_length,
                   lookback_days=d.lookback_days, tag_slots=contract.tag_slots,
                   query_terms=contract.query_terms, shards=d.shards_per_day,
                   l2r_weight_buy=d.l2r_weight_buy, l2r_weight_click=d.l2r_weight_click,
                   l2r_weight_none=d.l2r_weight_none, ctr_from_behaviors=d.ctr_from_behaviors,
                   ctr_negatives=d.ctr_negatives, seed=config.runtime.seed)


class LastN(beam.CombineFn):
    """The last n enriched behaviours (by time, ties by content) of a key, oldest first."""

    def __init__(self, n: int):
        self.n = n

    def create_accumulator(self):
        return []

    def add_input(self, heap, behavior):
        if len(heap) < self.n:
            heapq.heappush(heap, behavior)
        elif behavior > heap[0]:
            heapq.heapreplace(heap, behavior)
        return heap

    def merge_accumulators(self, heaps):
        merged = heapq.nlargest(self.n, itertools.chain.from_iterable(heaps))
        heapq.heapify(merged)
        return merged

    def extract_output(self, heap):
        return sorted(heap)


def tail_to_later_days(element, spec: SampleSpec):
    """((user, d), tail) -> ((user, day), (TAIL, (d, tail))) for the sample days that look back on d."""
    (user, day), tail = element
    for ahead in range(1, spec.lookback_days + 1):
        later = shift(day, ahead)
        if spec.start <= later <= spec.end:
            yield (user, later), (TAIL, (day, tail))


def talent_sample(follow: tuple, tag_slots: int) -> tuple:
    """(ts, 'talent', talent_id, talent_type, talent_tags (T), followed) of a follows row."""
    _, talent_id, ts, talent_type, tags, followed = follow
    return (ts, "talent", talent_id, talent_type, (tuple(tags[:tag_slots]) + ("",) * tag_slots)[:tag_slots],
            followed)


def shop_sample(pref: tuple) -> tuple:
    """(ts, 'shop', shop_id, label) of a shop_prefs row."""
    _, shop_id, ts, label = pref
    return (ts, "shop", shop_id, label)


def stable_hash(text: str) -> int:
    """A hash that is the same in every process and run (Python's hash() of str is salted)."""
    return zlib.crc32(text.encode("utf-8"))


def draw_negatives(pool, user: str, ts: int, item_id: str, count: int, seed: int) -> tuple:
    """`count` items of the day's pool for a behaviour-made CTR sample, never its own item."""
    if not pool:
        return ()
    out = []
    for j in range(count):
        index = stable_hash(f"{seed}|{user}|{ts}|{item_id}|{j}") % len(pool)
        if pool[index][0] == item_id:
            if len(pool) == 1:
                continue
            index = (index + 1) % len(pool)
        out.append(pool[index])
    return tuple(out)


def sequence_values(sequence, sample_ts: int) -> dict:
    """Sequence features of the behaviours a sample sees (oldest first, at most N).

    Args:
      sequence: enriched behaviours (ts, type, scene, item, shop, brand, category, tags[T]).
    Returns:
      dict of seq_* feature values of length L (seq_tags L*T); empty for no history (the parser
      pads to N).
    """
    if not sequence:
        return {}
    ts, types, scenes, items, shops, brands, categories, tags = zip(*sequence)
    return {
        "seq_item_id": items, "seq_shop_id": shops, "seq_brand_id": brands,
        "seq_category_id": categories, "seq_tags": list(itertools.chain.from_iterable(tags)),
        "seq_type": types, "seq_scene": scenes,
        "seq_time_bucket": time_bucket(sample_ts - np.asarray(ts, dtype=np.int64)),
    }


def _item_values(item: tuple) -> dict:
    item_id, shop, brand, category, tags = item
    return {"item_id": item_id, "shop_id": shop, "brand_id": brand, "category_id": category,
            "tags": tags}


def task_values(sample: tuple, user: str, spec: SampleSpec):
    """Yields (task, target, label, weight, buy) of one sample tuple (one or more examples).

    target: the sample's features besides the sequence, profile and label (ts, target item,
    query...); the ctr and l2r examples of an impression share one target dict.
    buy: the ctr examples' label_buy (the impression's buy; a behaviour-made positive's is 1
    when the behaviour is a buy), None for the other tasks (they do not write it).
    """
    ts, kind = sample[0], sample[1]
    if kind == "imp":
        _, _, request_id, item, terms, features, click, buy = sample
        target = {**_item_values(item), "query": terms, "rank_features": features,
                  "request_id": request_id, "ts": ts}
        yield "ctr", target, float(click), 1.0, float(buy)
        weight = (spec.l2r_weight_buy if buy else spec.l2r_weight_click if click
                  else spec.l2r_weight_none)
        yield "l2r", target, float(click or buy), weight, None
    elif kind == "talent":
        _, _, talent_id, talent_type, tags, followed = sample
        yield "talent", {"talent_id": talent_id, "talent_type": talent_type, "talent_tags": tags,
                         "ts": ts}, float(followed), 1.0, None
    elif kind == "shop":
        _, _, shop_id, label = sample
        yield "shop", {"shop_id": shop_id, "ts": ts}, float(label), 1.0, None
    elif kind == "power":
        yield "power", {"ts": ts}, float(sample[2] - 1), 1.0, None
    elif kind == "bctr":
        _, _, item, negatives, bought = sample
        request_id = f"{user}@{ts}"
        shown = {"request_id": request_id, "ts": ts}
        yield "ctr", {**_item_values(item), **shown}, 1.0, 1.0, float(bought)
        for negative in negatives:
            yield "ctr", {**_item_values(negative), **shown}, 0.0, 1.0, 0.0
    else:
        raise ValueError(f"unknown sample kind {kind!r}")


def dict_context(window: list, ts: int, profile_values: dict) -> dict:
    """The context part of the examples that see `window` at `ts`: sequence and profile values."""
    return {**sequence_values(window, ts), **profile_values}


def user_day_examples(user: str, day: str, behaviors: list, tails: list, samples: list,
                      profile, spec: SampleSpec, pool=(), context_of=dict_context):
    """The examples of one user's day, in time order.

    Args:
      behaviors: the day's enriched behaviours (any order).
      tails: (earlier day, its last N enriched behaviours) for the days looked back on.
      samples: sample tuples (ts, kind, ...) from impressions, follows and shop_prefs.
      profile: (age, gender_index, power_level) from the day's users row, or None.
      pool: the day's item features to draw behaviour-CTR negatives from.
      context_of: (window, ts, profile values) -> the context part (dict_context, or the block
        path's encoded bytes).
    Yields:
      (task, key, sequence length, parts) with a unique, deterministic key; the example's
      features are the union of parts = (context, target, label). `context` (sequence and
      profile) is one dict shared by consecutive examples that see the same history at the
      same second (the items of a request, both tasks), `target` one dict shared by the ctr
      and l2r examples of an impression, so the writer encodes each once.
    """
    n = spec.sequence_length
    history = list(itertools.chain.from_iterable(tail for _, tail in sorted(tails)))
    window = deque(history[-n:], maxlen=n)
    behaviors = sorted(behaviors)
    samples = list(samples)
    age, gender, power = profile if profile is not None else (None, 0, 0)
    if power:
        samples.append((day_start(day) + DAY_SECONDS, "power", power))
    if spec.ctr_from_behaviors:
        samples.extend((b[0], "bctr", b[3:8], draw_negatives(pool, user, b[0], b[3], spec.ctr_negatives,
                                                             spec.seed), b[1] == BUY)
                       for b in behaviors)
    samples.sort()
    profile_values = {"age_bucket": age_bucket(age), "gender": gender, "user_id": user}
    seen, version, cached_for, context = 0, 0, None, None
    for index, sample in enumerate(samples):
        ts = sample[0]
        while seen < len(behaviors) and behaviors[seen][0] < ts:   # strictly before the sample
            window.append(behaviors[seen])
            seen += 1
            version += 1
        if cached_for != (version, ts):      # samples of one request share their sequence
            context = context_of(list(window), ts, profile_values)
            cached_for = (version, ts)
        for j, (task, target, label, weight, buy) in enumerate(task_values(sample, user, spec)):
            key = f"{user}\t{ts:012d}\t{index:06d}\t{j:03d}\t{task}"
            labels = {"task": TASK_INDEX[task], "label": label, "weight": weight}
            if buy is not None:
                labels["label_buy"] = buy
            yield task, key, len(window), (context, target, labels)


def pack_batch(records: list) -> bytes:
    """[(key, serialized example)] as one compressed blob (fast zlib level: it is unpacked soon)."""
    return zlib.compress(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL), 1)


def unpack_batch(blob: bytes) -> list:
    return pickle.loads(zlib.decompress(blob))


def sequence_length_bin(length: int, n: int) -> str:
    """Histogram bin of a sequence length: '0', then ten equal-width bins up to N ('1-10', ...)."""
    if length <= 0:
        return "0"
    width = -(-n // 10)
    low = (length - 1) // width * width + 1
    return f"{low}-{min(low + width - 1, n)}"


def count_example(stats: dict, task: str, label: float, length: int, no_profile: bool, buy: float,
                  n: int) -> None:
    """Adds one example to a day's stats: samples, positives (power: levels), buys, seq_len bins."""
    task_stats = stats["tasks"].setdefault(task, {"samples": 0, "seq_len": {}})
    task_stats["samples"] += 1
    if task == "power":
        levels = task_stats.setdefault("levels", {})
        level = str(int(label) + 1)
        levels[level] = levels.get(level, 0) + 1
    else:
        task_stats["positives"] = task_stats.get("positives", 0) + int(label > 0)
    if task == "ctr":
        task_stats["buys"] = task_stats.get("buys", 0) + int(buy > 0)
    bin_ = sequence_length_bin(length, n)
    task_stats["seq_len"][bin_] = task_stats["seq_len"].get(bin_, 0) + 1
    stats["examples_without_profile"] += no_profile


# Tagged outputs defeat Beam's type inference of the main output: declare it.
@beam.typehints.with_output_types(typing.Any)
class BuildExamplesFn(beam.DoFn):
    """((user, day), tagged values) -> ((task, day, shard), packed batch of (key, example)).

    Records leave in batches per shard (at most FLUSH_RECORDS held at once), each packed by
    pack_batch: a shuffle costs per element and per byte, and the local runner holds a stage's
    whole output in memory (examples repeat their request's sequence, so they compress ~10x).
    STATS output: (day, {"tasks": {task: {samples, positives | levels, seq_len, buys (ctr)}}, ...})
    per bundle.
    """
    FLUSH_RECORDS = 2000

    def __init__(self, spec: SampleSpec, contract):
        self.spec = spec
        self.contract = contract
        self.examples_counter = Metrics.counter("dupn.examples", "written")

    def setup(self):
        from features.tfrecord import encode_example   # loads TensorFlow once per worker
        self.encode = encode_example
        self.labels = {}       # (task, label, weight, label_buy) -> its encoded part

    def start_bundle(self):
        self.stats = {}
        self.pending, self.pending_count = {}, 0

    def _flush(self):
        batches = sorted((k, pack_batch(v)) for k, v in self.pending.items() if v)
        self.pending, self.pending_count = {}, 0
        return batches

    def process(self, element, pool=None):
        (user, day), values = element
        behaviors, tails, samples, profile = [], [], [], None
        for tag, value in values:
            if tag == BEHAVIOR:
                behaviors.append(value)
            elif tag == SAMPLE:
                samples.append(value)
            elif tag == TAIL:
                tails.append(value)
            elif profile is None or value[0] > profile[0]:   # the day's last users row wins
                profile = value
        day_pool = pool.get(day, ()) if pool else ()
        stats = self.stats.setdefault(day, {"tasks": {}, "examples_without_profile": 0})
        written, encoded_for, encoded = 0, [None, None], [b"", b""]
        for task, key, length, (context, target, label) in user_day_examples(
                user, day, behaviors, tails, samples, profile and profile[1], self.spec, day_pool):
            # Serialized protobuf messages concatenate into their merge: a part shared with the
            # previous example (the request's sequence, the impression's target) is encoded once.
            for i, part in enumerate((context, target)):
                if part is not encoded_for[i]:
                    encoded[i], encoded_for[i] = self.encode(part, self.contract), part
            label_key = (label["task"], label["label"], label["weight"],   # a handful of values
                         label.get("label_buy"))
            label_bytes = self.labels.get(label_key)
            if label_bytes is None:
                label_bytes = self.labels[label_key] = self.encode(label, self.contract)
            record = encoded[0] + encoded[1] + label_bytes
            shard = stable_hash(key) % self.spec.shards
            self.pending.setdefault((task, day, shard), []).append((key, record))
            self.pending_count += 1
            written += 1
            count_example(stats, task, label["label"], length, profile is None,
                          label.get("label_buy", 0.0), self.spec.sequence_length)
        self.examples_counter.inc(written)
        if self.pending_count >= self.FLUSH_RECORDS:
            yield from self._flush()

    def finish_bundle(self):
        for batch in self._flush():
            yield GlobalWindows.windowed_value(batch)
        for day, stats in sorted(self.stats.items()):
            yield beam.pvalue.TaggedOutput(STATS, GlobalWindows.windowed_value((day, stats)))


class BuildSamples(beam.PTransform):
    """Groups a window's events by (user, day) and builds every task's examples.

    Input: a dict of PCollections
      behaviors    ((user, day), enriched behaviour) for days [start - L, end]
      impressions  ((user, day), impression sample) for days [start, end]
      follows, shop_prefs   (day, row)            users (day, order, row)
      pool         (day, [item features]) when spec.ctr_from_behaviors
    Returns a DoOutputsTuple: [EXAMPLES] ((task, day, shard), packed batch of (key, record)),
    [STATS] (day, dict).
    """

    def __init__(self, spec: SampleSpec, contract):
        super().__init__()
        self.spec = spec
        self.contract = contract

    def expand(self, inputs):
        spec = self.spec
        window = frozenset(days_between(spec.start, spec.end))
        behaviors = inputs["behaviors"]
        # Explicit output types: Beam's inference from lambdas over tuples can pick wrong coders.
        parts = [
            behaviors
            | "DayInWindow" >> beam.Filter(lambda kv, days: kv[0][1] in days, window)
            | "TagBehaviors" >> beam.Map(lambda kv: (kv[0], (BEHAVIOR, kv[1]))).with_output_types(KV),
            inputs["impressions"] | "TagImpressions" >> beam.Map(
                lambda kv: (kv[0], (SAMPLE, kv[1]))).with_output_types(KV),
            inputs["follows"] | "TalentSamples" >> beam.Map(
                lambda r, t: ((r[1][0], r[0]), (SAMPLE, talent_sample(r[1], t))),
                spec.tag_slots).with_output_types(KV),
            inputs["shop_prefs"] | "ShopSamples" >> beam.Map(
                lambda r: ((r[1][0], r[0]), (SAMPLE, shop_sample(r[1])))).with_output_types(KV),
            inputs["users"] | "Profiles" >> beam.Map(
                lambda r: ((r[2][0], r[0]), (PROFILE, (r[1], r[2][1:])))).with_output_types(KV),
        ]
        if spec.lookback_days > 0:
            parts.append(
                behaviors
                | "BeforeLastDay" >> beam.Filter(lambda kv, last: kv[0][1] < last, spec.end)
                | "LastNPerUserDay" >> beam.CombinePerKey(LastN(spec.sequence_length))
                | "TailToLaterDays" >> beam.FlatMap(tail_to_later_days, spec).with_output_types(KV))
        side = {}
        if spec.ctr_from_behaviors:
            side["pool"] = beam.pvalue.AsDict(inputs["pool"])
        return (parts
                | "Flatten" >> beam.Flatten()
                | "GroupByUserDay" >> beam.GroupByKey()
                | "Build" >> beam.ParDo(BuildExamplesFn(spec, self.contract), **side).with_outputs(
                    STATS, main=EXAMPLES))


class NegativePool(beam.PTransform):
    """(day, item features) -> (day, [item features]): `size` items per day, the same every run.

    The items with the smallest seeded hash of their id: a uniform sample of the day's snapshot.
    """

    def __init__(self, size: int, seed: int):
        super().__init__()
        self.size = size
        self.seed = seed

    def expand(self, snapshot):
        return (snapshot
                | "HashItems" >> beam.Map(
                    lambda kv, s: (kv[0], (stable_hash(f"{s}|{kv[1][0]}"), kv[1])),
                    self.seed).with_output_types(KV)
                | "SmallestHashes" >> beam.combiners.Top.SmallestPerKey(self.size)
                | "DropHashes" >> beam.MapTuple(
                    lambda day, ranked: (day, [i for _, i in ranked])).with_output_types(KV))
