"""Batches of examples through the job's last shuffle, and a shard's TFRecord bytes.

The block path sends Arrow blocks of (key, context, rest): a record is its context (the user's
sequence and profile, shared by the samples of one request) followed by the rest (its target and
label parts). The context column is a dictionary, so a block carries each of its distinct contexts
once: about a tenth of the bytes of whole records to compress and copy. The row path sends
samples.pack_batch's pickles of (key, record). The writer assembles a shard's records in key
order, `chunk` at a time, and frames them as TFRecords in bulk: lengths and checksums in numpy
(a record's checksum extends its context's, found once per context), one concatenation in Arrow.
"""
from __future__ import annotations

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.example_columns import concat_rows, from_buffers, offsets_of, plain
from pipeline.beam import blocks
from pipeline.beam.samples import unpack_batch

_ARROW_STREAM = b"\xff\xff\xff\xff"     # an Arrow IPC stream's first bytes; a zlib stream's are 0x78..
CHUNK = 4096     # records framed at a time; merged passes write the same chunks (pass_merge.py)


def pack_parts(keys: pa.Array, context_index: np.ndarray, contexts: pa.Array,
               rests: pa.Array) -> bytes:
    """A block of examples: record i is contexts[context_index[i]] + rests[i].

    Always zstd: the local runner holds the whole shuffle in memory."""
    distinct, inverse = np.unique(context_index, return_inverse=True)
    context = pa.DictionaryArray.from_arrays(pa.array(inverse.ravel().astype(np.int32)),
                                             contexts.take(pa.array(distinct)))
    return blocks.pack(pa.table({"key": keys, "context": context, "rest": rests}), compress=True)


class ShardRecords:
    """A shard's batches, of either path, unpacked: every record's key and where its context and
    its rest lie in one array of pieces (the row path's records are whole: their context is the
    empty piece)."""

    def __init__(self, batches):
        keys, pieces, context_at, rest_at, pairs = [], [], [], [], []
        size = 0

        def add(array: pa.Array) -> int:
            nonlocal size
            pieces.append(array)
            size += len(array)
            return size - len(array)

        empty = add(pa.array([b""], pa.binary()))
        context_pieces = [np.array([empty])]
        for blob in batches:
            if blob[:4] != _ARROW_STREAM:
                pairs.extend(unpack_batch(blob))
                continue
            for batch in blocks.unpack(blob).to_batches():
                keys.append(batch.column("key"))
                context = batch.column("context")
                at = add(context.dictionary)
                context_pieces.append(np.arange(len(context.dictionary)) + at)
                context_at.append(context.indices.to_numpy(zero_copy_only=False).astype(np.int64) + at)
                rest_at.append(np.arange(batch.num_rows) + add(batch.column("rest")))
        if pairs:
            pair_keys, records = zip(*pairs)
            keys.append(pa.array(pair_keys, pa.string()))
            context_at.append(np.full(len(records), empty, np.int64))
            rest_at.append(np.arange(len(records)) + add(pa.array(records, pa.binary())))
        self.keys = pa.concat_arrays([k.cast(pa.string()) for k in keys]) if keys else pa.array([], pa.string())
        # 64-bit offsets: a shard's pieces may pass 2 GB; a chunk's records are cut back to binary
        self.pieces = pa.concat_arrays([p.cast(pa.large_binary()) for p in pieces])
        self.context_at = np.concatenate(context_at) if context_at else np.zeros(0, np.int64)
        self.rest_at = np.concatenate(rest_at) if rest_at else np.zeros(0, np.int64)
        self._context_pieces = np.concatenate(context_pieces)
        self._context_crc = None

    def key_order(self) -> np.ndarray:
        """Record indices sorted by key (keys are unique: they carry the sample's index in its
        user's day)."""
        return pc.sort_indices(self.keys).to_numpy()

    def records(self, at: np.ndarray) -> pa.Array:
        """The records at the indices `at`, assembled in that order."""
        return concat_rows(self.pieces, self.context_at[at], self.rest_at[at])

    def framed(self, at: np.ndarray) -> pa.Buffer:
        """The TFRecord bytes of the records at `at`, in that order."""
        if self._context_crc is None:     # every context's checksum, once, a chunk at a time
            self._context_crc = np.zeros(len(self.pieces), np.uint64)
            for lo in range(0, len(self._context_pieces), CHUNK):
                ids = self._context_pieces[lo:lo + CHUNK]
                self._context_crc[ids] = np.fromiter(
                    map(google_crc32c.value, self.pieces.take(pa.array(ids)).to_pylist()),
                    np.uint64, len(ids))
        records = self.records(at)
        rests = self.pieces.take(pa.array(self.rest_at[at])).to_pylist()
        crcs = np.fromiter(map(google_crc32c.extend, self._context_crc[self.context_at[at]].tolist(),
                               rests), np.uint64, len(rests))
        return _framed(records, crcs)


def _masked(crc: np.ndarray) -> np.ndarray:
    """TFRecord's masked CRC32C of every checksum."""
    crc = crc.astype(np.uint64)
    return ((((crc >> np.uint64(15)) | (crc << np.uint64(17))) + np.uint64(0xA282EAD8))
            & np.uint64(0xFFFFFFFF)).astype("<u4")


def _framed(records: pa.Array, crcs: np.ndarray) -> pa.Buffer:
    """length (8 bytes), its masked CRC, the record, its masked CRC (crcs: the records' CRC32C)."""
    records = plain(records)
    lengths = np.diff(offsets_of(records)).astype("<u8")
    n = len(lengths)
    sizes, size_of = np.unique(lengths, return_inverse=True)
    size_crcs = np.array([google_crc32c.value(s.tobytes()) for s in sizes], np.uint64)
    headers = np.zeros(n, dtype=[("length", "<u8"), ("crc", "<u4")])
    headers["length"] = lengths
    headers["crc"] = _masked(size_crcs[size_of.ravel()]) if n else 0
    joined = pc.binary_join_element_wise(
        from_buffers(headers.view(np.uint8), np.arange(n + 1, dtype=np.int64) * 12), records,
        from_buffers(_masked(crcs).view(np.uint8), np.arange(n + 1, dtype=np.int64) * 4), b"")
    out = offsets_of(joined)
    return joined.buffers()[2].slice(int(out[0]), int(out[-1] - out[0])) if n else pa.py_buffer(b"")


def framed(records: pa.Array) -> pa.Buffer:
    """The TFRecord bytes of records: length (8 bytes), its masked CRC, the record, its masked CRC."""
    records = plain(records)
    crcs = np.fromiter(map(google_crc32c.value, records.to_pylist()), np.uint64, len(records))
    return _framed(records, crcs)


def _in_key_order(batches, chunk: int, make):
    """make(shard, at) for each `chunk` of a shard's records in key order (the shard's records are
    never assembled whole); the shard's pieces go back to the system after the last chunk."""
    shard = ShardRecords(batches)
    order = shard.key_order()
    for lo in range(0, len(order), chunk):
        yield make(shard, order[lo:lo + chunk])
    del shard
    pa.default_memory_pool().release_unused()


def sorted_chunks(batches, chunk: int = CHUNK):
    """(keys, records) of a shard's batches sorted by key, `chunk` records at a time."""
    return _in_key_order(batches, chunk, lambda shard, at: (shard.keys.take(pa.array(at)),
                                                            shard.records(at)))


def tfrecord_chunks(batches, chunk: int = CHUNK):
    """(TFRecord bytes, count) of a shard's records sorted by key, framed `chunk` records at a time."""
    return _in_key_order(batches, chunk, lambda shard, at: (shard.framed(at), len(at)))
