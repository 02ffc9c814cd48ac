"""Serialized tf.train.Example pieces for whole columns at once: example_bytes.py's encoding, vectorised.

Every value is an Arrow binary array with one element per row; protobuf's framing (a tag, the
varint length, the body) is built with numpy for the lengths and Arrow's element-wise
concatenation for the bytes, so a column of a million pieces costs a few C loops, not a million
Python calls. The field order is example_bytes.FIELD_ORDER: the bytes are example_bytes' own.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.example_bytes import BYTES, FIELD_ORDER, FLOATS, INTS, varint

_EMPTY = pa.scalar(b"", pa.binary())
_VARINT_LIMITS = np.array([1 << bits for bits in range(7, 64, 7)], np.uint64)   # 2 bytes from 128...


def from_buffers(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """A binary array over numpy bytes: element i is data[offsets[i]:offsets[i + 1]]."""
    return pa.Array.from_buffers(pa.binary(), len(offsets) - 1, [
        None, pa.py_buffer(np.ascontiguousarray(offsets, np.int32)),
        pa.py_buffer(np.ascontiguousarray(data, np.uint8))])


def plain(array: pa.Array) -> pa.Array:
    """One contiguous binary array (no chunks, no slice offset), as regroup needs."""
    if isinstance(array, pa.ChunkedArray):
        array = pa.concat_arrays(array.chunks) if array.num_chunks else pa.array([], pa.binary())
    array = array.cast(pa.binary())
    return pa.concat_arrays([array]) if array.offset else array


def offsets_of(array: pa.Array) -> np.ndarray:
    """The len + 1 int32 offsets of a `plain` binary array."""
    return np.frombuffer(array.buffers()[1], np.int32, len(array) + 1)


def regroup(array: pa.Array, bounds: np.ndarray) -> pa.Array:
    """Element i: the concatenation of elements bounds[i]..bounds[i + 1] - 1 (no copy)."""
    array = plain(array)
    data = array.buffers()[2]
    offsets = offsets_of(array)[bounds]
    return pa.Array.from_buffers(pa.binary(), len(bounds) - 1, [
        None, pa.py_buffer(np.ascontiguousarray(offsets, np.int32)),
        data if data is not None else pa.py_buffer(b"")])


def stack(*columns) -> tuple[pa.Array, np.ndarray]:
    """The binary columns one after another, and the index where each starts."""
    columns = [plain(c) for c in columns]
    return pa.concat_arrays(columns), np.cumsum([0] + [len(c) for c in columns[:-1]])


def concat_rows(stacked: pa.Array, *picks) -> pa.Array:
    """Row i: stacked[picks[0][i]] + stacked[picks[1][i]] + ..., in one copy (a take, then a
    zero-copy regroup of every len(picks) pieces)."""
    flat = np.stack([np.asarray(p, np.int64) for p in picks], axis=1).ravel()
    return regroup(stacked.take(pa.array(flat)), np.arange(0, len(flat) + 1, len(picks)))


def varints(values: np.ndarray) -> pa.Array:
    """Protobuf varints of int64 values (negative ones in ten bytes, as protobuf writes them)."""
    v = np.asarray(values).astype(np.int64).view(np.uint64)
    sizes = np.searchsorted(_VARINT_LIMITS, v, side="right") + 1
    offsets = np.zeros(len(v) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    data = np.empty(offsets[-1], np.uint8)
    for j in range(int(sizes.max()) if len(v) else 0):
        at = sizes > j
        byte = (v[at] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = (sizes[at] > j + 1).astype(np.uint64) << np.uint64(7)
        data[offsets[:-1][at] + j] = (byte | more).astype(np.uint8)
    return from_buffers(data, offsets)


def join(*parts) -> pa.Array:
    """Element-wise concatenation of binary arrays (or bytes, repeated on every row)."""
    parts = [pa.scalar(p, pa.binary()) if isinstance(p, bytes) else p for p in parts]
    return pc.binary_join_element_wise(*parts, _EMPTY)


def nested(body: pa.Array, *prefixes: bytes) -> pa.Array:
    """framed(prefixes[-1], ... framed(prefixes[0], body)) of every row in one concatenation: each
    layer's length follows from the body's, so the body is copied once, not once a layer."""
    length = pc.binary_length(body).to_numpy(zero_copy_only=False).astype(np.int64)
    parts = [body]
    for prefix in prefixes:
        size = varints(length)
        parts = [prefix, size] + parts
        length = length + len(prefix) + np.diff(offsets_of(size))
    return join(*parts)


def framed(prefix: bytes, body: pa.Array) -> pa.Array:
    """prefix + varint(len(body)) + body of every row: a length-delimited protobuf field."""
    return nested(body, prefix)


def string_pieces(strings: pa.Array) -> pa.Array:
    """example_bytes.string_piece of every string: one BytesList value each."""
    return framed(b"\n", strings.cast(pa.binary()))


def list_pieces(lists: pa.Array) -> pa.Array:
    """The BytesList values of every list of strings, concatenated per row."""
    lists = pa.concat_arrays([lists]) if lists.offset else lists
    return regroup(string_pieces(lists.values), lists.offsets.to_numpy())


def bytes_feature(payload: pa.Array) -> pa.Array:
    return framed(bytes((BYTES,)), payload)


def packed_feature(kind: int, payload: pa.Array) -> pa.Array:
    """An Int64List or FloatList feature of packed payloads (an empty list has no inner field)."""
    inner = framed(b"\n", payload)
    empty = pc.equal(pc.binary_length(payload), 0)
    return framed(bytes((kind,)), pc.if_else(empty, _EMPTY, inner))


def ints_feature(payload: pa.Array) -> pa.Array:
    return packed_feature(INTS, payload)


def floats_feature(lists: pa.Array) -> pa.Array:
    """A FloatList feature of every list of doubles, rounded to float32 as protobuf does."""
    lists = pa.concat_arrays([lists]) if lists.offset else lists
    values = lists.values.to_numpy(zero_copy_only=False)
    with np.errstate(over="ignore"):       # beyond float32's range is inf, as protobuf's cast
        data = values.astype("<f4").view(np.uint8)
    offsets = lists.offsets.to_numpy().astype(np.int64) * 4
    offsets -= offsets[0]
    return packed_feature(FLOATS, from_buffers(data, offsets))


def _entry_key(name: str) -> bytes:
    key = name.encode()
    return b"\n" + varint(len(key)) + key + b"\x12"


def entry(name: str, feature: pa.Array) -> pa.Array:
    """example_bytes.entry of every row: one map entry of Features."""
    return nested(feature, _entry_key(name), b"\n")


def bytes_entry(name: str, payload: pa.Array) -> pa.Array:
    """entry(name, bytes_feature(payload)) in one concatenation."""
    return nested(payload, bytes((BYTES,)), _entry_key(name), b"\n")


def string_entry(name: str, strings: pa.Array) -> pa.Array:
    """The entry of a BytesList of one string on every row, in one concatenation."""
    return nested(strings.cast(pa.binary()), b"\n", bytes((BYTES,)), _entry_key(name), b"\n")


def example(keys: tuple, entries: dict) -> pa.Array:
    """Example bytes of every row from its entries (name -> entry column), in upb's order."""
    columns = [entries[name] for name in FIELD_ORDER[keys]]
    length = sum(pc.binary_length(c).to_numpy(zero_copy_only=False).astype(np.int64) for c in columns)
    return join(b"\n", varints(length), *columns)
