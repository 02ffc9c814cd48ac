"""Beam, columnar: build every task's examples from blocks grouped by user shard, encoded without TensorFlow.

One group holds a user shard's joined behaviours and impressions of every day read (lookback
days already cut to N per user) and its follows, shop preferences and profiles: about
rows / user_shards. Its samples are sorted in the row path's order (block_group), windows found
per column (block_windows), contexts and impression and power targets encoded in bulk (block_encode); the
fewer talent, shop and behaviour-made CTR samples take the row path's task_values and
example_bytes one by one. Keys, shards and statistics are computed per column, and the examples
leave as Arrow blocks of (key, context, rest) per (task, day, shard), sorted by key: the writer
joins each record's shared context and its own rest (record_batches.py).
"""
from __future__ import annotations

import zlib

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features import example_columns as ec
from features.contract import TASK_INDEX, TASKS
from features.example_bytes import encode_values
from pipeline.beam import block_encode, blocks
from pipeline.beam.block_group import IMP, POWER, Group
from pipeline.beam.block_windows import Sequences, run_starts
from pipeline.beam.record_batches import pack_parts
from pipeline.beam.samples import sequence_length_bin, task_values
from pipeline.beam.split import SplitByTag
from pipeline.layout import days_between

EXAMPLES, STATS = "examples", "stats"
KINDS = (EXAMPLES, STATS)


class Examples:
    """Columns of a group's examples: sample position, j, task, target and label parts, label, buy."""

    def __init__(self):
        self.parts = []

    def add(self, pos, j, task, targets: pa.Array, labels: pa.Array, label, buy):
        self.parts.append((np.asarray(pos, np.int64), np.asarray(j, np.int64),
                           np.asarray(task, np.int64), targets, labels,
                           np.asarray(label, np.float64), np.asarray(buy, np.float64)))

    def columns(self):
        pos, j, task, targets, labels, label, buy = zip(*self.parts)
        return (np.concatenate(pos), np.concatenate(j), np.concatenate(task),
                pa.concat_arrays(targets), pa.concat_arrays(labels), np.concatenate(label),
                np.concatenate(buy))


