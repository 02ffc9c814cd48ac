"""Batches of (key, example record) through the job's last shuffle, from either path.

The block path sends Arrow blocks (key and record columns: no per-example objects pickled); the
row path sends samples.pack_batch's pickles. The writer sorts a shard's records by key.
"""
from __future__ import annotations

import operator

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.beam import blocks
from pipeline.beam.samples import unpack_batch

_ARROW_STREAM = b"\xff\xff\xff\xff"     # an Arrow IPC stream's first bytes; a zlib stream's are 0x78..


def pack_records(keys: pa.Array, records: pa.Array) -> bytes:
    """Always zstd: a batch's records repeat their requests' sequences (~15x smaller), and the
    local runner holds the whole shuffle in memory."""
    return blocks.pack(pa.table({"key": keys, "record": records}), compress=True)


def sorted_records(batches):
    """The records of a shard's batches (either format), sorted by their (unique) keys: an iterable."""
    tables, pairs = [], []
    for blob in batches:
        if blob[:4] == _ARROW_STREAM:
            tables.append(blocks.unpack(blob))
        else:
            pairs.extend(unpack_batch(blob))
    if tables and pairs:
        raise ValueError("a shard's batches mix the block and row paths' formats")
    if tables:
        return _in_key_order(pa.concat_tables(tables))
    return [record for _, record in sorted(pairs, key=operator.itemgetter(0))]


def _in_key_order(table: pa.Table, chunk: int = 8192):
    """The records of a table by key, taken a chunk at a time (a shard's records are not copied whole)."""
    order = pc.sort_indices(table.column("key"))
    records = table.column("record")
    for lo in range(0, len(order), chunk):
        yield from records.take(order.slice(lo, chunk)).to_pylist()
