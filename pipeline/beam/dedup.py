"""Beam: drop exact duplicate rows of a table and day (a file delivered twice), counting them.

Two rows are duplicates when every field of the contract is equal once validated (where they
were read aside); the last one read (file, then row order) stays, so "the last row of a day wins"
is unchanged. The count goes into the day's _stats as {"duplicates": {table: rows dropped}}.
Both paths drop the same rows: the row path groups rows by (table, day, row), the block path
drops them inside groups that already hold every copy of a row (block_join's (day, item shard),
and here (table, day, user shard) for follows, shop preferences and profiles).
"""
from __future__ import annotations

import hashlib
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.beam import blocks
from pipeline.beam.split import SplitByTag

BLOCK, COUNTS = "block", "counts"
ORDER = ("path", "row")          # where a row was read: not part of what it says
KV = typing.Tuple[typing.Any, typing.Any]


def duplicate_counts(table: str, dropped: int) -> dict:
    """The counts message of `dropped` duplicates (merged by write.merge_counts)."""
    return {"duplicates": {table: dropped}}


# ---- blocks ------------------------------------------------------------------------------------

def _spans(starts: np.ndarray, data: pa.Buffer) -> pa.Array:
    """Binary values over `data`: value i is its bytes starts[i]..starts[i + 1] (no copy).
    Arrow groups binary keys several times faster than large_binary ones: those only past 2 GB."""
    small = starts[-1] < 2**31 if len(starts) else True
    kind, offsets = (pa.binary(), np.int32) if small else (pa.large_binary(), np.int64)
    return pa.Array.from_buffers(kind, len(starts) - 1, [None, pa.py_buffer(starts.astype(offsets)), data])


def _list_keys(column: pa.Array) -> list[pa.Array]:
    """Binary columns equal for two rows only when their lists are equal: the bytes of a number
    list's values; for a string list its characters and its strings' lengths. No list holds a
    null (the validators fill them)."""
    rows = column.offsets.to_numpy()
    flat = pc.list_flatten(column)
    rows = rows - rows[0]                 # into `flat`, which starts at the first row's list
    if pa.types.is_string(flat.type):
        # into the character buffer, from flat's first string
        chars = np.frombuffer(flat.buffers()[1], np.int32)[flat.offset:flat.offset + len(flat) + 1]
        lengths = np.diff(chars).astype(np.int32)
        return [_spans(chars[rows], flat.buffers()[2]),
                _spans(rows * 4, pa.py_buffer(lengths.tobytes()))]
    width = flat.type.bit_width // 8
    return [_spans((rows + flat.offset) * width, flat.buffers()[1])]


def drop_duplicates(table: pa.Table) -> tuple[pa.Table, int]:
    """The rows of `table` without exact repeats (path and row aside), the last read of each
    kept, in their order; and how many were dropped."""
    if table.num_rows < 2:
        return table, 0
    if "path" in table.column_names:          # items and users: the last read must stay last
        table = table.sort_by([("path", "ascending"), ("row", "ascending")])
    keys = {}
    for name in table.column_names:
        if name in ORDER:
            continue
        column = table.column(name).combine_chunks()
        if pa.types.is_list(column.type):
            for part, key in enumerate(_list_keys(column)):
                keys[f"{name}.{part}"] = key
        else:
            keys[name] = column
    keys["__index"] = pa.array(np.arange(table.num_rows))
    last = pa.table(keys).group_by([n for n in keys if n != "__index"], use_threads=False).aggregate(
        [("__index", "max")]).column("__index_max").to_numpy()
    dropped = table.num_rows - len(last)
    return (table.take(pa.array(np.sort(last))) if dropped else table), dropped


def drop_duplicate_blocks(element):
    """((table, day, shard), [packed block]) -> (BLOCK, (table, day, packed)), (COUNTS, (day, counts))."""
    (table, day, _), packed = element
    rows, dropped = drop_duplicates(pa.concat_tables([blocks.unpack(b) for b in packed]))
    if rows.num_rows:
        yield BLOCK, (table, day, blocks.pack(rows))
    if dropped:
        beam.metrics.Metrics.counter("dupn.duplicates", table).inc(dropped)
        yield COUNTS, (day, duplicate_counts(table, dropped))


class DropDuplicateBlocks(beam.PTransform):
    """Blocks (table, day, packed) keyed by user -> {BLOCK: the same without duplicates, COUNTS:
    (day, counts)}. Grouped by (table, day, user shard): every copy of a row meets its others."""

    def __init__(self, shards: int):
        super().__init__()
        self.shards = shards

    def expand(self, table_blocks):
        shards = self.shards

        def by_user_shard(element):
            table, day, blob = element
            for shard, rows in blocks.split(blocks.unpack(blob), "user_id", shards):
                yield (table, day, shard), blocks.pack(rows)

        tagged = (table_blocks
                  | "ByTableDayUserShard" >> beam.FlatMap(by_user_shard)
                  | "GroupByTableDayUserShard" >> beam.GroupByKey()
                  | "DropDuplicates" >> beam.FlatMap(drop_duplicate_blocks))
        return tagged | "ByKind" >> SplitByTag((BLOCK, COUNTS))


# ---- rows --------------------------------------------------------------------------------------

def _row_key(row: tuple) -> bytes:
    # repr of str, int, float, None and tuples of them is exact and the same in every process
    return hashlib.blake2b(repr(row).encode("utf-8"), digest_size=16).digest()


class DropDuplicateRows(beam.PTransform):
    """One table's valid rows of the row path -> (rows without duplicates, (day, counts)).

    Rows are (day, row) or, for items and users, (day, (path, row number), row): of those the
    last read stays.
    """

    def __init__(self, table: str):
        super().__init__()
        self.table = table

    def expand(self, rows):
        ordered = self.table in ("items", "users")

        def key(element):
            return (element[0], _row_key(element[-1])), element

        def last(element):
            _, copies = element
            copies = list(copies)
            return max(copies, key=lambda e: e[1]) if ordered else copies[0], len(copies) - 1

        table = self.table
        kept = (rows
                | "KeyByRow" >> beam.Map(key).with_output_types(KV)
                | "GroupByRow" >> beam.GroupByKey()
                | "KeepOne" >> beam.Map(last))
        counts = (kept
                  | "Repeated" >> beam.Filter(lambda kv: kv[1] > 0)
                  | "DayOfRepeat" >> beam.Map(lambda kv: (kv[0][0], kv[1])).with_output_types(KV)
                  | "PerDay" >> beam.CombinePerKey(sum)
                  | "AsCounts" >> beam.MapTuple(lambda day, n: (day, duplicate_counts(table, n))))
        return kept | "Rows" >> beam.Map(lambda kv: kv[0]), counts