class BuildBlocksFn(beam.DoFn):
    """(user shard, [(kind, day, packed block)]) -> (EXAMPLES, ((task, day, shard), packed Arrow
    block of (key, context, rest))) and (STATS, (day, stats)): one tagged stream, split by
    SplitByTag.

    Examples are packed CHUNK at a time, so a group's transient memory is its columns plus one
    chunk's targets and labels."""
    CHUNK = 2048

    def __init__(self, spec, contract):
        self.spec, self.contract = spec, contract

    def setup(self):
        self.labels = {}

    def process(self, element, pool=None):
        _, values = element
        spec = self.spec
        group = Group(values, days_between(spec.start, spec.end), spec, pool)
        samples = group.samples()
        if samples is None:
            return
        key, ts, kind, row = samples
        starts = run_starts(key)
        keys = key[starts]                                   # the group's (user, day)s
        key_index = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(key)]))
        index = np.arange(len(key)) - starts[key_index]      # position in its user's day
        profile_at = group.profile_of(keys)

        # one context per (key, ts): the samples of a request share their sequence
        first_of = np.r_[True, (key[1:] != key[:-1]) | (ts[1:] != ts[:-1])]
        context_of = np.cumsum(first_of) - 1
        behaviors = group.behaviors
        if behaviors is None:
            behaviors = pa.table({"key": pa.array([], pa.int64()), "ts": pa.array([], pa.int64()),
                                  "type": pa.array([], pa.int64()), "scene": pa.array([], pa.int64()),
                                  **{c: pa.array([], pa.string()) for c in block_encode.SEQUENCE_STRINGS.values()},
                                  "tags": pa.array([], pa.list_(pa.string()))})
        columns = {c: behaviors.column(c).to_numpy() for c in ("key", "ts", "type", "scene")}
        sequences = Sequences(columns["key"], columns["ts"], keys, group.earlier(), len(group.days),
                              spec.sequence_length)
        ctx_keys, ctx_ts = key_index[first_of], ts[first_of]
        first, length = sequences.windows(ctx_keys, ctx_ts)
        profiles = self._profile_entries(group, keys, profile_at)
        contexts = block_encode.contexts(
            block_encode.behavior_pieces(behaviors), columns, sequences.rows, first, length, ctx_ts,
            {name: values.take(pa.array(ctx_keys)) for name, values in profiles.items()})

        examples = Examples()
        self._impression_examples(group, examples, kind, row)
        self._power_examples(group, examples, ts, kind, row)
        self._other_examples(group, examples, key, kind, row)
        pos, j, task, targets, labels, label, buy = examples.columns()
        example_keys = self._keys(group, key[pos], ts[pos], index[pos], j, task)
        shard = np.fromiter((zlib.crc32(k) for k in example_keys.cast(pa.binary()).to_pylist()),
                            np.int64, len(pos)) % spec.shards
        day = key[pos] % len(group.days)
        # records are assembled once, already in batch and key order
        order = pc.sort_indices(pa.table({"task": task, "day": day, "shard": shard, "key": example_keys}),
                                [("task", "ascending"), ("day", "ascending"), ("shard", "ascending"),
                                 ("key", "ascending")]).to_numpy()
        beam.metrics.Metrics.counter("dupn.examples", "written").inc(len(pos))
        parts, start = ec.stack(targets, labels)
        context_of_example = context_of[pos]
        for lo in range(0, len(order), self.CHUNK):
            at = order[lo:lo + self.CHUNK]
            rests = ec.concat_rows(parts, at + start[0], at + start[1])
            yield from self._batches(group, task[at], day[at], shard[at], example_keys.take(at),
                                     context_of_example[at], contexts, rests)
        no_profile = profile_at[key_index[pos]] < 0
        yield from self._stats(group, keys, day, task, label, buy, length[context_of_example],
                               no_profile)
        pa.default_memory_pool().release_unused()    # the group's columns: back to the system

    def _profile_entries(self, group: Group, keys: np.ndarray, profile_at: np.ndarray) -> dict:
        """age_bucket, gender and user_id entries of every key (no profile: age unknown, gender 0)."""
        found = profile_at >= 0
        ages = group.profiles["age"].take(pa.array(profile_at, pa.int64(), mask=~found))
        genders = np.zeros(len(keys), np.int64)
        genders[found] = group.profiles["gender"][profile_at[found]]
        users = group.users.take(pa.array(keys // len(group.days)))
        return block_encode.profile_entries(users, ages, genders)

    def _label(self, task: str, label: float, weight: float, buy) -> bytes:
        """The label part of an example: a handful of distinct values, each encoded once."""
        label_key = (TASK_INDEX[task], label, weight, buy)
        found = self.labels.get(label_key)
        if found is None:
            values = {"task": TASK_INDEX[task], "label": label, "weight": weight}
            if buy is not None:
                values["label_buy"] = buy
            found = self.labels[label_key] = encode_values(values, self.contract)
        return found

    def _impression_examples(self, group: Group, examples: Examples, kind, row) -> None:
        """The ctr (j 0) and l2r (j 1) examples of every impression (samples.task_values)."""
        pos = np.flatnonzero(kind == IMP)
        if len(pos) == 0:
            return
        spec = self.spec
        table = group.sample_tables[IMP]
        rows = pa.array(row[pos])
        targets = block_encode.impression_targets(table, spec.query_terms).take(rows)
        click = table.column("click").to_numpy()[row[pos]].astype(np.float64)
        bought = table.column("buy").to_numpy()[row[pos]].astype(np.float64)
        l2r = np.where(click != 0, click, bought)                # float(click or buy)
        weight = np.where(bought != 0, spec.l2r_weight_buy,
                          np.where(click != 0, spec.l2r_weight_click, spec.l2r_weight_none))
        for task, j, label, w, buy in (("ctr", 0, click, np.ones(len(pos)), bought),
                                       ("l2r", 1, l2r, weight, None)):
            examples.add(pos, np.full(len(pos), j), np.full(len(pos), TASK_INDEX[task]), targets,
                         self._labels(task, label, w, buy), label,
                         buy if buy is not None else np.zeros(len(pos)))

    def _power_examples(self, group: Group, examples: Examples, ts, kind, row) -> None:
        """The power example of every (user, day) with a level: its target is its time alone."""
        pos = np.flatnonzero(kind == POWER)
        if len(pos) == 0:
            return
        level = group.sample_tables[POWER].column("power").to_numpy()[row[pos]]
        label = (level - 1).astype(np.float64)
        targets = ec.example(("ts",), {"ts": block_encode.int_entry("ts", ts[pos])})
        examples.add(pos, np.zeros(len(pos)), np.full(len(pos), TASK_INDEX["power"]), targets,
                     self._labels("power", label, np.ones(len(pos)), None), label, np.zeros(len(pos)))

    def _labels(self, task: str, label: np.ndarray, weight: np.ndarray, buy) -> pa.Array:
        """The label part of every example of a task, each distinct one encoded once."""
        columns = [label, weight] + ([buy] if buy is not None else [])
        code = np.zeros(len(label), np.int64)
        for column in columns:
            distinct, inverse = np.unique(column, return_inverse=True)
            code = code * len(distinct) + inverse.ravel()
        _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
        parts = [self._label(task, float(label[i]), float(weight[i]),
                             float(buy[i]) if buy is not None else None) for i in first]
        return pa.array(parts, pa.binary()).take(pa.array(inverse.ravel()))

    def _other_examples(self, group: Group, examples: Examples, key, kind, row) -> None:
        """Talent, shop and behaviour-made CTR examples, one sample at a time."""
        pos_of, j_of, task_of, targets, labels, label_of, buy_of = [], [], [], [], [], [], []
        strings = {}
        for p in np.flatnonzero((kind != IMP) & (kind != POWER)):
            user = group.user(key[p])
            sample = group.sample_tuple(int(kind[p]), int(row[p]), user)
            for j, (task, target, label, weight, buy) in enumerate(task_values(sample, user, self.spec)):
                pos_of.append(p)
                j_of.append(j)
                task_of.append(TASK_INDEX[task])
                targets.append(encode_values(target, self.contract, strings))
                labels.append(self._label(task, label, weight, buy))
                label_of.append(label)
                buy_of.append(buy or 0.0)
        examples.add(pos_of, j_of, task_of, pa.array(targets, pa.binary()), pa.array(labels, pa.binary()),
                     label_of, buy_of)

    @staticmethod
    def _keys(group: Group, key, ts, index, j, task) -> pa.Array:
        """samples.user_day_examples' keys: user, ts (12 digits), index (6), j (3), task; tab-separated."""
        def digits(values, width):
            return pc.utf8_lpad(pc.cast(pa.array(values), pa.string()), width, "0")
        users = group.users.take(pa.array(key // len(group.days)))
        names = pa.array(TASKS).take(pa.array(task))
        return pc.binary_join_element_wise(users, digits(ts, 12), digits(index, 6), digits(j, 3),
                                           names, "\t")

    def _batches(self, group: Group, task, day, shard, keys: pa.Array, context_index: np.ndarray,
                 contexts: pa.Array, rests: pa.Array):
        """(EXAMPLES, ((task, day, shard), Arrow block of key, context and rest)) of examples
        sorted by (task, day, shard, key); example i's record is contexts[context_index[i]] +
        rests[i]."""
        batch = (task * len(group.days) + day) * self.spec.shards + shard
        bounds = np.r_[run_starts(batch), len(batch)]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            rest, shard_id = divmod(int(batch[lo]), self.spec.shards)
            task_id, day_id = divmod(rest, len(group.days))
            yield EXAMPLES, ((TASKS[task_id], group.days[day_id], shard_id),
                             pack_parts(keys.slice(lo, hi - lo), context_index[lo:hi], contexts,
                                        rests.slice(lo, hi - lo)))

    def _stats(self, group: Group, keys, day, task, label, buy, length, no_profile):
        """(STATS, (day, counts)) as samples.count_example adds them, for each day with samples."""
        n = self.spec.sequence_length
        for d in np.unique(keys % len(group.days)):
            at_day = day == d
            tasks = {}
            for t in np.unique(task[at_day]):
                at = at_day & (task == t)
                name = TASKS[t]
                counts = {"samples": int(at.sum())}
                if name == "power":
                    levels, count = np.unique((label[at] + 1).astype(np.int64), return_counts=True)
                    counts["levels"] = {str(v): int(c) for v, c in zip(levels, count)}
                else:
                    counts["positives"] = int((label[at] > 0).sum())
                if name == "ctr":
                    counts["buys"] = int((buy[at] > 0).sum())
                lengths, count = np.unique(length[at], return_counts=True)
                bins = {}
                for v, c in zip(lengths, count):
                    b = sequence_length_bin(int(v), n)
                    bins[b] = bins.get(b, 0) + int(c)
                counts["seq_len"] = bins
                tasks[name] = counts
            yield STATS, (group.days[d], {"tasks": tasks,
                                          "examples_without_profile": int(no_profile[at_day].sum())})


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
