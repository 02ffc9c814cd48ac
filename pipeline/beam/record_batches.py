"""Batches of (key, example record) through the job's last shuffle, and a shard's TFRecord bytes.

The block path sends Arrow blocks (key and record columns: no per-example objects pickled); the
row path sends samples.pack_batch's pickles. The writer takes a shard's records in key order and
frames them as TFRecords in bulk: lengths and checksums in numpy, one concatenation in Arrow.
"""
from __future__ import annotations

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.example_columns import from_buffers, offsets_of, plain
from pipeline.beam import blocks
from pipeline.beam.samples import unpack_batch

_ARROW_STREAM = b"\xff\xff\xff\xff"     # an Arrow IPC stream's first bytes; a zlib stream's are 0x78..


def pack_records(keys: pa.Array, records: pa.Array) -> bytes:
    """Always zstd: a batch's records repeat their requests' sequences (~15x smaller), and the
    local runner holds the whole shuffle in memory."""
    return blocks.pack(pa.table({"key": keys, "record": records}), compress=True)


def _table(batches) -> pa.Table:
    """A shard's batches, of either path, as one table of key and record."""
    tables, pairs = [], []
    for blob in batches:
        if blob[:4] == _ARROW_STREAM:
            tables.append(blocks.unpack(blob))
        else:
            pairs.extend(unpack_batch(blob))
    if pairs:
        keys, records = zip(*pairs)
        tables.append(pa.table({"key": pa.array(keys, pa.string()),
                                "record": pa.array(records, pa.binary())}))
    if not tables:
        return pa.table({"key": pa.array([], pa.string()), "record": pa.array([], pa.binary())})
    return pa.concat_tables(tables)


def _masked(crc: np.ndarray) -> np.ndarray:
    """TFRecord's masked CRC32C of every checksum."""
    crc = crc.astype(np.uint64)
    return ((((crc >> np.uint64(15)) | (crc << np.uint64(17))) + np.uint64(0xA282EAD8))
            & np.uint64(0xFFFFFFFF)).astype("<u4")


def framed(records: pa.Array) -> pa.Buffer:
    """The TFRecord bytes of records: length (8 bytes), its masked CRC, the record, its masked CRC."""
    records = plain(records)
    offsets = offsets_of(records).astype(np.int64)
    data = records.buffers()[2]
    data = data.to_pybytes() if data is not None else b""
    bounds = offsets.tolist()
    lengths = np.diff(offsets).astype("<u8")
    sizes, size_of = np.unique(lengths, return_inverse=True)
    size_crcs = np.array([google_crc32c.value(s.tobytes()) for s in sizes], np.uint64)
    headers = np.zeros(len(lengths), dtype=[("length", "<u8"), ("crc", "<u4")])
    headers["length"] = lengths
    headers["crc"] = _masked(size_crcs[size_of.ravel()]) if len(sizes) else 0
    crcs = _masked(np.fromiter((google_crc32c.value(data[a:b]) for a, b in zip(bounds[:-1], bounds[1:])),
                               np.uint64, len(lengths)))
    n = len(lengths)
    joined = pc.binary_join_element_wise(
        from_buffers(headers.view(np.uint8), np.arange(n + 1, dtype=np.int64) * 12), records,
        from_buffers(crcs.view(np.uint8), np.arange(n + 1, dtype=np.int64) * 4), b"")
    out = offsets_of(joined)
    return joined.buffers()[2].slice(int(out[0]), int(out[-1] - out[0])) if n else pa.py_buffer(b"")


def take_chunked(column: pa.ChunkedArray, indices: np.ndarray) -> pa.Array:
    """column[indices] taken chunk by chunk (Arrow's take of a chunked array combines it whole)."""
    chunks = column.chunks
    starts = np.cumsum([0] + [len(c) for c in chunks])
    chunk_of = np.searchsorted(starts, indices, side="right") - 1
    parts, placed = [], []
    for c in np.unique(chunk_of):
        at = np.flatnonzero(chunk_of == c)
        parts.append(chunks[c].take(pa.array(indices[at] - starts[c])))
        placed.append(at)
    placed = np.concatenate(placed)
    where = np.empty(len(indices), np.int64)
    where[placed] = np.arange(len(indices))
    return pa.concat_arrays(parts).take(pa.array(where))


CHUNK = 4096     # records framed at a time; merged passes write the same chunks (pass_merge.py)


def sorted_chunks(batches, chunk: int = CHUNK, with_keys: bool = True):
    """(keys, records) of a shard's batches sorted by their (unique) keys, `chunk` records at a
    time (the shard's records are not copied whole); keys None without with_keys."""
    table = _table(batches)
    order = pc.sort_indices(table.column("key")).to_numpy()
    keys, records = table.column("key"), table.column("record")
    for lo in range(0, len(order), chunk):
        at = order[lo:lo + chunk]
        yield take_chunked(keys, at) if with_keys else None, take_chunked(records, at)
    del table, keys, records
    pa.default_memory_pool().release_unused()        # the shard's records: back to the system


def tfrecord_chunks(batches, chunk: int = CHUNK):
    """(TFRecord bytes, count) of a shard's records sorted by their (unique) keys, framed `chunk`
    records at a time."""
    for _, records in sorted_chunks(batches, chunk, with_keys=False):
        yield framed(records), len(records)
